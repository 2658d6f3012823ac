"""The Subset page as an exploration tool (AppTest, digits): samples tagged exclude are left out, the
Make-the-subset button goes once used, and a policy the Policy page learned is reused without it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from app_support import APP, TIMEOUT  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

MAKE = "Make the subset"


from app_support import navigation_routing  # noqa: E402, F401  (autouse: every run goes through app.py)


@pytest.fixture
def app(session_store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def pool(session_store):
    from ifbeta.data import datasets as data

    return data.load("digits", "train", store=session_store)


def _page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"pages/{name}.py").run()
    _fine(at)
    return at


def _fine(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _directory(at: AppTest) -> Path:
    caption = next(c.value for c in at.caption if c.value.startswith("Subset directory:"))
    return Path(caption.split("`")[1])


def _has_make_button(at: AppTest) -> bool:
    return any(b.label == MAKE for b in at.button)


def test_samples_tagged_exclude_are_left_out(app, session_store, pool):
    from ifbeta.subsets import tags

    tagged = [pool.ids[i] for i in range(0, 1000, 5)]  # 200 samples
    tags.add(session_store, pool.fingerprint, tags.EXCLUDE, tagged, known=pool.ids)
    try:
        at = _page(app, "subset")
        at.selectbox(key="subset_method").set_value("moderate").run()
        _fine(at)
        box = at.checkbox(key="subset_exclude")
        assert box.label == "Leave out samples tagged exclude (200)" and box.value
        assert _metric(at, "Kept") == "674 of 1,347"  # k of the whole pool
        directory = _directory(at)
        indices = np.load(directory / "indices.npy")
        assert len(indices) == 674 and not np.isin(np.arange(0, 1000, 5), indices).any()
        assert directory.name.split("-")[-1].startswith("x")

        box.uncheck().run()  # the whole pool again: another subset, some tagged samples kept
        _fine(at)
        plain = _directory(at)
        assert plain != directory and np.isin(np.arange(0, 1000, 5), np.load(plain / "indices.npy")).any()
    finally:
        tags.remove(session_store, pool.fingerprint, tags.EXCLUDE, tagged)
    at = _page(at, "subset")
    assert not any(c.key == "subset_exclude" for c in at.checkbox)  # nothing tagged: no checkbox


def test_the_make_button_goes_once_the_subset_is_made(app):
    app.session_state["policy_steps"] = 2
    at = _page(app, "subset")
    at.selectbox(key="subset_method").set_value("ifbeta")
    at.slider(key="subset_ratio").set_value(0.35).run()
    _fine(at)
    assert _has_make_button(at) and not at.metric
    next(b for b in at.button if b.label == MAKE).click().run()
    _fine(at)
    assert not _has_make_button(at)
    assert _metric(at, "Kept") == f"{round(0.65 * 1347)} of 1,347"
    at.slider(key="subset_count").set_value(8).run()  # any later run reads the stored selection
    _fine(at)
    assert not _has_make_button(at) and _metric(at, "Kept").startswith("876")


def test_a_policy_learned_on_the_policy_page_is_reused(app):
    app.session_state["policy_steps"] = 2
    at = _page(app, "policy")
    at.multiselect(key="policy_ratios").set_value([0.6])
    next(b for b in at.button if b.label == "Learn the policy").click().run()
    _fine(at)
    table = at.dataframe[0].value
    alpha, beta = float(table["alpha"][0]), float(table["beta"][0])

    at = _page(at, "subset")
    at.selectbox(key="subset_method").set_value("ifbeta")
    at.slider(key="subset_ratio").set_value(0.6).run()
    _fine(at)
    assert not _has_make_button(at)  # the stored policy is drawn from at once
    assert _metric(at, "Kept") == f"{round(0.4 * 1347)} of 1,347"
    assert _metric(at, "Policy (alpha, beta)") == f"{alpha:.3g}, {beta:.3g}"

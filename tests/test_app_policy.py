"""AppTest of the Policy page's reading aids: a one-line verdict (evidence folded away), J relative to
uniform, each ratio's path over its own landscape, and the Beta pdf animation opening on the learned step."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TIMEOUT = 300


from app_support import figures, navigation_routing, plotly_array  # noqa: E402, F401  (autouse: every run goes through app.py)


@pytest.fixture
def app(session_store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


_figures = figures


_array = plotly_array


def _ratios_drawn(figure: dict) -> list[str]:
    return [t["name"] for t in figure["data"] if str(t.get("name", "")).startswith("r=")]


def test_policy_page_reads_at_a_glance(app):
    at = app.switch_page("pages/policy.py").run()
    assert not at.exception and not at.error
    verdicts = [m.value for m in at.markdown if m.value.startswith("**Verdict:**")]
    assert len(verdicts) == 1 and "\n" not in verdicts[0] and "random" in verdicts[0]
    assert not [i.value for i in at.info if "Where it stands" in i.value]  # the prose paragraph is gone
    evidence = [e for e in at.expander if "proxy-transfer.md" in e.label]
    assert evidence and "cifar10-power/results.md" in evidence[0].label

    at.session_state["policy_steps"] = 3
    at.session_state["policy_shrinkage"] = 0.0
    at.multiselect(key="policy_ratios").set_value([0.3, 0.7])
    next(b for b in at.button if b.label == "Learn the policy").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception]

    table = at.dataframe[0].value
    assert "J vs uniform (%)" in table.columns and "J start" not in table.columns
    assert np.isfinite(table["J vs uniform (%)"]).all()
    figures = _figures(at)
    curves = next(f for f in figures if any(str(t.get("name", "")).startswith("J r=") for t in f["data"]))
    assert "%" in curves["layout"]["yaxis"]["title"]["text"]
    first = next(t for t in curves["data"] if t["name"] == "J r=0.3")
    assert _array(first["y"])[0] == pytest.approx(0.0)  # step 0 is uniform (PolicyConfig.init = (1, 1)): 0 %

    assert _ratios_drawn(figures[0]) == ["r=0.3"]  # one ratio's path, over that ratio's landscape
    compute = [b for b in at.button if b.label.startswith("Compute the landscape")]
    if compute:  # absent when another test already stored this landscape in the session store
        compute[0].click().run()
    path = _figures(at)[0]
    assert path["data"][0]["type"] == "heatmap" and _ratios_drawn(path) == ["r=0.3"]
    assert "%" in path["data"][0]["colorbar"]["title"]["text"]
    assert path["data"][0]["colorbar"]["x"] > 1 and path["layout"]["legend"]["orientation"] == "h"
    at.selectbox(key="landscape_ratio").set_value(0.7).run()
    assert not at.exception
    path = _figures(at)[0]
    assert _ratios_drawn(path) == ["r=0.7"] and path["data"][0]["type"] != "heatmap"  # 0.3's landscape is not reused

    animations = [f for f in _figures(at) if f.get("frames")]
    assert len(animations) == 2
    for animation in animations:
        frames, slider = animation["frames"], animation["layout"]["sliders"][0]
        assert slider["active"] == len(frames) - 1  # opens on the learned step
        np.testing.assert_array_equal(_array(animation["data"][0]["y"]), _array(frames[-1]["data"][0]["y"]))
        assert f"step {frames[-1]['name']}:" in animation["layout"]["title"]["text"]
        button = animation["layout"]["updatemenus"][0]
        assert button["pad"]["t"] + 30 <= slider["pad"]["t"]  # the Play button has its own row above the slider


def test_the_proxy_and_the_start_chosen_on_the_pages_are_the_ones_the_engine_uses(app, session_store):
    from ifbeta import pipeline
    from ifbeta.config import InfluenceConfig, PolicyConfig, ProxyConfig

    at = app.switch_page("pages/influence.py").run()
    at.selectbox(key="proxy_family").set_value("knn").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert at.selectbox(key="influence_solver").disabled  # the k-NN proxy has no linear solve
    chosen = next(m for m in at.metric if m.label == "k-NN k, bandwidth").value
    knn = InfluenceConfig(proxy=ProxyConfig(family="knn"))
    ws = pipeline.open_workspace("digits", store=session_store)
    stored, _ = pipeline.scores(ws, knn)  # deterministic: the page's result, read back from the store
    assert stored.solver == "knn"
    expected = sorted({(r["neighbours"], r["bandwidth"]) for r in stored.mu_table if r["chosen"]})
    assert chosen == " · ".join(f"{k}, {h:.3g}" for k, h in expected)

    at = at.switch_page("pages/policy.py").run()
    assert at.selectbox(key="proxy_family").value == "knn"  # one choice shared by both pages
    before = {key for key, _ in session_store.entries("policies")}
    at.selectbox(key="policy_start").set_value("ratio-adaptive")
    at.session_state["policy_steps"] = 3
    at.multiselect(key="policy_ratios").set_value([0.5])
    next(b for b in at.button if b.label == "Learn the policy").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    learned = pipeline.policies(ws, [0.5], PolicyConfig(steps=3, start="ratio-adaptive"), influence_config=knn,
                                compute=False)
    assert learned is not None  # stored under the k-NN proxy and the ratio-adaptive start, as chosen
    shown = [m.value for m in at.markdown if m.value.startswith("**r = 0.5**")]
    assert shown == [f"**r = 0.5**: keep {learned[0].k:,}, alpha {learned[0].alpha:.3g}, beta {learned[0].beta:.3g}"]
    # what the click stored is the k-NN proxy under the ratio-adaptive start, and nothing under the uniform one
    # (other test files may have stored a uniform-start policy in the session store before: compare entries)
    added = [document for key, document in session_store.entries("policies") if key not in before]
    assert added and all('"ratio-adaptive"' in json.dumps(document) and '"knn"' in json.dumps(document)
                         for document in added)

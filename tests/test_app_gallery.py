"""The gallery component, the Influence page's readable scales and its teacher-disagreement view
(AppTest, digits), checked against brute-force references computed from the same stored scores."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("streamlit")
from app_support import APP, TIMEOUT, navigation_routing, plotly_array  # noqa: E402, F401  (autouse)
from streamlit.testing.v1 import AppTest  # noqa: E402

from ifbeta import plots  # noqa: E402
from ifbeta.subsets.query import short_id  # noqa: E402


@pytest.fixture
def influence(session_store) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/influence.py").run()
    _fine(at)
    return at


@pytest.fixture(scope="module")
def pool(session_store):
    """(ids, labels, teacher predictions, s) of the digits pool, from the store the app uses."""
    from ifbeta import pipeline

    ws = pipeline.open_workspace("digits", store=session_store)
    result, _ = pipeline.scores(ws)
    return (list(ws.train.ids), np.asarray(ws.train.labels), np.asarray(ws.features.logits).argmax(1),
            np.asarray(result.scores))


def _fine(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _figure(at: AppTest, chart_key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id and chart_key in c.proto.id]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


_array = plotly_array


def _captions(at: AppTest, key: str) -> list[str]:
    return [b.label for b in at.button if b.key and b.key.startswith(f"{key}_open_")]


def _showing(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("showing ")]


def _fields(at: AppTest) -> dict:
    """field -> value of the open detail dialog's table."""
    tables = [t.value for t in at.table if t.value.index.name == "field"]
    assert len(tables) == 1, "no detail dialog is open"
    return dict(zip(tables[0].index, tables[0]["value"]))


def _brute_percentile(s: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.empty(len(s))
    for i in range(len(s)):
        members = np.flatnonzero(groups == groups[i])
        below = np.sum((s[members] < s[i]) | ((s[members] == s[i]) & (members < i)))
        out[i] = 100.0 * below / (len(members) - 1)
    return out


def _brute_tails(s, labels, fraction):
    helpful, harmful = [], []
    for c in np.unique(labels):
        members = sorted(np.flatnonzero(labels == c), key=lambda j: (s[j], j))
        m = max(1, round(fraction * len(members)))
        harmful += members[:m]
        helpful += members[-m:]
    return helpful, harmful


def test_influence_plots_use_the_percentile_axis_by_default_and_raw_on_request(influence, pool):
    ids, labels, _, s = pool
    at = influence
    histogram, violin = _figure(at, "score_histogram"), _figure(at, "class_violin")
    scatter = _figure(at, "confidence_scatter")
    assert histogram["layout"]["xaxis"]["title"]["text"] == plots.POOL_PERCENTILE_TITLE
    assert violin["layout"]["yaxis"]["title"]["text"] == plots.POOL_PERCENTILE_TITLE
    assert scatter["layout"]["yaxis"]["title"]["text"] == plots.CLASS_PERCENTILE_TITLE
    pooled = np.concatenate([_array(trace["x"]) for trace in histogram["data"]])
    assert np.allclose(np.sort(pooled), np.sort(_brute_percentile(s, np.zeros(len(s)))))
    within = _brute_percentile(s, labels)
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    shown = {i: y for trace in scatter["data"] for i, y in zip(trace["customdata"], _array(trace["y"]))}
    assert len(shown) == len(ids)
    assert np.allclose([shown[i] for i in ids], within[[position[i] for i in ids]])

    at.radio(key="influence_scale").set_value("raw").run()
    _fine(at)
    histogram = _figure(at, "score_histogram")
    assert histogram["layout"]["xaxis"]["title"]["text"].startswith(plots.SCORE_TITLE)
    raw = np.concatenate([_array(trace["x"]) for trace in histogram["data"]])
    low, high = np.percentile(s, [1, 99], method="nearest")
    assert np.allclose(np.sort(raw), np.sort(np.clip(s, low, high)))
    clipped = int(np.sum((s < low) | (s > high)))
    assert any(c.value.startswith(f"{clipped:,} of {len(s):,} samples lie outside percentiles 1–99") for c in at.caption)
    assert _figure(at, "confidence_scatter")["layout"]["yaxis"]["title"]["text"].startswith(plots.SCORE_TITLE)


def test_the_gallery_sorts_filters_and_counts(influence, pool):
    ids, labels, predictions, s = pool
    at = influence
    helpful, harmful = _brute_tails(s, labels, 0.10)
    assert _showing(at) == [f"showing 32 of {len(helpful)} (page 1 of {-(-len(helpful) // 32)})",
                            f"showing 32 of {len(harmful)} (page 1 of {-(-len(harmful) // 32)})"]

    at.selectbox(key="influence_helpful_sort").set_value("score").run()  # descending by default
    _fine(at)
    expected = sorted(helpful, key=lambda j: -s[j])[:32]
    captions = _captions(at, "influence_helpful")
    assert [c.split(" · ")[0] for c in captions] == [short_id(ids[j]) for j in expected]
    shown_scores = [float(c.split(" · ")[2]) for c in captions]
    assert shown_scores == sorted(shown_scores, reverse=True)
    at.toggle(key="influence_helpful_descending").set_value(False).run()
    expected = sorted(helpful, key=lambda j: s[j])[:32]
    assert [c.split(" · ")[0] for c in _captions(at, "influence_helpful")] == [short_id(ids[j]) for j in expected]

    at.selectbox(key="influence_helpful_class").set_value(3).run()
    _fine(at)
    in_class = [j for j in helpful if labels[j] == 3]
    assert _showing(at)[0] == f"showing {len(in_class)} of {len(in_class)}, after the filters, of {len(helpful)}"
    assert all(c.split(" · ")[1].split("→")[0] == "3" for c in _captions(at, "influence_helpful"))

    at.selectbox(key="influence_harmful_teacher").set_value("disagrees with the label").run()
    _fine(at)
    harmful = sorted(harmful, key=lambda j: s[j])  # the gallery's given order: most harmful first
    _check_teacher_filter(at, ids, harmful, [j for j in harmful if predictions[j] != labels[j]], disagrees=True)
    at.selectbox(key="influence_harmful_teacher").set_value("agrees with the label").run()
    _fine(at)
    _check_teacher_filter(at, ids, harmful, [j for j in harmful if predictions[j] == labels[j]], disagrees=False)


def _check_teacher_filter(at: AppTest, ids: list, harmful: list, expected: list, *, disagrees: bool) -> None:
    """The harmful gallery under a teacher filter shows exactly ``expected`` (brute force), in the order given
    (most harmful first), with its count; a teacher that errs on none of the tail leaves "no samples"."""
    pages = -(-len(expected) // 32)
    shown = f"showing {min(32, len(expected))} of {len(expected)}" + (f" (page 1 of {pages})" if pages > 1 else "")
    assert _showing(at)[1] == shown + ("" if len(expected) == len(harmful) else f", after the filters, of {len(harmful)}")
    captions = _captions(at, "influence_harmful")
    pairs = [c.split(" · ")[1].split("→") for c in captions]
    assert len(pairs) == min(32, len(expected)) and all((label != prediction) == disagrees for label, prediction in pairs)
    assert [c.split(" · ")[0] for c in captions] == [short_id(ids[j]) for j in expected[:32]]
    if not expected:
        assert any(c.value == "no samples" for c in at.caption)


def test_a_caption_opens_every_field_of_its_sample(influence, pool):
    ids, labels, predictions, s = pool
    at = influence
    button = next(b for b in at.button if b.key and b.key.startswith("influence_harmful_open_"))
    row = int(button.key.rsplit("_", 1)[1])
    button.click().run()
    _fine(at)
    fields = _fields(at)
    assert fields["id"] == ids[row] and fields["label"] == str(labels[row])
    assert fields["prediction"] == str(predictions[row]) and float(fields["score"]) == pytest.approx(s[row], rel=1e-5)
    assert {"confidence", "label_probability", "disagrees", "rank", "short_id"} <= set(fields)


def test_the_disagreement_view_equals_a_brute_force_count(influence, pool):
    _, labels, predictions, s = pool
    at = influence
    at.slider(key="influence_tail_percent").set_value(20).run()
    _fine(at)
    helpful, harmful = _brute_tails(s, labels, 0.20)
    wrong = predictions != labels
    line = (f"Of the 20% most harmful samples of each class, {np.mean(wrong[harmful]):.1%} are ones the teacher gets "
            f"wrong ({np.mean(wrong[helpful]):.1%} of the most helpful), against {np.mean(wrong):.1%} overall.")
    assert any(m.value == line for m in at.markdown), [m.value for m in at.markdown]
    figure = _figure(at, "tail_disagreement")
    bars = {trace["name"]: trace for trace in figure["data"]}
    classes, tails = bars["teacher wrong"]["x"]
    for (c, tail), share in zip(zip(classes, tails), _array(bars["teacher wrong"]["y"])):
        members = helpful if tail == "helpful" else harmful
        chosen = [j for j in members if labels[j] == int(c)]
        assert share == pytest.approx(100.0 * np.sum(wrong[chosen]) / len(chosen))
    assert len(classes) == 20 and set(tails) == {"helpful", "harmful"}


def test_the_subset_galleries_filter_kept_and_open_samples_csv(session_store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/subset.py").run()
    at.selectbox(key="subset_method").set_value("influence-top").run()
    _fine(at)
    assert _showing(at) == ["showing 16 of 674 (page 1 of 43)", "showing 16 of 673 (page 1 of 43)"]
    at.slider(key="subset_count").set_value(24).run()  # the page's own limit sets both page sizes
    assert _showing(at) == ["showing 24 of 674 (page 1 of 29)", "showing 24 of 673 (page 1 of 29)"]
    at.selectbox(key="subset_pruned_subset").set_value("kept").run()
    assert _showing(at)[1] == "showing 0 of 0, after the filters, of 673" and not _captions(at, "subset_pruned")
    next(b for b in at.button if b.key and b.key.startswith("subset_kept_open_")).click().run()
    _fine(at)
    fields = _fields(at)
    assert fields["kept"] == "True" and {"u", "inclusion_probability", "class_name", "confidence"} <= set(fields)

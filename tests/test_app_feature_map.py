"""The Feature map as a linked exploration view (AppTest, digits): readable colour scales, pruned
points in sight, a title that names what is drawn, a lasso (faked through the chart's session state)
that filters the histogram, the per-class table and the gallery together, tags stored per pool, and
state that survives page changes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.elements.arrow import DataframeSelectionSerde  # noqa: E402
from streamlit.elements.plotly_chart import PlotlyChartSelectionSerde  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
if str(ROOT) not in sys.path:  # the app's glue (pages/_studio) imports from the project root
    sys.path.insert(0, str(ROOT))
TIMEOUT = 900  # the first page load trains the digits teacher (seconds alone; many minutes on a loaded machine)
N = 1347  # digits training split


from app_support import figures, navigation_routing, plotly_array  # noqa: E402, F401  (autouse: every run goes through app.py)


def _fine(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _map(session_store) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/feature_map.py").run()
    return _fine(at)


@pytest.fixture
def app(session_store):
    return _map(session_store)


_figures = figures


_array = plotly_array


def _shown_ids(at: AppTest) -> list[str]:
    """Ids of the selection gallery's images (each caption is a button keyed by its pool row)."""
    from ifbeta.data import datasets

    ids = datasets.load("digits", "train").ids
    return [ids[int(b.key.rsplit("_", 1)[1])] for b in at.button if b.key and b.key.startswith("map_gallery_open_")]


def _labels_and_scores(at: AppTest) -> tuple[dict[str, int], dict[str, float]]:
    """id -> class (from the class-coloured map) and id -> raw s (from the raw-s colouring)."""
    at.radio(key="map_colour").set_value("class").run()
    labels = {i: c for c, trace in enumerate(_figures(at)[0]["data"]) for i in trace["customdata"]}
    at.radio(key="map_colour").set_value("influence score").run()
    at.radio(key="map_influence_scale").set_value("raw s (clipped at 1–99%)").run()
    trace = _figures(at)[0]["data"][0]
    scores = dict(zip(trace["customdata"], _array(trace["marker"]["color"])))
    at.radio(key="map_influence_scale").set_value("within-class percentile").run()
    at.radio(key="map_colour").set_value("class").run()
    return labels, scores


def _percentile(labels: dict[str, int], scores: dict[str, float]) -> dict[str, float]:
    """Brute force: 100 * (samples of the class below + half the ties) / (class size - 1)."""
    out = {}
    for i, c in labels.items():
        mates = np.array([scores[j] for j, d in labels.items() if d == c])
        below, ties = (mates < scores[i]).sum(), (mates == scores[i]).sum() - 1
        out[i] = 100.0 * (below + ties / 2) / (len(mates) - 1)
    return out


def _lasso(at: AppTest, ids: list[str]) -> AppTest:
    points = [{"curve_number": 0, "point_number": k, "point_index": k, "x": 0.0, "y": 0.0, "customdata": i}
              for k, i in enumerate(ids)]
    selection = {"selection": {"points": points, "point_indices": list(range(len(ids))), "box": [], "lasso": []}}
    at.session_state["map_chart"] = PlotlyChartSelectionSerde().deserialize(json.dumps(selection))
    return _fine(at.run())


def _click_row(at: AppTest, row: int | None) -> AppTest:
    key = f"map_class_table_{at.session_state['map_selection_version']}"
    rows = [] if row is None else [row]
    at.session_state[key] = DataframeSelectionSerde().deserialize(
        json.dumps({"selection": {"rows": rows, "columns": [], "cells": []}}))
    return _fine(at.run())


def _some_ids(labels: dict[str, int], per_class: dict[int, int]) -> list[str]:
    chosen = []
    for c, count in per_class.items():
        chosen += sorted(i for i, d in labels.items() if d == c)[:count]
    return chosen


def test_influence_colours_by_within_class_percentile_by_default(app):
    labels, scores = _labels_and_scores(app)
    assert len(labels) == len(scores) == N
    at = app
    at.radio(key="map_colour").set_value("influence score").run()
    assert at.radio(key="map_influence_scale").value == "within-class percentile"
    figure = _figures(_fine(at))[0]
    marker = figure["data"][0]["marker"]
    title = marker["colorbar"]["title"]["text"].replace("<br>", " ")
    assert "within-class percentile of s" in title and "100 = most helpful" in title
    assert (marker["cmin"], marker["cmax"]) == (0, 100) and marker["colorscale"]
    assert figure["layout"]["showlegend"] is False  # the colour bar has the right margin to itself
    shown = dict(zip(figure["data"][0]["customdata"], _array(marker["color"])))
    expected = _percentile(labels, scores)
    np.testing.assert_allclose([shown[i] for i in sorted(shown)], [expected[i] for i in sorted(shown)], atol=1e-9)

    at.radio(key="map_influence_scale").set_value("raw s (clipped at 1–99%)").run()
    marker = _figures(_fine(at))[0]["data"][0]["marker"]
    values = np.array(list(scores.values()))
    bound = max(abs(np.percentile(values, 1, method="nearest")), abs(np.percentile(values, 99, method="nearest")))
    assert marker["cmin"] == pytest.approx(-bound) and marker["cmax"] == pytest.approx(bound)
    assert bound < np.abs(values).max()  # an outlier no longer sets the scale

    at.radio(key="map_colour").set_value("inclusion probability").run()
    marker = _figures(_fine(at))[0]["data"][0]["marker"]
    p = _array(marker["color"])
    assert (marker["cmin"], marker["cmax"]) == tuple(np.percentile(p, [1, 99], method="nearest"))


def test_pruned_points_stay_visible_with_counts(app):
    at = app
    at.session_state["subset_method"] = "influence-top"
    at.radio(key="map_colour").set_value("kept / pruned").run()
    traces = _figures(_fine(at))[0]["data"]
    assert [t["name"] for t in traces] == ["pruned", "kept"]  # pruned beneath ...
    pruned, kept = traces[0]["marker"], traces[1]["marker"]
    assert pruned["size"] > kept["size"] and pruned["opacity"] == 1 and kept["opacity"] < 1  # ... but never hidden
    counts = len(traces[1]["customdata"]), len(traces[0]["customdata"])
    assert any(f"{counts[0]:,} kept" in c.value and f"{counts[1]:,} pruned" in c.value for c in at.caption)
    assert sum(counts) == N
    at.slider(key="map_opacity").set_value(0.3).run()
    at.slider(key="map_point_size").set_value(8).run()
    traces = _figures(_fine(at))[0]["data"]
    assert traces[1]["marker"]["opacity"] == 0.3 and traces[1]["marker"]["size"] == 8 and traces[0]["marker"]["size"] == 10


def test_title_says_pca_while_umap_is_not_computed(app):
    at = app
    assert _figures(at)[0]["layout"]["title"]["text"] == "PCA of the teacher features"
    at.session_state["umap_neighbours"] = 7  # settings no other test computes
    at.radio(key="map_method").set_value("UMAP").run()
    title = _figures(_fine(at))[0]["layout"]["title"]["text"]
    assert title.startswith("PCA of the teacher features") and "UMAP not computed yet" in title
    assert any("not computed yet" in i.value for i in at.info)
    assert [b.label for b in at.button if b.label == "Compute UMAP"] == ["Compute UMAP"]


@pytest.mark.slow
def test_computing_umap_removes_its_notice_and_button(app):
    at = app
    at.session_state["umap_neighbours"] = 6
    at.radio(key="map_method").set_value("UMAP").run()
    next(b for b in at.button if b.label == "Compute UMAP").click().run()
    _fine(at)
    assert _figures(at)[0]["layout"]["title"]["text"] == "UMAP of the teacher features"
    assert not any("not computed yet" in i.value for i in at.info)
    assert not [b for b in at.button if b.label == "Compute UMAP"]
    at.switch_page("pages/influence.py").run()
    _fine(at.switch_page("pages/feature_map.py").run())  # read back from the store after a page change
    assert _figures(at)[0]["layout"]["title"]["text"] == "UMAP of the teacher features"
    assert at.radio(key="map_method").value == "UMAP" and at.slider(key="umap_neighbours").value == 6


def test_selection_filters_histogram_table_and_gallery(app):
    at = app
    labels, scores = _labels_and_scores(at)
    chosen = _some_ids(labels, {1: 5, 4: 9, 7: 3})
    _lasso(at, chosen)
    assert any("Selection: 17 samples" in s.value for s in at.subheader)
    assert sorted(_shown_ids(at)) == sorted(chosen)

    table = at.dataframe[0].value
    assert list(table["class"]) == ["1", "4", "7"] and list(table["selected"]) == [5, 9, 3]
    totals = np.bincount(list(labels.values()), minlength=10)
    np.testing.assert_allclose(table["share of class"], [5 / totals[1], 9 / totals[4], 3 / totals[7]])
    percentile = _percentile(labels, scores)
    expected = [np.mean([percentile[i] for i in chosen if labels[i] == c]) for c in (1, 4, 7)]
    np.testing.assert_allclose(table["mean percentile"], expected, atol=1e-9)

    histogram = next(f for f in _figures(at) if f["data"][0]["type"] == "bar")
    pool, selected = histogram["data"]
    values = np.array([scores[i] for i in sorted(scores)])
    low, high = np.percentile(values, [1, 99], method="nearest")
    edges = np.linspace(low, high, len(_array(pool["x"])) + 1)
    brute = np.histogram(np.clip([scores[i] for i in chosen], low, high), bins=edges)[0]
    np.testing.assert_array_equal(_array(selected["customdata"]), brute)
    np.testing.assert_array_equal(_array(pool["customdata"]), np.histogram(np.clip(values, low, high), bins=edges)[0])
    assert _array(pool["customdata"]).sum() == N and _array(selected["customdata"]).sum() == 17

    _click_row(at, 1)  # class 4
    assert sorted(_shown_ids(at)) == sorted(i for i in chosen if labels[i] == 4)
    _click_row(at, None)
    assert len(_shown_ids(at)) == 17

    at.switch_page("pages/influence.py").run()
    _fine(at.switch_page("pages/feature_map.py").run())  # the selection survives a page change
    assert sorted(_shown_ids(at)) == sorted(chosen) and at.session_state["map_selection"] == sorted(chosen)
    marked = [t["customdata"][k] for t in _figures(at)[0]["data"]
              for k in _array(t.get("selectedpoints", [])).astype(int)]
    assert sorted(marked) == sorted(chosen)  # the fresh chart shows the kept selection
    next(b for b in at.button if b.label == "Clear selection").click().run()
    _fine(at.run())  # the stale chart event is not adopted again
    assert at.session_state["map_selection"] == [] and not _shown_ids(at)
    assert any("No selection yet" in c.value for c in at.caption)


def test_tags_are_stored_per_pool_and_reach_the_subset_page(app, session_store):
    from ifbeta.data import datasets as data
    from ifbeta.subsets import tags

    pool = data.load("digits", "train", store=session_store)
    at = app
    labels, _ = _labels_and_scores(at)
    chosen = _some_ids(labels, {2: 4, 3: 2})
    before = tags.load(session_store, pool.fingerprint)
    _lasso(at, chosen)
    at.selectbox(key="map_tag").set_value("custom ...").run()
    at.text_input(key="map_custom_tag").set_value("blurry map test").run()
    at.button(key="map_tag_add").click().run()
    assert any("tagged 6 samples 'blurry map test'" in s.value for s in _fine(at).success)
    assert tags.load(session_store, pool.fingerprint)["blurry map test"] == sorted(chosen)
    assert any("**blurry map test** 6 (6 selected)" in c.value for c in at.caption)
    at.run()
    assert any("**blurry map test** 6 (6 selected)" in c.value for c in at.caption)  # survives a rerun

    fresh = _map(session_store)  # a new session on the same store (no selection: that lives in a session)
    _lasso(fresh, chosen[:3])
    assert any("**blurry map test** 6 (3 selected)" in c.value for c in fresh.caption)

    excluded = len(before.get(tags.EXCLUDE, []))
    fresh.selectbox(key="map_tag").set_value(tags.EXCLUDE).run()
    fresh.button(key="map_tag_add").click().run()
    _fine(fresh.switch_page("pages/subset.py").run())
    box = [c for c in fresh.checkbox if c.key == "subset_exclude"]
    assert box and f"({excluded + 3:,})" in box[0].label  # the Subset page sees the new tags at once

    _fine(fresh.switch_page("pages/feature_map.py").run())
    fresh.button(key="map_tag_remove").click().run()  # untag the 3 (exclude) ...
    fresh.selectbox(key="map_tag").set_value("custom ...").run()
    fresh.text_input(key="map_custom_tag").set_value("blurry map test").run()
    _lasso(fresh, chosen)
    fresh.button(key="map_tag_remove").click().run()  # ... and the custom tag
    _fine(fresh)
    assert tags.load(session_store, pool.fingerprint) == before


def test_bad_tag_is_a_message_on_the_page(app):
    at = app
    labels, _ = _labels_and_scores(at)
    _lasso(at, _some_ids(labels, {0: 2}))
    at.selectbox(key="map_tag").set_value("custom ...").run()
    at.text_input(key="map_custom_tag").set_value("   ").run()
    at.button(key="map_tag_add").click().run()
    assert not at.exception and any("a tag needs a name" in e.value for e in at.error)


def test_projection_colouring_and_selection_survive_page_changes(app):
    at = app
    at.session_state["umap_neighbours"] = 7
    at.radio(key="map_method").set_value("UMAP").run()
    at.radio(key="map_colour").set_value("influence score").run()
    for page in ("influence", "subset", "policy", "setup"):
        at.switch_page(f"pages/{page}.py").run()
        _fine(at.switch_page("pages/feature_map.py").run())
        assert at.radio(key="map_method").value == "UMAP" and at.radio(key="map_colour").value == "influence score"

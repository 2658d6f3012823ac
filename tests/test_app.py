"""Headless tests of every page with streamlit.testing.v1.AppTest, on digits.

They share the session's artefact store (conftest ``session_store``), so the digits teacher is
trained once for the whole test session; Streamlit's caches are process-wide, so later tests reuse
the opened workspace. Settings are kept small (few outer steps, few refits, one epoch).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from app_support import APP, TIMEOUT, figures, navigation_routing, plotly_array  # noqa: E402, F401  (autouse)
from streamlit.elements.plotly_chart import PlotlyChartSelectionSerde  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from ifbeta.subsets.query import short_id  # noqa: E402


@pytest.fixture
def app(session_store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


_figures = figures


_array = plotly_array


def _captions(at: AppTest) -> list[str]:
    """The gallery captions (each caption is the button that opens its sample), in page order."""
    return [b.label for b in at.button if b.key and "_open_" in b.key]


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} among {[m.label for m in at.metric]}"
    return found[0]


def test_setup_page_shows_dataset_and_teacher(app):
    assert app.title[0].value == "Setup"
    assert _metric(app, "Training samples") == "1,347"
    assert _metric(app, "Classes") == "10"
    assert float(_metric(app, "Teacher test top-1").rstrip("%")) > 80
    figures = _figures(app)
    assert figures and figures[0]["data"][0]["type"] == "bar" and len(figures[0]["data"][0]["y"]) == 10
    assert len(app.get("image")) >= 10  # one row of sample images per class
    assert any("Ready" in s.value for s in app.success)


def test_setup_reports_engine_errors_on_the_page(app, tmp_path):
    app.text_input(key="checkpoint_path").set_value(str(tmp_path / "missing.safetensors")).run()
    app.button[0].click().run()  # "Use this checkpoint"
    assert not app.exception
    assert any("no file at" in e.value for e in app.error)
    app.selectbox(key="dataset_choice").set_value("imagefolder").run()
    assert not app.exception and any("Enter the ImageFolder root" in i.value for i in app.info)
    app.text_input(key="imagefolder_path").set_value(str(tmp_path / "no-such-folder")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("does not exist" in e.value for e in app.error)
    for name in ("influence", "feature_map", "subset"):  # every page stops with the message, no traceback
        app.switch_page(f"pages/{name}.py").run()
        assert not app.exception and any("does not exist" in e.value for e in app.error)


def test_setup_trains_a_teacher_and_switches_to_it(app):
    app.number_input(key="train_epochs").set_value(1)
    app.selectbox(key="train_arch").set_value("cnn-tiny").run()
    next(b for b in app.button if b.label == "Train teacher").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    teacher = app.session_state["teacher"]
    assert teacher.endswith("-cnn-tiny-e1.safetensors") and Path(teacher).is_file()
    assert app.selectbox(key="teacher").value == teacher  # the sidebar shows the new teacher
    assert _metric(app, "Architecture") == "cnn-tiny"
    assert any("trained teacher stored" in s.value for s in app.success)


def test_uploads_are_stored_under_the_cache_and_size_limited(session_store, digits, tmp_path, monkeypatch):
    from ifbeta.models import zoo
    from pages._studio import steps

    train, _ = digits
    model = zoo.build("cnn-tiny", num_classes=10, in_channels=1)
    weights = zoo.save_checkpoint(model, tmp_path / "t.safetensors", arch="cnn-tiny", num_classes=10,
                                  in_channels=1).read_bytes()
    saved = steps.save_upload("my teacher.safetensors", weights, train)
    assert saved.parent == session_store.root / "uploads" and saved.read_bytes() == weights
    assert saved.name.endswith("-my_teacher.safetensors")
    assert steps.save_upload("my teacher.safetensors", weights, train) == saved  # content-addressed
    with pytest.raises(ValueError, match="unsupported"):
        steps.save_upload("notes.txt", b"x", train)
    monkeypatch.setattr(steps, "MAX_UPLOAD_MB", 0)
    with pytest.raises(ValueError, match="limited"):
        steps.save_upload("big.pt", b"x", train)


def test_influence_page(app):
    at = _page(app, "influence")
    types = [figure["data"][0]["type"] for figure in _figures(at)]
    assert types[:4] == ["histogram", "violin", "bar", "scattergl"]
    scatter = _figures(at)[3]
    ids = [i for trace in scatter["data"] for i in trace.get("customdata", [])]
    assert len(ids) == 1347 and ids[0].startswith("digits/")
    captions = _captions(at)
    assert len(captions) == 64 and all(c.count(" · ") == 2 for c in captions)  # 32 helpful + 32 harmful
    at.number_input(key="loo_samples").set_value(20)
    _button(at, "Run the leave-one-out check").click().run()
    assert not at.exception and not at.error
    assert -1 <= float(_metric(at, "Spearman")) <= 1 and _metric(at, "Samples") == "20"
    assert _figures(at)[-1]["data"][0]["type"] == "scatter"


def test_feature_map_selection_opens_gallery(app):
    at = _page(app, "feature_map")
    figure = _figures(at)[0]
    assert {trace["type"] for trace in figure["data"]} == {"scattergl"}
    ids = [i for trace in figure["data"] for i in trace["customdata"]]
    assert len(set(ids)) == 1347 and all(i.startswith("digits/") for i in ids)
    chosen = [figure["data"][2]["customdata"][0], figure["data"][5]["customdata"][3], figure["data"][7]["customdata"][1]]
    points = [{"curve_number": 0, "point_number": 0, "point_index": 0, "x": 0.0, "y": 0.0, "customdata": c}
              for c in chosen]
    selection = {"selection": {"points": points, "point_indices": [0, 0, 0], "box": [], "lasso": []}}
    at.session_state["map_chart"] = PlotlyChartSelectionSerde().deserialize(json.dumps(selection))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Selection: 3 samples" in s.value for s in at.subheader)
    shown = [c.split(" ")[0] for c in _captions(at)]
    assert sorted(shown) == sorted(short_id(c) for c in chosen)
    at.radio(key="map_colour").set_value("influence score").run()
    figure = _figures(at)[0]
    marker = figure["data"][0]["marker"]  # within-class percentile of s by default (tests/test_app_feature_map.py)
    assert len(figure["data"]) == 1 and (marker["cmin"], marker["cmax"]) == (0, 100)


def test_large_pools_show_downsampled_scatters_and_the_map_can_show_all(app, monkeypatch):
    """Above plots.DISPLAY_LIMIT samples (20,000; 500 here) the scatters draw a class-stratified sample."""
    from ifbeta import plots

    monkeypatch.setattr(plots, "DISPLAY_LIMIT", 500)

    def scatter_ids(figure: dict) -> list[str]:
        return [i for trace in figure["data"] if trace["type"] == "scattergl" for i in trace["customdata"]]

    at = _page(app, "feature_map")
    ids = scatter_ids(_figures(at)[0])
    assert len(ids) == len(set(ids)) and abs(len(ids) - 500) <= 10
    assert any("of 1,347 points" in c.value for c in at.caption)
    at.checkbox(key="map_show_all").check().run()
    assert not at.exception and len(set(scatter_ids(_figures(at)[0]))) == 1347
    assert not any("of 1,347 points" in c.value for c in at.caption)

    at = _page(at, "influence")
    scatter = next(f for f in _figures(at) if f["data"][0]["type"] == "scattergl")
    assert abs(len(set(scatter_ids(scatter))) - 500) <= 10
    assert any("of 1,347 samples" in c.value for c in at.caption)

    at = _page(at, "policy")
    teaching = next(f for f in _figures(at) if any(t.get("name") == "kept ranks" for t in f["data"]))
    assert abs(len(set(scatter_ids(teaching))) - 500) <= 10
    assert any("of 1,347 samples" in c.value for c in at.caption)


def test_policy_page_learns_and_teaches(app):
    at = _page(app, "policy")
    assert [b.label for b in at.button][0] == "Learn the policy"
    at.session_state["policy_steps"] = 3
    at.session_state["policy_shrinkage"] = 0.0
    at.multiselect(key="policy_ratios").set_value([0.3, 0.7])
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert sorted(table["ratio"]) == [0.3, 0.7] and (table["steps"] <= 3).all()
    figures = _figures(at)
    names = [trace.get("name") for trace in figures[0]["data"]]
    assert "r=0.3" in names and "r=0.7" not in names  # the path of the ratio whose landscape is shown
    curves = [trace.get("name") for figure in figures for trace in figure["data"]]
    assert "J r=0.3" in curves and "J r=0.7" in curves  # the outer curves of both ratios
    assert any(figure.get("frames") for figure in figures)  # the Beta pdf animation
    compute = [b for b in at.button if b.label.startswith("Compute the landscape")]
    if compute:  # absent when another test file stored this landscape in the session store first
        compute[0].click().run()  # 5 x 5 grid
    assert not at.exception and not at.error
    path = _figures(at)[0]
    assert path["data"][0]["type"] == "heatmap" and len(path["data"][0]["z"]) == 5
    at.slider(key="teach_alpha").set_value(5.0)
    at.slider(key="teach_beta").set_value(0.5).run()
    assert not at.exception
    assert float(_metric(at, "Mean rank u of kept")) > 0.6  # alpha >> beta keeps the most helpful
    at.switch_page("pages/policy.py").run()  # a revisit reads the learned policies from the store
    assert len(at.dataframe) == 1 and sorted(at.dataframe[0].value["ratio"]) == [0.3, 0.7]


def test_feature_map_and_policy_page_preview_the_same_policy(app):
    """Both pages draw policy.preview with the Policy page's axis, stratification and seed."""
    for key, value in {"policy_axis": "entropy", "policy_stratify": False, "teach_alpha": 3.0, "teach_beta": 0.7,
                       "teach_ratio": 0.6}.items():
        app.session_state[key] = value
    at = _page(app, "feature_map")
    at.radio(key="map_colour").set_value("inclusion probability").run()
    assert not at.exception and not at.error
    trace = _figures(at)[0]["data"][0]
    on_map = dict(zip(trace["customdata"], _array(trace["marker"]["color"])))

    at = _page(at, "policy")
    assert at.slider(key="teach_alpha").value == 3.0 and at.slider(key="teach_ratio").value == 0.6
    teaching = next(f for f in _figures(at) if any(t.get("name") == "kept ranks" for t in f["data"]))
    on_policy = {i: p for t in teaching["data"] if t["type"] == "scattergl"
                 for i, p in zip(t["customdata"], _array(t["y"]))}
    assert len(on_map) == len(on_policy) == 1347 and set(on_map) == set(on_policy)
    ids = sorted(on_map)
    np.testing.assert_allclose([on_map[i] for i in ids], [on_policy[i] for i in ids], rtol=1e-6)
    assert sum(on_map.values()) == pytest.approx(1347 - round(0.6 * 1347), abs=0.5)  # sums to k

    at.session_state["policy_axis"] = "influence"  # the settings matter: another axis, another preview
    at = _page(at, "feature_map")
    trace = _figures(at)[0]["data"][0]
    moved = dict(zip(trace["customdata"], _array(trace["marker"]["color"])))
    assert np.abs(np.array([moved[i] - on_map[i] for i in ids])).max() > 0.1


def test_subset_page_downloads_overlap_and_export(app, tmp_path):
    at = _page(app, "subset")
    at.selectbox(key="subset_method").set_value("influence-top").run()
    assert not at.exception and not at.error
    assert _metric(at, "Kept") == "674 of 1,347"
    labels = [d.label for d in at.get("download_button")]
    assert labels == ["Download indices.npy", "Download samples.csv", "Download manifest.json",
                      "Download zip of all three"]
    heatmap = [f for f in _figures(at) if f["data"][0]["type"] == "heatmap"]
    assert heatmap and heatmap[0]["data"][0]["x"][0] == "influence-top"
    assert len(_captions(at)) == 32
    at.text_input(key="export_path").set_value(str(tmp_path / "export"))
    _button(at, "Export").click().run()  # the export form's submit button
    assert any("exported 674 images" in s.value for s in at.success), [e.value for e in at.error]
    assert len(list((tmp_path / "export" / "train").rglob("*.png"))) == 674
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    at.text_input(key="export_path").set_value(str(blocker / "inside"))
    _button(at, "Export").click().run()
    assert not at.exception and at.error  # the OS error is shown on the page
    at.switch_page("pages/feature_map.py").run()  # the subset chosen here colours the feature map
    at.radio(key="map_colour").set_value("kept / pruned").run()
    assert [t["name"] for t in _figures(at)[0]["data"]] == ["pruned", "kept"]
    assert any("influence-top" in c.value for c in at.caption)


def test_distill_page_launches_a_background_run(app, session_store):
    at = _page(app, "subset")
    at.selectbox(key="subset_method").set_value("random-balanced").run()
    at = _page(at, "distill")
    at.selectbox(key="distill_subset").set_value(next(o for o in at.selectbox(key="distill_subset").options
                                                      if "random-balanced" in o))
    at.number_input(key="distill_epochs").set_value(1)
    at.checkbox(key="distill_random").uncheck()
    at.checkbox(key="distill_full").uncheck()
    at.number_input(key="distill_seeds").set_value(1)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    launched = sorted((session_store.root / "app-runs").glob("*.json"))
    assert launched
    out = Path(json.loads(launched[-1].read_text())["out"])
    deadline = time.time() + 240
    while not (out / "metrics.json").is_file() and time.time() < deadline:
        time.sleep(2)
    assert (out / "metrics.json").is_file(), (session_store.root / "app-runs" / f"{out.name}.log").read_text()[-2000:]
    at.run()
    table = at.dataframe[0].value
    row = table[table["name"] == out.name]
    assert len(row) == 1 and row["status"].iloc[0] == "finished" and 0 <= row["test_top1"].iloc[0] <= 1
    assert np.isfinite(row["test_top1"].iloc[0])

    at.number_input(key="distill_epochs").set_value(500)  # a long run, cancelled from the page
    at.button[0].click().run()
    cancel = [b for b in at.button if b.label == "Cancel"]
    assert len(cancel) == 1, [b.label for b in at.button]
    record = json.loads(sorted((session_store.root / "app-runs").glob("*.json"), key=lambda p: p.stat().st_mtime)[-1]
                        .read_text())
    cancel[0].click().run()
    assert not at.exception
    assert not Path(f"/proc/{record['pid']}").exists() or "Z" in Path(f"/proc/{record['pid']}/stat").read_text().split()[2]
    assert json.loads((session_store.root / "app-runs" / f"{record['name']}.json").read_text())["cancelled"]
    assert not [b for b in at.button if b.label == "Cancel"]

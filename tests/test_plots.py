"""Figure builders: trace types, ids in customdata, shapes; the pure display helpers."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from ifbeta import plots

RNG = np.random.default_rng(0)
N, C = 60, 3
LABELS = np.repeat(np.arange(C), N // C)
IDS = [f"s/{i}" for i in range(N)]
NAMES = ["a", "b", "c"]


def _ids_of(figure: go.Figure) -> list[str]:
    return [i for trace in figure.data if trace.customdata is not None for i in trace.customdata]


def test_sample_map_by_class_one_scattergl_per_class_with_ids():
    coords = RNG.normal(size=(N, 2))
    figure = plots.sample_map(coords, IDS, labels=LABELS, class_names=NAMES)
    assert [type(t) for t in figure.data] == [go.Scattergl] * C
    assert [t.name for t in figure.data] == NAMES
    assert sorted(_ids_of(figure)) == sorted(IDS)
    # ids follow their points, not point order: trace 1 holds exactly class 1's ids and coordinates
    members = np.flatnonzero(LABELS == 1)
    assert list(figure.data[1].customdata) == [IDS[i] for i in members]
    np.testing.assert_allclose(figure.data[1].x, coords[members, 0])
    assert figure.layout.dragmode == "lasso"


def test_sample_map_kept_and_values_modes():
    coords = RNG.normal(size=(N, 2))
    kept = np.arange(N) % 4 == 0
    figure = plots.sample_map(coords, IDS, kept=kept)
    assert [t.name for t in figure.data] == ["pruned", "kept"]
    assert set(figure.data[1].customdata) == {IDS[i] for i in np.flatnonzero(kept)}
    values = RNG.normal(size=N)
    figure = plots.sample_map(coords, IDS, values=values, value_name="s", midpoint=0.0)
    assert len(figure.data) == 1 and isinstance(figure.data[0], go.Scattergl)
    assert list(figure.data[0].customdata) == IDS
    assert figure.data[0].marker.cmid == 0.0
    with pytest.raises(ValueError):
        plots.sample_map(coords[:, :1], IDS)


def test_influence_figures():
    scores = RNG.normal(size=N)
    histogram = plots.score_histogram(scores)
    assert all(isinstance(t, go.Histogram) for t in histogram.data)
    assert sum(len(t.x) for t in histogram.data) == N
    violin = plots.class_violin(scores, LABELS, NAMES)
    assert [type(t) for t in violin.data] == [go.Violin] * C
    box = plots.class_violin(scores, LABELS, NAMES, kind="box")
    assert [type(t) for t in box.data] == [go.Box] * C
    scatter = plots.confidence_scatter(RNG.random(N), scores, LABELS, NAMES, IDS)
    assert all(isinstance(t, go.Scattergl) for t in scatter.data)
    assert sorted(_ids_of(scatter)) == sorted(IDS)
    loo = plots.loo_scatter([0.1, -0.2, 0.3], [0.09, -0.25, 0.31])
    assert loo.data[0].mode == "markers" and loo.data[1].name == "y = x"


def test_policy_figures():
    trace = [{"step": s, "alpha": 1 + 0.1 * s, "beta": 1 - 0.05 * s, "J": 1.0 / (s + 1), "objective": 1.1 / (s + 1),
              "proxy_val_accuracy": 0.9} for s in range(5)]
    landscape = {"alpha": [0.5, 1, 2], "beta": [0.5, 1, 2], "J": np.arange(9.0).reshape(3, 3).tolist()}
    path = plots.policy_path({0.5: trace, 0.7: trace[:2]}, landscape=landscape)
    assert isinstance(path.data[0], go.Heatmap)
    assert path.layout.xaxis.type == "log" and path.layout.yaxis.type == "log"
    lines = [t for t in path.data if isinstance(t, go.Scatter) and t.name and t.name.startswith("r=")]
    assert [t.name for t in lines] == ["r=0.5", "r=0.7"] and len(lines[0].x) == 5
    curves = plots.objective_curves({0.5: trace})
    assert len(curves.data) == 3
    animation = plots.beta_pdf_animation(trace)
    assert len(animation.frames) == 5 and len(animation.layout.sliders[0].steps) == 5
    pdf = plots.beta_pdf(2.0, 1.0)
    assert np.isclose(np.trapezoid(pdf.data[0].y, pdf.data[0].x), 1.0, atol=0.02)
    histogram = plots.class_histogram([3, 4, 5], NAMES, totals=[6, 6, 6])
    assert [t.name for t in histogram.data] == ["pool", "kept"]


def test_teaching_subset_and_distill_figures():
    u = RNG.random(N)
    kept = u > 0.5
    figure = plots.teaching_figure(u, np.where(kept, 0.9, 0.1), kept, 2.0, 1.0, ids=IDS)
    scatters = [t for t in figure.data if isinstance(t, go.Scattergl)]
    assert {t.name for t in scatters} == {"kept", "pruned"}
    assert sorted(_ids_of(figure)) == sorted(IDS)
    shown = np.arange(0, len(IDS), 2)  # a large pool draws only a sample; the histogram still counts all kept
    figure = plots.teaching_figure(u, np.where(kept, 0.9, 0.1), kept, 2.0, 1.0, ids=IDS, shown=shown)
    assert sorted(_ids_of(figure)) == sorted(np.asarray(IDS, dtype=object)[shown])
    assert len(next(t for t in figure.data if isinstance(t, go.Histogram)).x) == kept.sum()
    bars = plots.kept_pruned_bars([1, 2, 3], [3, 2, 1], NAMES)
    assert bars.layout.barmode == "stack" and len(bars.data) == 2
    heatmap = plots.jaccard_heatmap(["x", "y"], [np.array([1, 2, 3]), np.array([2, 3, 4])])
    np.testing.assert_allclose(heatmap.data[0].z, [[1, 0.5], [0.5, 1]])
    curves = plots.training_curves({"run": [{"epoch": 1, "test_top1": 0.5}, {"epoch": 2, "test_top1": 0.6}],
                                    "empty": []})
    assert len(curves.data) == 1 and list(curves.data[0].y) == [0.5, 0.6]


def test_display_helpers():
    grey = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    big = plots.thumbnail(grey, 64)
    assert big.shape == (64, 64) and big[0, 7] == grey[0, 0, 0] and big[0, 8] == grey[0, 0, 1]
    colour = np.zeros((3, 32, 32), dtype=np.uint8)
    assert plots.thumbnail(colour, 64).shape == (64, 64, 3)
    chosen = plots.downsample(LABELS, 30, seed=0)
    assert len(chosen) == 30 and np.all(np.diff(chosen) > 0)
    assert np.bincount(LABELS[chosen]).tolist() == [10, 10, 10]
    assert plots.downsample(LABELS, 1000).tolist() == list(range(N))
    np.testing.assert_allclose(plots.jaccard_matrix([[1, 2], [1, 2], [3]]), [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_symlog_scale_keeps_sign_order_and_every_value():
    """The symlog axis is odd and strictly monotone (order and sign of s kept), linear near 0, unclipped, and its
    tick labels name values of s at their true positions."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.0, 1e-3, 200), [5.0, -2.0]])  # outliers ~1000x the typical size
    scale = plots.score_scale(scores, scale="symlog")
    m = float(np.median(np.abs(scores)))
    order = np.argsort(scores)
    assert np.all(np.diff(scale.pool[order]) > 0) and np.array_equal(np.sign(scale.pool), np.sign(scores))
    assert np.allclose(plots.symlog(-scores, m), -scale.pool)  # odd
    assert scale.pool.max() == pytest.approx(np.arcsinh(5.0 / m)) and scale.note == "" and scale.zero == 0.0
    tiny = np.array([m * 1e-3])
    assert plots.symlog(tiny, m)[0] == pytest.approx(1e-3, rel=1e-6)  # linear near zero
    positions, labels = scale.ticks
    assert len(positions) == len(labels) and "0" in labels
    for position, label in zip(positions, labels):
        assert np.arcsinh(float(label) / m) == pytest.approx(position, rel=0.06, abs=1e-9)  # 2 significant digits
    assert max(float(v) for v in labels) >= 5.0 and min(float(v) for v in labels) <= -2.0  # every value inside the ticks
    figure = plots.apply_ticks(plots.score_histogram(scale.pool, helpful=scores > 0), scale)
    assert list(figure.layout.xaxis.ticktext) == list(labels)
    with pytest.raises(ValueError, match="> 0"):
        plots.symlog(scores, 0.0)


def test_score_scales_percentile_and_clipped_raw():
    scores = np.concatenate([np.linspace(-1.0, 1.0, 99), [1e6]])  # one outlier would set a raw axis
    pooled = np.argsort(np.argsort(scores)) / (len(scores) - 1) * 100
    scale = plots.score_scale(scores, scale="percentile", pool_percentile=pooled, class_percentile=pooled / 2)
    assert scale.pool_title == plots.POOL_PERCENTILE_TITLE and scale.sample_title == plots.CLASS_PERCENTILE_TITLE
    assert scale.pool is not None and np.array_equal(scale.pool, pooled) and np.array_equal(scale.sample, pooled / 2)
    harmful = np.sum(scores <= 0)  # 50 values <= 0: s = 0 lies between percentile ranks 49 and 50
    assert scale.zero == pytest.approx(100 * (harmful - 0.5) / (len(scores) - 1)) and scale.note == ""
    raw = plots.score_scale(scores, scale="raw")
    low, high = np.percentile(scores, [1, 99], method="nearest")
    assert np.array_equal(raw.pool, np.clip(scores, low, high)) and raw.pool.max() < 2
    assert raw.note.startswith("2 of 100 samples lie outside percentiles 1–99") and raw.zero == 0.0
    assert raw.pool_title.startswith(plots.SCORE_TITLE)
    with pytest.raises(ValueError, match="unknown scale"):
        plots.score_scale(scores, scale="log")
    with pytest.raises(ValueError, match="needs pool_percentile"):
        plots.score_scale(scores)
    assert plots.quantile_range(scores, low=0, high=50) == (-1.0, np.percentile(scores, 50, method="nearest"))
    assert plots.quantile_range(np.array([-3.0, 1.0]), low=0, high=100, symmetric_about=0.0) == (-3.0, 3.0)
    assert plots.quantile_range(np.array([np.nan])) == (0.0, 1.0)


def test_influence_figures_carry_the_scale_titles():
    values = RNG.random(N) * 100
    histogram = plots.score_histogram(values, helpful=values > 30, axis_title="p", zero=30.0)
    assert histogram.layout.xaxis.title.text == "p" and len(histogram.data[1].x) == np.sum(values > 30)
    by_class = plots.score_histogram(values, labels=LABELS, class_names=NAMES, axis_title="p")
    assert [t.name for t in by_class.data] == [str(n) for n in NAMES]
    assert all(np.array_equal(t.x, values[LABELS == c]) for c, t in enumerate(by_class.data))
    assert by_class.layout.barmode == "stack"
    violin = plots.class_violin(values, LABELS, NAMES, axis_title="p", zero=None)
    assert violin.layout.yaxis.title.text == "p" and not violin.layout.shapes
    scatter = plots.confidence_scatter(RNG.random(N), values, LABELS, NAMES, IDS, axis_title="p", zero=None)
    assert scatter.layout.yaxis.title.text == "p"


def test_tail_disagreement_bars_show_shares_with_counts():
    import pandas as pd

    counts = pd.DataFrame({"class": [0, 1, 0, 1], "class_name": ["a", "b", "a", "b"],
                           "tail": ["most helpful", "most helpful", "most harmful", "most harmful"],
                           "samples": [4, 5, 4, 5], "teacher_right": [4, 4, 1, 5], "teacher_wrong": [0, 1, 3, 0]})
    figure = plots.tail_disagreement_bars(counts, overall=0.1)
    wrong, right = figure.data
    assert wrong.name == "teacher wrong" and right.name == "teacher right"
    assert list(wrong.x[0]) == ["a", "b", "a", "b"] and list(wrong.x[1]) == ["helpful", "helpful", "harmful", "harmful"]
    np.testing.assert_allclose(wrong.y, [0, 20, 75, 0])
    np.testing.assert_allclose(np.asarray(wrong.y) + np.asarray(right.y), 100)
    assert figure.layout.barmode == "stack" and figure.layout.shapes[0].y0 == pytest.approx(10)

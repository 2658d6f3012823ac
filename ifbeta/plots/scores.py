"""Figures of the dataset and of influence scores: class counts, score histogram, per-class
violins, influence against teacher confidence, the tails' teacher disagreement, the
leave-one-out check. Influence is shown on rank percentiles, clipped raw values or a symmetric log
axis of the raw values (``score_scale``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ifbeta.plots.base import class_colour, layout, quantile_range


def class_counts_bar(class_names: Sequence[str], counts: np.ndarray, *, title: str = "Samples per class") -> go.Figure:
    """Bar chart of counts (C,) per class."""
    figure = go.Figure(go.Bar(x=[str(c) for c in class_names], y=np.asarray(counts).tolist(),
                              marker_color=[class_colour(c) for c in range(len(class_names))]))
    return layout(figure, title, xaxis_title="class", yaxis_title="samples", height=300)


SCORE_TITLE = "s = change of validation KD loss if removed (> 0 = helpful)"
POOL_PERCENTILE_TITLE = "percentile of s in the pool (100 = most helpful)"
CLASS_PERCENTILE_TITLE = "within-class percentile of s (100 = most helpful)"
SCALES = ("percentile", "raw", "symlog")
"""How the Influence figures show s: rank percentiles (default; one outlier cannot squash the rest),
raw values clipped to their 1st to 99th percentile, or every raw value on a symmetric log axis."""


@dataclass(frozen=True)
class ScoreScale:
    """What the influence figures plot. pool: (N,) values for the distribution plots (histogram,
    violins) with pool_title; sample: (N,) values for per-sample plots (scatter) with sample_title;
    zero: where s = 0 lies on the pool axis (None when no sample is on one side); note: "" or how
    many points were clipped to the axis."""

    pool: np.ndarray
    pool_title: str
    sample: np.ndarray
    sample_title: str
    zero: float | None
    note: str
    ticks: tuple[tuple[float, ...], tuple[str, ...]] | None = None  # (positions, labels in units of s) or None


def symlog(values: np.ndarray, linear: float) -> np.ndarray:
    """asinh(values / linear): linear within about ``linear`` of 0, logarithmic beyond, odd, monotone, so the
    sign and the order of s are kept while an outlier 1000x the typical size takes only a few units."""
    if not linear > 0:
        raise ValueError(f"the linear range of a symlog axis must be > 0, got {linear}")
    return np.arcsinh(np.asarray(values, dtype=np.float64) / linear)


def symlog_ticks(values: np.ndarray, linear: float) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Tick positions on the symlog axis and their labels in units of s: 0 and +-linear * 10^k for every
    decade the (N,) ``values`` reach."""
    largest = float(np.max(np.abs(values))) if len(values) else linear
    decades = range(int(np.ceil(np.log10(max(largest / linear, 1.0)))) + 1)
    real = [0.0] + [sign * linear * 10.0 ** k for k in decades for sign in (-1.0, 1.0)]
    real = sorted(v for v in real if v == 0.0 or abs(v) <= 10 * largest)
    return tuple(float(v) for v in symlog(np.asarray(real), linear)), tuple(f"{v:.2g}" for v in real)


def apply_ticks(figure: go.Figure, scale: ScoreScale, axis: str = "x") -> go.Figure:
    """Label ``axis`` ("x" or "y") in units of s when ``scale`` has ticks (the symlog scale); else unchanged."""
    if scale.ticks is not None:
        positions, labels = scale.ticks
        (figure.update_xaxes if axis == "x" else figure.update_yaxes)(tickvals=list(positions), ticktext=list(labels))
    return figure


def score_scale(scores: np.ndarray, *, scale: str = "percentile", pool_percentile: np.ndarray | None = None,
                class_percentile: np.ndarray | None = None, clip: tuple[float, float] = (1.0, 99.0)) -> ScoreScale:
    """The axis the influence figures use. ``scale="percentile"`` needs ``pool_percentile`` and
    ``class_percentile`` ((N,) in [0, 100], 100 = most helpful, e.g. from
    ``subsets.query.within_class_percentile``); ``scale="raw"`` plots s clipped to its ``clip``
    percentiles (the clipped points are drawn at the edges and counted in ``note``); ``scale="symlog"``
    plots every s, unclipped, as asinh(s / m) with m the median |s| (``symlog``), ticks in units of s."""
    scores = np.asarray(scores, dtype=np.float64)
    if scale == "percentile":
        if pool_percentile is None or class_percentile is None:
            raise ValueError("the percentile scale needs pool_percentile and class_percentile")
        pool, harmful = np.asarray(pool_percentile, dtype=np.float64), int(np.sum(scores <= 0))
        zero = None if harmful in (0, len(scores)) else float(np.max(pool[scores <= 0]) + np.min(pool[scores > 0])) / 2
        return ScoreScale(pool, POOL_PERCENTILE_TITLE, np.asarray(class_percentile, dtype=np.float64),
                          CLASS_PERCENTILE_TITLE, zero, "")
    if scale == "symlog":
        return _symlog_scale(scores)
    if scale != "raw":
        raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    lower, upper = quantile_range(scores, low=clip[0], high=clip[1])
    clipped = int(np.sum((scores < lower) | (scores > upper)))
    title = f"{SCORE_TITLE}; clipped to percentiles {clip[0]:g}–{clip[1]:g}"
    note = (f"{clipped:,} of {len(scores):,} samples lie outside percentiles {clip[0]:g}–{clip[1]:g} of s "
            f"[{lower:.3g}, {upper:.3g}] and are drawn at its edges" if clipped else "")
    values = np.clip(scores, lower, upper)
    return ScoreScale(values, title, values, title, 0.0 if lower <= 0 <= upper else None, note)


def _symlog_scale(scores: np.ndarray) -> ScoreScale:
    """Every s on asinh(s / m), m = median |s| over the nonzero scores (1 when all are 0)."""
    magnitudes = np.abs(scores[np.isfinite(scores) & (scores != 0)])
    linear = float(np.median(magnitudes)) if len(magnitudes) else 1.0
    values = symlog(scores, linear)
    title = f"{SCORE_TITLE}; symmetric log axis, linear within ±{linear:.2g}"
    return ScoreScale(values, title, values, title, 0.0, "", symlog_ticks(scores, linear))


def score_histogram(scores: np.ndarray, *, helpful: np.ndarray | None = None, bins: int = 60,
                    axis_title: str = SCORE_TITLE, zero: float | None = 0.0, title: str = "Influence scores",
                    labels: np.ndarray | None = None, class_names: Sequence[str] | None = None) -> go.Figure:
    """Histogram of values (N,) (s, or its percentile: ``axis_title`` says which), ``zero`` marked.
    Bars are stacked by helpful and harmful (``helpful``: (N,) bool, default values > 0), or by class
    when ``labels`` (N,) int and ``class_names`` are given: on a rank axis, whose total is flat by
    construction, the class make-up along the axis is what carries information."""
    scores = np.asarray(scores, dtype=np.float64)
    edges = np.histogram_bin_edges(scores, bins=bins)
    if labels is not None:
        labels = np.asarray(labels)
        groups = [(str(name), labels == c, class_colour(c)) for c, name in enumerate(class_names)]
    else:
        helpful = scores > 0 if helpful is None else np.asarray(helpful, dtype=bool)
        groups = [("harmful (s <= 0)", ~helpful, "#d62728"), ("helpful (s > 0)", helpful, "#1f77b4")]
    figure = go.Figure()
    for name, mask, colour in groups:
        figure.add_trace(go.Histogram(x=scores[mask], name=name, marker_color=colour, opacity=0.8,
                                      xbins=dict(start=float(edges[0]), end=float(edges[-1]),
                                                 size=float(edges[1] - edges[0]) or 1.0)))
    if zero is not None:
        figure.add_vline(x=zero, line_dash="dash", line_color="black")
    return layout(figure, title, barmode="stack", xaxis=dict(exponentformat="e"), xaxis_title=axis_title,
                  yaxis_title="samples")


def class_violin(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, kind: str = "violin",
                 axis_title: str = SCORE_TITLE, zero: float | None = 0.0,
                 title: str = "Influence per class") -> go.Figure:
    """One violin (or box, ``kind="box"``) of values (N,) per class; ``zero``: where s = 0 lies."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    figure = go.Figure()
    for c, name in enumerate(class_names):
        values = scores[labels == c]
        colour = class_colour(c)
        if kind == "box":
            figure.add_trace(go.Box(y=values, name=str(name), marker_color=colour, boxpoints=False))
        else:
            figure.add_trace(go.Violin(y=values, name=str(name), line_color=colour, box_visible=True,
                                       meanline_visible=True, points=False, spanmode="hard"))  # within the data
    if zero is not None:
        figure.add_hline(y=zero, line_dash="dash", line_color="black")
    return layout(figure, title, showlegend=False, yaxis_title=axis_title, xaxis_title="class")


def confidence_scatter(confidence: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                       ids: Sequence[str], *, confidence_name: str = "teacher margin", axis_title: str = SCORE_TITLE,
                       zero: float | None = 0.0, title: str = "Influence vs teacher confidence") -> go.Figure:
    """Scattergl of values (N,) (s or its percentile, per ``axis_title``) against a teacher statistic
    (x, titled ``confidence_name``: say its units and direction), one trace per class, ids in customdata."""
    confidence, scores, labels = np.asarray(confidence), np.asarray(scores), np.asarray(labels)
    ids = np.asarray(ids, dtype=object)
    figure = go.Figure()
    for c, name in enumerate(class_names):
        mask = labels == c
        figure.add_trace(go.Scattergl(x=confidence[mask], y=scores[mask], mode="markers", name=str(name),
                                      customdata=ids[mask], marker=dict(size=5, color=class_colour(c), opacity=0.7),
                                      hovertemplate="%{customdata}<br>x=%{x:.3g}<br>y=%{y:.3g}<extra>" + str(name)
                                      + "</extra>"))
    if zero is not None:
        figure.add_hline(y=zero, line_dash="dash", line_color="black")
    return layout(figure, title, xaxis_title=confidence_name, yaxis_title=axis_title)


def tail_disagreement_bars(counts: "pandas.DataFrame", *, overall: float | None = None,  # noqa: F821
                           title: str = "Teacher right and wrong in each tail") -> go.Figure:
    """Per class, the most helpful and most harmful tails (``subsets.query.disagreement_by_tail``
    rows) as two stacked bars of the share of the tail the teacher gets right and wrong (%, counts in
    the hover); ``overall``: the pool's teacher-wrong share (0..1), drawn as a dotted line."""
    samples = np.maximum(counts["samples"].to_numpy(), 1)
    x = [counts["class_name"].astype(str).tolist(), counts["tail"].str.replace("most ", "").tolist()]
    figure = go.Figure()
    for name, column, colour in (("teacher wrong", "teacher_wrong", "#d62728"),
                                 ("teacher right", "teacher_right", "#9ecae1")):
        values = counts[column].to_numpy()
        figure.add_trace(go.Bar(x=x, y=100.0 * values / samples, name=name, marker_color=colour,
                                customdata=np.stack([values, counts["samples"].to_numpy()], axis=1),
                                hovertemplate="%{customdata[0]} of %{customdata[1]} samples<extra>" + name
                                + "</extra>"))
    if overall is not None:
        figure.add_hline(y=100.0 * overall, line_dash="dot", line_color="black",
                         annotation_text=f"teacher wrong overall: {overall:.1%}")
    return layout(figure, title, barmode="stack", xaxis_title="class / tail",
                  yaxis_title="% of the tail (red = teacher wrong)")


def loo_scatter(predicted: Sequence[float], actual: Sequence[float], *,
                title: str = "Leave-one-out: predicted vs true change of L_V") -> go.Figure:
    """Predicted influence against the true refit change, with the y = x line."""
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    low = float(min(predicted.min(initial=0.0), actual.min(initial=0.0)))
    high = float(max(predicted.max(initial=0.0), actual.max(initial=0.0)))
    figure = go.Figure([
        go.Scatter(x=predicted, y=actual, mode="markers", name="samples", marker=dict(size=6, color="#1f77b4")),
        go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x", line=dict(dash="dash", color="black")),
    ])
    return layout(figure, title, xaxis_title="predicted s_i", yaxis_title="true change of L_V")

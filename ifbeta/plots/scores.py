"""Figures of the dataset and of influence scores: class counts, score histogram, per-class
violins, influence against teacher confidence, the leave-one-out check.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ifbeta.plots.base import class_colour, layout


def class_counts_bar(class_names: Sequence[str], counts: np.ndarray, *, title: str = "Samples per class") -> go.Figure:
    """Bar chart of counts (C,) per class."""
    figure = go.Figure(go.Bar(x=[str(c) for c in class_names], y=np.asarray(counts).tolist(),
                              marker_color=[class_colour(c) for c in range(len(class_names))]))
    return layout(figure, title, xaxis_title="class", yaxis_title="samples", height=300)


def score_histogram(scores: np.ndarray, *, bins: int = 60, title: str = "Influence scores") -> go.Figure:
    """Histogram of scores (N,), helpful (> 0) and harmful (<= 0) in two colours, zero marked."""
    scores = np.asarray(scores, dtype=np.float64)
    edges = np.histogram_bin_edges(scores, bins=bins)
    figure = go.Figure()
    for name, mask, colour in (("harmful (s <= 0)", scores <= 0, "#d62728"), ("helpful (s > 0)", scores > 0, "#1f77b4")):
        figure.add_trace(go.Histogram(x=scores[mask], name=name, marker_color=colour, opacity=0.8,
                                      xbins=dict(start=float(edges[0]), end=float(edges[-1]),
                                                 size=float(edges[1] - edges[0]) or 1.0)))
    figure.add_vline(x=0.0, line_dash="dash", line_color="black")
    return layout(figure, title, barmode="overlay", xaxis_title="s (change of validation loss if removed)",
                   yaxis_title="samples")


def class_violin(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, kind: str = "violin",
                 title: str = "Influence per class") -> go.Figure:
    """One violin (or box, ``kind="box"``) of scores per class."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    figure = go.Figure()
    for c, name in enumerate(class_names):
        values = scores[labels == c]
        colour = class_colour(c)
        if kind == "box":
            figure.add_trace(go.Box(y=values, name=str(name), marker_color=colour, boxpoints=False))
        else:
            figure.add_trace(go.Violin(y=values, name=str(name), line_color=colour, box_visible=True,
                                       meanline_visible=True, points=False))
    figure.add_hline(y=0.0, line_dash="dash", line_color="black")
    return layout(figure, title, showlegend=False, yaxis_title="s", xaxis_title="class")


def confidence_scatter(confidence: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                       ids: Sequence[str], *, confidence_name: str = "teacher margin",
                       title: str = "Influence vs teacher confidence") -> go.Figure:
    """Scattergl of score against a teacher-confidence statistic, one trace per class, ids in customdata."""
    confidence, scores, labels = np.asarray(confidence), np.asarray(scores), np.asarray(labels)
    ids = np.asarray(ids, dtype=object)
    figure = go.Figure()
    for c, name in enumerate(class_names):
        mask = labels == c
        figure.add_trace(go.Scattergl(x=confidence[mask], y=scores[mask], mode="markers", name=str(name),
                                      customdata=ids[mask], marker=dict(size=5, color=class_colour(c), opacity=0.7),
                                      hovertemplate="%{customdata}<br>x=%{x:.3g}<br>s=%{y:.3g}<extra>" + str(name)
                                      + "</extra>"))
    figure.add_hline(y=0.0, line_dash="dash", line_color="black")
    return layout(figure, title, xaxis_title=confidence_name, yaxis_title="s")


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

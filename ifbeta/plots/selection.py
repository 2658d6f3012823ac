"""What a selection on the sample map holds: within-class score percentiles, a per-class table and a
histogram of the selection over the whole pool.

A selection is a sorted array of pool rows (int64, unique); scores follow the project's sign
(s > 0 helpful), so a percentile of 100 is the most helpful sample of its class.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ifbeta.plots.base import layout

POOL_COLOUR, SELECTION_COLOUR = "#bdbdbd", "#d62728"


def selection_table(labels: np.ndarray, selected: np.ndarray, class_names: Sequence[str], *,
                    percentile: np.ndarray, kept: np.ndarray | None = None) -> pd.DataFrame:
    """One row per class with at least one selected sample, indexed by the class label (int):
    ``class`` (name), ``selected`` (count), ``share of class`` (selected / class size, 0..1),
    ``mean percentile`` (mean within-class percentile of s of the selected, 100 = most helpful) and,
    with ``kept`` (bool (N,), the subset in focus), ``kept share`` (kept / selected, 0..1).

    labels: (N,) int; selected: pool rows; percentile: (N,) as ``within_class_percentile``."""
    labels, selected = np.asarray(labels), np.asarray(selected, dtype=np.int64)
    classes = len(class_names)
    totals = np.bincount(labels, minlength=classes)
    counts = np.bincount(labels[selected], minlength=classes)
    sums = np.bincount(labels[selected], weights=np.asarray(percentile, dtype=np.float64)[selected], minlength=classes)
    present = np.flatnonzero(counts)
    table = pd.DataFrame({"class": [str(class_names[c]) for c in present], "selected": counts[present],
                          "share of class": counts[present] / totals[present],
                          "mean percentile": sums[present] / counts[present]}, index=present)
    if kept is not None:
        kept_counts = np.bincount(labels[selected], weights=np.asarray(kept, dtype=np.float64)[selected],
                                  minlength=classes)
        table["kept share"] = kept_counts[present] / counts[present]
    table.index.name = "label"
    return table


def selection_histogram(values: np.ndarray, selected: np.ndarray, *, value_range: tuple[float, float],
                        bins: int = 40, x_title: str = "s", title: str | None = "Influence of the selection",
                        height: int = 300) -> go.Figure:
    """Two overlaid bar traces over the same ``bins`` bins of ``value_range`` (values outside fall
    into the end bins): ``pool`` (every sample) and ``selection`` (pool rows ``selected``), each as
    a percentage of its own group (y) with its counts (int) in ``customdata``, so a selection's shape
    compares with the pool's whatever its size."""
    values = np.clip(np.asarray(values, dtype=np.float64), *value_range)
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    figure = go.Figure()
    for name, group, colour, opacity in (("pool", values, POOL_COLOUR, 1.0),
                                         ("selection", values[np.asarray(selected, dtype=np.int64)],
                                          SELECTION_COLOUR, 0.7)):
        counts, _ = np.histogram(group, bins=edges)
        share = 100.0 * counts / max(len(group), 1)
        figure.add_trace(go.Bar(x=centres, y=share, width=width, name=f"{name} ({len(group):,})",
                                customdata=counts.tolist(),
                                marker_color=colour, opacity=opacity,
                                hovertemplate="%{x:.3g}: %{customdata} samples (%{y:.1f}%)<extra></extra>"))
    return layout(figure, title, height=height, barmode="overlay", bargap=0, xaxis=dict(exponentformat="e"),
                  xaxis_title=x_title, yaxis_title="% of group", legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))

"""The sample map: a 2-D embedding of the teacher features, one point per sample (ids in
customdata, so a lasso maps back to samples), coloured by class, kept / pruned or a value.

Continuous colours take an explicit range (``quantile_range``), so one outlier never washes the
map out; the colour bar sits left of nothing else (values draw one trace, no legend beside it).
Kept / pruned draws the pruned points first, larger and opaque, and the kept points over them
smaller and translucent, so a pruned point is never hidden behind a kept one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ifbeta.plots.base import KEPT_COLOUR, PRUNED_COLOUR, class_colour, layout

PERCENTILE_TITLE = "within-class percentile of s,<br>100 = most helpful"
"""Colour bar title of the map coloured by ``selection.within_class_percentile`` of the influence s."""
PRUNED_GROWTH = 2.0  # pruned points are this many pixels larger than kept ones, so they show around them


def sample_map(coords: np.ndarray, ids: Sequence[str], *, labels: np.ndarray | None = None,
               class_names: Sequence[str] | None = None, values: np.ndarray | None = None,
               value_name: str = "value", kept: np.ndarray | None = None, colorscale: str = "Viridis",
               midpoint: float | None = None, value_range: tuple[float, float] | None = None,
               size: float = 5.0, opacity: float = 1.0, selected: Sequence[str] | None = None,
               title: str | None = None, height: int = 560) -> go.Figure:
    """WebGL scatter of an embedding (N, 2), ids in customdata; colour by exactly one of:
    ``labels`` (one trace per class), ``kept`` (bool (N,): pruned then kept traces) or ``values``
    (continuous, one trace; ``value_range`` (lower, upper) fixes the colour limits, values outside
    take the end colours; without it ``midpoint`` centres an automatic range).

    ``size`` (pixels) and ``opacity`` (0..1) apply to every point, except that pruned points are
    ``PRUNED_GROWTH`` larger and always opaque (they lie beneath the kept ones). ``selected``: ids
    drawn as selected (plotly's ``selectedpoints``, the others dimmed), so a selection kept elsewhere
    shows on a fresh chart."""
    coords = np.asarray(coords)
    ids = np.asarray(ids, dtype=object)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(ids):
        raise ValueError(f"coords must be (N, 2) with one id per point, got {coords.shape} and {len(ids)} ids")
    if kept is not None:
        figure = _kept_traces(coords, ids, np.asarray(kept, dtype=bool), size=size, opacity=opacity)
    elif values is not None:
        figure = _value_trace(coords, ids, np.asarray(values, dtype=np.float64), value_name=value_name,
                              colorscale=colorscale, midpoint=midpoint, value_range=value_range, size=size,
                              opacity=opacity)
    else:
        figure = _class_traces(coords, ids, labels, class_names, size=size, opacity=opacity)
    if selected:
        chosen = set(selected)
        for trace in figure.data:
            trace.selectedpoints = [k for k, i in enumerate(trace.customdata) if i in chosen]
            trace.selected = dict(marker=dict(opacity=1.0))  # the selection stands out of the translucent rest
            trace.unselected = dict(marker=dict(opacity=0.05))
    return layout(figure, title, height=height, dragmode="lasso", legend=dict(itemsizing="constant"),
                  showlegend=values is None or kept is not None,
                  xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))


_HOVER = "%{customdata}<extra>%{fullData.name}</extra>"


def _kept_traces(coords, ids, kept, *, size: float, opacity: float) -> go.Figure:
    figure = go.Figure()
    for name, mask, colour, marker in (
            ("pruned", ~kept, PRUNED_COLOUR, dict(size=size + PRUNED_GROWTH, opacity=1.0)),
            ("kept", kept, KEPT_COLOUR, dict(size=size, opacity=opacity))):
        figure.add_trace(go.Scattergl(x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name,
                                      customdata=ids[mask], marker=dict(color=colour, **marker), hovertemplate=_HOVER))
    return figure


def _value_trace(coords, ids, values, *, value_name: str, colorscale: str, midpoint, value_range,
                 size: float, opacity: float) -> go.Figure:
    colorbar = dict(title=dict(text=value_name, side="right"), x=1.0, xanchor="left", len=0.9)
    marker = dict(size=size, opacity=opacity, color=values, colorscale=colorscale, showscale=True, colorbar=colorbar)
    if value_range is not None:
        marker.update(cmin=float(value_range[0]), cmax=float(value_range[1]))
    elif midpoint is not None:
        marker["cmid"] = midpoint
    label = value_name.split(",")[0].replace("<br>", " ")
    return go.Figure(go.Scattergl(x=coords[:, 0], y=coords[:, 1], mode="markers", name=label, customdata=ids,
                                  marker=marker,
                                  hovertemplate="%{customdata}<br>" + label + "=%{marker.color:.3g}<extra></extra>"))


def _class_traces(coords, ids, labels, class_names, *, size: float, opacity: float) -> go.Figure:
    labels = np.zeros(len(ids), dtype=np.int64) if labels is None else np.asarray(labels)
    names = list(class_names) if class_names is not None else [str(c) for c in range(int(labels.max(initial=0)) + 1)]
    figure = go.Figure()
    for c, name in enumerate(names):
        mask = labels == c
        if mask.any():
            figure.add_trace(go.Scattergl(x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=str(name),
                                          customdata=ids[mask], hovertemplate=_HOVER,
                                          marker=dict(size=size, opacity=opacity, color=class_colour(c))))
    return figure

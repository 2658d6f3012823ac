"""The sample map: a 2-D embedding of the teacher features, one point per sample (ids in
customdata, so a lasso maps back to samples), coloured by class, kept / pruned or a value.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ifbeta.plots.base import KEPT_COLOUR, PRUNED_COLOUR, class_colour, layout


def sample_map(coords: np.ndarray, ids: Sequence[str], *, labels: np.ndarray | None = None,
               class_names: Sequence[str] | None = None, values: np.ndarray | None = None,
               value_name: str = "value", kept: np.ndarray | None = None, colorscale: str = "Viridis",
               midpoint: float | None = None, title: str | None = None, height: int = 560) -> go.Figure:
    """WebGL scatter of an embedding (N, 2), ids in customdata; colour by exactly one of:
    ``labels`` (one trace per class), ``kept`` (bool (N,): kept / pruned traces) or ``values`` (continuous)."""
    coords = np.asarray(coords)
    ids = np.asarray(ids, dtype=object)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(ids):
        raise ValueError(f"coords must be (N, 2) with one id per point, got {coords.shape} and {len(ids)} ids")
    hover = "%{customdata}<extra>%{fullData.name}</extra>"
    figure = go.Figure()
    if kept is not None:
        kept = np.asarray(kept, dtype=bool)
        for name, mask, colour in (("pruned", ~kept, PRUNED_COLOUR), ("kept", kept, KEPT_COLOUR)):
            figure.add_trace(go.Scattergl(x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name,
                                          customdata=ids[mask], marker=dict(size=5, color=colour), hovertemplate=hover))
    elif values is not None:
        values = np.asarray(values, dtype=np.float64)
        marker = dict(size=5, color=values, colorscale=colorscale, showscale=True, colorbar=dict(title=value_name))
        if midpoint is not None:
            marker["cmid"] = midpoint
        figure.add_trace(go.Scattergl(x=coords[:, 0], y=coords[:, 1], mode="markers", name=value_name,
                                      customdata=ids, marker=marker,
                                      hovertemplate="%{customdata}<br>" + value_name + "=%{marker.color:.3g}<extra></extra>"))
    else:
        labels = np.zeros(len(ids), dtype=np.int64) if labels is None else np.asarray(labels)
        names = list(class_names) if class_names is not None else [str(c) for c in range(int(labels.max(initial=0)) + 1)]
        for c, name in enumerate(names):
            mask = labels == c
            if mask.any():
                figure.add_trace(go.Scattergl(x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=str(name),
                                              customdata=ids[mask], marker=dict(size=5, color=class_colour(c)),
                                              hovertemplate=hover))
    return layout(figure, title, height=height, dragmode="lasso", legend=dict(itemsizing="constant"),
                   xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))

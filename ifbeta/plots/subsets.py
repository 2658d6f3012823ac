"""Figures of a subset: kept and pruned counts per class, overlaps between methods.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ifbeta.plots.base import KEPT_COLOUR, PRUNED_COLOUR, jaccard_matrix, layout


def kept_pruned_bars(kept: Sequence[int], pruned: Sequence[int], class_names: Sequence[str], *,
                     title: str = "Kept and pruned per class") -> go.Figure:
    """Stacked bars of kept and pruned counts (C,) per class."""
    names = [str(c) for c in class_names]
    figure = go.Figure([go.Bar(x=names, y=list(kept), name="kept", marker_color=KEPT_COLOUR),
                        go.Bar(x=names, y=list(pruned), name="pruned", marker_color=PRUNED_COLOUR)])
    return layout(figure, title, barmode="stack", xaxis_title="class", yaxis_title="samples", height=320)


def jaccard_heatmap(names: Sequence[str], index_sets: Sequence[np.ndarray], *,
                    title: str = "Jaccard overlap of kept sets") -> go.Figure:
    """Heatmap of pairwise Jaccard overlaps between the methods' kept index sets, values printed."""
    matrix = jaccard_matrix(index_sets)
    figure = go.Figure(go.Heatmap(z=matrix, x=list(names), y=list(names), zmin=0, zmax=1, colorscale="Blues",
                                  text=np.round(matrix, 2), texttemplate="%{text}",
                                  hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed")
    return layout(figure, title, height=max(300, 40 * len(names) + 120))

"""Figures of distillation runs: training curves.
"""
from __future__ import annotations

import plotly.graph_objects as go

from ifbeta.plots.base import PALETTE, layout


def training_curves(histories: dict[str, list[dict]], *, metric: str = "test_top1",
                    title: str = "Student test accuracy per epoch") -> go.Figure:
    """One line per run: ``metric`` of each per-epoch history record against the epoch."""
    figure = go.Figure()
    for n, (name, history) in enumerate(histories.items()):
        points = [(r.get("epoch", i + 1), r[metric]) for i, r in enumerate(history) if r.get(metric) is not None]
        if points:
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                        name=name, line=dict(color=PALETTE[n % len(PALETTE)])))
    return layout(figure, title, xaxis_title="epoch", yaxis_title=metric, height=340)

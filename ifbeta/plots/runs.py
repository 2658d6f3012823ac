"""Figures of distillation runs: training curves, and the subset / random / full summary over seeds.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ifbeta.plots.base import PALETTE, layout

BELOW = dict(orientation="h", x=0, xanchor="left", y=-0.3, yanchor="top")  # a legend under the plot area


def training_curves(histories: dict[str, list[dict]], *, metric: str = "test_top1",
                    title: str = "Student test accuracy per epoch") -> go.Figure:
    """One line per run (keys: the legend labels): ``metric`` of each per-epoch history record against the epoch."""
    figure = go.Figure()
    for n, (name, history) in enumerate(histories.items()):
        points = [(r.get("epoch", i + 1), r[metric]) for i, r in enumerate(history) if r.get(metric) is not None]
        if points:
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                        name=name, line=dict(color=PALETTE[n % len(PALETTE)])))
    figure = layout(figure, title, xaxis_title="epoch", yaxis_title=metric, height=380, legend=BELOW)
    figure.update_layout(margin=dict(b=90))
    return figure


def arm_summary(arms, pairs, *, title: str = "Last-epoch test top-1 over seeds") -> go.Figure:
    """Left: per arm, mean ± std (diamond, error bar) of test top-1 in % with each seed as a dot
    (no zero baseline, so a point's difference shows). Right: per subset
    arm, the paired difference subset - random per seed (points, > 0 = the subset won), their mean and
    the 95% t-interval (error bar; ± std when fewer than two pairs have no interval).

    arms: ``distill.summary.ArmStats``-like (arm, seeds, values, mean, std, n); pairs: ``PairedDifference``-like
    (arm, baseline, seeds, differences, mean, std, low, high, n). Values are fractions; shown in points (%)."""
    figure = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                           subplot_titles=("mean ± std per arm", "subset − random, paired by seed"))
    names = [f"{a.arm} (n={a.n})" for a in arms]
    figure.add_trace(go.Scatter(x=names, y=[100 * a.mean for a in arms], mode="markers", name="mean ± std",
                                marker=dict(color=PALETTE[0], symbol="diamond", size=12),
                                error_y=dict(type="data", array=[100 * a.std for a in arms], thickness=2, width=8),
                                hovertemplate="%{x}<br>mean %{y:.2f}%<extra></extra>"), row=1, col=1)
    figure.add_trace(go.Scatter(x=[n for n, a in zip(names, arms) for _ in a.values],
                                y=[100 * v for a in arms for v in a.values], mode="markers", name="one seed",
                                customdata=[s for a in arms for s in a.seeds], marker=dict(color="black", size=5, opacity=0.7),
                                hovertemplate="seed %{customdata}: %{y:.2f}%<extra></extra>"), row=1, col=1)
    for n, pair in enumerate(pairs):
        name = f"{pair.arm} − {pair.baseline} (n={pair.n})"
        if pair.low is not None:
            bars = dict(type="data", symmetric=False, array=[100 * (pair.high - pair.mean)],
                        arrayminus=[100 * (pair.mean - pair.low)])
        else:
            bars = dict(type="data", array=[100 * pair.std])
        figure.add_trace(go.Scatter(x=[name] * pair.n, y=[100 * d for d in pair.differences], mode="markers",
                                    showlegend=n == 0, name="one seed pair", customdata=list(pair.seeds),
                                    marker=dict(color=PALETTE[1], size=7),
                                    hovertemplate="seed %{customdata}: %{y:+.2f} points<extra></extra>"), row=1, col=2)
        figure.add_trace(go.Scatter(x=[name], y=[100 * pair.mean], mode="markers", error_y=bars, showlegend=n == 0,
                                    name="mean, 95% t-interval", marker=dict(color="black", symbol="diamond", size=10),
                                    hovertemplate="mean %{y:+.2f} points<extra></extra>"), row=1, col=2)
    figure.add_hline(y=0.0, line_dash="dot", line_color="gray", row=1, col=2)
    figure.update_yaxes(title_text="test top-1 (%)", row=1, col=1)
    figure.update_yaxes(title_text="difference (points)", row=1, col=2)
    figure = layout(figure, title, height=420, legend=BELOW)
    figure.update_layout(margin=dict(l=10, r=10, t=80 if title else 40, b=110))  # title above the subplot titles
    return figure

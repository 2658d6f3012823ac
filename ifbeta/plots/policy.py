"""Figures of the Beta policy and its bilevel optimisation: the (alpha, beta) path over the J
landscape, outer curves, the Beta pdf and its animation, kept samples per class, teaching mode.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ifbeta.plots.base import KEPT_COLOUR, PALETTE, PRUNED_COLOUR, beta_density, layout

BELOW = dict(orientation="h", x=0, xanchor="left", y=-0.3, yanchor="top")  # a legend under the plot area


def j_at_uniform(trace: list[dict]) -> float:
    """J at uniform (alpha = beta = 1): the first trace record there (the loop starts at PolicyConfig.init,
    (1, 1) by default, so that is step 0), else the first record (then changes read 'vs the start')."""
    if not trace:
        raise ValueError("j_at_uniform needs at least one trace record")
    at_uniform = [r for r in trace if abs(r["alpha"] - 1.0) < 1e-9 and abs(r["beta"] - 1.0) < 1e-9]
    return float((at_uniform or trace)[0]["J"])


def relative_change(values, reference: float) -> np.ndarray:
    """(values / reference - 1) in %, float64: J relative to uniform; < 0 means lower (better) than uniform."""
    return 100.0 * (np.asarray(values, dtype=np.float64) / reference - 1.0)


def _grid_heatmap(landscape: dict, reference: float | None) -> go.Heatmap:
    z, title, unit = np.asarray(landscape["J"], dtype=np.float64), "J", ".5g"
    if reference is not None:
        z, title, unit = relative_change(z, reference), "J vs<br>uniform (%)", "+.2f"
    return go.Heatmap(x=landscape["beta"], y=landscape["alpha"], z=z.tolist(), colorscale="Viridis",
                      colorbar=dict(title=dict(text=title, side="top"), x=1.02, xanchor="left", len=0.9,
                                    thickness=14), name="J landscape",
                      hovertemplate=f"alpha=%{{y:.3g}}<br>beta=%{{x:.3g}}<br>{title.replace('<br>', ' ')}"
                      f"=%{{z:{unit}}}<extra></extra>")


def policy_path(traces: dict[float, list[dict]], *, landscape: dict | None = None,
                title: str = "(alpha, beta) path") -> go.Figure:
    """The optimiser's (alpha, beta) path per ratio (log axes), over the J landscape heatmap if given.

    traces: {ratio: [trace records with alpha, beta, J]}; a landscape belongs to one ratio, so pass the
    traces of that ratio alone with it. landscape: {"alpha", "beta", "J" (rows = alpha)}, coloured as J
    relative to uniform (``j_at_uniform`` of the one trace) in %. Legend below the plot, colour bar at the right.
    """
    figure = go.Figure()
    if landscape is not None:
        only = [t for t in traces.values() if t]
        figure.add_trace(_grid_heatmap(landscape, j_at_uniform(only[0]) if len(only) == 1 else None))
    for n, (ratio, trace) in enumerate(sorted(traces.items())):
        if not trace:
            continue
        alphas, betas = [r["alpha"] for r in trace], [r["beta"] for r in trace]
        change = relative_change([r["J"] for r in trace], j_at_uniform(trace))
        colour = PALETTE[(n + 3) % len(PALETTE)]
        figure.add_trace(go.Scatter(x=betas, y=alphas, mode="lines+markers", name=f"r={ratio:g}",
                                    line=dict(color=colour), marker=dict(size=5),
                                    customdata=[[r["step"], c] for r, c in zip(trace, change)],
                                    hovertemplate="step %{customdata[0]}<br>alpha=%{y:.3g}<br>beta=%{x:.3g}"
                                    "<br>J vs uniform %{customdata[1]:+.2f}%<extra></extra>"))
        figure.add_trace(go.Scatter(x=[betas[-1]], y=[alphas[-1]], mode="markers", showlegend=False,
                                    marker=dict(size=13, symbol="star", color=colour, line=dict(color="white", width=1)),
                                    hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=[1.0], y=[1.0], mode="markers", name="uniform (random)",
                                marker=dict(symbol="x", size=10, color="black")))
    figure = layout(figure, title, xaxis=dict(type="log", title="beta"), yaxis=dict(type="log", title="alpha"),
                    height=460, legend=BELOW)
    figure.update_layout(margin=dict(l=10, r=10, t=40 if title else 10, b=100))
    return figure


def objective_curves(traces: dict[float, list[dict]], *, title: str = "Outer objective and proxy accuracy") -> go.Figure:
    """J relative to uniform in % (and the penalised objective on the same scale; lower is better) and
    the proxy's validation accuracy against the outer step, per ratio. Legend below the plots."""
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                           subplot_titles=("J vs uniform, % (lower is better)", "proxy val. accuracy"))
    for n, (ratio, trace) in enumerate(sorted(traces.items())):
        if not trace:
            continue
        steps, reference = [r["step"] for r in trace], j_at_uniform(trace)
        colour = PALETTE[(n + 3) % len(PALETTE)]
        figure.add_trace(go.Scatter(x=steps, y=relative_change([r["J"] for r in trace], reference),
                                    mode="lines+markers", name=f"J r={ratio:g}", line=dict(color=colour),
                                    hovertemplate="step %{x}<br>J vs uniform %{y:+.3f}%<extra></extra>"), row=1, col=1)
        if "objective" in trace[0]:
            figure.add_trace(go.Scatter(x=steps, y=relative_change([r["objective"] for r in trace], reference),
                                        mode="lines", name=f"objective r={ratio:g}", line=dict(color=colour, dash="dot"),
                                        hovertemplate="step %{x}<br>objective %{y:+.3f}%<extra></extra>"), row=1, col=1)
        figure.add_trace(go.Scatter(x=steps, y=[r.get("proxy_val_accuracy") for r in trace], mode="lines+markers",
                                    name=f"accuracy r={ratio:g}", line=dict(color=colour), showlegend=False), row=1, col=2)
    figure.update_xaxes(title_text="outer step")
    figure.update_yaxes(title_text="J / J(uniform) − 1 (%)", ticksuffix="%", row=1, col=1)
    figure = layout(figure, title, height=380, legend=BELOW)
    figure.update_layout(margin=dict(l=10, r=10, t=80 if title else 40, b=100))  # title above the subplot titles
    return figure


def beta_pdf(alpha: float, beta: float, *, name: str | None = None, points: int = 200,
             title: str | None = "Beta policy density over ranks u") -> go.Figure:
    """The Beta(alpha, beta) density over u in (0, 1); u near 1 = most helpful."""
    u = np.linspace(0.0025, 0.9975, points)
    figure = go.Figure(go.Scatter(x=u, y=beta_density(u, alpha, beta), mode="lines", fill="tozeroy",
                                  name=name or f"alpha={alpha:.3g}, beta={beta:.3g}"))
    figure.add_hline(y=1.0, line_dash="dot", line_color="gray")
    return layout(figure, title, xaxis_title="u (rank; 1 = most helpful)", yaxis_title="density", height=320)


def beta_pdf_animation(trace: list[dict], *, points: int = 200, title: str = "Beta pdf over the outer steps") -> go.Figure:
    """An animated figure (frames + slider + play button): the Beta pdf at every outer step. It opens on
    the last (learned) step; Play runs from step 0. The button has its own row above the slider."""
    if not trace:
        raise ValueError("beta_pdf_animation needs at least one trace record")
    u = np.linspace(0.0025, 0.9975, points)
    curves = [beta_density(u, r["alpha"], r["beta"]) for r in trace]
    top = float(min(max(np.max(c) for c in curves) * 1.05, 50.0))
    last = trace[-1]

    def caption(record: dict) -> str:
        return f"step {record['step']}: alpha={record['alpha']:.3g}, beta={record['beta']:.3g}"

    figure = go.Figure(
        data=[go.Scatter(x=u, y=curves[-1], mode="lines", fill="tozeroy", name="pdf")],
        frames=[go.Frame(data=[go.Scatter(x=u, y=curve)], name=str(r["step"]),
                         layout=go.Layout(title_text=f"{title} ({caption(r)})")) for r, curve in zip(trace, curves)])
    steps = [dict(method="animate", label=str(r["step"]),
                  args=[[str(r["step"])], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                               transition=dict(duration=0))]) for r in trace]
    figure.update_layout(
        title=f"{title} ({caption(last)})", xaxis=dict(range=[0, 1], title="u (rank; 1 = most helpful)"),
        yaxis=dict(range=[0, top], title="density"), height=460, margin=dict(l=10, r=10, t=40, b=10),
        showlegend=False,
        sliders=[dict(active=len(trace) - 1, steps=steps, x=0, len=1.0, xanchor="left", y=0, yanchor="top",
                      currentvalue=dict(prefix="step "), pad=dict(t=100, b=10))],
        updatemenus=[dict(type="buttons", showactive=False, x=0, xanchor="left", y=0, yanchor="top",
                          pad=dict(t=55), buttons=[  # its own row, between the axis title and the slider
                              dict(label="Play", method="animate",
                                   args=[None, dict(frame=dict(duration=250, redraw=True), fromcurrent=False,
                                                    transition=dict(duration=0), mode="immediate")])])])
    return figure


def class_histogram(counts: Sequence[int], class_names: Sequence[str], *, totals: Sequence[int] | None = None,
                    title: str = "Kept samples per class") -> go.Figure:
    """Bar chart of the subset's class histogram; with ``totals`` also the pool's counts."""
    names = [str(c) for c in class_names]
    figure = go.Figure()
    if totals is not None:
        figure.add_trace(go.Bar(x=names, y=list(totals), name="pool", marker_color=PRUNED_COLOUR))
    figure.add_trace(go.Bar(x=names, y=list(counts), name="kept", marker_color=KEPT_COLOUR))
    return layout(figure, title, barmode="overlay", xaxis_title="class", yaxis_title="samples", height=300)


def teaching_figure(u: np.ndarray, inclusion: np.ndarray, kept: np.ndarray, alpha: float, beta: float, *,
                    ids: Sequence[str] | None = None, shown: np.ndarray | None = None,
                    title: str | None = None) -> go.Figure:
    """How the Beta pdf maps onto samples: top, the pdf and the density of kept ranks (all samples);
    bottom, each sample at its rank u with its inclusion probability, kept / pruned coloured (ids in
    customdata): every sample, or only the indices ``shown`` (e.g. a ``downsample`` of a large pool)."""
    u, inclusion, kept = np.asarray(u, dtype=np.float64), np.asarray(inclusion), np.asarray(kept, dtype=bool)
    ids = np.asarray(ids if ids is not None else [str(i) for i in range(len(u))], dtype=object)
    kept_ranks = u[kept]
    if shown is not None:
        u, inclusion, kept, ids = u[shown], inclusion[shown], kept[shown], ids[shown]
    grid = np.linspace(0.0025, 0.9975, 200)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.45, 0.55],
                           subplot_titles=("Beta pdf and the ranks actually kept", "inclusion probability per sample"))
    figure.add_trace(go.Scatter(x=grid, y=beta_density(grid, alpha, beta), mode="lines", name="Beta pdf",
                                line=dict(color="black")), row=1, col=1)
    figure.add_trace(go.Histogram(x=kept_ranks, histnorm="probability density", name="kept ranks",
                                  xbins=dict(start=0, end=1, size=0.05), marker_color=KEPT_COLOUR, opacity=0.6),
                     row=1, col=1)
    for name, mask, colour in (("pruned", ~kept, PRUNED_COLOUR), ("kept", kept, KEPT_COLOUR)):
        figure.add_trace(go.Scattergl(x=u[mask], y=inclusion[mask], mode="markers", name=name, customdata=ids[mask],
                                      marker=dict(size=4, color=colour),
                                      hovertemplate="%{customdata}<br>u=%{x:.3f}<br>pi=%{y:.3f}<extra></extra>"),
                         row=2, col=1)
    figure.update_xaxes(title_text="u (rank within class; 1 = most helpful)", range=[0, 1], row=2, col=1)
    figure.update_yaxes(title_text="density", row=1, col=1)
    figure.update_yaxes(title_text="pi", range=[-0.02, 1.02], row=2, col=1)
    return layout(figure, title, height=520, barmode="overlay")

"""Plotly figure builders for the app: arrays / DataFrames in, ``go.Figure`` out (no streamlit).

Every scatter of samples carries the sample ids in ``customdata`` (one id per point), so a lasso
or box selection maps back to samples through ids, never through point order (plotly numbers
points per trace). Large scatters use ``go.Scattergl`` (WebGL). A few display helpers that turn
arrays into what a figure or an image gallery shows (thumbnails, per-class extremes, stratified
downsampling, Jaccard overlaps) live here too, so the pages stay free of arithmetic.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.special import betaln

__all__ = [
    "class_counts_bar", "score_histogram", "class_violin", "confidence_scatter", "loo_scatter",
    "sample_map", "policy_path", "objective_curves", "beta_pdf", "beta_pdf_animation", "class_histogram",
    "kept_pruned_bars", "jaccard_heatmap", "teaching_figure", "training_curves",
    "thumbnail", "extremes_per_class", "downsample", "jaccard_matrix", "beta_density", "PALETTE", "DISPLAY_LIMIT",
]

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
KEPT_COLOUR, PRUNED_COLOUR = "#2ca02c", "#c7c7c7"
DISPLAY_LIMIT = 20_000  # scatters of more samples show a class-stratified ``downsample`` of this many
HELPFUL_SCALE = "RdBu"  # red = harmful (< 0), blue = helpful (> 0)


def _layout(figure: go.Figure, title: str | None = None, *, height: int = 380, **kwargs) -> go.Figure:
    figure.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                         **kwargs)
    return figure


def _class_colour(c: int) -> str:
    return PALETTE[c % len(PALETTE)]


# ------------------------------------------------------------------------------- display helpers
def thumbnail(image: np.ndarray, size: int = 64) -> np.ndarray:
    """One image (C, H, W) uint8 -> (H', W', C) or (H', W') uint8, scaled up by an integer nearest
    factor so that the side is at least ``size`` (8x8 digits become 64x64 blocks, never blurred)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"thumbnail expects (C, H, W), got shape {image.shape}")
    factor = max(1, int(np.ceil(size / max(image.shape[1:]))))
    scaled = image.repeat(factor, axis=1).repeat(factor, axis=2)  # (C, H*f, W*f)
    return scaled[0] if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0)


def extremes_per_class(scores: np.ndarray, labels: np.ndarray, label: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``count`` highest (most helpful first) and lowest (most harmful first) scores of one class."""
    members = np.flatnonzero(np.asarray(labels) == label)
    order = members[np.argsort(np.asarray(scores)[members], kind="stable")]  # ascending
    return order[::-1][:count], order[:count]


def downsample(labels: np.ndarray, limit: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` points, class-stratified (every class keeps its share)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, int(round(limit * len(members) / n)))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def jaccard_matrix(index_sets: Sequence[np.ndarray]) -> np.ndarray:
    """(M, M) float64 Jaccard overlap |A & B| / |A | B| of M index sets (1 on the diagonal)."""
    sets = [set(np.asarray(s).tolist()) for s in index_sets]
    matrix = np.ones((len(sets), len(sets)))
    for i, a in enumerate(sets):
        for j in range(i + 1, len(sets)):
            union = len(a | sets[j])
            matrix[i, j] = matrix[j, i] = len(a & sets[j]) / union if union else 1.0
    return matrix


def beta_density(u: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """BetaPDF(u; alpha, beta) for u in (0, 1), float64 (what the policy weights samples by)."""
    u = np.clip(np.asarray(u, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.exp((alpha - 1) * np.log(u) + (beta - 1) * np.log1p(-u) - betaln(alpha, beta))


# --------------------------------------------------------------------------------- dataset, influence
def class_counts_bar(class_names: Sequence[str], counts: np.ndarray, *, title: str = "Samples per class") -> go.Figure:
    """Bar chart of counts (C,) per class."""
    figure = go.Figure(go.Bar(x=[str(c) for c in class_names], y=np.asarray(counts).tolist(),
                              marker_color=[_class_colour(c) for c in range(len(class_names))]))
    return _layout(figure, title, xaxis_title="class", yaxis_title="samples", height=300)


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
    return _layout(figure, title, barmode="overlay", xaxis_title="s (change of validation loss if removed)",
                   yaxis_title="samples")


def class_violin(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, kind: str = "violin",
                 title: str = "Influence per class") -> go.Figure:
    """One violin (or box, ``kind="box"``) of scores per class."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    figure = go.Figure()
    for c, name in enumerate(class_names):
        values = scores[labels == c]
        colour = _class_colour(c)
        if kind == "box":
            figure.add_trace(go.Box(y=values, name=str(name), marker_color=colour, boxpoints=False))
        else:
            figure.add_trace(go.Violin(y=values, name=str(name), line_color=colour, box_visible=True,
                                       meanline_visible=True, points=False))
    figure.add_hline(y=0.0, line_dash="dash", line_color="black")
    return _layout(figure, title, showlegend=False, yaxis_title="s", xaxis_title="class")


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
                                      customdata=ids[mask], marker=dict(size=5, color=_class_colour(c), opacity=0.7),
                                      hovertemplate="%{customdata}<br>x=%{x:.3g}<br>s=%{y:.3g}<extra>" + str(name)
                                      + "</extra>"))
    figure.add_hline(y=0.0, line_dash="dash", line_color="black")
    return _layout(figure, title, xaxis_title=confidence_name, yaxis_title="s")


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
    return _layout(figure, title, xaxis_title="predicted s_i", yaxis_title="true change of L_V")


# ------------------------------------------------------------------------------------- feature map
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
                                              customdata=ids[mask], marker=dict(size=5, color=_class_colour(c)),
                                              hovertemplate=hover))
    return _layout(figure, title, height=height, dragmode="lasso", legend=dict(itemsizing="constant"),
                   xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))


# ------------------------------------------------------------------------------------------ policy
def _grid_heatmap(landscape: dict) -> go.Heatmap:
    return go.Heatmap(x=landscape["beta"], y=landscape["alpha"], z=landscape["J"], colorscale="Viridis",
                      colorbar=dict(title="J"), name="J landscape", hovertemplate="alpha=%{y:.3g}<br>beta=%{x:.3g}"
                      "<br>J=%{z:.5g}<extra></extra>")


def policy_path(traces: dict[float, list[dict]], *, landscape: dict | None = None,
                title: str = "(alpha, beta) path") -> go.Figure:
    """The optimiser's (alpha, beta) path per ratio (log axes), over the J landscape heatmap if given.

    traces: {ratio: [trace records with alpha, beta, J]}. landscape: {"alpha", "beta", "J" (rows = alpha)}.
    """
    figure = go.Figure()
    if landscape is not None:
        figure.add_trace(_grid_heatmap(landscape))
    for n, (ratio, trace) in enumerate(sorted(traces.items())):
        if not trace:
            continue
        alphas, betas = [r["alpha"] for r in trace], [r["beta"] for r in trace]
        colour = PALETTE[(n + 3) % len(PALETTE)]
        figure.add_trace(go.Scatter(x=betas, y=alphas, mode="lines+markers", name=f"r={ratio:g}",
                                    line=dict(color=colour), marker=dict(size=5),
                                    customdata=[[r["step"], r["J"]] for r in trace],
                                    hovertemplate="step %{customdata[0]}<br>alpha=%{y:.3g}<br>beta=%{x:.3g}"
                                    "<br>J=%{customdata[1]:.5g}<extra></extra>"))
        figure.add_trace(go.Scatter(x=[betas[-1]], y=[alphas[-1]], mode="markers", showlegend=False,
                                    marker=dict(size=13, symbol="star", color=colour, line=dict(color="white", width=1)),
                                    hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=[1.0], y=[1.0], mode="markers", name="uniform (random)",
                                marker=dict(symbol="x", size=10, color="black")))
    return _layout(figure, title, xaxis=dict(type="log", title="beta"), yaxis=dict(type="log", title="alpha"),
                   height=420)


def objective_curves(traces: dict[float, list[dict]], *, title: str = "Outer objective and proxy accuracy") -> go.Figure:
    """J (and the penalised objective) and proxy validation accuracy against the outer step, per ratio."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("J = L_V (lower is better)", "proxy val. accuracy"))
    for n, (ratio, trace) in enumerate(sorted(traces.items())):
        steps = [r["step"] for r in trace]
        colour = PALETTE[(n + 3) % len(PALETTE)]
        figure.add_trace(go.Scatter(x=steps, y=[r["J"] for r in trace], mode="lines+markers", name=f"J r={ratio:g}",
                                    line=dict(color=colour)), row=1, col=1)
        if trace and "objective" in trace[0]:
            figure.add_trace(go.Scatter(x=steps, y=[r["objective"] for r in trace], mode="lines",
                                        name=f"objective r={ratio:g}", line=dict(color=colour, dash="dot")), row=1, col=1)
        figure.add_trace(go.Scatter(x=steps, y=[r.get("proxy_val_accuracy") for r in trace], mode="lines+markers",
                                    name=f"accuracy r={ratio:g}", line=dict(color=colour), showlegend=False), row=1, col=2)
    figure.update_xaxes(title_text="outer step")
    return _layout(figure, title, height=340)


def beta_pdf(alpha: float, beta: float, *, name: str | None = None, points: int = 200,
             title: str | None = "Beta policy density over ranks u") -> go.Figure:
    """The Beta(alpha, beta) density over u in (0, 1); u near 1 = most helpful."""
    u = np.linspace(0.0025, 0.9975, points)
    figure = go.Figure(go.Scatter(x=u, y=beta_density(u, alpha, beta), mode="lines", fill="tozeroy",
                                  name=name or f"alpha={alpha:.3g}, beta={beta:.3g}"))
    figure.add_hline(y=1.0, line_dash="dot", line_color="gray")
    return _layout(figure, title, xaxis_title="u (rank; 1 = most helpful)", yaxis_title="density", height=320)


def beta_pdf_animation(trace: list[dict], *, points: int = 200, title: str = "Beta pdf over the outer steps") -> go.Figure:
    """An animated figure (frames + slider + play button): the Beta pdf at every outer step."""
    if not trace:
        raise ValueError("beta_pdf_animation needs at least one trace record")
    u = np.linspace(0.0025, 0.9975, points)
    curves = [beta_density(u, r["alpha"], r["beta"]) for r in trace]
    top = float(min(max(np.max(c) for c in curves) * 1.05, 50.0))
    first = trace[0]
    figure = go.Figure(
        data=[go.Scatter(x=u, y=curves[0], mode="lines", fill="tozeroy", name="pdf")],
        frames=[go.Frame(data=[go.Scatter(x=u, y=curve)], name=str(r["step"]),
                         layout=go.Layout(title_text=f"step {r['step']}: alpha={r['alpha']:.3g}, beta={r['beta']:.3g}"))
                for r, curve in zip(trace, curves)])
    steps = [dict(method="animate", label=str(r["step"]),
                  args=[[str(r["step"])], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                               transition=dict(duration=0))]) for r in trace]
    figure.update_layout(
        title=f"{title} (step {first['step']}: alpha={first['alpha']:.3g}, beta={first['beta']:.3g})",
        xaxis=dict(range=[0, 1], title="u (rank; 1 = most helpful)"), yaxis=dict(range=[0, top], title="density"),
        height=380, margin=dict(l=10, r=10, t=40, b=10),
        sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="step "), pad=dict(t=40))],
        updatemenus=[dict(type="buttons", showactive=False, x=0, y=-0.25, xanchor="left", buttons=[
            dict(label="Play", method="animate",
                 args=[None, dict(frame=dict(duration=250, redraw=True), fromcurrent=True)])])])
    return figure


def class_histogram(counts: Sequence[int], class_names: Sequence[str], *, totals: Sequence[int] | None = None,
                    title: str = "Kept samples per class") -> go.Figure:
    """Bar chart of the subset's class histogram; with ``totals`` also the pool's counts."""
    names = [str(c) for c in class_names]
    figure = go.Figure()
    if totals is not None:
        figure.add_trace(go.Bar(x=names, y=list(totals), name="pool", marker_color=PRUNED_COLOUR))
    figure.add_trace(go.Bar(x=names, y=list(counts), name="kept", marker_color=KEPT_COLOUR))
    return _layout(figure, title, barmode="overlay", xaxis_title="class", yaxis_title="samples", height=300)


def kept_pruned_bars(kept: Sequence[int], pruned: Sequence[int], class_names: Sequence[str], *,
                     title: str = "Kept and pruned per class") -> go.Figure:
    """Stacked bars of kept and pruned counts (C,) per class."""
    names = [str(c) for c in class_names]
    figure = go.Figure([go.Bar(x=names, y=list(kept), name="kept", marker_color=KEPT_COLOUR),
                        go.Bar(x=names, y=list(pruned), name="pruned", marker_color=PRUNED_COLOUR)])
    return _layout(figure, title, barmode="stack", xaxis_title="class", yaxis_title="samples", height=320)


def jaccard_heatmap(names: Sequence[str], index_sets: Sequence[np.ndarray], *,
                    title: str = "Jaccard overlap of kept sets") -> go.Figure:
    """Heatmap of pairwise Jaccard overlaps between the methods' kept index sets, values printed."""
    matrix = jaccard_matrix(index_sets)
    figure = go.Figure(go.Heatmap(z=matrix, x=list(names), y=list(names), zmin=0, zmax=1, colorscale="Blues",
                                  text=np.round(matrix, 2), texttemplate="%{text}",
                                  hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed")
    return _layout(figure, title, height=max(300, 40 * len(names) + 120))


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
    return _layout(figure, title, height=520, barmode="overlay")


# ----------------------------------------------------------------------------------- distillation
def training_curves(histories: dict[str, list[dict]], *, metric: str = "test_top1",
                    title: str = "Student test accuracy per epoch") -> go.Figure:
    """One line per run: ``metric`` of each per-epoch history record against the epoch."""
    figure = go.Figure()
    for n, (name, history) in enumerate(histories.items()):
        points = [(r.get("epoch", i + 1), r[metric]) for i, r in enumerate(history) if r.get(metric) is not None]
        if points:
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                        name=name, line=dict(color=PALETTE[n % len(PALETTE)])))
    return _layout(figure, title, xaxis_title="epoch", yaxis_title=metric, height=340)

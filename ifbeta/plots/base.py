"""Shared plotting parts: palette, colours, layout, display limits, thumbnails and the small
array helpers the pages show (per-class extremes, stratified downsampling, Jaccard overlaps).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from scipy.special import betaln

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
KEPT_COLOUR, PRUNED_COLOUR = "#2ca02c", "#c7c7c7"
DISPLAY_LIMIT = 20_000  # scatters of more samples show a class-stratified ``downsample`` of this many
HELPFUL_SCALE = "RdBu"  # red = harmful (< 0), blue = helpful (> 0)


def layout(figure: go.Figure, title: str | None = None, *, height: int = 380, **kwargs) -> go.Figure:
    figure.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                         **kwargs)
    return figure


def class_colour(c: int) -> str:
    return PALETTE[c % len(PALETTE)]


def thumbnail(image: np.ndarray, size: int = 64) -> np.ndarray:
    """One image (C, H, W) uint8 -> (H', W', C) or (H', W') uint8, scaled up by an integer nearest
    factor so that the side is at least ``size`` (8x8 digits become 64x64 blocks, never blurred)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"thumbnail expects (C, H, W), got shape {image.shape}")
    factor = max(1, int(np.ceil(size / max(image.shape[1:]))))
    scaled = image.repeat(factor, axis=1).repeat(factor, axis=2)  # (C, H*f, W*f)
    return scaled[0] if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0)


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


def quantile_range(values: np.ndarray, *, low: float = 1.0, high: float = 99.0,
                   symmetric_about: float | None = None) -> tuple[float, float]:
    """(lower, upper) percentiles ``low`` and ``high`` (in %) of the finite ``values`` (N,), taken as the
    nearest order statistics so an outlier is never interpolated into a bound: the one rule for axis
    ranges and colour scales that one outlier cannot stretch. ``symmetric_about`` m widens the range to
    be symmetric about m (the middle colour of a diverging scale). A degenerate range is widened by
    1e-12; no finite value gives (0, 1)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return 0.0, 1.0
    lower, upper = (float(v) for v in np.percentile(values, [low, high], method="nearest"))
    if symmetric_about is not None:
        half = max(abs(upper - symmetric_about), abs(lower - symmetric_about))
        lower, upper = symmetric_about - half, symmetric_about + half
    if upper <= lower:
        lower, upper = lower - 1e-12, upper + 1e-12
    return lower, upper

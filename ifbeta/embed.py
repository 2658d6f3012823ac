"""Two-dimensional maps of the teacher feature space: PCA at once, UMAP cached in the artefact store.

Both work on standardised features (the statistics of the given rows, as in docs/METHOD.md section 1).
UMAP first projects to at most ``UMAP_PCA_DIMS`` principal components (the usual speed-up; it keeps
the neighbourhoods), is seeded (hence single-threaded and reproducible) and is stored as
``cache/embeddings/<key>/coords.npy`` keyed by its parameters and the features' artefact key, so a
reload or another face never recomputes it. ``umap`` is imported lazily: the first import takes
tens of seconds (numba compilation).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import numpy as np

from ifbeta.data import streaming
from ifbeta.progress import OnStep
from ifbeta.store import Store

log = logging.getLogger(__name__)

__all__ = ["Embedding", "pca", "umap", "umap_key", "UMAP_PCA_DIMS"]

UMAP_PCA_DIMS = 50  # UMAP runs on at most this many principal components
_CHUNK = 16384  # rows per float64 chunk when standardising


@dataclass(frozen=True)
class Embedding:
    """coords: (N, 2) float32. explained: (components,) variance ratios for PCA, else None.
    key: the store key (UMAP) or None (PCA, not stored)."""

    coords: np.ndarray
    method: str
    explained: np.ndarray | None = None
    key: str | None = None


def _standardised(features: np.ndarray) -> np.ndarray:
    """(N, d) any float dtype (memmap fine) -> (N, d) float64 by ``streaming.standardise``, refusing
    empty or non-finite input."""
    if np.ndim(features) != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty (N, d) array, got shape {np.shape(features)}")
    out, _, _ = streaming.standardise(features, chunk_size=_CHUNK)
    if not np.isfinite(out).all():
        raise ValueError("features contain NaN or infinity")
    return out


def _principal_axes(x: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """Top principal axes (d, m) of centred x (N, d) and the variance ratios (m,), largest first.
    Signs are fixed (largest |loading| positive) so the map does not flip between runs."""
    covariance = x.T @ x / max(len(x) - 1, 1)  # (d, d)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:components]
    axes = eigenvectors[:, order]  # (d, m)
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    axes = axes * np.where(signs == 0, 1.0, signs)
    total = float(np.clip(eigenvalues, 0, None).sum()) or 1.0
    return axes, np.clip(eigenvalues[order], 0, None) / total


def pca(features: np.ndarray, *, components: int = 2) -> Embedding:
    """PCA of the standardised features: coords (N, components) float32, ordered by explained variance."""
    x = _standardised(features)
    components = int(min(components, x.shape[1]))
    axes, explained = _principal_axes(x, components)
    coords = (x @ axes).astype(np.float32)  # (N, m)
    if coords.shape[1] < 2:  # one-dimensional features: pad so the map is still (N, 2)
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]), np.float32)])
    return Embedding(coords, "pca", explained.astype(np.float64))


class _EpochSink:
    """A file-like target for umap's tqdm bar (bar_format "{n}/{total}") that forwards epochs to on_step."""

    _PATTERN = re.compile(r"(\d+)/(\d+)")

    def __init__(self, on_step: OnStep):
        self.on_step = on_step
        self.last = -1

    def write(self, text: str) -> int:
        found = self._PATTERN.findall(text)
        if found:
            done, total = (int(v) for v in found[-1])
            if done != self.last:
                self.last = done
                self.on_step(done, {"stage": "layout", "done": done, "total": total})
        return len(text)

    def flush(self) -> None:
        pass


def umap_settings(*, neighbours: int, min_dist: float, epochs: int | None, seed: int, n: int, d: int) -> dict:
    return {"method": "umap", "neighbours": int(neighbours), "min_dist": float(min_dist),
            "epochs": None if epochs is None else int(epochs), "seed": int(seed), "n": int(n), "d": int(d),
            "pca_dims": UMAP_PCA_DIMS}


def umap_key(input_key: str, *, n: int, d: int, neighbours: int = 15, min_dist: float = 0.1,
             epochs: int | None = None, seed: int = 0) -> str:
    """The store key ``umap`` uses for these settings (so a caller can ask ``store.exists``)."""
    from ifbeta.store import make_key

    return make_key(umap_settings(neighbours=neighbours, min_dist=min_dist, epochs=epochs, seed=seed, n=n, d=d),
                    [input_key])


def umap(features: np.ndarray, *, store: Store, input_key: str, neighbours: int = 15, min_dist: float = 0.1,
         epochs: int | None = None, seed: int = 0, on_step: OnStep | None = None) -> Embedding:
    """UMAP of the standardised features (N, d) -> coords (N, 2) float32, cached in ``store``.

    ``input_key``: the artefact key of the features (e.g. ``FeatureSet.key``), part of the cache key.
    ``epochs``: layout epochs (None = umap's default, 200 above 10k points, else 500).
    ``on_step(step, info)``: info["stage"] in {"import", "neighbours", "layout", "done"}; layout events
    carry done / total epochs. Nothing is reported on a cache hit.
    """
    n, d = np.shape(features)
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 samples, got {n}")
    notify = on_step or (lambda step, info: None)
    settings = umap_settings(neighbours=neighbours, min_dist=min_dist, epochs=epochs, seed=seed, n=n, d=d)

    def compute():
        start = time.perf_counter()
        notify(0, {"stage": "import"})
        import umap as umap_module  # slow first import (numba)

        x = _standardised(features)
        if x.shape[1] > UMAP_PCA_DIMS:
            axes, _ = _principal_axes(x, UMAP_PCA_DIMS)
            x = x @ axes  # (N, UMAP_PCA_DIMS)
        notify(0, {"stage": "neighbours"})
        reducer = umap_module.UMAP(n_neighbors=int(min(neighbours, n - 1)), min_dist=min_dist, n_epochs=epochs,
                                   random_state=seed, n_jobs=1, n_components=2,
                                   tqdm_kwds={"disable": False, "file": _EpochSink(notify), "bar_format": "{n}/{total}",
                                              "mininterval": 0.25})
        coords = reducer.fit_transform(x.astype(np.float32)).astype(np.float32)
        seconds = time.perf_counter() - start
        notify(1, {"stage": "done", "seconds": seconds})
        log.info("UMAP of %d x %d features in %.1f s", n, d, seconds)
        return {"coords": coords}, {"seconds": seconds}

    arrays, _, key = store.get_or_compute("embeddings", settings, [input_key], compute)
    return Embedding(np.asarray(arrays["coords"]), "umap", None, key)

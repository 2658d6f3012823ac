"""Two-dimensional maps of the teacher feature space: PCA at once, UMAP cached in the artefact store.

Both work on standardised features (the statistics of the given rows, as in docs/METHOD.md section 1).
UMAP first projects to at most ``UMAP_PCA_DIMS`` principal components (the usual speed-up; it keeps
the neighbourhoods), is seeded (hence single-threaded and reproducible) and is stored as
``cache/embeddings/<key>/coords.npy`` keyed by its parameters and the features' artefact key, so a
reload or another face never recomputes it. ``umap`` is imported lazily.

Compilation: umap-learn and pynndescent are numba code, and compiling it costs more than a 50k-point
fit (measured in benchmarks/results/umap-first-run.md). ``import_umap`` points numba's on-disk cache
at ``numba_cache_dir()`` (the user's cache folder, unless ``NUMBA_CACHE_DIR`` is set) and switches
caching on for the kernels both libraries leave uncached, so they are compiled once per machine;
``python -m ifbeta.embed --warm`` (run by ``make``) compiles them at install time. pynndescent's
``nn_descent`` and ``nn_descent_internal`` cannot be cached (they ask numba for its thread count,
about 15 s of compilation in every new process), so ``import_umap`` replaces them by the same
algorithm driven from Python over cacheable kernels (``ifbeta.nn_descent``; the same graph, bit for
bit). The cache changes no result: a fixed seed gives the same map, compiled or loaded. The layout
starts from PCA (``UMAP_INIT``), not umap-learn's spectral default: 7 s less at 50k points, the same
map quality.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifbeta import nn_descent
from ifbeta.data import streaming
from ifbeta.progress import OnStep
from ifbeta.store import Store

log = logging.getLogger(__name__)

__all__ = ["Embedding", "pca", "umap", "umap_key", "UMAP_PCA_DIMS", "import_umap", "numba_cache_dir", "warm"]

UMAP_PCA_DIMS = 50  # UMAP runs on at most this many principal components
UMAP_INIT = "pca"  # umap-learn's initial layout: 7 s faster than "spectral" at 50k points, the same map quality
# (trustworthiness and kNN-class agreement in benchmarks/results/umap-first-run.md)
_CHUNK = 16384  # rows per float64 chunk when standardising
_CACHED_PACKAGES = ("umap", "pynndescent")  # their numba kernels go to the on-disk cache
_WARM_SHAPE = (5000, 8)  # above pynndescent's 4096-point threshold, so the warm-up runs nn-descent too


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


def numba_cache_dir() -> Path:
    """Where numba keeps compiled umap kernels: ``$NUMBA_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/ifbeta/numba`` (``~/.cache/ifbeta/numba``). Outside the repository and the
    artefact store, so ``make clean-cache`` keeps it."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ifbeta" / "numba"


def _cache_uncached_kernels() -> int:
    """Switch numba's on-disk cache on for the umap / pynndescent kernels compiled without
    ``cache=True``, before their first compilation. Where one function is wrapped by a serial and a
    parallel dispatcher (umap's layout epoch) only the serial one gets it: both would share one cache
    index, whose key does not hold the parallel flag. Returns how many were switched on."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    dispatchers = {}
    for name, module in list(sys.modules.items()):
        if module is not None and name.split(".")[0] in _CACHED_PACKAGES:
            for value in vars(module).values():
                if isinstance(value, Dispatcher):
                    dispatchers[id(value)] = value
    wrappers: dict[int, list] = {}
    for dispatcher in dispatchers.values():
        wrappers.setdefault(id(dispatcher.py_func), []).append(dispatcher)
    switched = 0
    for group in wrappers.values():
        serial = [d for d in group if not d.targetoptions.get("parallel", False)]
        chosen = group if len(group) == 1 else serial
        if len(chosen) == 1 and all(isinstance(d._cache, NullCache) for d in group):
            chosen[0].enable_caching()
            switched += 1
    return switched


def import_umap():
    """``import umap`` with numba's on-disk cache in ``numba_cache_dir()`` for all its kernels."""
    import numba

    if not numba.config.CACHE_DIR:  # numba read NUMBA_CACHE_DIR at its import; keep the user's choice
        folder = numba_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        numba.config.CACHE_DIR = str(folder)
    import umap as umap_module  # loads (or, once, compiles) the kernels compiled at import

    _cache_uncached_kernels()  # idempotent: a switched kernel holds a cache, no longer a NullCache
    nn_descent.install()  # pynndescent's uncacheable descent -> the same one over cached kernels
    return umap_module


def _fit(x: np.ndarray, *, neighbours: int, min_dist: float, epochs: int | None, seed: int, init: str,
         notify: OnStep) -> np.ndarray:
    """UMAP of x (N, m) float -> (N, 2) float32, seeded and single-threaded."""
    umap_module = import_umap()
    reducer = umap_module.UMAP(n_neighbors=int(min(neighbours, len(x) - 1)), min_dist=min_dist, n_epochs=epochs,
                               init=init, random_state=seed, n_jobs=1, n_components=2,
                               tqdm_kwds={"disable": False, "file": _EpochSink(notify), "bar_format": "{n}/{total}",
                                          "mininterval": 0.25})
    return reducer.fit_transform(x.astype(np.float32)).astype(np.float32)


def warm(*, seed: int = 0) -> float:
    """Compile (or load) every numba kernel a map of more than 4096 points needs, on a seeded
    Gaussian sample with 2 layout epochs. Returns the seconds it took."""
    start = time.perf_counter()
    x = np.random.default_rng(seed).normal(size=_WARM_SHAPE)
    _fit(x, neighbours=15, min_dist=0.1, epochs=2, seed=seed, init=UMAP_INIT, notify=lambda step, info: None)
    return time.perf_counter() - start


def umap_settings(*, neighbours: int, min_dist: float, epochs: int | None, seed: int, n: int, d: int,
                  init: str = UMAP_INIT) -> dict:
    settings = {"method": "umap", "neighbours": int(neighbours), "min_dist": float(min_dist),
                "epochs": None if epochs is None else int(epochs), "seed": int(seed), "n": int(n), "d": int(d),
                "pca_dims": UMAP_PCA_DIMS}
    if init != "spectral":  # the maps stored before init was a knob used spectral; their keys stay valid
        settings["init"] = str(init)
    return settings


def umap_key(input_key: str, *, n: int, d: int, neighbours: int = 15, min_dist: float = 0.1,
             epochs: int | None = None, seed: int = 0, init: str = UMAP_INIT) -> str:
    """The store key ``umap`` uses for these settings (so a caller can ask ``store.exists``)."""
    from ifbeta.store import make_key

    return make_key(umap_settings(neighbours=neighbours, min_dist=min_dist, epochs=epochs, seed=seed, n=n, d=d,
                                  init=init), [input_key])


def umap(features: np.ndarray, *, store: Store, input_key: str, neighbours: int = 15, min_dist: float = 0.1,
         epochs: int | None = None, seed: int = 0, init: str = UMAP_INIT, on_step: OnStep | None = None) -> Embedding:
    """UMAP of the standardised features (N, d) -> coords (N, 2) float32, cached in ``store``.

    ``input_key``: the artefact key of the features (e.g. ``FeatureSet.key``), part of the cache key.
    ``epochs``: layout epochs (None = umap's default, 200 above 10k points, else 500).
    ``init``: umap-learn's initial layout ("spectral", "pca", "tswspectral" or "random").
    ``on_step(step, info)``: info["stage"] in {"import", "neighbours", "layout", "done"}; layout events
    carry done / total epochs. Nothing is reported on a cache hit.
    """
    n, d = np.shape(features)
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 samples, got {n}")
    notify = on_step or (lambda step, info: None)
    settings = umap_settings(neighbours=neighbours, min_dist=min_dist, epochs=epochs, seed=seed, n=n, d=d, init=init)

    def compute():
        start = time.perf_counter()
        notify(0, {"stage": "import"})
        import_umap()  # slow only before the kernels are compiled once (``warm``)
        x = _standardised(features)
        if x.shape[1] > UMAP_PCA_DIMS:
            axes, _ = _principal_axes(x, UMAP_PCA_DIMS)
            x = x @ axes  # (N, UMAP_PCA_DIMS)
        notify(0, {"stage": "neighbours"})
        coords = _fit(x, neighbours=neighbours, min_dist=min_dist, epochs=epochs, seed=seed, init=init,
                      notify=notify)
        seconds = time.perf_counter() - start
        notify(1, {"stage": "done", "seconds": seconds})
        log.info("UMAP of %d x %d features in %.1f s", n, d, seconds)
        return {"coords": coords}, {"seconds": seconds}

    arrays, _, key = store.get_or_compute("embeddings", settings, [input_key], compute)
    return Embedding(np.asarray(arrays["coords"]), "umap", None, key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ifbeta.embed",
                                     description="Compile umap's numba kernels into the on-disk cache.")
    parser.add_argument("--warm", action="store_true", help="compile (or load) the kernels with a small fit")
    arguments = parser.parse_args(argv)
    if not arguments.warm:
        parser.print_help()
        return 0
    seconds = warm()
    print(f"umap kernels ready in {numba_cache_dir()} ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

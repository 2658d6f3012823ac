"""PCA (shape, variance order, determinism) and UMAP (shape, progress, store cache hit)."""
from __future__ import annotations

import numpy as np
import pytest

from ifbeta import embed
from ifbeta.store import Store


def _features(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(5.0, 0.5, d)  # column j has spread scales[j] before mixing
    mixing = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * scales) @ mixing.T + 3.0


def test_pca_shape_variance_order_and_determinism():
    x = _features().astype(np.float32)
    result = embed.pca(x, components=4)
    assert result.coords.shape == (300, 4) and result.coords.dtype == np.float32
    assert np.all(np.diff(result.explained) <= 1e-12) and 0 < result.explained.sum() <= 1 + 1e-9
    variances = result.coords.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6)  # the first axis carries the most variance
    np.testing.assert_allclose(np.abs(result.coords.mean(axis=0)), 0, atol=1e-4)  # standardised -> centred
    again = embed.pca(x, components=4)
    np.testing.assert_array_equal(result.coords, again.coords)
    assert embed.pca(x).coords.shape == (300, 2)
    assert embed.pca(x[:, :1]).coords.shape == (300, 2)  # padded to a map
    with pytest.raises(ValueError):
        embed.pca(np.full((5, 3), np.nan))


def test_umap_cached_in_store(tmp_path):
    store = Store(tmp_path)
    x = _features(n=150, d=60).astype(np.float32)  # d > UMAP_PCA_DIMS exercises the projection
    events = []
    first = embed.umap(x, store=store, input_key="feat", neighbours=10, epochs=15, seed=0,
                       on_step=lambda step, info: events.append(info))
    assert first.coords.shape == (150, 2) and np.isfinite(first.coords).all()
    stages = [e["stage"] for e in events]
    assert stages[0] == "import" and stages[-1] == "done" and "layout" in stages
    assert store.exists("embeddings", first.key)
    assert first.key == embed.umap_key("feat", n=150, d=60, neighbours=10, epochs=15, seed=0)
    events.clear()
    second = embed.umap(x, store=store, input_key="feat", neighbours=10, epochs=15, seed=0,
                        on_step=lambda step, info: events.append(info))
    assert events == []  # a cache hit reports nothing and recomputes nothing
    np.testing.assert_array_equal(first.coords, second.coords)
    other = embed.umap_key("other-features", n=150, d=60, neighbours=10, epochs=15, seed=0)
    assert other != first.key


def test_numba_cache_dir_is_the_users_cache_unless_numba_is_told(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embed.numba_cache_dir() == tmp_path / "xdg" / "ifbeta" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "own"))
    assert embed.numba_cache_dir() == tmp_path / "own"


@pytest.mark.slow
def test_warm_up_command_compiles_the_kernels_into_the_cache(tmp_path):
    """``python -m ifbeta.embed --warm`` (run by make) fills the cache, including the kernels umap-learn and
    pynndescent compile without ``cache=True`` (umap's layout epoch, pynndescent's candidate updates)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-m", "ifbeta.embed", "--warm"], cwd=root, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(tmp_path) in done.stdout
    cached_functions = {path.stem.split("-")[0].split(".", 1)[1] for path in tmp_path.rglob("*.nbi")}
    for name in ["_optimize_layout_euclidean_single_epoch", "smooth_knn_dist", "process_candidates",
                 "squared_euclidean", "init_rp_tree", "init_random", "build_candidates_owner"]:
        assert name in cached_functions, sorted(cached_functions)
    assert "Cannot cache compiled function" not in done.stderr  # nothing a new process must compile again


def test_the_cached_descent_builds_pynndescents_graph_bit_for_bit():
    """ifbeta.nn_descent (Python over cacheable kernels) against pynndescent's own numba nn_descent, on
    more points than pynndescent's 4096-point threshold, so the random-projection trees and several rounds
    of local joins run; also the same random state afterwards."""
    from pynndescent import NNDescent
    from pynndescent import pynndescent_ as library

    from ifbeta import nn_descent

    embed.import_umap()
    assert library.nn_descent is nn_descent.nn_descent  # installed by import_umap
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=3.0, size=(8, 20))
    x = (centres[rng.integers(0, 8, 6000)] + rng.normal(size=(6000, 20))).astype(np.float32)
    graphs, states = {}, {}
    try:
        for name, function in (("python", nn_descent.nn_descent), ("numba", nn_descent.LIBRARY_DESCENT)):
            library.nn_descent = function
            index = NNDescent(x, n_neighbors=15, random_state=7, n_jobs=1, low_memory=True, compressed=False)
            graphs[name], states[name] = index.neighbor_graph, index.rng_state.copy()
    finally:
        nn_descent.install()
    np.testing.assert_array_equal(graphs["python"][0], graphs["numba"][0])
    np.testing.assert_array_equal(graphs["python"][1], graphs["numba"][1])
    np.testing.assert_array_equal(states["python"], states["numba"])
    exact = np.sort(((x[:50, None, :] - x[None, :, :]) ** 2).sum(-1), axis=1)[:, :15]  # brute force, 50 rows
    recall = np.mean(np.isclose(np.sort(graphs["python"][1][:50] ** 2, axis=1), exact, rtol=1e-4))
    assert recall > 0.95  # and it is a k-NN graph


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float32), digits.target


def _knn_class_agreement(coords, labels, k=15):
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords, return_distance=False)
    return float((labels[index[:, 1:]] == labels[:, None]).mean())


def test_umap_same_seed_same_map_and_the_pca_init_keeps_the_classes(tmp_path):
    x, labels = _digits()
    first = embed.umap(x, store=Store(tmp_path / "a"), input_key="digits", seed=3)
    again = embed.umap(x, store=Store(tmp_path / "b"), input_key="digits", seed=3)  # recomputed, not a cache hit
    np.testing.assert_array_equal(first.coords, again.coords)
    spectral = embed.umap(x, store=Store(tmp_path / "a"), input_key="digits", seed=3, init="spectral")
    pca = embed.umap(x, store=Store(tmp_path / "a"), input_key="digits", seed=3, init="pca")
    assert spectral.key != pca.key
    old, new = _knn_class_agreement(spectral.coords, labels), _knn_class_agreement(pca.coords, labels)
    assert old > 0.9 and new >= old - 0.02, (old, new)

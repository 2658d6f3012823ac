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

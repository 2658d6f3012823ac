"""Fits whose rows are re-read at every pass keep the iterate's outputs in an OutputStore (memory or a
temporary file): the line search, Hessian-vector products and EKFAC factors take them from there. The
fit must land on the same optimum as the fit over cached rows, and leave no file behind."""
import numpy as np
import pytest
import torch

from ifbeta.config import KDConfig
from ifbeta.influence import objective, outputs, proxy, tensors

KD = KDConfig(lam=0.5, tau=2.0)


def _problem(seed=0, n=700, d=12, classes=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    centres = rng.normal(size=(classes, d))
    features = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32).astype(np.float64)
    logits = features @ rng.normal(size=(d, classes)) + rng.normal(scale=0.5, size=(n, classes))
    return features, logits, labels


@pytest.mark.parametrize("budget", [0, None])  # 0: a temporary file; None: the default (in memory here)
def test_streamed_fit_with_stored_outputs_reaches_the_cached_optimum(monkeypatch, tmp_path, budget):
    features, logits, labels = _problem()
    common = dict(mu=2.0, kd=KD, tolerance=1e-10, method="newton-cg", chunk_size=128)
    cached = proxy.fit(features, logits, labels, **common)
    monkeypatch.setitem(tensors.Rows.__init__.__kwdefaults__, "cache_bytes", 0)
    monkeypatch.setitem(objective.HessianOperator.__init__.__kwdefaults__, "cache_bytes", 0)
    if budget is not None:
        monkeypatch.setattr(outputs, "OUTPUT_STORE_BYTES", budget)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(outputs.tempfile, "tempdir", None)  # TMPDIR is read again
    made = []
    original = outputs.OutputStore.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self.on_disk)

    monkeypatch.setattr(outputs.OutputStore, "__init__", recording)
    streamed = proxy.fit(features, logits, labels, **common)
    assert made == [budget == 0] * 2
    assert list(tmp_path.iterdir()) == []  # the temporary files are gone
    assert cached.converged and streamed.converged
    # the same optimum: grad norms at round-off, thetas equal to the fit's precision
    scale = float(torch.linalg.vector_norm(cached.theta))
    assert float(torch.linalg.vector_norm(streamed.theta - cached.theta)) <= 1e-7 * scale
    assert streamed.iterations <= cached.iterations + 2
    assert streamed.objective == pytest.approx(cached.objective, rel=1e-12)


def test_value_along_equals_the_objective_at_the_trial_point():
    features, logits, labels = _problem(seed=1, n=300)
    rows = tensors.Rows(features, logits, labels, None, kd=KD, chunk_size=64, cache_bytes=0)
    ridge = objective.regulariser((6, 13), mu=1.5)
    rng = np.random.default_rng(2)
    theta, direction = (torch.as_tensor(rng.normal(size=(6, 13))) for _ in range(2))
    store, change = (outputs.OutputStore(300, 6, 64, torch.device("cpu"), budget_bytes=0) for _ in range(2))
    point = objective.evaluate(theta, rows, ridge, store=store)
    outputs.outputs_along(direction, rows, change)
    for step in (1.0, 0.25, 1e-3):
        direct = objective.evaluate(theta + step * direction, rows, ridge, with_gradient=False).value
        assert outputs.value_along(theta, direction, step, rows, ridge, store, change) == pytest.approx(direct,
                                                                                                          rel=1e-13)
    assert point.value == pytest.approx(objective.evaluate(theta, rows, ridge).value, rel=1e-15)
    store.close(), change.close()

"""Fits whose rows are re-read at every pass keep the iterate's outputs in an OutputStore (memory or a
temporary file): the line search, Hessian-vector products and EKFAC factors take them from there. The
fit must land on the same optimum as the fit over cached rows, and leave no file behind."""
import numpy as np
import pytest
import torch

from ifbeta.config import KDConfig
from ifbeta.influence import objective, outputs, proxy, solvers, tensors

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
    assert made == [budget == 0] * 3  # the outputs, their change and EKFAC's input projections
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


@pytest.mark.parametrize("budget", [0, None])
def test_ekfac_with_kept_input_terms_equals_a_fresh_build_and_reads_no_rows(monkeypatch, budget):
    """A fit's later EKFAC builds take A, its eigenbasis and the rows' projections (x U)^2 from InputTerms:
    the factors must equal a build from scratch at the same theta (the projections are float32, as the
    matmul that uses them), and with stored outputs the eigenvalue pass reads neither features nor logits."""
    if budget is not None:
        monkeypatch.setattr(outputs, "OUTPUT_STORE_BYTES", budget)
    features, logits, labels = _problem(seed=3, n=500)
    rng = np.random.default_rng(4)
    weights = rng.uniform(0.2, 1.0, size=len(labels))
    options = dict(mu=1.5, kd=KD, chunk_size=96)
    inputs = solvers.InputTerms(features, weights, chunk_size=96)
    assert inputs.squared.on_disk == (budget == 0)
    for seed in (5, 6):  # the first build writes the projections, the second reads them
        theta = torch.as_tensor(rng.normal(scale=0.3, size=(6, 13)))
        store = outputs.OutputStore(len(labels), 6, 96, torch.device("cpu"))
        rows = tensors.Rows(features, logits, labels, weights, kd=KD, chunk_size=96, cache_bytes=0)
        for index, (x, _) in enumerate(rows.inputs()):
            store[index] = objective.outputs_of(theta, x)
        reads = []
        original = tensors.send

        def counting(array, *args, **kwargs):
            reads.append(array.shape)
            return original(array, *args, **kwargs)

        monkeypatch.setattr(tensors, "send", counting)
        kept = solvers.ekfac_factors(theta, features, logits, labels, weights, **options, outputs=store,
                                     inputs=inputs)
        monkeypatch.setattr(tensors, "send", original)
        fresh = solvers.ekfac_factors(theta, features, logits, labels, weights, **options)
        assert inputs.filled
        wide = [shape for shape in reads if len(shape) == 2]  # features (m, d) or logits (m, C)
        assert wide == ([] if seed == 6 else [(96, 12)] * 5 + [(20, 12)])  # the first build reads the features once
        for mine, theirs in zip(kept[:2], fresh[:2]):  # bases: equal up to each column's sign
            assert torch.allclose((mine * theirs).sum(0).abs(), torch.ones(mine.shape[1], dtype=mine.dtype),
                                  atol=1e-6)
        assert torch.allclose(kept[2], fresh[2], rtol=1e-5, atol=0)
        store.close()
    inputs.close()

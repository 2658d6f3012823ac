"""The KD-aligned linear proxy: loss values, derivatives against autograd, the fitter, choose_mu.

The proxy streams features as float32, so the problems here use float32-representable features: the loss and
gradient (float64 math) then match float64 autograd to round-off, and the curvature (float32 matmuls
accumulated in float64) to CURVATURE_RTOL of its scale."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from ifbeta.config import KDConfig
from ifbeta.influence import objective, proxy, solvers

KD = KDConfig(tau=4.0, lam=0.9)
CURVATURE_RTOL = 1e-5  # Hessian, HVP, diag(H): float32 products, relative to max |H|


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):  # shared 2-core machine: oversubscribed BLAS threads are 10x slower
        yield


def problem(n=40, d=4, classes=3, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)).astype(np.float32).astype(np.float64)  # exact in the float32 stream
    teacher = rng.normal(size=(n, classes)) * scale
    labels = rng.integers(0, classes, n)
    theta = rng.normal(size=(classes, d + 1)) * 0.5
    return features, teacher, labels, theta, rng.uniform(0.0, 1.0, n)


def torch_objective(features, teacher, labels, weights, mu, eps, kd):
    """Independent reference: torch's cross_entropy and kl_div, sum form."""
    x, t, y = torch.tensor(features), torch.tensor(teacher), torch.tensor(labels)
    w = torch.ones(len(labels), dtype=torch.float64) if weights is None else torch.tensor(weights)

    def value(theta):
        outputs = x @ theta[:, :-1].T + theta[:, -1]
        cross_entropy = F.cross_entropy(outputs, y, reduction="none")
        kl = F.kl_div(F.log_softmax(outputs / kd.tau, 1), F.log_softmax(t / kd.tau, 1), log_target=True,
                      reduction="none").sum(1)
        losses = (1 - kd.lam) * cross_entropy + kd.lam * kd.tau**2 * kl
        ridge = (theta[:, :-1] ** 2).sum() + eps * (theta[:, -1] ** 2).sum()
        return (w * losses).sum() + 0.5 * mu * ridge

    return value


def test_kd_golden_value_has_tau_squared():
    # f = 0, teacher logits (4 ln 3, 0) -> softmax(t / 4) = (3/4, 1/4), student softmax (1/2, 1/2), label 0.
    features = np.zeros((1, 2))
    teacher = np.array([[4.0 * math.log(3.0), 0.0]])
    theta = np.zeros((2, 3))
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = 0.1 * math.log(2.0) + 0.9 * 16.0 * kl
    loss = objective.per_sample_loss(theta, features, teacher, [0], kd=KD)
    assert loss.dtype == torch.float64 and loss.shape == (1,)
    assert loss[0] == pytest.approx(expected, rel=1e-12)
    assert loss[0] == pytest.approx(1.9530077, abs=1e-6)
    # The residual carries lam * tau (the tau^2 of the loss times the 1/tau of the chain rule).
    r = objective.residuals(theta, features, teacher, [0], kd=KD)[0]
    assert r == pytest.approx([0.1 * (0.5 - 1) + 0.9 * 4 * (0.5 - 0.75), 0.1 * 0.5 + 0.9 * 4 * (0.5 - 0.25)])


@pytest.mark.parametrize("lam", [0.0, 0.9, 1.0])
def test_per_sample_loss_and_residuals_match_torch(lam):
    kd = KDConfig(tau=3.0, lam=lam)
    features, teacher, labels, theta, _ = problem()
    reference = torch_objective(features, teacher, labels, None, 0.0, 0.0, kd)
    losses = objective.per_sample_loss(theta, features, teacher, labels, kd=kd)
    assert float(losses.sum()) == pytest.approx(float(reference(torch.tensor(theta))), rel=1e-12)
    residual = objective.residuals(theta, features, teacher, labels, kd=kd)
    i = 7
    single = torch_objective(features[i:i + 1], teacher[i:i + 1], labels[i:i + 1], None, 0.0, 0.0, kd)
    gradient = torch.func.grad(single)(torch.tensor(theta)).numpy()
    x = np.append(features[i], 1.0)
    np.testing.assert_allclose(np.outer(residual[i], x), gradient, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_hessian_hvp_match_autograd(weighted):
    features, teacher, labels, theta, weights = problem()
    weights = weights if weighted else None
    options = dict(weights=weights, mu=0.7, bias_damping=1e-2, kd=KD)
    reference = torch_objective(features, teacher, labels, weights, 0.7, 1e-2, KD)
    point = torch.tensor(theta)
    assert objective.objective(theta, features, teacher, labels, **options) == pytest.approx(float(reference(point)),
                                                                                          rel=1e-12)
    np.testing.assert_allclose(objective.gradient(theta, features, teacher, labels, **options),
                               torch.func.grad(reference)(point).numpy(), atol=1e-11)
    exact = torch.func.hessian(reference)(point).reshape(theta.size, theta.size).numpy()
    dense = objective.hessian(theta, features, teacher, labels, **options)
    assert dense.shape == (15, 15)
    scale = np.abs(exact).max()
    np.testing.assert_allclose(dense, exact, atol=CURVATURE_RTOL * scale)
    vector = np.random.default_rng(5).normal(size=theta.shape)
    _, product = torch.func.jvp(torch.func.grad(reference), (point,), (torch.tensor(vector),))
    result = objective.hvp(theta, vector, features, teacher, labels, **options)
    assert result.shape == theta.shape
    np.testing.assert_allclose(result, product.numpy(), atol=CURVATURE_RTOL * scale * np.abs(vector).sum())
    np.testing.assert_allclose(objective.hessian_diagonal(theta, features, teacher, labels, **options).reshape(-1),
                               np.diag(exact), atol=CURVATURE_RTOL * scale)


def test_objective_is_sum_form_and_weights_scale_terms():
    features, teacher, labels, theta, _ = problem()
    options = dict(mu=0.0, kd=KD)
    once = objective.objective(theta, features, teacher, labels, **options)
    doubled = objective.objective(theta, np.vstack([features, features]), np.vstack([teacher, teacher]),
                              np.concatenate([labels, labels]), **options)
    assert doubled == pytest.approx(2 * once, rel=1e-12)  # a sum, not a mean
    weights = np.zeros(len(labels))
    weights[3] = 1.0
    single = float(objective.per_sample_loss(theta, features, teacher, labels, kd=KD)[3])
    assert objective.objective(theta, features, teacher, labels, weights=weights, **options) == pytest.approx(single)
    ridge = objective.objective(theta, features, teacher, labels, weights=0 * weights, mu=2.0, bias_damping=0.1, kd=KD)
    assert ridge == pytest.approx((theta[:, :-1] ** 2).sum() + 0.1 * (theta[:, -1] ** 2).sum())


def test_chunk_size_does_not_change_results():
    features, teacher, labels, theta, weights = problem(n=50)
    options = dict(weights=weights, mu=0.3, kd=KD)
    for function in (objective.gradient, objective.objective):
        np.testing.assert_allclose(function(theta, features, teacher, labels, chunk_size=7, **options),
                                   function(theta, features, teacher, labels, chunk_size=1000, **options),
                                   rtol=1e-12, atol=1e-12)
    small, whole = (objective.hessian(theta, features, teacher, labels, chunk_size=size, **options)
                    for size in (7, 1000))  # float32 sums within a chunk: equal to float32 round-off
    np.testing.assert_allclose(small, whole, atol=1e-6 * float(whole.abs().max()))


@pytest.mark.parametrize("bad", [-1, 3])
def test_labels_outside_the_classes_are_refused(bad):
    """Label -1 would silently index class C - 1; every entry point refuses it, naming the sample."""
    features, teacher, labels, theta, _ = problem(n=30)
    labels = labels.copy()
    labels[17] = bad
    calls = [lambda: objective.objective(theta, features, teacher, labels, mu=0.1, kd=KD),
             lambda: objective.gradient(theta, features, teacher, labels, mu=0.1, kd=KD, chunk_size=8),
             lambda: objective.hessian(theta, features, teacher, labels, mu=0.1, kd=KD),
             lambda: objective.validation_loss(theta, features, teacher, labels, kd=KD),
             lambda: proxy.fit(features, teacher, labels, mu=0.1, kd=KD)]
    for call in calls:
        with pytest.raises(ValueError, match=rf"label {bad} of sample 17 is outside \[0, 3\)"):
            call()


def test_dense_hessian_is_symmetric_and_agrees_with_the_operator():
    """The Hessian is built in blocks and symmetrised in place (more than one 1024-block, several chunks):
    exactly symmetric, and equal to the matrix-free product to float32 round-off. Its peak memory (one
    float64 matrix plus one float32 chunk sum) is measured in benchmarks/proxy_backend.py."""
    rng = np.random.default_rng(0)
    n, d, classes = 600, 63, 40  # C(d+1) = 2560: a 50 MiB matrix
    features, teacher = rng.normal(size=(n, d)), rng.normal(size=(n, classes))
    labels, theta = rng.integers(0, classes, n), rng.normal(size=(classes, d + 1)) * 0.1
    matrix = objective.hessian(theta, features, teacher, labels, mu=0.1, kd=KD, chunk_size=256)
    assert torch.equal(matrix, matrix.T)
    vector = rng.normal(size=theta.shape)
    product = objective.hvp(theta, vector, features, teacher, labels, mu=0.1, kd=KD).reshape(-1)
    np.testing.assert_allclose(matrix @ torch.tensor(vector).reshape(-1), product,
                               atol=1e-5 * float(product.abs().max()))


def test_validation_loss_gradient_and_predict_proba():
    features, teacher, labels, theta, _ = problem()
    losses = objective.per_sample_loss(theta, features, teacher, labels, kd=KD)
    assert objective.validation_loss(theta, features, teacher, labels, kd=KD) == pytest.approx(float(losses.mean()))
    reference = torch_objective(features, teacher, labels, None, 0.0, 0.0, KD)
    np.testing.assert_allclose(objective.validation_gradient(theta, features, teacher, labels, kd=KD),
                               torch.func.grad(reference)(torch.tensor(theta)).numpy() / len(labels), atol=1e-12)
    probabilities = objective.predict_proba(theta, features, chunk_size=9)
    outputs = features @ theta[:, :-1].T + theta[:, -1]
    np.testing.assert_allclose(probabilities, torch.softmax(torch.tensor(outputs), 1).numpy(), atol=1e-14)


@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_fit_converges_and_warm_start_is_faster(method):
    features, teacher, labels, _, weights = problem(n=200, d=6, classes=4, seed=3)
    options = dict(mu=0.5, kd=KD, method=method)
    cold = proxy.fit(features, teacher, labels, weights=weights, **options)
    assert cold.converged and cold.grad_norm < 1e-6
    gradient = objective.gradient(cold.theta, features, teacher, labels, weights=weights, mu=0.5, kd=KD)
    assert np.linalg.norm(gradient) == pytest.approx(cold.grad_norm)
    assert cold.objective == pytest.approx(objective.objective(cold.theta, features, teacher, labels, weights=weights,
                                                           mu=0.5, kd=KD))
    nudged = weights.copy()
    nudged[0] = 0.0
    warm = proxy.fit(features, teacher, labels, weights=nudged, init=cold.theta, **options)
    again = proxy.fit(features, teacher, labels, weights=nudged, init=np.zeros_like(cold.theta), **options)
    assert warm.converged and warm.iterations < again.iterations
    np.testing.assert_allclose(warm.theta, again.theta, atol=1e-7)


def test_fit_methods_agree_and_cold_start_uses_teacher_head():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(300, 5))
    teacher = features @ rng.normal(size=(5, 3)) + 0.3  # the teacher's logits are linear in its features
    labels = teacher.argmax(1)
    head = proxy.teacher_head(features, teacher)
    np.testing.assert_allclose(np.c_[features, np.ones(300)] @ head.numpy().T, teacher, atol=1e-4)
    dense = proxy.fit(features, teacher, labels, mu=1.0, kd=KD, method="newton", tolerance=1e-12)
    matrix_free = proxy.fit(features, teacher, labels, mu=1.0, kd=KD, method="newton-cg", tolerance=1e-12)
    np.testing.assert_allclose(dense.theta, matrix_free.theta, atol=1e-8)


def test_standardise_float16_memmap_chunked(tmp_path):
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(103, 6)) * [1, 2, 3, 4, 5, 0] + 7).astype(np.float16)
    memmap = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=values.shape)
    memmap[:] = values
    z, mean, std = objective.standardise(memmap, chunk_size=10)
    exact = values.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=1e-12)
    assert std[-1] == 1.0  # constant column: no division by zero
    np.testing.assert_allclose(std[:-1], exact.std(0)[:-1], rtol=1e-12)
    assert z.dtype == np.float64 and np.allclose(z[:, :-1].mean(0), 0) and np.allclose(z[:, :-1].std(0), 1)
    again, _, _ = objective.standardise(memmap, mean=mean, std=std)
    np.testing.assert_array_equal(z, again)


def test_stratified_folds_are_seeded_and_balanced():
    labels = np.repeat(np.arange(4), [10, 11, 3, 30])
    folds = proxy.stratified_folds(labels, 2, 0)
    assert set(folds) == {0, 1}
    for label in range(4):
        counts = np.bincount(folds[labels == label], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1
    np.testing.assert_array_equal(folds, proxy.stratified_folds(labels, 2, 0))
    assert not np.array_equal(folds, proxy.stratified_folds(labels, 2, 1))


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(0)
    root = rng.normal(size=(30, 30))
    matrix = root @ root.T + 0.1 * np.eye(30)
    rhs = rng.normal(size=30)
    operator = torch.tensor(matrix)
    for preconditioner in (None, 1.0 / np.diag(matrix)):
        solution, _, residual = solvers.conjugate_gradient(operator.__matmul__, torch.tensor(rhs), tolerance=1e-12,
                                                           preconditioner=preconditioner)
        assert residual <= 1e-12
        np.testing.assert_allclose(solution, np.linalg.solve(matrix, rhs), rtol=1e-8)


def test_choose_mu_minimises_held_out_loss():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(3, 8)) * 1.5
    labels = rng.integers(0, 3, 240)
    features = means[labels] + rng.normal(size=(240, 8))
    teacher = features @ rng.normal(size=(8, 3)) * 0.3 + rng.normal(size=(240, 3))  # noisy: the ridge matters
    grid = (1e-2, 1.0, 100.0, 1e4)
    mu, table = proxy.choose_mu(features, teacher, labels, kd=KD, grid=grid, folds=2, seed=0)
    assert [row["grid"] for row in table] == list(grid)
    best = min(table, key=lambda row: row["val_loss"])
    assert mu == best["mu"] == pytest.approx(best["grid"] * 120 / 1000)  # per-1000-samples units, n = N / folds
    assert table[-1]["val_loss"] > best["val_loss"]  # a huge ridge underfits

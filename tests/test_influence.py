"""Influence scores against brute-force refits, solvers against each other, cross-fitting."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.stats
from threadpoolctl import threadpool_limits

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
from ifbeta.influence import objective, proxy, solvers, tensors
from ifbeta.influence import scores as influence
from ifbeta.influence.statistics import teacher_statistics
from tests.influence_problems import corrupt, mixture

KD = KDConfig()


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):  # shared 2-core machine: oversubscribed BLAS threads are 10x slower
        yield


def split_problem(seed=4, n=60, validation=300, mu=1.0):
    """Training set of n (6 corrupted) and a clean validation set; theta* and the first-order scores."""
    features, teacher, labels = mixture(n + validation, 5, 3, seed)
    bad = np.arange(6)
    corrupt(teacher, labels, bad, np.random.default_rng(seed))
    train, held_out = (features[:n], teacher[:n], labels[:n]), (features[n:], teacher[n:], labels[n:])
    theta = proxy.fit(*train, mu=mu, kd=KD, tolerance=1e-13).theta
    g_val = objective.validation_gradient(theta, *held_out, kd=KD)
    direction = solvers.solve_direct(theta, *train, None, g_val, mu=mu, kd=KD)
    scores = tensors.to_numpy(influence.influence_scores(theta, direction, *train, kd=KD))
    return train, held_out, theta, scores, bad


def true_removals(train, held_out, theta, mu, *, ridge_after=None):
    """True change of L_V when each training sample is removed (refit to round-off)."""
    base = objective.validation_loss(theta, *held_out, kd=KD)
    deltas = []
    for i in range(len(train[2])):
        weights = np.ones(len(train[2]))
        weights[i] = 0.0
        refit = proxy.fit(*train, weights=weights, mu=mu if ridge_after is None else ridge_after, kd=KD, init=theta,
                          tolerance=1e-13).theta
        deltas.append(objective.validation_loss(refit, *held_out, kd=KD) - base)
    return np.array(deltas)


def test_scores_match_leave_one_out_refits_in_value_and_sign():
    train, held_out, theta, predicted, bad = split_problem()
    actual = true_removals(train, held_out, theta, 1.0)
    assert np.abs(predicted - actual).sum() / np.abs(actual).sum() < 0.35  # first order, n = 60, 18 parameters
    assert np.mean(np.sign(predicted) == np.sign(actual)) >= 0.95
    assert scipy.stats.spearmanr(predicted, actual)[0] >= 0.95
    assert 0.7 <= predicted @ actual / (predicted @ predicted) <= 1.3
    assert np.all(predicted[bad] < 0) and np.all(actual[bad] < 0)  # corrupted samples are harmful
    assert set(bad) <= set(np.argsort(predicted)[:10])
    assert (predicted > 0).sum() > 40  # clean samples help


def test_scores_are_exact_derivatives_of_the_removal_path():
    """L_V(w_i = 1 - e) - L_V(w_i = 1 + e) = 2 e s_i + O(e^3): the values, not only the ranks."""
    train, held_out, theta, predicted, _ = split_problem()

    def validation_at(i, weight):
        weights = np.ones(60)
        weights[i] = weight
        refit = proxy.fit(*train, weights=weights, mu=1.0, kd=KD, init=theta, tolerance=1e-14).theta
        return objective.validation_loss(refit, *held_out, kd=KD)

    for i in (0, 10, 20):
        change = (validation_at(i, 1.0 - 1e-3) - validation_at(i, 1.0 + 1e-3)) / 2e-3
        assert change == pytest.approx(predicted[i], rel=1e-4)


def test_newton_estimator_is_close_to_true_refits():
    for mu in (1.0, 30.0):
        train, held_out, theta, first_order, _ = split_problem(mu=mu)
        actual = true_removals(train, held_out, theta, mu)
        newton = tensors.to_numpy(solvers.newton_removal_scores(theta, *train, *held_out, mu=mu, kd=KD, chunk_size=7))
        first_error = np.abs(first_order - actual).sum() / np.abs(actual).sum()
        newton_error = np.abs(newton - actual).sum() / np.abs(actual).sum()
        assert newton_error < 0.05 and newton_error < 0.25 * first_error
        assert np.all(np.abs(newton - actual) <= 0.1 * np.abs(actual))


def test_mean_form_pitfall_sum_form_signs_match_loo():
    """docs/METHOD.md section 3: with a MEAN objective, removing i also rescales the others and the ridge,
    so g_V^T H^{-1} grad l_i is off by a constant; the sum form has no such term."""
    n, mean_ridge = 60, 0.5
    mu = n * mean_ridge  # mean-form (1/n) sum l + ridge/2 ||W||^2 == sum form with mu = n * ridge
    train, held_out, theta, predicted, _ = split_problem(mu=mu)
    sum_form = true_removals(train, held_out, theta, mu)
    assert np.mean(np.sign(predicted) == np.sign(sum_form)) >= 0.95
    assert abs(np.mean(predicted < 0) - np.mean(sum_form < 0)) <= 0.05
    mean_form = true_removals(train, held_out, theta, mu, ridge_after=(n - 1) * mean_ridge)
    g_val = objective.validation_gradient(theta, *held_out, kd=KD)
    v = solvers.solve_direct(theta, *train, None, g_val, mu=mu, kd=KD)
    shift = float((v * objective.regulariser(theta.shape, mu=mu) * theta).sum())  # v^T [mu W; mu eps b]
    corrected = (n * predicted + shift) / (n - 1)
    naive_error = np.abs(predicted - mean_form).mean()
    assert np.abs(corrected - mean_form).mean() < 0.3 * naive_error  # the renormalisation term explains it
    assert np.mean(np.sign(corrected) == np.sign(mean_form)) > np.mean(np.sign(predicted) == np.sign(mean_form))


def test_influence_on_weights_matches_finite_difference():
    features, teacher, labels = mixture(340, 5, 3, seed=2, corrupted=4)
    train, held_out = (features[:80], teacher[:80], labels[:80]), (features[80:], teacher[80:], labels[80:])
    weights = np.random.default_rng(0).uniform(0.3, 1.0, 80)

    def validation_at(w):
        theta = proxy.fit(*train, weights=w, mu=0.5, kd=KD, tolerance=1e-14).theta
        return theta, objective.validation_loss(theta, *held_out, kd=KD)

    theta, _ = validation_at(weights)
    derivative = tensors.to_numpy(influence.influence_on_weights(theta, *train, weights, *held_out, mu=0.5, kd=KD,
                                                                 bias_damping=1e-3, solver="direct"))
    assert derivative.shape == (80,) and derivative.dtype == np.float64
    for j in (0, 7, 41):
        step = np.zeros(80)
        step[j] = 1e-4
        finite = (validation_at(weights + step)[1] - validation_at(weights - step)[1]) / 2e-4
        assert derivative[j] == pytest.approx(finite, rel=1e-4, abs=1e-9)
    assert derivative[0] > 0  # more weight on a corrupted sample raises L_V (= minus its removal score)


def test_solvers_agree():
    features, teacher, labels = mixture(400, 8, 4, seed=3, corrupted=10)
    z, _, _ = objective.standardise(features)
    train, held_out = (z[:200], teacher[:200], labels[:200]), (z[200:], teacher[200:], labels[200:])
    theta = proxy.fit(*train, mu=0.5, kd=KD).theta
    g_val = objective.validation_gradient(theta, *held_out, kd=KD)
    def scores_of(direction):
        return tensors.to_numpy(influence.influence_scores(theta, direction, *train, kd=KD))

    scores = {name: scores_of(solve(theta, *train, None, g_val, mu=0.5, kd=KD))
              for name, solve in influence.SOLVERS.items()}
    assert scipy.stats.spearmanr(scores["cg"], scores["direct"])[0] >= 0.99
    # float32 curvature products: the exact solvers agree to ~1e-5 of the scores' scale (not 1e-10)
    tolerance = 1e-4 * np.abs(scores["direct"]).max()
    np.testing.assert_allclose(scores["cg"], scores["direct"], rtol=0, atol=tolerance)
    jacobi = solvers.solve_cg(theta, *train, None, g_val, mu=0.5, kd=KD, preconditioner="jacobi")
    np.testing.assert_allclose(scores_of(jacobi), scores["direct"], rtol=0, atol=tolerance)
    assert scipy.stats.spearmanr(scores["ekfac"], scores["direct"])[0] > 0.6  # clustered: approximate


def test_cg_limits_reach_the_solver_and_leave_default_keys_alone():
    features, teacher, labels = pool()
    base = dict(solver="cg", estimator="first_order")
    converged = influence.score(features, teacher, labels, config=InfluenceConfig(**base))
    same = influence.score(features, teacher, labels, config=InfluenceConfig(**base, cg_tolerance=1e-10))
    np.testing.assert_array_equal(same.scores, converged.scores)  # the explicit default changes nothing
    capped = influence.score(features, teacher, labels, config=InfluenceConfig(**base, cg_max_iterations=1))
    assert np.abs(capped.scores - converged.scores).max() > 1e-3 * np.abs(converged.scores).max()
    assert scipy.stats.spearmanr(capped.scores, converged.scores)[0] > 0.5  # one preconditioned step: rough
    loose = influence.score(features, teacher, labels, config=InfluenceConfig(**base, cg_tolerance=1e-3))
    np.testing.assert_allclose(loose.scores, converged.scores, rtol=0, atol=1e-2 * np.abs(converged.scores).max())
    # unset limits are not part of the artefact key's input: keys of earlier scores stay valid
    assert set(InfluenceConfig().to_dict()) == {"proxy", "solver", "folds", "seed", "chunk_size", "materialise_fold",
                                                "estimator"}
    assert InfluenceConfig(solver="cg", cg_max_iterations=3).to_dict()["cg_max_iterations"] == 3
    for settings, message in ((dict(solver="direct", cg_max_iterations=3), "cg solver only"),
                              (dict(solver="cg", cg_tolerance=0.0), "cg_tolerance"),
                              (dict(solver="cg", cg_max_iterations=0), "cg_max_iterations")):
        with pytest.raises(ValueError, match=message):
            InfluenceConfig(**settings)


def test_ekfac_is_close_on_a_well_conditioned_problem():
    rng = np.random.default_rng(0)
    features, teacher, labels = rng.normal(size=(600, 6)), rng.normal(size=(600, 4)), rng.integers(0, 4, 600)
    train, held_out = (features[:300], teacher[:300], labels[:300]), (features[300:], teacher[300:], labels[300:])
    theta = proxy.fit(*train, mu=1.0, kd=KD).theta
    g_val = objective.validation_gradient(theta, *held_out, kd=KD)
    exact = tensors.to_numpy(influence.influence_scores(
        theta, solvers.solve_direct(theta, *train, None, g_val, mu=1.0, kd=KD), *train, kd=KD))
    for curvature in ("output", "residual"):
        direction = solvers.solve_ekfac(theta, *train, None, g_val, mu=1.0, kd=KD, curvature=curvature)
        approximate = tensors.to_numpy(influence.influence_scores(theta, direction, *train, kd=KD))
        assert scipy.stats.spearmanr(approximate, exact)[0] > 0.95
        assert approximate @ exact / (exact @ exact) == pytest.approx(1.0, abs=0.1)


def pool(seed=4, n=300):
    return mixture(n, 6, 3, seed, corrupted=15)


def test_score_is_invariant_to_chunk_size_and_memmap_float16(tmp_path):
    features, teacher, labels = pool()
    half = features.astype(np.float16)
    memmap = np.lib.format.open_memmap(tmp_path / "features.npy", mode="w+", dtype=np.float16, shape=half.shape)
    memmap[:] = half
    reference = influence.score(half.astype(np.float64), teacher, labels, config=InfluenceConfig(chunk_size=4096))
    for config in (InfluenceConfig(chunk_size=7), InfluenceConfig(chunk_size=50, materialise_fold=False)):
        result = influence.score(memmap, teacher, labels, config=config)
        assert result.mu == reference.mu
        # float32 curvature sums depend on the chunking at round-off
        np.testing.assert_allclose(result.scores, reference.scores, rtol=0, atol=1e-5 * np.abs(reference.scores).max())
    assert reference.mu_table and reference.mu == min(reference.mu_table, key=lambda row: row["val_loss"])["mu"]


@pytest.mark.parametrize("estimator", ["first_order", "newton"])
def test_score_matches_hand_cross_fitting_and_never_validates_on_scored_samples(estimator):
    features, teacher, labels = pool()
    config = InfluenceConfig(folds=3, seed=5, proxy=ProxyConfig(mu=0.2), estimator=estimator)
    result = influence.score(features, teacher, labels, config=config)
    assert result.estimator == estimator
    np.testing.assert_array_equal(result.fold, proxy.stratified_folds(labels, 3, 5))
    z, _, _ = objective.standardise(features)  # statistics of the whole scored pool
    for k in range(3):
        train, held_out = np.flatnonzero(result.fold == k), np.flatnonzero(result.fold != k)
        assert len(train) and not set(train) & set(held_out) and len(train) + len(held_out) == len(labels)
        part = (z[train], teacher[train], labels[train])
        theta = proxy.fit(*part, mu=0.2, kd=KD).theta
        validation = (z[held_out], teacher[held_out], labels[held_out])
        if estimator == "newton":
            expected = solvers.newton_removal_scores(theta, *part, *validation, mu=0.2, kd=KD)
        else:
            direction = solvers.solve_direct(theta, *part, None, objective.validation_gradient(theta, *validation, kd=KD),
                                             mu=0.2, kd=KD)
            expected = influence.influence_scores(theta, direction, *part, kd=KD)
        np.testing.assert_allclose(result.scores[train], expected, rtol=1e-6, atol=1e-12)
    assert np.mean(result.scores[:15] < 0) >= 0.8  # the corrupted samples


def test_result_fields_teacher_scores_and_progress():
    features, teacher, labels = pool()
    steps = []
    result = influence.score(features, teacher, labels, config=InfluenceConfig(solver="cg"),
                             on_step=lambda step, info: steps.append((step, info["stage"])))
    stages = [(s, stage) for s, stage in steps if stage != "fit"]  # fit: each Newton step of a fold
    assert stages[0] == (0, "prepare") and [s for s, _ in stages] == [0, 1, 2]
    assert {s for s, stage in steps if stage == "fit"} == {0, 1}  # both folds' fits report their steps
    restored = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(restored.scores, result.scores)
    assert result.scores.dtype == np.float64 and result.fold.dtype == np.int64 and result.solver == "cg"
    assert set(result.teacher_scores) == {"el2n", "entropy", "margin", "kd_loss"}
    assert all(v.shape == (300,) for v in result.teacher_scores.values())
    assert {"fit", "solve", "scores", "total"} <= set(result.seconds) and len(result.grad_norms) == 2
    assert max(result.grad_norms) < 1e-4
    np.testing.assert_array_equal(result.teacher_scores["entropy"], teacher_statistics(teacher, labels)["entropy"])


def test_configuration_errors_are_explicit():
    features, teacher, labels = pool()
    for config in (InfluenceConfig(folds=1), InfluenceConfig(solver="lbfgs"), InfluenceConfig(estimator="exact")):
        with pytest.raises(ValueError):
            influence.score(features, teacher, labels, config=config)
    wide = np.zeros((4, 900)), np.zeros((4, 10)), np.arange(4) % 2
    with pytest.raises(ValueError, match="too large"):
        influence.score(*wide, config=InfluenceConfig(estimator="newton"))
    assert influence.resolve_estimator(InfluenceConfig(estimator="first_order"), 30) == "first_order"
    assert influence.resolve_estimator(InfluenceConfig(), 650, rows=673) == "newton"  # digits: n ~ p
    assert influence.resolve_estimator(InfluenceConfig(), 650, rows=5000) == "first_order"  # CIFAR pool
    assert influence.resolve_estimator(InfluenceConfig(estimator="auto"), 10 * 901) == "first_order"
    assert influence.resolve_estimator(InfluenceConfig(estimator="auto", solver="cg"), 30) == "first_order"
    assert influence.resolve_estimator(InfluenceConfig(estimator="auto"), 30) == "newton"

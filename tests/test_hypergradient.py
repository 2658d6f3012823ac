"""J and its hypergradient at one psi (``policy.hypergradient``, ``policy.inner``) against finite
differences, a fresh solve, and the known direction of the hard-sample problem."""
import numpy as np
import pytest

from ifbeta.config import KDConfig
from ifbeta.influence import objective, proxy, weighted
from ifbeta.influence import scores as influence
from ifbeta.policy import axes, hypergradient
from tests.policy_problems import hard_problem, prepared


@pytest.fixture(scope="module")
def hard():
    features, teacher, labels, is_hard = hard_problem()
    return features, teacher, labels, is_hard, axes.entropy_axis(features, teacher, labels)


def test_influence_on_weights_is_the_derivative_of_validation_loss():
    features, teacher, labels, _ = hard_problem(n=120, d=4, classes=3)
    kd, mu = KDConfig(), 0.5
    train, val = np.arange(80), np.arange(80, 120)
    weights = np.random.default_rng(0).uniform(0.2, 1.0, size=80)

    def validation(w):
        theta = proxy.fit(features[train], teacher[train], labels[train], weights=w, mu=mu, kd=kd, tolerance=1e-12).theta
        return objective.validation_loss(theta, features[val], teacher[val], labels[val], kd=kd), theta

    _, theta = validation(weights)
    derivative = influence.influence_on_weights(theta, features[train], teacher[train], labels[train], weights,
                                                features[val], teacher[val], labels[val], mu=mu, kd=kd,
                                                bias_damping=1e-3)
    h = 1e-5
    for i in (0, 7, 33, 79):
        step = np.zeros(80)
        step[i] = h
        numeric = (validation(weights + step)[0] - validation(weights - step)[0]) / (2 * h)
        assert np.isclose(derivative[i], numeric, rtol=1e-4, atol=1e-9), i


@pytest.mark.parametrize("stratify", [True, False])
def test_implicit_hypergradient_matches_finite_difference(hard, stratify):
    features, teacher, labels, _, axis = hard
    problem = prepared(features[:300], teacher[:300], labels[:300], axis[:300], stratify=stratify)
    h = 1e-4
    for psi in (np.array([0.3, -0.5]), np.zeros(2), np.array([1.2, 0.8])):
        gradient = hypergradient.relaxed(problem, psi, 0.7).gradient
        numeric = [(hypergradient.relaxed(problem, psi + h * e, 0.7, False).J
                    - hypergradient.relaxed(problem, psi - h * e, 0.7, False).J) / (2 * h) for e in np.eye(2)]
        assert np.allclose(gradient, numeric, rtol=1e-4, atol=1e-7), psi


def test_reused_preconditioner_and_warm_adjoint_give_the_fresh_answer(hard):
    """Large folds reuse a Hessian factor across outer steps; the answer must not depend on it."""
    features, teacher, labels, _, axis = hard
    reused = prepared(features[:300], teacher[:300], labels[:300], axis[:300])
    assert all(weighted.matrix_free(fold) for fold in reused.folds)
    hypergradient.relaxed(reused, np.array([1.5, -1.0]), 0.7)  # a distant step leaves its factor and adjoint behind
    assert all(fold.preconditioner is not None and fold.adjoint is not None for fold in reused.folds)
    psi = np.array([-0.4, 0.6])
    again = hypergradient.relaxed(reused, psi, 0.7)
    fresh = hypergradient.relaxed(prepared(features[:300], teacher[:300], labels[:300], axis[:300]), psi, 0.7)
    assert np.isclose(again.J, fresh.J, rtol=1e-10)
    assert np.allclose(again.gradient, fresh.gradient, rtol=1e-6, atol=1e-12)


def test_reinforce_gradient_agrees_in_sign_with_implicit(hard):
    features, teacher, labels, _, axis = hard
    problem = prepared(features, teacher, labels, axis, reinforce_samples=12)
    implicit = hypergradient.relaxed(problem, np.zeros(2), 0.95).gradient
    assert implicit[0] < 0 < implicit[1]  # the known answer: more weight on easy (high u) samples
    rng = np.random.default_rng(0)
    estimates = np.array([hypergradient.reinforce(problem, np.zeros(2), 0.95, rng).gradient for _ in range(2)])
    assert np.all(np.sign(estimates.mean(axis=0)) == np.sign(implicit))

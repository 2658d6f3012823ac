"""Bilevel policy optimisation on problems whose answer is known.

(1) Gaussian classes, teacher logits follow the true classes, 30% of the labels flipped to a random
    other class: under the KD loss (lam = 0.5, so the CE term matters) the flipped samples are
    harmful, and on the influence axis the policy must move to alpha > beta and keep fewer of them.
(2) 30% "hard" samples whose teacher logits are soft and noisy (unfittable by a linear head): at a
    very high pruning ratio the policy on the teacher-entropy axis must prefer the easy samples,
    while at r = 0.5 it stays close to uniform.
"""
import numpy as np
import pytest

from ifbeta.config import InfluenceConfig, KDConfig, PolicyConfig, ProxyConfig
from ifbeta.influence import objective, proxy
from ifbeta.influence import scores as influence
from ifbeta.policy import beta as policy
from ifbeta.policy import bilevel

RECORD_KEYS = {"step", "alpha", "beta", "J", "objective", "kl", "proxy_val_accuracy", "class_histogram", "mean_u",
               "seconds"}


def gaussian_classes(rng, n, d, classes, separation):
    means = rng.normal(size=(classes, d)) * separation
    labels = np.arange(n) % classes
    features = means[labels] + rng.normal(size=(n, d))
    teacher = 2.0 * features @ means.T - (means**2).sum(axis=1)  # (n, C) Gaussian log-likelihoods
    return features, teacher / teacher.std() * 3.0, labels


def flipped_problem(n=480, d=8, classes=4, flip=0.3, seed=0):
    rng = np.random.default_rng(seed)
    features, teacher, labels = gaussian_classes(rng, n, d, classes, 2.0)
    flipped = rng.random(n) < flip
    labels = labels.copy()
    labels[flipped] = (labels[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    return features, teacher, labels, flipped


def hard_problem(n=480, d=8, classes=4, hard=0.3, seed=0):
    rng = np.random.default_rng(seed)
    features, teacher, labels = gaussian_classes(rng, n, d, classes, 1.5)
    is_hard = rng.random(n) < hard
    teacher[is_hard] = 0.2 * teacher[is_hard] + 2.0 * rng.normal(size=(is_hard.sum(), classes))
    return features, teacher, labels, is_hard


@pytest.fixture(scope="module")
def flipped():
    features, teacher, labels, flipped = flipped_problem()
    kd = KDConfig(lam=0.5)
    scores = influence.score(features, teacher, labels, config=InfluenceConfig(proxy=ProxyConfig(kd=kd))).scores
    return features, teacher, labels, flipped, scores, kd


@pytest.fixture(scope="module")
def hard():
    features, teacher, labels, is_hard = hard_problem()
    return features, teacher, labels, is_hard, bilevel.entropy_axis(features, teacher, labels)


def prepared(features, teacher, labels, axis, **config):
    return bilevel._prepare(features, teacher, labels, axis, kd=KDConfig(), mu=None, bias_damping=1e-3,
                            config=PolicyConfig(**config))


# ----------------------------------------------------------------------------- gradients


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
        gradient = bilevel._relaxed(problem, psi, 0.7).gradient
        numeric = [(bilevel._relaxed(problem, psi + h * e, 0.7, False).J
                    - bilevel._relaxed(problem, psi - h * e, 0.7, False).J) / (2 * h) for e in np.eye(2)]
        assert np.allclose(gradient, numeric, rtol=1e-4, atol=1e-7), psi


def test_reused_preconditioner_and_warm_adjoint_give_the_fresh_answer(hard):
    """Large folds reuse a Hessian factor across outer steps; the answer must not depend on it."""
    features, teacher, labels, _, axis = hard
    reused = prepared(features[:300], teacher[:300], labels[:300], axis[:300])
    assert all(bilevel._matrix_free(fold) for fold in reused.folds)
    bilevel._relaxed(reused, np.array([1.5, -1.0]), 0.7)  # a distant step leaves its factor and adjoint behind
    assert all(fold.preconditioner is not None and fold.adjoint is not None for fold in reused.folds)
    psi = np.array([-0.4, 0.6])
    again = bilevel._relaxed(reused, psi, 0.7)
    fresh = bilevel._relaxed(prepared(features[:300], teacher[:300], labels[:300], axis[:300]), psi, 0.7)
    assert np.isclose(again.J, fresh.J, rtol=1e-10)
    assert np.allclose(again.gradient, fresh.gradient, rtol=1e-6, atol=1e-12)


def test_reinforce_gradient_agrees_in_sign_with_implicit(hard):
    features, teacher, labels, _, axis = hard
    problem = prepared(features, teacher, labels, axis, reinforce_samples=12)
    implicit = bilevel._relaxed(problem, np.zeros(2), 0.95).gradient
    assert implicit[0] < 0 < implicit[1]  # the known answer: more weight on easy (high u) samples
    rng = np.random.default_rng(0)
    estimates = np.array([bilevel._reinforce(problem, np.zeros(2), 0.95, rng).gradient for _ in range(2)])
    assert np.all(np.sign(estimates.mean(axis=0)) == np.sign(implicit))


# ----------------------------------------------------------------------------- learning


def test_policy_avoids_harmful_flipped_labels(flipped):
    features, teacher, labels, is_flipped, scores, kd = flipped
    u = policy.rank_normalise(scores, groups=labels)
    assert u[is_flipped].mean() < 0.4  # the influence axis puts flipped samples in the low-u tail
    (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=[0.5], axis_values=scores, kd=kd,
                                        shrinkage=0.0, steps=12)
    J = [record["J"] for record in result.trace]
    assert np.log(result.alpha / result.beta) > 0.4
    assert J[1] < J[0] and J[2] < J[1] and min(J) < J[0] - 0.01
    policy_share = np.mean([is_flipped[policy.sample_subset(u, labels, result.k, result.alpha, result.beta,
                                                            seed=seed)].mean() for seed in range(10)])
    random_share = np.mean([is_flipped[policy.sample_subset(u, labels, result.k, 1.0, 1.0, seed=seed)].mean()
                            for seed in range(10)])
    assert policy_share < random_share - 0.04
    assert is_flipped[result.indices].mean() < is_flipped.mean()


def test_high_ratio_prefers_easy_samples(hard):
    features, teacher, labels, is_hard, axis = hard
    moderate, extreme = bilevel.optimise_policy(features, teacher, labels, ratios=[0.5, 0.95], axis_values=axis,
                                                axis="entropy", shrinkage=0.0, steps=12)
    assert moderate.ratio == 0.5 and extreme.ratio == 0.95 and extreme.axis == "entropy"
    tilt = np.log(extreme.alpha / extreme.beta)
    assert tilt > 1.0 and tilt > np.log(moderate.alpha / moderate.beta) + 0.5
    J = [record["J"] for record in extreme.trace]
    assert all(later < earlier for earlier, later in zip(J[:6], J[1:7]))  # steady descent at first
    assert min(J) < 0.9 * J[0]
    assert is_hard[extreme.indices].mean() < 0.5 * is_hard.mean()
    assert extreme.trace[-1]["mean_u"] > 0.6


def test_large_shrinkage_stays_near_uniform_and_records_every_step(hard):
    features, teacher, labels, _, axis = hard
    seen = []
    (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=[0.95], axis_values=axis, shrinkage=100.0,
                                        steps=6, tolerance=0.0, on_step=lambda step, info: seen.append((step, info)))
    assert len(result.trace) == 6 and [r["step"] for r in result.trace] == list(range(6))
    assert [step for step, _ in seen] == list(range(6)) and all(info["ratio"] == 0.95 for _, info in seen)
    for record in result.trace:
        assert RECORD_KEYS <= set(record)
        assert abs(np.log(record["alpha"])) < 0.25 and abs(np.log(record["beta"])) < 0.25
        assert np.isclose(record["objective"], record["J"] + result.c * 0.95 / 0.05 * record["kl"])
    assert 0.8 < result.alpha < 1.25 and 0.8 < result.beta < 1.25
    assert result.j_scale > 0 and np.isclose(result.c, 100.0 * result.j_scale)


# ----------------------------------------------------------------------------- the three estimators, API


def test_all_estimators_run_and_return_a_valid_subset(flipped):
    features, teacher, labels, _, scores, kd = flipped
    for estimator, options in (("implicit", dict(steps=2)), ("reinforce", dict(steps=2, reinforce_samples=2)),
                               ("grid", dict(grid_size=3))):
        (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=0.8, axis_values=scores, kd=kd,
                                            estimator=estimator, shrinkage=0.0, **options)
        assert result.estimator == estimator and result.k == policy.k_for_ratio(len(labels), 0.8)
        assert result.indices.dtype == np.int64 and len(result.indices) == result.k
        assert np.all(np.diff(result.indices) > 0)
        assert np.array_equal(np.bincount(labels[result.indices]), policy.class_quotas(labels, result.k))
        assert result.mu > 0 and result.c == 0.0 and result.j_scale is None
        if estimator == "grid":
            assert len(result.trace) == 9 and result.converged
            grid = np.array(result.landscape["J"])
            assert grid.shape == (3, 3)
            i, j = np.unravel_index(np.argmin(grid), grid.shape)
            assert np.isclose(result.alpha, result.landscape["alpha"][i])
            assert np.isclose(result.beta, result.landscape["beta"][j])
        else:
            assert len(result.trace) == 2 and result.landscape is None


def test_landscape_matches_trace_and_is_deterministic(flipped):
    features, teacher, labels, _, scores, kd = flipped
    grid = bilevel.landscape(features, teacher, labels, ratio=0.5, axis_values=scores, kd=kd, alphas=[1.0, 3.0],
                             betas=[1.0])
    (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=[0.5], axis_values=scores, kd=kd,
                                        shrinkage=0.0, steps=1)
    assert np.array(grid["J"]).shape == (2, 1)
    assert np.isclose(grid["J"][0][0], result.trace[0]["J"], rtol=1e-9)  # J at uniform, same split and mu
    assert grid["J"][1][0] < grid["J"][0][0]  # alpha = 3 (keep helpful) beats uniform
    again = bilevel.landscape(features, teacher, labels, ratio=0.5, axis_values=scores, kd=kd, alphas=[1.0, 3.0],
                              betas=[1.0])
    assert again["J"] == grid["J"]


def test_single_split_unstratified_and_entropy_axis_default(hard):
    features, teacher, labels, _, _ = hard
    (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=[0.7], axis="entropy", folds=1,
                                        val_fraction=0.3, stratify=False, shrinkage=0.0, steps=2, mu=1.0)
    assert result.folds == 1 and result.mu == 1.0 and len(result.indices) == policy.k_for_ratio(len(labels), 0.7)


def test_invalid_arguments(flipped):
    features, teacher, labels, _, scores, _ = flipped
    with pytest.raises(ValueError, match="unknown estimator"):
        bilevel.optimise_policy(features, teacher, labels, ratios=[0.5], axis_values=scores, estimator="magic")
    with pytest.raises(ValueError, match="unknown axis"):
        bilevel.optimise_policy(features, teacher, labels, ratios=[0.5], axis="vibes")
    with pytest.raises(ValueError, match="pruning ratio"):
        bilevel.optimise_policy(features, teacher, labels, ratios=[1.0], axis_values=scores)
    with pytest.raises(ValueError, match="rows"):
        bilevel.optimise_policy(features, teacher, labels, ratios=[0.5], axis_values=scores[:-1])


class _Killed(Exception):
    pass


@pytest.mark.parametrize("estimator", ["implicit", "reinforce"])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(hard, estimator):
    """Stop the loop after a few outer steps of the second ratio, resume from its last state."""
    features, teacher, labels, _, axis = hard
    options = dict(ratios=[0.5, 0.8], axis_values=axis, steps=7, tolerance=0.0, estimator=estimator,
                   reinforce_samples=2)
    reference = bilevel.optimise_policy(features, teacher, labels, **options)
    states, finished = [], []

    def checkpoint(state):
        states.append(state)
        if state.get("ratio") == 0.8 and state["adam"]["step"] == 3:
            raise _Killed

    with pytest.raises(_Killed):
        bilevel.optimise_policy(features, teacher, labels, **options, checkpoint=checkpoint, on_result=finished.append)
    assert [r.ratio for r in finished] == [0.5]  # the finished ratio was handed over before the kill
    assert states[0] == {"per_sample_mu": states[-1]["per_sample_mu"], "j_scale": states[-1]["j_scale"]}
    resumed = bilevel.optimise_policy(features, teacher, labels, **{**options, "ratios": [0.8]}, resume=states[-1])[0]
    expected = reference[1]
    assert resumed.trace[:3] == states[-1]["adam"]["trace"]  # the first steps were not recomputed
    assert len(resumed.trace) == len(expected.trace) == 7
    assert [r["step"] for r in resumed.trace] == list(range(7))
    assert (resumed.alpha, resumed.beta) == pytest.approx((expected.alpha, expected.beta), rel=1e-6)
    assert [r["J"] for r in resumed.trace] == pytest.approx([r["J"] for r in expected.trace], rel=1e-7)
    assert np.array_equal(resumed.indices, expected.indices)

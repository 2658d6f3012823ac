"""Bilevel policy optimisation (``policy.bilevel.optimise_policy``) on problems whose answer is known
(``tests/policy_problems.py``): on the influence axis the policy must move to alpha > beta and keep
fewer flipped labels; on the teacher-entropy axis at a very high pruning ratio it must prefer the easy
samples, while at r = 0.5 it stays close to uniform. Also the estimators' results, the arguments
refused, and resuming from a checkpoint.
"""
import numpy as np
import pytest

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
from ifbeta.influence import scores as influence
from ifbeta.policy import axes, bilevel
from ifbeta.policy import beta as policy
from tests.policy_problems import flipped_problem, hard_problem

RECORD_KEYS = {"step", "alpha", "beta", "J", "objective", "kl", "proxy_val_accuracy", "class_histogram", "mean_u",
               "seconds"}


@pytest.fixture(scope="module")
def flipped():
    features, teacher, labels, flipped = flipped_problem()
    kd = KDConfig(lam=0.5)
    scores = influence.score(features, teacher, labels, config=InfluenceConfig(proxy=ProxyConfig(kd=kd))).scores
    return features, teacher, labels, flipped, scores, kd


@pytest.fixture(scope="module")
def hard():
    features, teacher, labels, is_hard = hard_problem()
    return features, teacher, labels, is_hard, axes.entropy_axis(features, teacher, labels)


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

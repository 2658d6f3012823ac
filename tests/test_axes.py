"""What the Beta ranks (``policy.axes``): one orientation, larger = more helpful / easier (u near 1)."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
from ifbeta.influence import scores as influence
from ifbeta.policy import axes
from tests.policy_problems import hard_problem


@pytest.fixture(scope="module")
def problem():
    features, teacher, labels, is_hard = hard_problem(n=120, d=4, classes=3)
    kd = KDConfig(lam=0.5)
    result = influence.score(features, teacher, labels, config=InfluenceConfig(proxy=ProxyConfig(kd=kd)))
    return features, teacher, labels, is_hard, kd, result


def test_entropy_axis_is_minus_the_teacher_entropy_so_confident_samples_rank_high(problem):
    features, teacher, labels, is_hard, _, _ = problem
    values = axes.entropy_axis(features, teacher, labels)
    entropy = scipy.stats.entropy(scipy.special.softmax(teacher, axis=1), axis=1)
    assert values.shape == (len(labels),) and values.dtype == np.float64
    np.testing.assert_allclose(values, -entropy, rtol=1e-12, atol=1e-12)
    assert np.all(values <= 1e-12)
    assert values[~is_hard].mean() > values[is_hard].mean()  # the soft, noisy teacher rows are the hard ones
    np.testing.assert_array_equal(axes.easier_first([0.0, 2.0]), [0.0, -2.0])


@pytest.mark.parametrize("axis", sorted(axes.AXES))
def test_axis_values_of_a_scores_result_equal_the_axis_computed_from_the_arrays(problem, axis):
    features, teacher, labels, _, kd, result = problem
    from_result = axes.axis_values(result, axis)
    computed = axes.AXES[axis](features, teacher, labels, kd=kd, seed=0)
    assert from_result.shape == (len(labels),) and from_result.dtype == np.float64
    np.testing.assert_allclose(from_result, computed, rtol=1e-9, atol=1e-12)


def test_axis_values_orientation_and_refusal(problem):
    *_, result = problem
    np.testing.assert_array_equal(axes.axis_values(result, "influence"), result.scores)  # > 0 helpful stays high
    np.testing.assert_array_equal(axes.axis_values(result, "entropy"), -result.teacher_scores["entropy"])
    with pytest.raises(ValueError, match="unknown axis"):
        axes.axis_values(result, "vibes")

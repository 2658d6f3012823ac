"""selection.beta_policy: IF-Beta's fixed and learned Beta policies."""
from __future__ import annotations

import numpy as np
import pytest

from ifbeta.policy import beta as policy
from ifbeta.selection.registry import select
from tests.selection_problems import make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def test_ifbeta_fixed_follows_the_beta(problem):
    high = select("ifbeta-fixed", problem, 0.7, alpha=20.0, beta=1.0)
    low = select("ifbeta-fixed", problem, 0.7, alpha=1.0, beta=20.0)
    u = policy.rank_normalise(problem.influence, groups=problem.labels)
    assert u[high.indices].mean() > 0.8 and u[low.indices].mean() < 0.2
    np.testing.assert_array_equal(high.scores, problem.influence)
    entropy = select("ifbeta-fixed", problem, 0.7, alpha=20.0, beta=1.0, axis="entropy")
    assert np.mean(problem.teacher_scores["entropy"][entropy.indices]) < np.mean(problem.teacher_scores["entropy"])


def test_ifbeta_learned_reports_its_policy(problem):
    pytest.importorskip("ifbeta.policy.bilevel")
    steps = []
    chosen = select("ifbeta", problem, 0.5, steps=3, on_step=lambda step, info: steps.append(step))
    assert steps and chosen.info["alpha"] > 0 and chosen.info["beta"] > 0 and len(chosen.info["trace"]) >= 1
    entropy = select("ifbeta-entropy", problem, 0.5, steps=3)
    np.testing.assert_allclose(entropy.scores, -problem.teacher_scores["entropy"])  # low entropy -> u near 1


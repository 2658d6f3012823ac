"""J over an (alpha, beta) grid (``policy.landscape``): the same J as the loop's trace, deterministic,
the grid's values, and the scale of J."""
import numpy as np
import pytest

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
from ifbeta.influence import scores as influence
from ifbeta.policy import bilevel, landscape
from tests.policy_problems import flipped_problem, prepared


@pytest.fixture(scope="module")
def flipped():
    features, teacher, labels, flipped = flipped_problem()
    kd = KDConfig(lam=0.5)
    scores = influence.score(features, teacher, labels, config=InfluenceConfig(proxy=ProxyConfig(kd=kd))).scores
    return features, teacher, labels, flipped, scores, kd


def test_landscape_matches_trace_and_is_deterministic(flipped):
    features, teacher, labels, _, scores, kd = flipped
    grid = landscape.landscape(features, teacher, labels, ratio=0.5, axis_values=scores, kd=kd, alphas=[1.0, 3.0],
                               betas=[1.0])
    (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=[0.5], axis_values=scores, kd=kd,
                                        shrinkage=0.0, steps=1)
    assert np.array(grid["J"]).shape == (2, 1)
    assert np.isclose(grid["J"][0][0], result.trace[0]["J"], rtol=1e-9)  # J at uniform, same split and mu
    assert grid["J"][1][0] < grid["J"][0][0]  # alpha = 3 (keep helpful) beats uniform
    again = landscape.landscape(features, teacher, labels, ratio=0.5, axis_values=scores, kd=kd, alphas=[1.0, 3.0],
                                betas=[1.0])
    assert again["J"] == grid["J"]


def test_grid_values_are_geometric_and_odd_sizes_contain_uniform():
    values = landscape.grid_values(7)
    assert values[0] == pytest.approx(landscape.GRID_RANGE[0]) and values[-1] == pytest.approx(landscape.GRID_RANGE[1])
    assert np.allclose(values[1:] / values[:-1], values[1] / values[0])
    assert values[3] == pytest.approx(1.0) and 1.0 not in landscape.grid_values(4)


@pytest.fixture
def problem(flipped):
    features, teacher, labels, _, scores, _ = flipped
    return prepared(features, teacher, labels, scores, mu=1.0, grid_size=3)


def test_j_scale_is_the_spread_of_J_on_the_scale_grid_and_leaves_the_full_fits(problem):
    values, trace = landscape.evaluate_grid(problem, landscape.SCALE_RATIO, landscape.SCALE_GRID,
                                            landscape.SCALE_GRID, 0.0)
    assert values.shape == (3, 3) and len(trace) == 9 and np.all(values > 0)
    spread = landscape.j_scale(problem)
    assert spread == pytest.approx(values.max() - values.min(), rel=1e-7) and spread > 0
    assert all(fold.theta is fold.theta_full and fold.adjoint is None for fold in problem.folds)


def test_grid_search_takes_the_argmin_and_a_large_penalty_picks_uniform(problem):
    psi, trace, converged = landscape.grid_search(problem, 0.5, 0.0, None)
    J = np.array(problem.landscape["J"])
    i, j = np.unravel_index(np.argmin(J), J.shape)
    assert converged and len(trace) == 9 and J.shape == (3, 3)
    assert np.allclose(np.exp(psi), [problem.landscape["alpha"][i], problem.landscape["beta"][j]])
    assert (i, j) != (1, 1)  # J alone prefers a tilted policy on the flipped-label problem
    psi, _, _ = landscape.grid_search(problem, 0.5, 1e6, None)  # KL is 0 only at alpha = beta = 1
    assert np.allclose(np.exp(psi), [1.0, 1.0])

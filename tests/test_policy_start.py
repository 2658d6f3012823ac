"""The ratio-adaptive start and prior of the Beta policy: the closed-form Beta-Beta KL against
numerical integration, the prior's shape per ratio, and the bilevel loop starting at and shrinking
towards it (uniform unchanged, its keys too)."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ifbeta.config import PolicyConfig
from ifbeta.policy import axes, bilevel
from ifbeta.policy import beta as policy
from tests.policy_problems import hard_problem


def kl_by_quadrature(a, b, a0, b0) -> float:
    p, q = stats.beta(a, b), stats.beta(a0, b0)
    integrand = lambda u: p.pdf(u) * (p.logpdf(u) - q.logpdf(u))  # noqa: E731
    # split at 1/2 so the integrable singularities at both ends are handled by quad's endpoint rules
    return sum(integrate.quad(integrand, lo, hi, limit=200, epsabs=1e-12, epsrel=1e-10)[0]
               for lo, hi in ((0.0, 0.5), (0.5, 1.0)))


@pytest.mark.parametrize("a, b, a0, b0", [(2.0, 3.0, 1.0, 1.0), (0.7, 1.6, 1.74, 0.57), (5.0, 1.2, 0.6, 1.5),
                                         (1.3, 1.3, 1.3, 1.3), (3.0, 0.8, 2.0, 0.5)])
def test_closed_form_kl_matches_numerical_integration(a, b, a0, b0):
    assert policy.kl_beta(a, b, a0, b0) == pytest.approx(kl_by_quadrature(a, b, a0, b0), rel=1e-6, abs=1e-9)
    psi = torch.tensor([math.log(a), math.log(b)], dtype=torch.float64, requires_grad=True)
    value = policy.kl_beta_torch(psi[0], psi[1], a0, b0)
    assert float(value.detach()) == pytest.approx(policy.kl_beta(a, b, a0, b0), rel=1e-12, abs=1e-12)
    gradient = torch.autograd.grad(value, psi)[0].numpy()
    step = 1e-6
    numeric = [(policy.kl_beta(a * math.exp(step * e[0]), b * math.exp(step * e[1]), a0, b0)
                - policy.kl_beta(a * math.exp(-step * e[0]), b * math.exp(-step * e[1]), a0, b0)) / (2 * step)
               for e in np.eye(2)]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_kl_to_beta_one_one_is_kl_to_uniform():
    for a, b in ((0.3, 2.0), (4.0, 4.0), (1.0, 1.0)):
        assert policy.kl_beta(a, b, 1.0, 1.0) == pytest.approx(policy.kl_to_uniform(a, b), abs=1e-12)
    assert policy.kl_beta(2.0, 3.0, 2.0, 3.0) == pytest.approx(0.0, abs=1e-14)


def test_ratio_adaptive_prior_tilts_hard_at_low_and_easy_at_high_ratios():
    ratios = np.linspace(0.05, 0.95, 19)
    priors = [policy.ratio_adaptive_prior(r) for r in ratios]
    for r, (a0, b0) in zip(ratios, priors):
        assert a0 * b0 == pytest.approx(1.0)
        assert a0 / (a0 + b0) == pytest.approx(1.0 / (1.0 + 16.0 ** (0.5 - r)))  # mean u, closed form
        if r < policy.CROSSOVER_RATIO - 1e-9:
            assert b0 > 1.0 > a0  # mass towards u near 0: low influence, the hard end
        elif r > policy.CROSSOVER_RATIO + 1e-9:
            assert a0 > 1.0 > b0  # mass towards u near 1: helpful, the easy end
    assert policy.ratio_adaptive_prior(0.5) == (1.0, 1.0)
    means = [a / (a + b) for a, b in priors]
    assert all(later > earlier for earlier, later in zip(means, means[1:]))
    assert policy.ratio_adaptive_prior(0.9) == pytest.approx((4.0 ** 0.4, 4.0 ** -0.4))
    assert policy.policy_prior("uniform", 0.9) == (1.0, 1.0)
    with pytest.raises(ValueError, match="unknown policy start"):
        policy.policy_prior("warm", 0.5)
    with pytest.raises(ValueError, match="ratio"):
        policy.ratio_adaptive_prior(1.0)


def test_uniform_start_keeps_the_artefact_keys():
    assert "start" not in PolicyConfig().to_dict()
    assert PolicyConfig(start="ratio-adaptive").to_dict()["start"] == "ratio-adaptive"


@pytest.fixture(scope="module")
def hard():
    features, teacher, labels, _ = hard_problem(n=240)
    return features, teacher, labels, axes.entropy_axis(features, teacher, labels)


@pytest.mark.parametrize("ratio", [0.2, 0.8])
def test_the_loop_starts_at_and_shrinks_towards_the_prior(hard, ratio):
    features, teacher, labels, axis = hard
    prior = policy.ratio_adaptive_prior(ratio)
    (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=[ratio], axis_values=axis, steps=4,
                                        tolerance=0.0, shrinkage=1e4, start="ratio-adaptive")
    first = result.trace[0]
    assert (first["alpha"], first["beta"]) == pytest.approx(prior) and first["kl"] == pytest.approx(0.0, abs=1e-12)
    for record in result.trace:
        assert record["kl"] == pytest.approx(policy.kl_beta(record["alpha"], record["beta"], *prior), rel=1e-9,
                                             abs=1e-12)
        assert record["objective"] == pytest.approx(record["J"] + result.c * ratio / (1 - ratio) * record["kl"])
    assert (result.alpha, result.beta) == pytest.approx(prior, rel=0.05)  # huge shrinkage: held at the prior
    (uniform,) = bilevel.optimise_policy(features, teacher, labels, ratios=[ratio], axis_values=axis, steps=4,
                                         tolerance=0.0, shrinkage=1e4)
    assert (uniform.trace[0]["alpha"], uniform.trace[0]["beta"]) == (1.0, 1.0)
    assert (uniform.alpha, uniform.beta) == pytest.approx((1.0, 1.0), rel=0.05)


def test_the_grid_estimator_shrinks_towards_the_prior_too(hard):
    features, teacher, labels, axis = hard
    (result,) = bilevel.optimise_policy(features, teacher, labels, ratios=[0.9], axis_values=axis, estimator="grid",
                                        grid_size=5, shrinkage=1e4, start="ratio-adaptive")
    grid = policy.ratio_adaptive_prior(0.9)
    closest = min(((a, b) for a in np.geomspace(0.125, 8, 5) for b in np.geomspace(0.125, 8, 5)),
                  key=lambda ab: policy.kl_beta(ab[0], ab[1], *grid))
    assert (result.alpha, result.beta) == pytest.approx(closest)
    assert all(record["kl"] == pytest.approx(policy.kl_beta(record["alpha"], record["beta"], *grid))
               for record in result.trace)


def test_prune_has_the_policy_start_flag():
    from ifbeta.cli import prune

    parser = argparse.ArgumentParser()
    prune.add_arguments(parser)
    args = parser.parse_args(["--ratio", "0.5", "--out", "x", "--policy-start", "ratio-adaptive"])
    assert prune.policy_config(args).start == "ratio-adaptive"
    assert prune.policy_config(parser.parse_args(["--ratio", "0.5", "--out", "x"])).start == "uniform"
    with pytest.raises(SystemExit):
        parser.parse_args(["--ratio", "0.5", "--out", "x", "--policy-start", "warm"])

"""Beta policy: ranks, weights, inclusion probabilities, quotas, sampler, KL, gradients."""
import itertools

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from ifbeta.policy import beta as policy


def labels_of(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


# ----------------------------------------------------------------------------- rank_normalise
def test_rank_normalise_global_and_grouped():
    values = np.array([3.0, 1.0, 2.0, 0.0])
    assert np.allclose(policy.rank_normalise(values), [3.5 / 4, 1.5 / 4, 2.5 / 4, 0.5 / 4])
    groups = np.array([0, 0, 1, 1])
    assert np.allclose(policy.rank_normalise(values, groups=groups), [0.75, 0.25, 0.75, 0.25])


def test_rank_normalise_ties_are_stable():
    u = policy.rank_normalise(np.zeros(4))
    assert np.allclose(u, [0.125, 0.375, 0.625, 0.875])


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.integers(1, 4))
@settings(max_examples=50, deadline=None)
def test_rank_normalise_is_a_permutation_of_midpoints(values, classes):
    values = np.array(values)
    groups = np.arange(len(values)) % classes
    u = policy.rank_normalise(values, groups=groups)
    for g in np.unique(groups):
        members = groups == g
        n = members.sum()
        assert np.allclose(np.sort(u[members]), (np.arange(n) + 0.5) / n)
        # order-preserving within the group
        order = np.argsort(values[members], kind="stable")
        assert np.all(np.diff(u[members][order]) > 0)


# ----------------------------------------------------------------------------- Beta weights
@pytest.mark.parametrize("alpha,beta", [(1, 1), (0.3, 2.5), (5, 0.5), (40, 40), (0.05, 0.05)])
def test_beta_weights_match_scipy(alpha, beta):
    u = (np.arange(200) + 0.5) / 200
    assert np.allclose(policy.beta_weights(u, alpha, beta), scipy.stats.beta.pdf(u, alpha, beta), rtol=1e-10)
    torch_log = policy.beta_log_weights_torch(torch.tensor(u), torch.tensor(np.log(alpha)), torch.tensor(np.log(beta)))
    assert np.allclose(torch_log.numpy(), scipy.stats.beta.logpdf(u, alpha, beta), rtol=1e-9, atol=1e-9)


def test_beta_weights_reject_bad_parameters():
    with pytest.raises(ValueError):
        policy.beta_weights(np.array([0.5]), 0.0, 1.0)


# ----------------------------------------------------------------------------- inclusion probabilities
def check_inclusion(weights, k, pi):
    assert pi.shape == weights.shape
    assert abs(pi.sum() - k) < 1e-8 * max(1, k)
    assert np.all(pi >= 0) and np.all(pi <= 1)
    free = pi < 1 - 1e-12
    if free.any():
        ratio = pi[free] / weights[free]
        assert np.allclose(ratio, ratio[0], rtol=1e-8)
        capped = ~free
        if capped.any():  # the capped ones are the largest weights
            assert weights[capped].min() >= weights[free].max() * (1 - 1e-9)
            assert ratio[0] * weights[capped].min() >= 1 - 1e-8


@given(st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=80), st.data())
@settings(max_examples=100, deadline=None)
def test_inclusion_probabilities_property(weights, data):
    weights = np.array(weights)
    k = data.draw(st.integers(1, len(weights)))
    check_inclusion(weights, k, policy.inclusion_probabilities(weights, k))


def test_inclusion_probabilities_known_values():
    pi = policy.inclusion_probabilities(np.array([100.0, 1.0, 1.0, 2.0]), 2)
    assert np.allclose(pi, [1.0, 0.25, 0.25, 0.5])
    assert np.allclose(policy.inclusion_probabilities(np.ones(10), 3), 0.3)
    assert np.allclose(policy.inclusion_probabilities(np.arange(1.0, 6.0), 5), 1.0)


def test_inclusion_from_log_does_not_underflow():
    log_w = np.array([0.0, -2000.0, -2001.0, -2002.0])  # exp underflows to zero for all but one
    pi = policy.inclusion_probabilities_from_log(log_w, 2)
    assert pi[0] == 1.0 and abs(pi.sum() - 2) < 1e-12
    assert np.allclose(pi[1:], np.exp([0, -1, -2]) / np.exp([0, -1, -2]).sum())


def test_inclusion_probabilities_errors():
    with pytest.raises(ValueError):
        policy.inclusion_probabilities(np.ones(3), 4)
    with pytest.raises(ValueError):
        policy.inclusion_probabilities(np.array([1.0, 0.0, 0.0]), 2)
    with pytest.raises(ValueError):
        policy.inclusion_probabilities(np.array([1.0, -1.0]), 1)


def test_torch_inclusion_matches_numpy_and_gradient_is_finite_difference():
    rng = np.random.default_rng(0)
    labels = labels_of([30, 45, 25])
    u = policy.rank_normalise(rng.normal(size=100), groups=labels)
    direction = rng.normal(size=100)
    for alpha, beta, k in [(3.0, 0.7, 40), (0.5, 0.5, 20), (1.3, 2.0, 80), (8.0, 1.0, 60)]:
        psi = torch.tensor([np.log(alpha), np.log(beta)], dtype=torch.float64, requires_grad=True)
        pi_t = policy.policy_probabilities_torch(u, labels, k, psi[0], psi[1])
        pi = policy.policy_probabilities(u, labels, k, alpha, beta)
        assert np.allclose(pi_t.detach().numpy(), pi, atol=1e-12)
        (gradient,) = torch.autograd.grad(pi_t @ torch.tensor(direction), psi)

        def value(p):
            return direction @ policy.policy_probabilities(u, labels, k, np.exp(p[0]), np.exp(p[1]))

        h = 1e-6
        numeric = [(value(psi.detach().numpy() + h * e) - value(psi.detach().numpy() - h * e)) / (2 * h)
                   for e in np.eye(2)]
        assert np.allclose(gradient.numpy(), numeric, rtol=1e-5, atol=1e-7), (alpha, beta, k)


def test_policy_probabilities_per_class_sums_equal_quotas():
    labels = labels_of([10, 30, 60])
    u = policy.rank_normalise(np.random.default_rng(1).normal(size=100), groups=labels)
    pi = policy.policy_probabilities(u, labels, 33, 4.0, 0.5)
    quotas = policy.class_quotas(labels, 33)
    assert np.allclose(np.bincount(labels, weights=pi), quotas)
    uniform = policy.policy_probabilities(u, labels, 50, 1.0, 1.0, stratify=False)
    assert np.allclose(uniform, 0.5)


# ----------------------------------------------------------------------------- quotas
def test_class_quotas_largest_remainder():
    labels = labels_of([50, 30, 20])
    assert list(policy.class_quotas(labels, 10)) == [5, 3, 2]
    assert list(policy.class_quotas(labels, 7)) == [4, 2, 1]  # exact 3.5, 2.1, 1.4 -> remainders .5 .1 .4
    assert list(policy.class_quotas(labels, 100)) == [50, 30, 20]


@given(st.lists(st.integers(1, 40), min_size=1, max_size=12), st.data())
@settings(max_examples=100, deadline=None)
def test_class_quotas_property(sizes, data):
    labels = labels_of(sizes)
    k = data.draw(st.integers(len(sizes), len(labels)))
    quotas = policy.class_quotas(labels, k)
    sizes = np.array(sizes)
    assert quotas.sum() == k
    assert np.all(quotas >= 1) and np.all(quotas <= sizes)
    exact = k * sizes / sizes.sum()
    if np.all(exact >= 1):  # no minimum-one adjustment needed: pure largest remainder
        assert np.all(np.abs(quotas - exact) < 1)


def test_class_quotas_errors_are_clear():
    labels = labels_of([5, 5, 5])
    with pytest.raises(ValueError, match="cannot cover 3 classes"):
        policy.class_quotas(labels, 2)
    with pytest.raises(ValueError, match="between 1 and N"):
        policy.class_quotas(labels, 16)
    with pytest.raises(ValueError):
        policy.class_quotas(labels, 0)


def test_class_quotas_give_every_class_one():
    quotas = policy.class_quotas(labels_of([97, 1, 2]), 5)
    assert quotas.sum() == 5 and np.all(quotas >= 1)


# ----------------------------------------------------------------------------- sampler
@given(st.integers(0, 2**31), st.data())
@settings(max_examples=40, deadline=None)
def test_sampler_exact_k_distinct_sorted(seed, data):
    sizes = data.draw(st.lists(st.integers(1, 30), min_size=1, max_size=5))
    labels = labels_of(sizes)
    stratify = data.draw(st.booleans())
    k = data.draw(st.integers(len(sizes) if stratify else 1, len(labels)))
    alpha, beta = data.draw(st.floats(0.05, 50)), data.draw(st.floats(0.05, 50))
    u = policy.rank_normalise(np.random.default_rng(seed).normal(size=len(labels)), groups=labels)
    chosen = policy.sample_subset(u, labels, k, alpha, beta, seed=seed, stratify=stratify)
    assert chosen.dtype == np.int64 and len(chosen) == k
    assert np.all(np.diff(chosen) > 0) and chosen.min() >= 0 and chosen.max() < len(labels)
    if stratify:
        assert np.array_equal(np.bincount(labels[chosen], minlength=len(sizes)), policy.class_quotas(labels, k))
    again = policy.sample_subset(u, labels, k, alpha, beta, seed=seed, stratify=stratify)
    assert np.array_equal(chosen, again)


def test_sampler_seed_changes_result():
    labels = labels_of([100, 100])
    u = policy.rank_normalise(np.arange(200.0), groups=labels)
    a = policy.sample_subset(u, labels, 50, 1.0, 1.0, seed=0)
    b = policy.sample_subset(u, labels, 50, 1.0, 1.0, seed=1)
    assert not np.array_equal(a, b)


def rank_bin_counts(alpha, beta, draws=600):
    labels = labels_of([40, 60])
    u = policy.rank_normalise(np.random.default_rng(0).normal(size=100), groups=labels)
    bins = np.minimum((u * 5).astype(int), 4)
    counts = np.zeros(5)
    for seed in range(draws):
        counts += np.bincount(bins[policy.sample_subset(u, labels, 20, alpha, beta, seed=seed)], minlength=5)
    return counts, np.bincount(bins, minlength=5) / 100 * 20 * draws


def test_uniform_policy_is_stratified_random():
    counts, expected = rank_bin_counts(1.0, 1.0)
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-3
    # the same test has power: a mild tilt towards high u is detected
    tilted, _ = rank_bin_counts(1.5, 1.0)
    assert scipy.stats.chisquare(tilted, expected).pvalue < 1e-6


def test_uniform_policy_single_sample_frequencies():
    labels = labels_of([6, 4])
    u = policy.rank_normalise(np.arange(10.0), groups=labels)
    hits = np.zeros(10)
    draws = 4000
    for seed in range(draws):
        hits[policy.sample_subset(u, labels, 5, 1.0, 1.0, seed=seed)] += 1
    expected = draws * policy.policy_probabilities(u, labels, 5, 1.0, 1.0)
    assert np.allclose(expected[:6], draws * 3 / 6) and np.allclose(expected[6:], draws * 2 / 4)
    assert np.all(np.abs(hits - expected) < 5 * np.sqrt(expected))


def test_skewed_policies_concentrate():
    labels = labels_of([500, 500])
    u = policy.rank_normalise(np.random.default_rng(2).normal(size=1000), groups=labels)
    high = policy.sample_subset(u, labels, 100, 20.0, 1.0, seed=0)
    low = policy.sample_subset(u, labels, 100, 1.0, 20.0, seed=0)
    middle = policy.sample_subset(u, labels, 100, 30.0, 30.0, seed=0)
    assert u[high].mean() > 0.9 and u[low].mean() < 0.1
    assert abs(u[middle].mean() - 0.5) < 0.05 and u[middle].std() < 0.12


def test_plackett_luce_log_probability_is_a_distribution():
    log_w = torch.tensor(np.log([1.0, 2.0, 3.0, 4.0]), dtype=torch.float64)
    total = sum(np.exp(policy.plackett_luce_log_probability(log_w, np.array(seq)).item())
                for seq in itertools.permutations(range(4), 2))
    assert abs(total - 1) < 1e-12
    first_then = policy.plackett_luce_log_probability(log_w, np.array([3, 0])).item()
    assert np.isclose(first_then, np.log(4 / 10) + np.log(1 / 6))


# ----------------------------------------------------------------------------- KL and k
@pytest.mark.parametrize("alpha,beta", [(1, 1), (2, 3), (0.5, 0.5), (5, 1), (0.3, 4), (20, 15)])
def test_kl_to_uniform_matches_integration(alpha, beta):
    def integrand(x):
        return scipy.stats.beta.pdf(x, alpha, beta) * scipy.stats.beta.logpdf(x, alpha, beta)

    numeric = quad(integrand, 0, 1, limit=200, points=[0.5])[0]
    assert np.isclose(policy.kl_to_uniform(alpha, beta), numeric, rtol=1e-5, atol=1e-7)
    assert np.isclose(policy.kl_to_uniform(alpha, beta), -scipy.stats.beta(alpha, beta).entropy(), atol=1e-9)
    torch_value = policy.kl_to_uniform_torch(torch.tensor(np.log(alpha), dtype=torch.float64),
                                             torch.tensor(np.log(beta), dtype=torch.float64))
    assert np.isclose(torch_value.item(), policy.kl_to_uniform(alpha, beta), atol=1e-10)


def test_kl_is_zero_only_at_uniform():
    assert abs(policy.kl_to_uniform(1, 1)) < 1e-12
    assert policy.kl_to_uniform(1.1, 1) > 0 and policy.kl_to_uniform(1, 0.9) > 0


def test_k_for_ratio():
    assert policy.k_for_ratio(1000, 0.9) == 100
    assert policy.k_for_ratio(1797, 0.5) == 898  # round(898.5) -> banker's rounding, documented by Python
    assert policy.k_for_ratio(10, 0.05) == 10
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            policy.k_for_ratio(100, bad)
    with pytest.raises(ValueError):
        policy.k_for_ratio(3, 0.9)

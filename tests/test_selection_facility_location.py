"""Facility location: lazy greedy equals plain greedy, the objective grows, exact k, class quotas."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from ifbeta.data.streaming import feature_statistics
from ifbeta.policy import beta as policy
from ifbeta.selection import coverage
from ifbeta.selection.grouping import standardised
from ifbeta.selection.registry import select
from tests.selection_problems import blobs_problem, make_problem


def brute_force(points: np.ndarray, quota: int) -> tuple[list[int], list[float]]:
    """Plain (non-lazy) greedy on the full similarity matrix from scipy: every gain recomputed every
    step, argmax with ties to the lowest index. Returns (order, F after each pick)."""
    distances = cdist(points, points)
    similarity = distances.max() - distances
    covered, order, values = np.zeros(len(points)), [], []
    for _ in range(quota):
        gains = np.maximum(similarity - covered[:, None], 0.0).sum(axis=0)
        gains[order] = -np.inf
        order.append(int(np.argmax(gains)))
        covered = np.maximum(covered, similarity[:, order[-1]])
        values.append(float(covered.sum()))
    return order, values


@pytest.mark.parametrize("n, d, quota, block", [(60, 3, 10, 7), (200, 8, 50, 64), (31, 2, 31, 1024), (1, 4, 1, 8)])
def test_lazy_greedy_equals_plain_greedy(n, d, quota, block):
    points = np.random.default_rng(n + d).normal(size=(n, d))
    lazy = coverage.facility_location_choose(points, quota, block=block)
    order, values = brute_force(points, quota)
    assert lazy.tolist() == order
    assert [coverage.facility_location_objective(points, lazy[:t + 1]) for t in range(quota)] == \
        pytest.approx(values, rel=1e-10)


def test_objective_is_monotone_and_greedy_is_near_the_optimum():
    points = np.random.default_rng(5).normal(size=(10, 3))
    chosen = coverage.facility_location_choose(points, 10)
    values = [coverage.facility_location_objective(points, chosen[:t]) for t in range(11)]
    assert all(b >= a for a, b in zip(values, values[1:])) and values[0] == 0.0
    gains = np.diff(values)
    assert all(b <= a + 1e-12 for a, b in zip(gains, gains[1:]))  # submodular: greedy gains only shrink
    best = max(coverage.facility_location_objective(points, list(s)) for s in itertools.combinations(range(10), 3))
    assert values[3] >= (1 - 1 / np.e) * best  # Nemhauser-Wolsey-Fisher bound


def test_exact_k_stratified_quotas_and_coverage():
    inputs = make_problem(n=241, d=6, classes=4)
    for ratio in (0.3, 0.75, 0.95):
        chosen = select("facility-location", inputs, ratio)
        k = policy.k_for_ratio(len(inputs.labels), ratio)
        assert len(chosen.indices) == k and len(np.unique(chosen.indices)) == k
        np.testing.assert_array_equal(np.bincount(inputs.labels[chosen.indices], minlength=4),
                                      policy.class_quotas(inputs.labels, k))
    # per class it is plain greedy on the class's standardised points (pool statistics)
    statistics = feature_statistics(inputs.features)
    chosen = select("facility-location", inputs, 0.75)
    k = policy.k_for_ratio(len(inputs.labels), 0.75)
    for label, quota in enumerate(policy.class_quotas(inputs.labels, k)):
        members = np.flatnonzero(inputs.labels == label)
        order, _ = brute_force(standardised(inputs.features, members, statistics), int(quota))
        np.testing.assert_array_equal(np.sort(members[order]), np.intersect1d(chosen.indices, members))
    blobs, blob, ratio = blobs_problem()
    assert sorted(blob[select("facility-location", blobs, ratio).indices]) == [0, 1, 2, 3, 4]
    unstratified = select("facility-location", inputs, 0.9, stratify=False)
    assert len(unstratified.indices) == policy.k_for_ratio(len(inputs.labels), 0.9)


def test_identical_points_take_the_first_ones():
    assert coverage.facility_location_choose(np.ones((6, 2)), 3).tolist() == [0, 1, 2]

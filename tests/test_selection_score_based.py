"""selection.score_based: random, top-k by a score, Moderate-DS, CCS and DUAL on problems whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ifbeta.policy import beta as policy
from ifbeta.selection import score_based
from ifbeta.selection.registry import SelectionInputs, select
from tests.selection_problems import ccs_problem, kept_and_dropped, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def test_keep_easy_and_hard_are_the_two_ends(problem):
    hard = select("kd-loss", problem, 0.5, stratify=False)
    easy = select("kd-loss", problem, 0.5, keep="easy", stratify=False)
    loss = problem.teacher_scores["kd_loss"]
    assert loss[hard.indices].min() >= loss[easy.indices].max()
    margin = select("margin", problem, 0.5, stratify=False)  # hard = smallest margin
    assert problem.teacher_scores["margin"][margin.indices].max() <= np.median(problem.teacher_scores["margin"]) + 1e-12


def test_influence_top_keeps_the_highest_per_class(problem):
    chosen = select("influence-top", problem, 0.7)
    for label in range(4):
        kept, dropped = kept_and_dropped(chosen, np.flatnonzero(problem.labels == label))
        assert problem.influence[kept].min() > problem.influence[dropped].max()


def test_random_balanced_meets_the_class_quotas(problem):
    quotas = policy.class_quotas(problem.labels, policy.k_for_ratio(len(problem.labels), 0.85))
    for seed in range(3):
        chosen = select("random-balanced", problem, 0.85, seed=seed)
        np.testing.assert_array_equal(np.bincount(problem.labels[chosen.indices], minlength=4), quotas)


def test_moderate_keeps_the_middle_band_of_distances(problem):
    chosen = select("moderate", problem, 0.6)
    distance = chosen.scores
    np.testing.assert_allclose(distance, score_based.moderate_distances(problem.features, problem.labels))
    for label in range(4):
        members = np.flatnonzero(problem.labels == label)
        kept, dropped = kept_and_dropped(chosen, members)
        near, far = dropped[distance[dropped] < distance[kept].min()], dropped[distance[dropped] > distance[kept].max()]
        assert len(near) + len(far) == len(dropped) and abs(len(near) - len(far)) <= 1
        assert distance[kept].min() <= np.median(distance[members]) <= distance[kept].max()


def test_moderate_distance_is_to_the_class_median():
    features = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [100.0], [101.0]])
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    distance = score_based.moderate_distances(features, labels)
    scale = features.std()
    np.testing.assert_allclose(distance[:5], np.array([2.0, 1.0, 0.0, 1.0, 8.0]) / scale)
    np.testing.assert_allclose(distance[5:], np.array([0.5, 0.5]) / scale)


def test_ccs_budgets_fill_the_smallest_strata_first():
    np.testing.assert_array_equal(score_based.ccs_budgets(np.array([200, 3, 0, 50, 4]), 100), [47, 3, 0, 46, 4])
    np.testing.assert_array_equal(score_based.ccs_budgets(np.array([5, 5, 5]), 7), [2, 2, 3])
    counts = np.random.default_rng(1).integers(0, 40, size=50)
    for total in (1, 17, counts.sum() // 2, counts.sum()):
        assert score_based.ccs_budgets(counts, total).sum() == total


def test_ccs_counts_per_stratum():
    inputs, values = ccs_problem()
    ratio = 1 - 100 / len(values)
    for seed in range(2):
        chosen = select("ccs", inputs, ratio, seed=seed, hard_cut=0.0)
        strata = np.minimum((values[chosen.indices] * 50).astype(int), 49)
        counts = np.bincount(strata, minlength=50)
        assert (counts[0], counts[10], counts[20], counts[49]) == (3, 47, 46, 4)
        assert counts.sum() == 100


def test_ccs_hard_cut_removes_the_hardest_first():
    inputs, values = ccs_problem()
    chosen = select("ccs", inputs, 0.8, hard_cut=0.03)  # 8 hardest: the 4 top and 4 of stratum 20
    assert values[chosen.indices].max() < values.max() - 0.1
    assert np.sum(values[chosen.indices] >= 48 / 50) == 0
    assert score_based.ccs_hard_cut(0.5) == 0.0 and score_based.ccs_hard_cut(0.9) == pytest.approx(0.3)
    assert select("ccs", inputs, 0.6).info["hard_cut"] == pytest.approx(0.05)


def test_dual_beta_weights_by_hand():
    confidence = np.array([0.9, 0.5, 0.2, 0.99])
    score = np.array([0.1, 0.4, 0.3, 0.01])
    alpha, beta, mu_top, weights = score_based.dual_beta_weights(confidence, score, 0.5, c_d=5.5, top_count=2)
    assert mu_top == pytest.approx(0.35)  # mean confidence of the two highest scores (0.5, 0.2)
    assert beta == pytest.approx(15 * 0.65 * (1 - 0.5 ** 5.5)) and alpha == pytest.approx(16 - beta)
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    expected = [math.exp((alpha - 1) * math.log(p) + (beta - 1) * math.log(1 - p) - log_norm) * s
                for p, s in zip(confidence, score)]
    np.testing.assert_allclose(weights, expected, rtol=1e-10)


def test_dual_beta_select_uses_teacher_confidence():
    confidence = np.array([0.9, 0.5, 0.2, 0.99, 0.6, 0.7, 1.0, 1.0])
    with np.errstate(divide="ignore"):
        logits = np.log(np.stack([confidence, 1 - confidence], axis=1))  # softmax gives back p
    labels = np.zeros(8, dtype=np.int64)
    inputs = SelectionInputs(np.random.default_rng(0).normal(size=(8, 2)), logits, labels)
    score = (1 - confidence) * np.sqrt(confidence * (1 - confidence))
    chosen = select("dual-beta", inputs, 0.5, top_count=3)
    _, beta, mu_top, expected = score_based.dual_beta_weights(confidence, score, 0.5, top_count=3)
    np.testing.assert_allclose(chosen.scores, expected, rtol=1e-9, atol=1e-300)
    assert chosen.info["beta"] == pytest.approx(beta) and chosen.info["mu_top"] == pytest.approx(mu_top)
    for seed in range(5):  # the two zero-weight samples (p = 1) are never needed for k = 4
        assert not np.isin([6, 7], select("dual-beta", inputs, 0.5, seed=seed, top_count=3).indices).any()


"""Score-based selection rules (docs/METHOD.md section 7): random, top-k by a score, Moderate-DS, CCS, DUAL.

Every method has the signature ``method(inputs, k, *, ratio, seed, **options)`` and returns
``(indices, scores, info)``: exactly k distinct sample indices (any order; ``select`` sorts them),
the (N,) score it ranked by (or None) and a dict of method-specific facts. Each method's core (a
pure function of arrays) sits just above its wrapper. ``random`` is the only unstratified default;
score directions are listed in ``selection.signals``.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import beta as beta_distribution

from ifbeta.data.streaming import feature_statistics
from ifbeta.selection.grouping import grouped, gumbel_top, standardised, top, top_by_score
from ifbeta.selection.signals import (
    HARDER_IS_HIGHER,
    influence_on_demand,
    teacher_confidence,
    teacher_score,
    to_difficulty,
)

# ---------------------------------------------------------------------------------------------
# Random


def random_uniform(inputs, k, *, ratio, seed):
    """Uniform without replacement over the whole pool (unstratified). Scores: None."""
    rng = np.random.default_rng(seed)
    return rng.choice(len(inputs.labels), size=k, replace=False), None, {}


def random_balanced(inputs, k, *, ratio, seed):
    """Class quotas (stratified), uniform without replacement inside each class. Scores: None."""
    rng = np.random.default_rng(seed)
    choose = lambda members, quota: rng.choice(members, size=quota, replace=False)  # noqa: E731
    return grouped(inputs.labels, k, True, choose), None, {}


# ---------------------------------------------------------------------------------------------
# Top-k by one score


def influence_top(inputs, k, *, ratio, seed, stratify=True, config=None):
    """The k highest influence scores (most helpful), per class by quota. Scores: s, higher kept."""
    scores = influence_on_demand(inputs, seed=seed, config=config)
    return top_by_score(scores, inputs.labels, k, largest=True, stratify=stratify), scores, {"stratified": stratify}


def teacher_score_method(name: str):
    """Top-k by one teacher score, per class by quota. ``keep="hard"`` (default: the hardest, i.e.
    highest el2n / entropy / kd_loss, lowest margin) or ``"easy"``. Scores: the raw teacher score."""
    def method(inputs, k, *, ratio, seed, keep="hard", stratify=True, config=None):
        if keep not in ("hard", "easy"):
            raise ValueError(f"keep must be 'hard' or 'easy', got {keep!r}")
        scores = teacher_score(inputs, name, seed=seed, config=config)
        largest = HARDER_IS_HIGHER[name] == (keep == "hard")
        indices = top_by_score(scores, inputs.labels, k, largest=largest, stratify=stratify)
        return indices, scores, {"keep": keep, "stratified": stratify}
    method.__name__ = f"{name}_teacher"
    method.__doc__ = teacher_score_method.__doc__
    return method


# ---------------------------------------------------------------------------------------------
# Moderate-DS


def moderate_distances(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) float64: Euclidean distance of each standardised feature vector to its class's
    coordinate-wise median (Moderate-DS)."""
    statistics = feature_statistics(features)
    distance = np.empty(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        block = standardised(features, members, statistics)  # (n_c, d)
        distance[members] = np.linalg.norm(block - np.median(block, axis=0), axis=1)
    return distance


def middle_band(values: np.ndarray, members: np.ndarray, quota: int) -> np.ndarray:
    """The ``quota`` members whose value ranks are centred on the median rank."""
    order = members[np.argsort(values[members], kind="stable")]
    start = (len(members) - quota) // 2
    return order[start:start + quota]


def moderate(inputs, k, *, ratio, seed, stratify=True):
    """Moderate-DS: distance of standardised features to the class median; keep the middle band of
    distances around the median distance (per class; ``stratify=False``: one global band, as in the
    paper). Scores: the distance, kept where closest in rank to the median."""
    distance = moderate_distances(inputs.features, inputs.labels)
    indices = grouped(inputs.labels, k, stratify, lambda members, quota: middle_band(distance, members, quota))
    return indices, distance, {"stratified": stratify}


# ---------------------------------------------------------------------------------------------
# CCS


def ccs_budgets(counts: np.ndarray, total: int) -> np.ndarray:
    """CCS budget allocation: visit strata smallest first; each gets min(size, remaining budget //
    remaining strata). (S,) int64, sum exactly min(total, counts.sum())."""
    counts = np.asarray(counts, dtype=np.int64)
    budgets = np.zeros(len(counts), dtype=np.int64)
    remaining = int(total)
    for position, stratum in enumerate(np.argsort(counts, kind="stable")):
        share = remaining // (len(counts) - position)
        budgets[stratum] = min(int(counts[stratum]), share)
        remaining -= budgets[stratum]
    return budgets


def ccs_hard_cut(ratio: float) -> float:
    """Default CCS hard cut-off beta (fraction of the hardest samples removed first) at pruning ratio
    r: CCS's CIFAR-10 setting as we read it (0 up to r = 0.5, 0.1 at 0.7-0.8, 0.3 at 0.9), linearly
    interpolated in between."""
    return float(np.interp(ratio, [0.0, 0.5, 0.7, 0.8, 0.9, 1.0], [0.0, 0.0, 0.1, 0.1, 0.3, 0.3]))


def ccs_choose(difficulty, members, quota, *, hard_cut, strata, rng):
    """CCS inside one group: drop the hardest ``hard_cut`` fraction (never below the quota), split the
    rest into ``strata`` equal-width score bins, budget smallest-first, uniform within each bin."""
    cut = min(int(round(hard_cut * len(members))), len(members) - quota)
    kept = top(difficulty, members, len(members) - cut, largest=False)
    values = difficulty[kept]
    width = (values.max() - values.min()) / strata
    bins = np.zeros(len(kept), dtype=np.int64) if width <= 0 else \
        np.minimum(((values - values.min()) / width).astype(np.int64), strata - 1)
    budgets = ccs_budgets(np.bincount(bins, minlength=strata), quota)
    picked = [rng.choice(kept[bins == b], size=budgets[b], replace=False) for b in range(strata) if budgets[b]]
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def ccs(inputs, k, *, ratio, seed, score="el2n", hard_cut=None, strata=50, stratify=True, config=None):
    """Coverage-centric coreset selection over a teacher difficulty (default el2n). ``hard_cut``
    None = ``ccs_hard_cut(ratio)``. Scores: the difficulty, higher = harder."""
    difficulty = to_difficulty(score, teacher_score(inputs, score, seed=seed, config=config))
    hard_cut = ccs_hard_cut(ratio) if hard_cut is None else float(hard_cut)
    rng = np.random.default_rng(seed)
    choose = lambda members, quota: ccs_choose(difficulty, members, quota, hard_cut=hard_cut,  # noqa: E731
                                               strata=strata, rng=rng)
    indices = grouped(inputs.labels, k, stratify, choose)
    return indices, difficulty, {"hard_cut": hard_cut, "strata": strata, "score": score, "stratified": stratify}


# ---------------------------------------------------------------------------------------------
# DUAL


def dual_beta_weights(confidence: np.ndarray, score: np.ndarray, ratio: float, *, c_d: float = 5.5,
                      top_count: int = 10, eps: float = 1e-6) -> tuple[float, float, float, np.ndarray]:
    """DUAL's ratio-adaptive Beta rule. Returns (alpha, beta, mu_top, weights (N,) >= 0).

    mu_top = mean confidence of the ``top_count`` highest-scoring samples (DUAL's anchor);
    beta = 15 (1 - mu_top)(1 - r^c_D), alpha = 16 - beta; weight_i = BetaPDF(conf_i; alpha, beta) *
    score_i with conf clipped to [eps, 1 - eps] and beta floored at 1e-3 (mu_top = 1 gives beta 0).
    """
    anchor = np.argsort(-score, kind="stable")[:top_count]
    mu_top = float(np.mean(confidence[anchor]))
    beta = max(15.0 * (1.0 - mu_top) * (1.0 - ratio ** c_d), 1e-3)
    alpha = 16.0 - beta
    density = beta_distribution.pdf(np.clip(confidence, eps, 1.0 - eps), alpha, beta)
    return alpha, beta, mu_top, density * score


def dual_teacher_score(confidence: np.ndarray) -> np.ndarray:
    """DUAL's score (1 - mean) * std with the teacher's confidence p as the mean and the Bernoulli
    std sqrt(p (1 - p)) standing in for the std over epochs: (N,) in [0, 0.33], higher = kept more."""
    return (1.0 - confidence) * np.sqrt(confidence * (1.0 - confidence))


def dual_beta(inputs, k, *, ratio, seed, c_d=5.5, score="dual", top_count=10, temperature=1.0,
              stratify=True, config=None):
    """DUAL's fixed Beta rule with the teacher's confidence p_y standing in for the mean prediction over
    training. ``score="dual"``: (1 - p) sqrt(p (1 - p)); or a teacher difficulty name. Sampling
    without replacement proportional to the weight (Gumbel-top-k), per class by quota.
    Scores: the weight BetaPDF(p) * score."""
    confidence = teacher_confidence(inputs.teacher_logits, inputs.labels, temperature=temperature)
    values = dual_teacher_score(confidence) if score == "dual" else \
        to_difficulty(score, teacher_score(inputs, score, seed=seed, config=config))
    alpha, beta, mu_top, weights = dual_beta_weights(confidence, values, ratio, c_d=c_d, top_count=top_count)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    indices = grouped(inputs.labels, k, stratify, lambda members, quota: gumbel_top(log_weights, members, quota, rng))
    info = {"alpha": alpha, "beta": beta, "mu_top": mu_top, "c_d": c_d, "score": score, "stratified": stratify}
    return indices, weights, info

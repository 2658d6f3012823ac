"""The transfer check's statistics: how sure the seeds make Spearman(J, accuracy) and learned - uniform.

Pure functions, arrays in. ``accuracies`` is (P, S) float64: policy p's student test top-1 at seed s
(fractions in [0, 1]; higher is better). Column s of every row comes from the same seed (same student
initialisation, same batch order over the pool, same subset-drawing seed), so seeds are the unit of
resampling: the bootstrap draws whole columns, the same ones for every policy.

- ``bootstrap_spearman``: percentile interval of Spearman(J, per-policy mean accuracy) over ``RESAMPLES``
  seed resamples (with replacement, generator seeded ``BOOTSTRAP_SEED``, so a report is reproducible).
  Negative Spearman = lower J went with higher accuracy (J agrees).
- ``paired_difference``: acc(learned) - acc(uniform) per seed, its mean and 95% t-interval
  (``distill/summary.py``, the home of paired differences).
- ``excludes_zero``: whether an interval tells an effect from seed noise; an interval that touches 0
  does not.
"""
from __future__ import annotations

import numpy as np
import scipy.stats

from ifbeta.distill import summary

__all__ = ["CONFIDENCE", "RESAMPLES", "BOOTSTRAP_SEED", "spearman_rows", "bootstrap_spearman", "paired_difference",
           "excludes_zero", "direction"]

CONFIDENCE = 0.95  # of every interval the check reports
RESAMPLES = 2000  # seed resamples of the Spearman bootstrap
BOOTSTRAP_SEED = 2000  # fixed: the same runs always give the same interval


def spearman_rows(x, rows) -> np.ndarray:
    """Spearman(x, row) for every row, as ``scipy.stats.spearmanr`` gives it (average ranks for ties).

    x: (P,) float; rows: (R, P) float. Returns (R,) float64 in [-1, 1]; a constant row (no ranking
    to compare) gives 0, no relation."""
    x_ranks = scipy.stats.rankdata(np.asarray(x, dtype=np.float64))
    row_ranks = scipy.stats.rankdata(np.asarray(rows, dtype=np.float64), axis=1)  # (R, P)
    x_ranks = x_ranks - x_ranks.mean()
    row_ranks = row_ranks - row_ranks.mean(axis=1, keepdims=True)
    numerator = row_ranks @ x_ranks  # (R,)
    denominator = np.sqrt((row_ranks ** 2).sum(axis=1) * (x_ranks ** 2).sum())
    values = np.zeros(len(row_ranks))
    varies = denominator > 0
    values[varies] = numerator[varies] / denominator[varies]
    return np.clip(values, -1.0, 1.0)


def bootstrap_spearman(J, accuracies, *, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """(low, high): the ``confidence`` percentile interval of Spearman(J, mean accuracy per policy)
    when the S seeds are drawn again with replacement, ``resamples`` times (one draw of S columns
    serves every policy: the seeds stay paired).

    J: (P,) the proxy's validation loss per policy (lower is better); accuracies: (P, S). None with
    fewer than two seeds (no noise to resample) or when J does not vary over the policies."""
    J = np.asarray(J, dtype=np.float64)
    table = np.asarray(accuracies, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != len(J):
        raise ValueError(f"accuracies must be (policies, seeds) = ({len(J)}, S), got shape {table.shape}")
    seeds = table.shape[1]
    if seeds < 2 or np.ptp(J) == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, seeds, size=(int(resamples), seeds))  # (R, S) seed columns
    means = table[:, picks].mean(axis=2).T  # (R, P) mean accuracy per policy in each resample
    values = spearman_rows(J, means)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_difference(learned, uniform, *, confidence: float = CONFIDENCE) -> summary.PairedDifference:
    """acc(learned) - acc(uniform) paired by seed: learned, uniform (S,) accuracies in seed order.
    ``mean`` > 0 = the learned policy beat uniform; ``low``/``high`` the ``confidence`` t-interval of
    the mean (None for one seed); ``differences`` per seed (fractions)."""
    learned, uniform = np.asarray(learned, dtype=np.float64), np.asarray(uniform, dtype=np.float64)
    if learned.shape != uniform.shape or learned.ndim != 1 or not len(learned):
        raise ValueError(f"learned and uniform need one accuracy per seed each, got {learned.shape} and "
                         f"{uniform.shape}")
    records = [{"method": method, "ratio": 0.0, "seed": seed, "test_top1": float(value), "status": "finished"}
               for method, values in (("learned", learned), (summary.BASELINE, uniform))
               for seed, value in enumerate(values)]
    pairs = summary.summarise(records, confidence=confidence).pairs
    if not pairs:
        raise ValueError("learned and uniform need finite accuracies at one seed at least")
    return pairs[0]


def excludes_zero(interval) -> bool:
    """Whether ``interval`` (low, high) lies strictly on one side of 0 (None: not measured: False)."""
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def direction(interval) -> str:
    """'above' (the whole interval > 0), 'below' (< 0) or 'inconclusive' (it holds 0, or None)."""
    if not excludes_zero(interval):
        return "inconclusive"
    return "above" if interval[0] > 0 else "below"

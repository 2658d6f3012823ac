"""The class-quota machinery every selection family shares: groups, top-k and sampled picks, standardised rows.

Class stratification: unless noted, a method runs inside each class with the quota of
``policy.class_quotas`` (proportional to class size, largest remainder, total exactly k) and takes
``stratify=False`` for the published global form.
"""
from __future__ import annotations

import numpy as np

from ifbeta.policy import beta as policy


def grouped(labels: np.ndarray, k: int, stratify: bool, choose) -> np.ndarray:
    """Concatenate ``choose(members, quota) -> chosen member indices`` over the classes (quota by
    ``policy.class_quotas``) or over one global group. Classes are visited in label order."""
    labels = np.asarray(labels)
    if not stratify:
        groups = [(np.arange(len(labels)), k)]
    else:
        quotas = policy.class_quotas(labels, k)
        groups = [(np.flatnonzero(labels == c), int(q)) for c, q in enumerate(quotas) if q > 0]
    chosen = []
    for members, quota in groups:
        picked = np.asarray(choose(members, quota), dtype=np.int64)
        assert len(picked) == quota, (len(picked), quota)
        chosen.append(picked)
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def top(values: np.ndarray, members: np.ndarray, quota: int, *, largest: bool = True,
        rng: np.random.Generator | None = None) -> np.ndarray:
    """The ``quota`` members with the largest (or smallest) values; ties by index, or at random
    when ``rng`` is given."""
    keys = values[members] if largest else -values[members]
    tiebreak = rng.random(len(members)) if rng is not None else np.arange(len(members))
    return members[np.lexsort((tiebreak, -keys))[:quota]]


def top_by_score(values: np.ndarray, labels: np.ndarray, k: int, *, largest: bool, stratify: bool):
    """Top-k of ``values`` (per class by quota when stratified); ties broken by index."""
    return grouped(labels, k, stratify, lambda members, quota: top(values, members, quota, largest=largest))


def gumbel_top(log_weights: np.ndarray, members: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """Sample ``quota`` members without replacement proportionally to exp(log_weights) (Gumbel-top-k).
    Zero weights (-inf) come last, in random order."""
    keys = log_weights[members] + rng.gumbel(size=len(members))
    return members[np.lexsort((rng.random(len(members)), -keys))[:quota]]


def standardised(features: np.ndarray, rows: np.ndarray, statistics) -> np.ndarray:
    """(len(rows), d) float64: the rows standardised with the pool statistics
    (``feature_statistics`` = ``streaming.feature_statistics``: chunked, std 0 -> 1)."""
    mean, scale = statistics
    return (np.asarray(features[rows], dtype=np.float64) - mean) / scale

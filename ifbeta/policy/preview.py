"""What a Beta policy keeps: ranks, inclusion probabilities and one sampled subset, in one call.

The Feature map and Policy pages draw this, and ``selection.beta_policy`` samples through
``ranks``, so a preview shows exactly the subset the ``ifbeta`` selection method would return for
the same axis values, (alpha, beta), ratio, stratification and seed (docs/METHOD.md section 4).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ifbeta.policy import beta as policy

__all__ = ["Preview", "preview", "ranks"]


def ranks(values, labels, *, stratify: bool = True) -> np.ndarray:
    """u: (N,) float64 in (0, 1) from the axis values (N,) (larger = keep first): within each class
    of ``labels`` (N,) when ``stratify``, else over the whole pool."""
    return policy.rank_normalise(np.asarray(values, dtype=np.float64), groups=labels if stratify else None)


@dataclass(frozen=True)
class Preview:
    """One policy applied to one pool.

    u: (N,) ranks in (0, 1), u near 1 = keep first; probabilities: (N,) inclusion probabilities in
    [0, 1] summing to k; kept: (N,) bool, the k samples ``policy.sample_subset`` draws with the seed.
    """

    u: np.ndarray
    probabilities: np.ndarray
    kept: np.ndarray
    k: int

    @property
    def kept_indices(self) -> np.ndarray:
        """(k,) sorted int64 pool rows kept."""
        return np.flatnonzero(self.kept)


def preview(values, labels, *, ratio: float, alpha: float, beta: float, stratify: bool = True,
            seed: int = 0) -> Preview:
    """The Beta(alpha, beta) policy at pruning ``ratio`` (fraction removed, in (0, 1)) over the ranks
    of ``values`` (N,) (larger = more helpful / easier); ``labels`` (N,) int class ids. Raises
    ValueError for a ratio outside (0, 1) or a non-positive alpha or beta."""
    labels = np.asarray(labels)
    u = ranks(values, labels, stratify=stratify)
    k = policy.k_for_ratio(len(u), ratio)
    probabilities = policy.policy_probabilities(u, labels, k, alpha, beta, stratify=stratify)
    kept = np.zeros(len(u), dtype=bool)
    kept[policy.sample_subset(u, labels, k, alpha, beta, seed=seed, stratify=stratify)] = True
    return Preview(u=u, probabilities=probabilities, kept=kept, k=k)

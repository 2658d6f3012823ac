"""Samples left out of a selection (an exclusion list): which rows remain and what the manifest records.

Pure bookkeeping over the pool's sample ids; ``pipeline.choose`` selects among the remaining rows
(the sub-pool) the same k = round((1 - ratio) * N) it would keep from the whole pool.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ifbeta.subsets import tags

__all__ = ["EXCLUDED_IDS_LISTED", "Exclusion", "exclusion_of"]

EXCLUDED_IDS_LISTED = 1000
"""A subset's manifest lists the excluded ids themselves up to this many (always their count and sha256)."""


@dataclass(frozen=True)
class Exclusion:
    """Samples of the pool left out of a selection: they are never kept, and the method chooses among
    the rest (the sub-pool) the same k = round((1 - ratio) * N) it would keep from the whole pool."""

    ids: list[str]  # sorted unique sample ids
    indices: np.ndarray  # (m,) int64 sorted rows of the pool they are
    n: int  # the whole pool's size N

    @property
    def rows(self) -> np.ndarray:
        """(N - m,) int64 sorted rows of the pool that remain selectable."""
        return np.setdiff1d(np.arange(self.n, dtype=np.int64), self.indices, assume_unique=True)

    @property
    def sha256(self) -> str:
        """sha256 of the sorted ids joined by newlines (what store keys and manifests record)."""
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()

    def sub_ratio(self, ratio: float) -> float:
        """The pruning ratio on the sub-pool that keeps k = round((1 - ratio) * N): 1 - k / (N - m).
        Raises ValueError when fewer than k samples remain."""
        from ifbeta.policy.beta import k_for_ratio

        k, remaining = k_for_ratio(self.n, ratio), self.n - len(self.indices)
        if remaining < k:
            raise ValueError(f"excluding {len(self.indices)} of {self.n} samples leaves {remaining}, fewer than the "
                             f"k={k} that ratio {ratio:g} keeps; raise the ratio or exclude fewer samples")
        return 1.0 - k / remaining

    def record(self) -> dict:
        """What a subset's manifest says about it (``extra``): count, sha256, the ids when <= 1000."""
        record = {"excluded": len(self.ids), "excluded_sha256": self.sha256}
        if len(self.ids) <= EXCLUDED_IDS_LISTED:
            record["excluded_ids"] = list(self.ids)
        return record


def exclusion_of(pool_ids, exclude: list[str] | None) -> Exclusion | None:
    """The Exclusion of sample ids ``exclude`` among ``pool_ids`` (N,) (any order, repeats allowed) in the pool; None for None or
    no id. Raises ValueError naming how many ids are not in the pool and one of them."""
    if not exclude:
        return None
    ids = sorted({str(i) for i in exclude})
    position = {str(sample_id): row for row, sample_id in enumerate(pool_ids)}
    tags.refuse_unknown(ids, position)
    indices = np.sort(np.asarray([position[i] for i in ids], dtype=np.int64))
    return Exclusion(ids, indices, len(position))

"""Chunked access to feature arrays that may be larger than memory (float16 np.memmap included).

Memory model: a :class:`FeatureView` is a lazy (n, d) window on rows ``index`` of a base array,
standardised on the fly; slicing it reads and casts only the requested rows (float64), so the
proxy's chunked loops never hold more than one float64 chunk of it. ``materialise`` / ``take_rows``
make the one full float64 copy the fitter needs (a training fold).
"""
from __future__ import annotations

import numpy as np

__all__ = ["FeatureView", "feature_statistics", "row_view", "take_rows"]


CONSTANT_RELATIVE_STD = 1e-9  # a column with std <= this * |mean| is constant (float64 round-off)


def _column_sums(features, start: int, stop: int, *, chunk_size: int = 8192, centre=None) -> np.ndarray:
    """Column sums (d,) float64 of rows [start, stop) of features (N, d), read in chunks of chunk_size
    rows from ``start``; with ``centre`` (d,), the sums of (x - centre)^2 instead."""
    total = np.zeros(features.shape[1])
    for first in range(start, stop, chunk_size):
        block = np.asarray(features[first:min(first + chunk_size, stop)], dtype=np.float64)
        if centre is not None:
            block = block - centre
            block *= block
        total += block.sum(axis=0)
    return total


def _settle_columns(features, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rules of :func:`feature_statistics` for constant and zero-spread columns, applied to a
    computed mean and std (d,) (in place; also returned)."""
    constant = np.isfinite(mean) & (std <= CONSTANT_RELATIVE_STD * np.abs(mean))
    if constant.any() and len(features):
        mean[constant] = np.asarray(features[:1], dtype=np.float64)[0, constant]  # x - mean = 0 exactly
        std[constant] = 1.0
    std[~np.isfinite(std) | (std <= 0)] = 1.0
    return mean, std


def feature_statistics(features, *, chunk_size: int = 8192, rows: tuple[int, int] | None = None, combine=None):
    """Column mean and std (population), (d,) float64 each, in two chunked passes.

    Columns with std 0 (or non-finite) get std 1 so standardising never divides by zero. A constant
    column whose computed std is only round-off (std <= CONSTANT_RELATIVE_STD * |mean|, e.g. a column
    of 0.1 gives ~1e-17) gets mean = its first value and std 1, so it standardises to exactly 0
    rather than to a constant +-1 (which would act as a second, ridge-penalised bias).
    Sharded use: ``rows`` = (start, stop) of the rows this process reads (default all) and ``combine``
    (d,) partial column sums -> the sums over all processes (default: as they are).
    """
    count = len(features)
    start, stop = (0, count) if rows is None else rows
    combine = combine or (lambda sums: sums)
    mean = combine(_column_sums(features, start, stop, chunk_size=chunk_size)) / max(count, 1)
    squares = combine(_column_sums(features, start, stop, chunk_size=chunk_size, centre=mean))
    return _settle_columns(features, mean, np.sqrt(squares / max(count, 1)))


class FeatureView:
    """Rows ``index`` of ``base`` (N, d), optionally standardised, read lazily as float64.

    Supports ``len``, ``shape``, ``view[a:b]`` (a contiguous slice of the view, (m, d) float64),
    ``subset(index)`` (a view of a view) and ``materialise()``. Sorted indices keep memmap reads
    sequential. With mean/std None it only casts (also used for teacher logits).
    """

    def __init__(self, base, *, index=None, mean=None, std=None):
        self.base = base
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.base) if self.index is None else len(self.index)

    @property
    def shape(self):
        return (len(self), self.base.shape[1])

    def __getitem__(self, rows):
        if not isinstance(rows, slice):
            raise TypeError("FeatureView supports contiguous slices only; use subset(index)")
        chosen = self.base[rows] if self.index is None else self.base[self.index[rows]]
        values = np.asarray(chosen, dtype=np.float64)
        if self.mean is not None:
            values = (values - self.mean) / self.std
        return values

    def subset(self, index) -> "FeatureView":
        index = np.asarray(index, dtype=np.int64)
        composed = index if self.index is None else self.index[index]
        return FeatureView(self.base, index=composed, mean=self.mean, std=self.std)

    def materialise(self, chunk_size: int = 8192) -> np.ndarray:
        result = np.empty(self.shape)
        for start in range(0, len(self), chunk_size):
            result[start:start + chunk_size] = self[start:start + chunk_size]
        return result


def row_view(array, index) -> FeatureView:
    """Lazy view of rows ``index`` of an ndarray, memmap or FeatureView (no copy)."""
    return array.subset(index) if isinstance(array, FeatureView) else FeatureView(array, index=index)


def take_rows(array, index, *, chunk_size: int = 8192) -> np.ndarray:
    """array[index] as a float64 (len(index), ...) copy; works for ndarrays, memmaps and FeatureViews."""
    return row_view(array, index).materialise(chunk_size)


def standardise(features, *, mean=None, std=None, chunk_size: int = 8192):
    """Z = (features - mean) / std.

    features (N, d) any float dtype; mean, std (d,) float64, computed chunk-wise when not given
    (a column constant up to round-off gets std 1 and mean = its value, so it standardises to exactly 0: the one rule for every face, scoring, the bilevel loop and the maps). Returns (Z (N, d) float64, mean, std). Z is materialised: for
    arrays larger than RAM use ``FeatureView(features, mean=mean, std=std)`` instead.
    """
    if mean is None or std is None:
        mean, std = feature_statistics(features, chunk_size=chunk_size)
    view = FeatureView(features, mean=np.asarray(mean, np.float64), std=np.asarray(std, np.float64))
    return view.materialise(), view.mean, view.std

"""The proxy's outputs f = x theta^T of one fit iterate, kept per chunk so passes that only need them skip
the matmul that makes them.

Where the rows are too large to keep in memory (tensors.Rows re-reads them at every pass), fit() keeps
two of these instead: the outputs at the current iterate and their change along the Newton direction.
The line search then tries step sizes on f + t df without touching the features, the gradient at the
accepted step reuses them, and Hessian-vector products and EKFAC factors take their softmax heads from
them instead of a float64 matmul over every row. Each holds (rows of this rank's shard, C) float64:
in memory up to ``budget_bytes``, in a temporary file beyond (removed by :meth:`close`), so the
anonymous memory stays one chunk whatever N. Chunk k is rows [k chunk_size, (k + 1) chunk_size) of the
shard, the order in which tensors.chunks yields them.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ifbeta.influence import objective, sharding, tensors
from ifbeta.influence.tensors import DOUBLE, OPERATOR_CACHE_BYTES

OUTPUT_STORE_BYTES = OPERATOR_CACHE_BYTES  # in memory up to this size, in a temporary file beyond


class OutputStore:
    """(rows, C) outputs, float64 unless ``dtype`` says otherwise, written and read a chunk at a time
    (tensors on ``device``, in ``dtype``). Also holds other per-row values of one fit that a pass reuses
    (solvers.InputTerms keeps (rows, d+1) float32 projections in one)."""

    def __init__(self, rows: int, classes: int, chunk_size: int, device: torch.device, *,
                 budget_bytes: int | None = None, dtype: torch.dtype = DOUBLE):
        first, last = sharding.rows(rows)
        self.rows, self.classes, self.chunk_size, self.device = last - first, classes, chunk_size, device
        self.dtype = dtype
        budget = OUTPUT_STORE_BYTES if budget_bytes is None else budget_bytes
        self._folder, self._memory, self._file = None, None, None
        if self.rows * classes * dtype.itemsize <= budget:
            self._memory = [None] * -(-self.rows // chunk_size)
        else:
            self._folder = Path(tempfile.mkdtemp(prefix="ifbeta-outputs-"))
            self._file = np.lib.format.open_memmap(self._folder / "outputs.npy", mode="w+",
                                                   dtype=torch.empty(0, dtype=dtype).numpy().dtype,
                                                   shape=(self.rows, classes))

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def _span(self, index: int) -> slice:
        return slice(index * self.chunk_size, min(self.rows, (index + 1) * self.chunk_size))

    def __setitem__(self, index: int, values: torch.Tensor) -> None:
        if self._memory is not None:
            self._memory[index] = values.detach().to(self.dtype).clone()
        else:
            self._file[self._span(index)] = values.detach().to("cpu", self.dtype).numpy()

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._memory is not None:
            if self._memory[index] is None:
                raise KeyError(f"chunk {index} of the output store was never written")
            return self._memory[index]
        return torch.from_numpy(np.array(self._file[self._span(index)])).to(self.device)

    def close(self) -> None:
        """Drop the values and the temporary file (idempotent)."""
        self._memory, self._file = None, None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __del__(self):  # a fit that raised still removes its file
        self.close()


def outputs_along(direction, rows: tensors.Rows, store) -> None:
    """store[k] <- x_k direction^T (m, C) float64 for every chunk k: how the outputs change along
    ``direction`` (C, d+1). One pass over the features, none over the teacher's logits."""
    direction = tensors.as_tensor(direction, rows.device)
    for index, (x, _) in enumerate(rows.inputs()):
        store[index] = objective.outputs_of(direction, x)


def value_along(theta, direction, step: float, rows: tensors.Rows, ridge: torch.Tensor, outputs, change) -> float:
    """L_in(theta + step direction) from the stored outputs f (at theta) and change df (along direction):
    chunk k's outputs are f_k + step df_k, so the pass reads the teacher's logits and no features."""
    kd = rows.kd
    value = objective.ridge_value(theta + step * direction, ridge)
    for index, (log_pt, y, w) in enumerate(rows.targets()):
        trial = outputs[index] + step * change[index]
        heads = objective.Heads(objective.log_softmax(trial), objective.log_softmax(trial / kd.tau), log_pt)
        value = value + objective.weighted(objective.chunk_loss(heads, y, kd), w).sum()
    return float(sharding.total(torch.as_tensor(value, dtype=DOUBLE, device=rows.device)))

"""The linear proxy's tensor plumbing: devices, the numpy boundary and the chunked stream of rows.

Every pass of the proxy's math (``objective.py``, ``proxy.py``, ``solvers.py``, ``scores.py``) reads its
rows through :func:`chunks`: ``features`` may be any float array (a float16 np.memmap included), a
FeatureView or a tensor, read ``chunk_size`` rows (CHUNK_SIZE) at a time, over this rank's shard under
torchrun, and sent to ``device`` ("cpu", "cuda" or a torch.device) as float32 (from pinned memory,
non-blocking, on CUDA), so no caller holds more than one chunk of features. A chunk is

    x (m, d+1) float32 = [phi, 1],   t (m, C) float64,   y (m,) int64 in [0, C),   w (m,) float64 or None.

:class:`Rows` keeps one problem's chunks (with log softmax(t / tau)) in memory when they fit in
``cache_bytes`` (OPERATOR_CACHE_BYTES) and re-reads them on every pass otherwise. Precision: DOUBLE
(float64) for theta, vectors, results and accumulations, SINGLE (float32) for the streamed features and
the matmuls (:func:`single_matmul`: float32 products returned in float64). :func:`as_tensor` brings
arrays in (float64 on the device, converted once), :func:`to_numpy` takes results out (CPU float64, the
package boundary). Nothing here is a loss: lower-is-better quantities live in ``objective.py``.
"""
from __future__ import annotations

import numpy as np
import torch

from ifbeta.config import KDConfig
from ifbeta.influence import sharding

CHUNK_SIZE = 8192  # rows of features sent to the device at a time
OPERATOR_CACHE_BYTES = 1 << 30  # Rows and objective.HessianOperator keep their terms in memory up to this size
DOUBLE, SINGLE = torch.float64, torch.float32


def resolve_device(device=None) -> torch.device:
    """torch.device of "cpu", "cuda", "cuda:1", a torch.device or None (= cpu); a one-line ValueError
    when CUDA is asked for and not available."""
    device = sharding.device(torch.device("cpu" if device is None else device))  # cuda:LOCAL_RANK under torchrun
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available here; use device 'cpu'")
    return device


def as_tensor(values, device=None, dtype=DOUBLE) -> torch.Tensor:
    """values (array, tensor or number) as a ``dtype`` tensor on ``device`` (no copy when already there)."""
    if isinstance(values, torch.Tensor):
        return values.to(device=resolve_device(device), dtype=dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype, device=resolve_device(device))


def to_numpy(values) -> np.ndarray:
    """A float64 tensor (any device) or array as a CPU float64 numpy array: the package boundary."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", DOUBLE).numpy()
    return np.asarray(values, dtype=np.float64)


def device_of(theta, device=None) -> torch.device:
    """``device`` if given, else theta's device when theta is a tensor, else cpu."""
    if device is not None:
        return resolve_device(device)
    return theta.device if isinstance(theta, torch.Tensor) else torch.device("cpu")

# ----------------------------------------------------------------------------- the chunk stream


def send(array, device: torch.device, dtype=SINGLE) -> torch.Tensor:
    """Rows read from an array / memmap / FeatureView / tensor as a ``dtype`` tensor on ``device``;
    through pinned memory with a non-blocking copy when the device is CUDA."""
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=dtype)
    host = torch.from_numpy(np.ascontiguousarray(array, dtype=torch.empty(0, dtype=dtype).numpy().dtype))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host


PARTS = ("all", "inputs", "targets", "labels")


def chunks(features, teacher_logits, labels, weights, chunk_size, device=None, *, part: str = "all"):
    """Yield (x (m, d+1) float32, t (m, C) float64, y (m,) int64, w (m,) float64 or None) on ``device``,
    over this rank's shard of the rows under torchrun (sharding.rows; all of them in one process).

    part: "all"; "inputs" reads no teacher logits (t is None); "targets" reads no features (x is None),
    for passes that take the proxy's outputs from an outputs.OutputStore; "labels" reads neither (x and t
    None: y and w only, for a pass whose per-row values are all stored).
    Raises ValueError for a label outside [0, C): indexing would otherwise read label -1 as class C - 1."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; use one of {', '.join(PARTS)}")
    device = resolve_device(device)
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    first, last = sharding.rows(len(labels))
    for start in range(first, last, chunk_size):
        stop = min(last, start + chunk_size)
        x = t = None
        if part in ("all", "inputs"):
            phi = send(features[start:stop], device)
            x = torch.cat([phi, torch.ones((stop - start, 1), dtype=SINGLE, device=device)], dim=1)  # (m, d+1)
        if part in ("all", "targets"):
            t = send(teacher_logits[start:stop], device, DOUBLE)
        y_host = labels[start:stop].astype(np.int64)
        if t is not None and len(y_host) and (y_host.min() < 0 or y_host.max() >= t.shape[1]):
            bad = start + int(np.flatnonzero((y_host < 0) | (y_host >= t.shape[1]))[0])
            raise ValueError(f"label {int(labels[bad])} of sample {bad} is outside [0, {t.shape[1]}): "
                             f"labels must be class indices of the teacher's {t.shape[1]} logits")
        y = torch.from_numpy(y_host).to(device)
        w = None if weights is None else send(weights[start:stop], device, DOUBLE)
        yield x, t, y, w


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(z, dim=1)


def single_matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left @ right as a float32 matmul, returned in float64 (the accumulation precision)."""
    return (left.to(SINGLE) @ right.to(SINGLE)).to(DOUBLE)


class Rows:
    """One problem's rows on the device as chunks (x = [phi, 1] (m, d+1) float32, log softmax(t / tau)
    (m, C) float64, y, w).

    Kept in (device) memory when they (and the softmax heads of one theta) fit in ``cache_bytes``: every
    pass of fit() then skips the transfer and the teacher's softmax, and Hessian products reuse the heads
    of the current iterate. Larger problems are re-read from ``features`` on every pass."""

    def __init__(self, features, teacher_logits, labels, weights, *, kd: KDConfig, chunk_size: int,
                 cache_bytes: int = OPERATOR_CACHE_BYTES, device=None):
        self.device = resolve_device(device)
        self.source, self.kd = (features, teacher_logits, labels, weights, chunk_size, self.device), kd
        classes = np.asarray(teacher_logits[:1]).shape[1]
        per_row = (features.shape[1] + 1) * 4 + (3 * classes + 2) * 8
        self.cached = list(self._read()) if len(labels) * per_row <= cache_bytes else None

    def _read(self):
        for x, t, y, w in chunks(*self.source):
            yield x, log_softmax(t / self.kd.tau), y, w

    def __iter__(self):
        return iter(self.cached) if self.cached is not None else self._read()

    def inputs(self):
        """(x, w) per chunk, without the teacher's logits."""
        if self.cached is not None:
            return ((x, w) for x, _, _, w in self.cached)
        return ((x, w) for x, _, _, w in chunks(*self.source, part="inputs"))

    def targets(self):
        """(log softmax(t / tau), y, w) per chunk, without the features."""
        if self.cached is not None:
            return ((log_pt, y, w) for _, log_pt, y, w in self.cached)
        return ((log_softmax(t / self.kd.tau), y, w) for _, t, y, w in chunks(*self.source, part="targets"))

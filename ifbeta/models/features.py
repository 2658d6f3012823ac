"""Teacher penultimate features and logits for every sample: chunked, cached, shardable.

Stored in the artefact store as ``features.npy`` (N, d) float32 and ``logits.npy`` (N, C) float32;
loaded memory-mapped, so downstream steps can stream them. Under ``torchrun`` each rank extracts
a strided shard and the shards are gathered on every rank.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ifbeta.data.datasets import DatasetSplit
from ifbeta.models.teachers import Teacher
from ifbeta.models.training import default_device, distributed_context
from ifbeta.progress import OnStep
from ifbeta.store import Store

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """features: (N, d) float32; logits: (N, C) float32 teacher logits; labels: (N,) int64."""

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    key: str
    dataset: str
    fingerprint: str

    @property
    def teacher_accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.labels).mean())


@torch.inference_mode()
def extract(teacher: Teacher, data: DatasetSplit, *, batch_size: int = 512, device: torch.device | None = None,
            on_step: OnStep | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the teacher once over ``data``: returns features (N, d) and logits (N, C), float32."""
    device = device or default_device()
    rank, world = distributed_context()
    model = teacher.model.to(device).to(memory_format=torch.channels_last).eval()
    normaliser = teacher.normaliser.to(device)
    mine = np.arange(rank, len(data), world)
    features, logits = [], []
    batches = max((len(mine) + batch_size - 1) // batch_size, 1)
    for b in range(batches):
        chunk = torch.from_numpy(mine[b * batch_size:(b + 1) * batch_size])
        x = normaliser(data.images[chunk].to(device)).contiguous(memory_format=torch.channels_last)
        phi = model.forward_features(x)
        features.append(phi.float().cpu())
        logits.append(model.classifier(phi).float().cpu())
        if on_step:
            on_step(b + 1, {"event": "batch", "batch": b + 1, "batches": batches})
    phi_all, logit_all = torch.cat(features), torch.cat(logits)
    if world > 1:
        phi_all, logit_all = _gather(phi_all, len(data), world), _gather(logit_all, len(data), world)
    return phi_all.numpy(), logit_all.numpy()


def _gather(shard: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """Re-interleave strided shards (rank r holds rows r, r+world, ...) into (total, ...)."""
    import torch.distributed as dist

    size = (total + world - 1) // world
    padded = torch.zeros((size,) + tuple(shard.shape[1:]), dtype=shard.dtype)
    padded[:len(shard)] = shard
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.stack(parts, dim=1).reshape((size * world,) + tuple(shard.shape[1:]))  # row i*world + r
    return out[:total]


def teacher_features(teacher: Teacher, data: DatasetSplit, *, store: Store | None = None,
                     on_step: OnStep | None = None, float16: bool = False) -> FeatureSet:
    """Cached :func:`extract`: keyed by the teacher's sha256 and the split's fingerprint.

    ``float16=True`` stores the features as float16 (half the disk and memory; every consumer
    streams them in float64 chunks); logits always stay float32."""
    store = store or Store.default()
    # content-addressed: the same images (fingerprint) and teacher give the same key on any machine/path
    config = {"teacher_sha256": teacher.info.sha256, "split": data.split, "fingerprint": data.fingerprint}
    if float16:
        config["dtype"] = "float16"

    # under torchrun, extract's all_gather must run on every rank and never inside the store's file lock
    # (rank 0 would wait in all_gather for a rank waiting on the lock: a deadlock on a cold cache)
    ready = None
    if distributed_context()[1] > 1:
        from ifbeta.store import make_key

        missing = torch.tensor([0 if store.exists("features", make_key(config, [])) else 1])
        torch.distributed.all_reduce(missing)
        ready = extract(teacher, data, on_step=on_step) if missing.item() else None

    def compute():
        features, logits = ready if ready is not None else extract(teacher, data, on_step=on_step)
        if not (np.isfinite(features).all() and np.isfinite(logits).all()):
            raise ValueError("the teacher produced NaN or Inf features; check the checkpoint and inputs")
        stored = features.astype(np.float16) if float16 else features
        return {"features": stored, "logits": logits}, {"n": len(data), "dim": int(features.shape[1]),
                                                          "dataset": data.name}

    arrays, _, key = store.get_or_compute("features", config, [], compute, mmap=True)
    return FeatureSet(arrays["features"], arrays["logits"], data.labels, key, data.name, data.fingerprint)

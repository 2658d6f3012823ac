"""Resolve ``--teacher CKPT|auto`` into a loaded teacher, training and caching one when asked.

``auto`` looks for a teacher of the dataset's default architecture, in this order: the bundled
``teachers/`` folder of the project (files named ``<fingerprint16>-<arch>.safetensors``), then the
artefact store (``cache/teachers/<key>/teacher.safetensors``); if neither exists it trains one
(resumable) and stores it. Teacher checkpoints record the input normalisation, so features,
distillation and evaluation all see the images exactly as the teacher was trained on them.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ifbeta.data.datasets import DatasetSplit, channel_statistics
from ifbeta.models import zoo as models
from ifbeta.models.training import Normaliser, TrainConfig, TrainResult, distributed_context, fit
from ifbeta.progress import OnStep
from ifbeta.store import Store, make_key

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parents[2] / "teachers"  # the project's teachers/ folder
TEACHER_EPOCHS = {"digits": 15, "mnist": 8, "fashion-mnist": 15}
DEFAULT_TEACHER_EPOCHS = 30
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


@dataclass
class Teacher:
    model: nn.Module  # eval mode, never mutated
    info: models.CheckpointInfo
    normaliser: Normaliser

    def describe(self) -> dict:
        return {"arch": self.info.arch, "checkpoint_sha256": self.info.sha256, "path": self.info.path}


def default_epochs(dataset_name: str) -> int:
    """Epochs a default (``--teacher auto``) teacher of ``dataset_name`` trains for."""
    return TEACHER_EPOCHS.get(dataset_name, DEFAULT_TEACHER_EPOCHS)


def teacher_config(data: DatasetSplit, arch: str, epochs: int | None, seed: int) -> TrainConfig:
    """The teacher's training settings; ``epochs`` None = ``default_epochs(data.name)``."""
    epochs = epochs or default_epochs(data.name)
    batch = 64 if len(data) < 5000 else 128
    return TrainConfig(epochs=epochs, batch_size=batch, learning_rate=0.05 if batch == 64 else 0.1,
                       weight_decay=5e-4, seed=seed)


def train_teacher(data: DatasetSplit, arch: str, out: str | Path, *, epochs: int | None = None, seed: int = 0,
                  test: DatasetSplit | None = None, on_step: OnStep | None = None,
                  checkpoint_dir: str | Path | None = None) -> TrainResult:
    """Train ``arch`` on ``data`` with cross-entropy and write it to ``out`` (safetensors, atomic)."""
    config = teacher_config(data, arch, epochs, seed)
    torch.manual_seed(seed)
    model = models.build(arch, num_classes=data.num_classes, in_channels=data.channels)
    mean, std = channel_statistics(data.images)
    result = fit(model, data, config=config, test=test, normaliser=Normaliser(mean, std),
                 checkpoint_dir=checkpoint_dir or Path(str(out) + ".resume"), on_step=on_step)
    metadata = {"dataset": data.name, "fingerprint": data.fingerprint, "mean": mean, "std": std,
                "test_top1": result.test_top1, "test_top5": result.test_top5, "train": config.to_dict()}
    rank, world = distributed_context()
    if rank == 0:
        models.save_checkpoint(model.cpu(), out, arch=arch, num_classes=data.num_classes,
                               in_channels=data.channels, metadata=metadata)
    if world > 1:
        torch.distributed.barrier()
    return result


def load_teacher(path: str | Path, data: DatasetSplit, *, arch: str | None = None,
                 trust_pickle: bool = False) -> Teacher:
    """Load a checkpoint for ``data`` (class count and channels checked), with its normalisation."""
    model, info = models.load_checkpoint(path, arch=arch, num_classes=data.num_classes,
                                         in_channels=data.channels, trust_pickle=trust_pickle)
    mean, std = info.metadata.get("mean"), info.metadata.get("std")
    if mean is None or std is None:
        mean, std = channel_statistics(data.images)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return Teacher(model, info, Normaliser(mean, std))


def auto_teacher_path(data: DatasetSplit, arch: str, *, store: Store, epochs: int | None = None,
                      seed: int = 0) -> Path:
    bundled = BUNDLED / f"{data.fingerprint[:16]}-{arch}.safetensors"
    if bundled.is_file():
        return bundled
    config = {"fingerprint": data.fingerprint, "arch": arch, **teacher_config(data, arch, epochs, seed).to_dict()}
    return store.path("teachers", make_key(config)) / "teacher.safetensors"


def default_arch(data: DatasetSplit) -> str:
    """The architecture ``--teacher auto`` trains for ``data`` (first of ``zoo.default_architectures``)."""
    return models.default_architectures(data.name, data.image_size)[0]


def teacher_path(spec: str, data: DatasetSplit, *, store: Store | None = None, arch: str | None = None,
                 epochs: int | None = None) -> Path:
    """The checkpoint file ``--teacher spec`` names, whether or not it exists yet: ``spec`` itself for
    a path; for ``auto`` the bundled default teacher of ``data``, else the store's trained one."""
    if spec != "auto":
        return Path(spec).expanduser()
    return auto_teacher_path(data, arch or default_arch(data), store=store or Store.default(), epochs=epochs)


def teacher_missing(spec: str, data: DatasetSplit, *, store: Store | None = None, arch: str | None = None,
                    trains_itself: bool = True) -> str | None:
    """None when ``resolve_teacher(spec, data, ...)`` can proceed, else a one-line reason. ``auto``
    with no trained teacher yet proceeds only when ``trains_itself`` (it would train one on the spot)."""
    path = teacher_path(spec, data, store=store, arch=arch)
    if path.is_file() or (spec == "auto" and trains_itself):
        return None
    if spec != "auto":
        return f"teacher checkpoint {spec} does not exist"
    return f"no {arch or default_arch(data)} teacher for {data.name} yet: train one or choose a checkpoint"


def trained_teacher_path(data: DatasetSplit, arch: str, epochs: int, *, store: Store | None = None) -> Path:
    """Where a teacher trained on request (the app's Train button) is written:
    ``<store>/teachers/trained/<dataset>-<fingerprint12>-<arch>-e<epochs>.safetensors``."""
    from ifbeta.store import safe_name

    store = store or Store.default()
    name = f"{safe_name(Path(data.name).name, fallback='data')}-{data.fingerprint[:12]}-{arch}-e{int(epochs)}"
    return trained_folder(store) / f"{name}.safetensors"


def trained_folder(store: Store) -> Path:
    """The folder of teachers trained on request (``trained_teacher_path``)."""
    return store.root / "teachers" / "trained"


def resolve_teacher(spec: str, data: DatasetSplit, *, store: Store | None = None, arch: str | None = None,
                    epochs: int | None = None, test: DatasetSplit | None = None, trust_pickle: bool = False,
                    on_step: OnStep | None = None) -> Teacher:
    """``spec`` is a checkpoint path or ``auto`` (find or train the dataset's default teacher)."""
    if spec != "auto":
        return load_teacher(spec, data, arch=arch, trust_pickle=trust_pickle)
    store = store or Store.default()
    arch = arch or default_arch(data)
    path = teacher_path(spec, data, store=store, arch=arch, epochs=epochs)
    _, world = distributed_context()
    if not path.is_file() and world > 1:  # every rank takes part in the DDP fit; no file lock across ranks
        train_teacher(data, arch, path, epochs=epochs, test=test, on_step=on_step, checkpoint_dir=path.parent / "resume")
    if not path.is_file():
        key_dir = path.parent
        with store.lock("teachers", key_dir.name):
            if not path.is_file():
                log.info("training the default %s teacher for %s", arch, data.name)
                train_teacher(data, arch, path, epochs=epochs, test=test, on_step=on_step,
                              checkpoint_dir=key_dir / "resume")
    return load_teacher(path, data, arch=arch)


def store_upload(folder: str | Path, name: str, data: bytes, *, max_mb: float) -> Path:
    """Store uploaded checkpoint bytes in ``folder`` (content-addressed: ``<sha16>-<stem><suffix>``,
    written atomically once); refuses more than ``max_mb`` MB or an unknown suffix with a ValueError."""
    from ifbeta.store import safe_name

    if len(data) > max_mb * 2**20:
        raise ValueError(f"the checkpoint is {len(data) / 2**20:.0f} MB; uploads are limited to {max_mb} MB "
                         "(put a larger file on disk and give its path instead)")
    suffix = Path(name).suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"unsupported checkpoint type {suffix or '(none)'}; use {', '.join(CHECKPOINT_SUFFIXES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{safe_name(Path(name).stem, fallback='teacher')}{suffix}"
    if not path.is_file():
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return path


def checkpoint_files(folders) -> list[str]:
    """Checkpoint files (by suffix) in each existing folder of ``folders``, sorted per folder."""
    found = []
    for folder in map(Path, folders):
        if folder.is_dir():
            found += [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in CHECKPOINT_SUFFIXES]
    return found

"""Resolve ``--teacher CKPT|auto`` into a loaded teacher, training and caching one when asked.

``auto`` is the default teacher of the dataset's default architecture (``registry.default``: the one
``train-teacher`` or ``ifbeta teachers --set-default`` made the default, else a bundled one in
``teachers/``, else one trained with the default settings, else the newest). Only when the store and
the bundle hold none does it train one (resumable, into ``cache/teachers/<key>/teacher.safetensors``),
saying so in one progress event, and make it the default. Teacher checkpoints record the input
normalisation, so features, distillation and evaluation all see the images exactly as the teacher was
trained on them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ifbeta import atomic
from ifbeta.data.datasets import DatasetSplit, channel_statistics
from ifbeta.errors import ModelError
from ifbeta.models import registry
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
    """Train ``arch`` on ``data`` with cross-entropy and write it to ``out`` (safetensors, atomic); the
    resume folder (default ``<out>.resume``) is removed once the checkpoint is written."""
    config = teacher_config(data, arch, epochs, seed)
    checkpoint_dir = Path(checkpoint_dir or str(out) + ".resume")
    torch.manual_seed(seed)
    model = models.build(arch, num_classes=data.num_classes, in_channels=data.channels)
    mean, std = channel_statistics(data.images)
    result = fit(model, data, config=config, test=test, normaliser=Normaliser(mean, std),
                 checkpoint_dir=checkpoint_dir, on_step=on_step)
    metadata = {"dataset": data.name, "fingerprint": data.fingerprint, "mean": mean, "std": std,
                "test_top1": result.test_top1, "test_top5": result.test_top5, "train": config.to_dict()}
    rank, world = distributed_context()
    if rank == 0:
        models.save_checkpoint(model.cpu(), out, arch=arch, num_classes=data.num_classes,
                               in_channels=data.channels, metadata=metadata)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
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
    teacher = Teacher(model, info, Normaliser(mean, std))
    check_forward(teacher, data)
    return teacher


PROBE_SAMPLES = 4
"""How many samples ``check_forward`` runs through a teacher before it is used."""


@torch.inference_mode()
def check_forward(teacher: Teacher, data: DatasetSplit) -> None:
    """Run the first ``PROBE_SAMPLES`` samples of ``data`` through the teacher (on the CPU): the
    features must be finite (n, d) and the logits finite (n, C) with C = ``data.num_classes``;
    otherwise a ``ModelError`` saying which. Catches what metadata cannot: a TorchScript or pickled
    model for another class count or input size, or one that outputs NaN."""
    path, count = teacher.info.path, min(PROBE_SAMPLES, len(data))
    try:
        features = teacher.model.forward_features(teacher.normaliser(data.images[:count]))
        logits = teacher.model.classifier(features)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ModelError(f"{path} fails on {data.name}'s {data.channels}x{data.image_size}x{data.image_size} "
                                f"images ({type(error).__name__}: {first}); it was made for other inputs") from None
    if features.ndim != 2 or not torch.isfinite(features).all():
        raise ModelError(f"{path} gives penultimate features of shape {tuple(features.shape)}"
                                f"{'' if features.ndim != 2 else ' with NaN or Inf'}; expected finite (N, d)")
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        raise ModelError(f"{path} predicts {logits.shape[-1]} classes but {data.name} has {data.num_classes}")
    if not torch.isfinite(logits).all():
        raise ModelError(f"{path} outputs NaN or Inf logits on {data.name}; the checkpoint is broken")


def teacher_slot(data: DatasetSplit, arch: str, *, store: Store, epochs: int | None = None, seed: int = 0) -> Path:
    """Where a teacher of ``data`` trained with these settings is written in the store:
    ``<store>/teachers/<key>/teacher.safetensors``, key = hash of fingerprint, arch and settings."""
    config = {"fingerprint": data.fingerprint, "arch": arch, **teacher_config(data, arch, epochs, seed).to_dict()}
    return store.path("teachers", make_key(config)) / "teacher.safetensors"


def default_teacher(data: DatasetSplit, arch: str, *, store: Store) -> registry.Entry | None:
    """The default ``arch`` teacher of ``data`` (``registry.default``; the default settings preferred)."""
    def preferred() -> dict:
        return teacher_config(data, arch, None, 0).to_dict()

    return registry.default(store, data.fingerprint, arch, preferred=preferred, bundled=BUNDLED)


def listing(data: DatasetSplit, *, store: Store, arch: str | None = None) -> list[registry.Entry]:
    """The teachers of ``data`` (``registry.entries``), each ``default`` as ``--teacher auto`` judges it."""
    found = registry.entries(store, fingerprint=data.fingerprint, arch=arch, bundled=BUNDLED)
    defaults = {(e.arch, default_teacher(data, e.arch, store=store).path) for e in found}
    return [dataclasses.replace(e, default=(e.arch, e.path) in defaults) for e in found]


def auto_teacher_path(data: DatasetSplit, arch: str, *, store: Store, epochs: int | None = None,
                      seed: int = 0) -> Path:
    """The file ``--teacher auto`` uses: the default teacher's, else the slot it would train into."""
    entry = default_teacher(data, arch, store=store)
    return entry.path if entry is not None else teacher_slot(data, arch, store=store, epochs=epochs, seed=seed)


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
        if path.is_dir():
            return f"teacher {spec} is a folder, not a checkpoint file; give the checkpoint file inside it"
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
    """``spec`` is a checkpoint path or ``auto`` (the default teacher; trained and made the default
    only when there is none)."""
    if spec != "auto":
        return load_teacher(spec, data, arch=arch, trust_pickle=trust_pickle)
    store = store or Store.default()
    arch = arch or default_arch(data)
    path = teacher_path(spec, data, store=store, arch=arch, epochs=epochs)
    _, world = distributed_context()
    if not path.is_file() and world > 1:  # every rank takes part in the DDP fit; no file lock across ranks
        _train_default(data, arch, path, store=store, epochs=epochs, test=test, on_step=on_step)
    if not path.is_file():
        with store.lock("teachers", path.parent.name):
            if default_teacher(data, arch, store=store) is None:
                _refuse_unreadable_default(data, arch, store=store)
                _train_default(data, arch, path, store=store, epochs=epochs, test=test, on_step=on_step)
        path = teacher_path(spec, data, store=store, arch=arch, epochs=epochs)
    return load_teacher(path, data, arch=arch)


def _refuse_unreadable_default(data: DatasetSplit, arch: str, *, store: Store) -> None:
    """A ``ModelError`` when the recorded default teacher is there but unreadable: ``auto`` never trains a
    different teacher in its place without a word."""
    damaged = registry.unreadable_default(store, data.fingerprint, arch, bundled=BUNDLED)
    if damaged is not None:
        raise ModelError(f"the default {arch} teacher of {data.name}, {damaged}, is not a readable checkpoint (cut "
                         "short or damaged); delete it to train a new one, or make another teacher the default")


def _train_default(data: DatasetSplit, arch: str, path: Path, *, store: Store, epochs: int | None,
                   test: DatasetSplit | None, on_step: OnStep | None) -> None:
    """Train the missing default teacher into ``path`` (saying so first) and make it the default."""
    epochs = teacher_config(data, arch, epochs, 0).epochs
    plural = "s" if epochs != 1 else ""
    text = f"no {arch} teacher for {data.name} in the store: training one ({epochs} epoch{plural}, resumable) into {path.parent}"
    log.info(text)
    if on_step is not None:
        on_step(0, {"event": "notice", "text": text})
    train_teacher(data, arch, path, epochs=epochs, test=test, on_step=on_step, checkpoint_dir=path.parent / "resume")
    if distributed_context()[0] == 0:
        registry.register(store, path, make_default=True, bundled=BUNDLED)


def stale_resume_folders(store: Store) -> list[Path]:
    """Resume folders of teacher trainings that finished (their checkpoint exists): ``<key>/resume``
    beside ``<key>/teacher.safetensors`` and ``<file>.safetensors.resume`` beside ``<file>.safetensors``."""
    base = registry.folder(store)
    found = [p for p in sorted(base.glob("*/resume")) if (p.parent / "teacher.safetensors").is_file()]
    found += [p for p in sorted(base.glob("**/*.safetensors.resume")) if p.with_suffix("").is_file()]
    return [p for p in found if p.is_dir()]


def store_upload(folder: str | Path, name: str, data: bytes, *, max_mb: float, dataset: DatasetSplit,
                 arch: str | None = None, trust_pickle: bool = False) -> Path:
    """Check uploaded checkpoint bytes, then store them in ``folder`` (content-addressed:
    ``<sha16>-<stem><suffix>``, written atomically once) and return the stored path.

    The check comes first: the bytes are loaded (``arch``: the architecture when the file does not
    record it; ``trust_pickle`` for pickles and TorchScript) and ``check_forward`` runs a few samples of
    ``dataset`` through them. Any failure raises a ``ModelError`` and stores nothing. Beside the file,
    ``<file>.json`` records the arch and trust setting it passed with (read by ``usable_checkpoints``)."""
    import json
    import shutil
    import tempfile

    from ifbeta.store import safe_name

    if len(data) > max_mb * 2**20:
        raise ModelError(f"the checkpoint is {len(data) / 2**20:.0f} MB; uploads are limited to {max_mb} MB "
                         "(put a larger file on disk and give its path instead)")
    suffix = Path(name).suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ModelError(f"unsupported checkpoint type {suffix or '(none)'}; use {', '.join(CHECKPOINT_SUFFIXES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{safe_name(Path(name).stem, fallback='teacher')}{suffix}"
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", dir=folder))  # hidden: never listed
    try:
        candidate = staging / f"{Path(name).stem or 'teacher'}{suffix}"
        candidate.write_bytes(data)
        try:
            load_teacher(candidate, dataset, arch=arch, trust_pickle=trust_pickle)
        except ModelError as error:
            raise ModelError(error.what.replace(str(candidate), f"the upload {name}"), fix=error.fix,
                             value=error.value) from None
        atomic.write_text(_record_path(path), json.dumps({"arch": arch, "trust_pickle": bool(trust_pickle)}))
        if not path.is_file():
            os.replace(candidate, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def usable_checkpoints(paths, dataset: DatasetSplit) -> list[str]:
    """Those of the checkpoint ``paths`` that load and pass ``check_forward`` on ``dataset``, each with
    the arch and trust setting ``store_upload`` recorded beside it (a file without a record, e.g. one
    stored before uploads were checked, is tried as it is: arch from its metadata, no trust)."""
    import json

    usable = []
    for path in map(Path, paths):
        try:
            record = json.loads(_record_path(path).read_text()) if _record_path(path).is_file() else {}
            load_teacher(path, dataset, arch=record.get("arch"), trust_pickle=bool(record.get("trust_pickle")))
        except (ModelError, OSError, ValueError) as error:
            log.info("not listing %s: %s", path, error)
            continue
        usable.append(str(path))
    return usable


def checkpoint_files(folders) -> list[str]:
    """Checkpoint files (by suffix) in each existing folder of ``folders``, sorted per folder."""
    found = []
    for folder in map(Path, folders):
        if folder.is_dir():
            found += [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in CHECKPOINT_SUFFIXES]
    return found

"""Distillation on a subset: Hinton KD with the proxy's (tau, lam), two budgets, resumable runs.

A run directory holds ``config.json`` (what was asked), ``progress.json`` (rewritten every epoch),
``checkpoint/last.pt`` (resume state), ``student.safetensors`` and finally ``metrics.json``. Every
finished run is also appended to ``<store>/runs.jsonl`` so the app lists runs started anywhere.

Budgets (docs/METHOD.md section 6): ``epochs`` trains E epochs over the subset (proportionally less
compute); ``steps`` trains as many optimiser steps as E epochs over the full pool would take.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from ifbeta import atomic
from ifbeta.config import KDConfig
from ifbeta.errors import RunError  # noqa: F401  (raised here; its home is errors.py)
from ifbeta.models import zoo as models
from ifbeta.models.training import TrainConfig, distributed_context, fit, steps_per_epoch
from ifbeta.pipeline import Workspace
from ifbeta.progress import OnStep
from ifbeta.store import Store

log = logging.getLogger(__name__)

BUDGETS = ("epochs", "steps")
ORDERS = ("subset", "pool")  # batch order: a shuffle of the subset, or of the whole pool restricted to the subset
STUDENT_EPOCHS = {"digits": 30}
DEFAULT_STUDENT_EPOCHS = 30


def _write_json(path: Path, payload: dict) -> None:
    atomic.write_text(path, json.dumps(payload, indent=2, default=float))


def plan(n_pool: int, k: int, *, epochs: int, budget: str, batch_size: int) -> tuple[int, int]:
    """(epochs to run over the subset, optimiser steps per epoch) for a budget."""
    if budget not in BUDGETS:
        raise RunError(f"unknown budget {budget!r}; use epochs or steps")
    steps = steps_per_epoch(k, batch_size)
    if budget == "epochs" or k == n_pool:
        return epochs, steps
    full_steps = epochs * steps_per_epoch(n_pool, batch_size)
    return max(1, math.ceil(full_steps / steps)), steps


def run(workspace: Workspace, *, subset: str | Path | None, out: str | Path, student: str | None = None,
        epochs: int | None = None, budget: str = "epochs", seed: int = 0, batch_size: int | None = None,
        learning_rate: float = 0.05, kd: KDConfig = KDConfig(), on_step: OnStep | None = None,
        eval_every: int = 1, order: str = "subset") -> dict:
    """Distil ``workspace.teacher`` into a fresh ``student`` on ``subset`` (a subset directory, or
    None for the full pool). Returns the metrics dict (test_top1/top5 are last-epoch fractions).
    ``eval_every``: test the student every that many epochs (always after the last one). ``order``
    (``ORDERS``): ``pool`` shuffles the whole pool with the seed and keeps the subset's samples in that
    order, so runs with one seed on two subsets visit their common samples in the same relative order
    (the transfer check's pairing); it is recorded in config.json only when not ``subset``."""
    if order not in ORDERS:
        raise RunError(f"unknown batch order {order!r}; use one of {', '.join(ORDERS)}")
    train = workspace.train
    indices, method, ratio, subset_path = _subset_indices(subset, train)
    student = student or models.default_architectures(train.name, train.image_size)[1]
    epochs = epochs or STUDENT_EPOCHS.get(train.name, DEFAULT_STUDENT_EPOCHS)
    batch_size = batch_size or (64 if len(train) < 5000 else 128)
    run_epochs, _ = plan(len(train), len(indices), epochs=epochs, budget=budget, batch_size=batch_size)
    out = Path(out)
    with _run_lock(out):
        return _run_locked(workspace, out, train, indices, method, ratio, subset_path, student=student,
                           epochs=epochs, budget=budget, seed=seed, batch_size=batch_size, run_epochs=run_epochs,
                           learning_rate=learning_rate, kd=kd, on_step=on_step, eval_every=eval_every,
                           order=order)


def _run_locked(workspace: Workspace, out: Path, train, indices, method, ratio, subset_path, *, student, epochs,
                budget, seed, batch_size, run_epochs, learning_rate, kd, on_step, eval_every, order) -> dict:
    """``run`` once it holds the run directory's lock."""
    request = {"dataset": train.name, "fingerprint": train.fingerprint, "teacher": workspace.teacher_record(),
               "subset": subset_path, "indices_sha256": _indices_hash(indices), "method": method, "ratio": ratio,
               "student": student, "epochs": epochs, "budget": budget, "seed": seed, "batch_size": batch_size,
               "learning_rate": learning_rate, "kd": kd.to_dict(), "pool": workspace.pool,
               **({"order": order} if order != "subset" else {})}
    finished = _existing(out, request)
    rank, _ = distributed_context()
    if finished is not None:
        if rank == 0:  # a run killed between metrics.json and its record is recorded now
            _register(workspace.store, finished)
        return finished
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", request)
    config = TrainConfig(epochs=run_epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                         order=order)
    torch.manual_seed(seed)  # same seed -> same student initialisation across methods (paired seeds)
    model = models.build(student, num_classes=train.num_classes, in_channels=train.channels)
    progress = _progress_writer(out, run_epochs, on_step, rank)
    began = time.time()
    result = fit(model, train, config=config, indices=indices, teacher=workspace.teacher.model, kd=kd,
                 test=workspace.test, checkpoint_dir=out / "checkpoint", normaliser=workspace.teacher.normaliser,
                 on_step=progress, eval_every=eval_every)
    metrics = {**request, "name": out.name, "out": str(out.resolve()), "status": "finished",
               "test_top1": result.test_top1, "test_top5": result.test_top5, "epochs_run": run_epochs,
               "train_samples": int(len(indices)), "steps": run_epochs * steps_per_epoch(len(indices), batch_size),
               "seconds": result.seconds, "wall_seconds": time.time() - began, "history": result.history,
               "resumed_from_epoch": result.resumed_from}
    if rank == 0:
        _save(workspace, model, out, metrics)
    return metrics


OWNER = ".run-owner.json"  # who holds <out>/.run.lock: pid, host, start time


@contextlib.contextmanager
def _run_lock(out: Path):
    """Hold ``<out>/.run.lock`` (the store's file lock) for the whole run, so a second ``ifbeta distill``
    into the same ``out`` is refused at once with a ``RunError`` naming the running one, instead of
    both writing the same checkpoints. Under DDP only rank 0 takes it (the ranks are one run)."""
    if distributed_context()[0] != 0:
        yield
        return
    lock = Store(out.parent).lock(out.name, "run")  # -> <out>/.run.lock
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunError(f"{out} is in use by {_owner(out)}; wait for it to finish, or stop it first") from None
    try:
        atomic.write_text(out / OWNER, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                   "started": time.time()}))
        yield
    finally:
        (out / OWNER).unlink(missing_ok=True)
        lock.release()


def _owner(out: Path) -> str:
    """'another run (pid 123 on host, started 12:00:01)' from the lock holder's record."""
    try:
        owner = json.loads((out / OWNER).read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner["started"])))
        return f"another run (pid {int(owner['pid'])} on {owner.get('host', '?')}, started {started})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another run"


def _subset_indices(subset: str | Path | None, train) -> tuple[np.ndarray, str, float, str | None]:
    """(kept indices, method, ratio, resolved subset path) of a subset directory checked against
    ``train``; the whole pool ("full", ratio 0, no path) for None."""
    from ifbeta.subsets import files as subset_module

    if subset is None:
        return np.arange(len(train)), "full", 0.0, None
    loaded = subset_module.load(subset, train)
    return (loaded.indices, loaded.manifest.get("method", "?"), float(loaded.manifest.get("ratio", 0.0)),
            str(Path(subset).resolve()))


def _save(workspace: Workspace, model, out: Path, metrics: dict) -> None:
    """The student's checkpoint, metrics.json and the store's run record (rank 0 only)."""
    train = workspace.train
    models.save_checkpoint(model.cpu(), out / "student.safetensors", arch=metrics["student"],
                           num_classes=train.num_classes, in_channels=train.channels,
                           metadata={"run": out.name, "method": metrics["method"]})
    _write_json(out / "metrics.json", metrics)
    _register(workspace.store, metrics)


def _indices_hash(indices: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def _existing(out: Path, request: dict) -> dict | None:
    """Finished metrics for the same request, None to (re)start; a different run in ``out`` is an error."""
    config_path = out / "config.json"
    if not config_path.is_file():
        return None
    try:
        previous = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if previous != json.loads(json.dumps(request, default=float)):
        changed = sorted(k for k in request if previous.get(k) != json.loads(json.dumps(request[k], default=float)))
        raise RunError(f"{out} holds a different run (differs in {', '.join(changed)})", fix="out")
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        return json.loads(metrics_path.read_text())
    return None


def _progress_writer(out: Path, epochs: int, on_step: OnStep | None, rank: int) -> OnStep:
    history: list[dict] = []

    def callback(step: int, info: dict) -> None:
        if info.get("event") == "resumed":  # a resumed run's progress keeps the epochs run before it was killed
            history[:] = [{"epochs": info["epochs"], **record} for record in info["history"]]
        if info.get("event") == "epoch" and rank == 0:
            history.append({k: v for k, v in info.items() if k != "event"})
            _write_json(out / "progress.json", {"epoch": info["epoch"], "epochs": epochs, "history": history,
                                                "pid": os.getpid(), "updated": time.time()})
        if on_step:
            on_step(step, info)

    return callback


def _register(store: Store, metrics: dict) -> None:
    """Append the finished run's record to ``<store>/runs.jsonl``, unless this very record is there (a
    rerun of a run killed after its metrics.json but before its record adds the record; a rerun of a
    recorded run adds nothing)."""
    store.root.mkdir(parents=True, exist_ok=True)
    record = json.loads(json.dumps({k: v for k, v in metrics.items() if k != "history"}, default=float))
    registry = store.root / "runs.jsonl"
    with FileLock(str(store.root / ".runs.lock")):
        text = registry.read_text() if registry.is_file() else ""
        if record in _records(text):
            return
        with open(registry, "a") as handle:  # a line cut short by a kill is ended first, never glued onto
            handle.write(("\n" if text and not text.endswith("\n") else "") + json.dumps(record) + "\n")


def _records(text: str) -> list[dict]:
    """The readable records of a runs.jsonl text (a line cut short is skipped)."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def list_runs(store: Store | None = None) -> list[dict]:
    """Every run known to the store, newest first: finished ones (runs.jsonl) and unfinished ones under
    ``<store>/runs/*/``: 'starting' while a launched process lives but has not finished an epoch,
    'running' while it lives after that, else 'stopped' (a zombie or a reused pid counts as dead)."""
    from ifbeta.distill import runs as runs_module

    store = store or Store.default()
    runs: dict[str, dict] = {}
    registry = store.root / "runs.jsonl"
    if registry.is_file():
        for line in registry.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs[record.get("out", record.get("name", ""))] = record
    folder = runs_module.runs_root(store)
    for directory in sorted(folder.glob("*/")) if folder.is_dir() else []:
        key = str(directory.resolve())
        if key not in runs:
            record = _unfinished(directory, runs_module)
            if record is not None:
                runs[key] = {**record, "out": key}
    return sorted(runs.values(), key=_mtime, reverse=True)


def _unfinished(directory: Path, runs_module) -> dict | None:
    """The record of a run directory not in runs.jsonl (None when it holds no run)."""
    launched = runs_module.read_json(directory / runs_module.LAUNCHED)
    config = runs_module.read_json(directory / "config.json")
    if config is None and launched is None:
        return None
    record = {**(config or {}), "name": directory.name, "status": "stopped"}
    state = runs_module.read_json(directory / "progress.json")
    if state is not None:
        record.update(epoch=state.get("epoch"), epochs_run=state.get("epochs"))
        record["test_top1"] = (state.get("history") or [{}])[-1].get("test_top1")
        if runs_module.alive(state.get("pid"), directory):
            record["status"] = "running"
    if record["status"] == "stopped" and launched is not None and not launched.get("cancelled"):
        if runs_module.alive(launched.get("pid"), directory):
            record["status"] = "running" if state is not None else "starting"
    return record


def _mtime(record: dict) -> float:
    for name in ("config.json", "launched.json"):
        path = Path(record.get("out", "")) / name
        if path.is_file():
            return path.stat().st_mtime
    return 0.0

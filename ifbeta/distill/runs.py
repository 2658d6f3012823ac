"""Background distillation runs: launch ``ifbeta distill`` as a subprocess, read its status, cancel it.

A launched run gets its own process group (it survives the launcher: an app reload or a server
restart) and writes into ``<store>/runs/<name>/``. At launch ``launched.json`` (pid, command, start
time) is written there, and a launch record ``<store>/app-runs/<name>.json`` (same content) plus the
process's log ``<store>/app-runs/<name>.log`` are kept beside, so launched runs can be listed.

Liveness never trusts a bare pid: a process counts as alive only if it is not a zombie and its
command line names the run directory (a reused pid does not).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ifbeta import atomic
from ifbeta.store import Store

LAUNCHED = "launched.json"
LOG_TAIL_CHARS = 1500
_CHILDREN: dict[str, subprocess.Popen] = {}  # run directory -> process launched by this process


def runs_root(store: Store) -> Path:
    return store.root / "runs"


def record_path(store: Store, name: str) -> Path:
    return store.root / "app-runs" / f"{name}.json"


def distill_command(cache: str | Path, out: str | Path, *, dataset: str, subset: str, teacher: str = "auto",
                    student: str | None = None, epochs: int | None = None, seed: int = 0,
                    budget: str | None = None, pool: int | None = None, batch_size: int | None = None,
                    learning_rate: float | None = None, eval_every: int | None = None,
                    teacher_arch: str | None = None, trust_pickle: bool = False, skip_corrupt: bool = False,
                    json: bool = False) -> list[str]:
    """The one ``ifbeta distill`` command line every launcher uses (the app's runs, the bench grid).

    ``subset`` is a subset directory or 'full'; options left as None are not passed, so the command's
    own defaults apply."""
    command = [sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), "distill", "--dataset", dataset,
               "--teacher", teacher, "--subset", subset, "--seed", str(seed), "--out", str(out)]
    for flag, value in (("--student", student), ("--epochs", epochs), ("--budget", budget), ("--pool", pool),
                        ("--batch-size", batch_size), ("--lr", learning_rate), ("--eval-every", eval_every),
                        ("--teacher-arch", teacher_arch)):
        if value is not None and value != "":
            command += [flag, str(value)]
    flags = (["--trust-pickle"] if trust_pickle else []) + (["--skip-corrupt"] if skip_corrupt else [])
    return command + flags + (["--json"] if json else [])


def launch(store: Store, *, name: str, dataset: str, subset: str, student: str, epochs: int, seed: int,
           teacher: str = "auto", teacher_arch: str | None = None, pool: int | None = None,
           trust_pickle: bool = False, skip_corrupt: bool = False, cwd: str | Path | None = None) -> Path:
    """Start ``ifbeta distill`` in the background in its own process group -> the run directory."""
    from ifbeta.store import safe_name

    run_dir = runs_root(store) / safe_name(name, fallback="run")
    record = record_path(store, run_dir.name)
    if run_dir.exists() or record.exists():
        raise ValueError(f"a run named {run_dir.name} exists already; choose another name")
    command = distill_command(store.root, run_dir, dataset=dataset, subset=subset, student=student, epochs=epochs,
                              seed=seed, teacher=teacher, teacher_arch=teacher_arch, pool=pool or None,
                              trust_pickle=trust_pickle, skip_corrupt=skip_corrupt, json=True)
    record.parent.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True)
    with open(record.with_suffix(".log"), "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=cwd, start_new_session=True)
    _CHILDREN[str(run_dir)] = process
    document = {"name": run_dir.name, "out": str(run_dir), "pid": process.pid, "command": command,
                "started": time.time(), "subset": subset, "student": student, "record": str(record)}
    _write_json(run_dir / LAUNCHED, document)
    _write_json(record, document)
    return run_dir


def alive(pid, run_dir: str | Path) -> bool:
    """Whether ``pid`` is a live (not zombie) process whose command line names ``run_dir``."""
    process = _CHILDREN.get(str(run_dir))
    if process is not None and process.pid == _int(pid):
        return process.poll() is None  # also reaps it
    pid = _int(pid)
    if not pid or pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # no procfs: the pid alone is all there is
        return _signal_zero(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        arguments = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and any(_names(argument, Path(run_dir)) for argument in arguments)


def _names(argument: str, run_dir: Path) -> bool:
    """Whether a command-line argument (a path, maybe relative, maybe ``--out=path``) is ``run_dir``."""
    value = argument.split("=", 1)[-1].rstrip("/")
    if not value:
        return False
    return value == str(run_dir) or Path(value).name == run_dir.name and (
        not Path(value).is_absolute() or Path(value).resolve() == run_dir.resolve())


def status(run_dir: str | Path, record: dict | None = None) -> dict:
    """A launched run's record (``launched.json``, or ``record``) with ``status`` (finished, cancelled,
    running or failed), ``progress`` and ``metrics`` (dicts or None) and, when failed, ``log_tail``."""
    run_dir = Path(run_dir)
    record = dict(record if record is not None else read_json(run_dir / LAUNCHED) or {"out": str(run_dir)})
    launched = read_json(run_dir / LAUNCHED) or {}
    record["progress"] = read_json(run_dir / "progress.json")
    record["metrics"] = read_json(run_dir / "metrics.json")
    if record["metrics"] is not None:
        record["status"] = "finished"
    elif record.get("cancelled") or launched.get("cancelled"):
        record["status"] = "cancelled"
    elif alive(record.get("pid"), record.get("out", str(run_dir))):
        record["status"] = "running"
    else:
        record["status"] = "failed"
        log = Path(record["record"]).with_suffix(".log") if record.get("record") else None
        record["log_tail"] = log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log and log.is_file() else ""
    return record


def launched_runs(store: Store) -> list[dict]:
    """Every run started with ``launch`` in this store (newest first), each as ``status`` returns it."""
    folder = store.root / "app-runs"
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    records = []
    for path in paths:
        record = read_json(path)
        if record is None or "out" not in record:
            continue
        records.append(status(record["out"], {"record": str(path), **record}))
    return records


def cancel(run_dir: str | Path, *, timeout: float = 5.0) -> None:
    """Stop a launched run (its whole process group) and mark it cancelled."""
    run_dir = Path(run_dir)
    launched = read_json(run_dir / LAUNCHED) or {}
    record = Path(launched.get("record") or run_dir.parent.parent / "app-runs" / f"{run_dir.name}.json")
    pid = _int(launched.get("pid") or (read_json(record) or {}).get("pid"))
    if pid and alive(pid, run_dir):
        _signal_group(pid, signal.SIGTERM)
        if not _wait(pid, run_dir, timeout):
            _signal_group(pid, signal.SIGKILL)
            _wait(pid, run_dir, timeout)
    for path in (run_dir / LAUNCHED, record):
        document = read_json(path)
        if document is not None:
            _write_json(path, {**document, "cancelled": True})


def _wait(pid: int, run_dir: Path, timeout: float) -> bool:
    process = _CHILDREN.get(str(run_dir))
    if process is not None and process.pid == pid:
        try:
            process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.time() + timeout
    while alive(pid, run_dir):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


def _signal_group(pid: int, number: int) -> None:
    try:
        os.killpg(pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_json(path: Path) -> dict | None:
    """The JSON document at ``path``; None when missing or unreadable (e.g. half written)."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, payload: dict) -> None:
    atomic.write_text(path, json.dumps(payload, indent=2))

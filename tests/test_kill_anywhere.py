"""kill -9 at random points of every resumable command, then resume: the result equals an uninterrupted run.

For each command (``train-teacher``, ``extract``, ``score``, ``prune``, ``bench`` and a background
``distill`` started by the app's launcher, ``ifbeta.distill.runs.launch``) on digits with tiny settings:

1. an uninterrupted reference run in a fresh copy of its starting store, timed; its folder is then
   renamed aside, so the interrupted runs write to the very same paths (paths recorded in manifests
   and launch records compare equal);
2. ``KILLS`` runs from another fresh copy, each SIGKILLed (its whole process group) after a delay drawn
   from a seeded generator, uniform over (0, 1] of the reference's wall time: anywhere from the imports
   to the last write; a run that ends before its delay is simply not killed;
3. one run to the end, then every file of the two trees is compared.

Equality is BITWISE: every array (``.npy``, safetensors, torch checkpoints) with ``array_equal``, every JSON
and CSV value with ``==``. Everything runs on the CPU with one thread (``fault_support.env``), where
resuming replays the same kernels in the same order. Excluded from the comparison, and only these:
wall-clock fields (``TIMING``, ``*seconds``), the process id and start time of a launch, how far a run had got when
it resumed (``resumed_from_epoch``), logs (progress text with timings) and bench's rendered report (``REPORTS``).

Leftover rule: after the final run no temporary may remain anywhere (a name holding ``.tmp`` or
``.old-``: store temporaries ``.<key>.tmp-*``, ``*.tmp`` checkpoint and safetensors files, subset
``.<name>.tmp-*`` / ``.<name>.old-*`` folders). Lock files (``.<key>.lock``) may remain: they are
created by uninterrupted runs too, and a lock is an flock on an open file, which the kernel releases
when its holder dies, so a dead writer's lock file never blocks anyone (the resumed runs acquire it).

The kill delays are reproducible (``SEED``); where each kill lands in the work depends on the machine's
speed, so every run prints its schedule and the test asserts that kills did land mid-run.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from fault_support import cli, env, kill_9_when, read_json, run, start, start_command

SEED = 20261206
KILLS = 4
TIMING = {"created", "started", "updated", "pid", "resumed_from_epoch"}
"""JSON keys and CSV columns that hold a clock reading, a process id, or how far a run had got when resumed;
so do keys ending in ``seconds`` (``seconds``, ``wall_seconds``, ``policy_seconds``, ...): see ``_timing``."""
SKIPPED_SUFFIXES = {".log"}
REPORTS = {"results.md", "results.png"}
"""bench's report and figure: rendered from results.csv (compared) and stamped with the last run's wall time."""


def _kill_at_random_points(launch, duration: float, rng: np.random.Generator) -> list[str]:
    """Start ``launch()`` (-> its process-group leader pid and a wait function) ``KILLS`` times, SIGKILL
    each after a random delay; returns what happened each time ("killed at 3.1 s" or "finished")."""
    schedule = []
    for _ in range(KILLS):
        delay = float(rng.uniform(0.0, 1.0)) * duration
        pid, finished = launch()
        if finished(delay):
            schedule.append(f"finished before {delay:.1f} s")
            continue
        os.killpg(pid, signal.SIGKILL)
        finished(None)
        schedule.append(f"killed at {delay:.1f} s")
    return schedule


def _popen_launch(command: list[str]):
    def launch():
        victim = start_command(command)

        def finished(timeout):
            try:
                victim.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return victim.pid, finished
    return launch


# ------------------------------------------------------------------------------------ comparison
def _timing(key) -> bool:
    return key in TIMING or str(key).endswith("seconds")


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if not _timing(k)}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _same_tensors(expected, got, where: str) -> None:
    import torch

    if isinstance(expected, dict):
        expected, got = _without_timing_keys(expected), _without_timing_keys(got)
        assert expected.keys() == got.keys(), where
        for key in expected:
            _same_tensors(expected[key], got[key], f"{where}[{key}]")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(got), where
        for i, (a, b) in enumerate(zip(expected, got)):
            _same_tensors(a, b, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(expected, got), where
    elif isinstance(expected, np.ndarray):
        assert np.array_equal(expected, got), where
    else:
        assert expected == got, where


def _without_timing_keys(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if not _timing(k)}


def _same_file(expected: Path, got: Path, where: str) -> None:
    suffix = expected.suffix
    if suffix == ".npy":
        a, b = np.load(expected, allow_pickle=False), np.load(got, allow_pickle=False)
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif suffix == ".json":
        assert _without_timing(json.loads(expected.read_text())) == _without_timing(json.loads(got.read_text())), where
    elif suffix == ".jsonl":
        records = [[_without_timing(json.loads(line)) for line in path.read_text().splitlines()]
                   for path in (expected, got)]
        assert records[0] == records[1], where
    elif suffix == ".csv":
        rows = [[_without_timing(row) for row in csv.DictReader(path.open(newline=""))] for path in (expected, got)]
        assert rows[0] == rows[1], where
    elif suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        _same_tensors(load_file(str(expected)), load_file(str(got)), where)
        metadata = [json.loads(json.dumps(safe_open(str(p), "pt").metadata())) for p in (expected, got)]
        assert _without_timing(metadata[0]) == _without_timing(metadata[1]), where
    elif suffix == ".pt":
        import torch

        _same_tensors(torch.load(expected, weights_only=True), torch.load(got, weights_only=True), where)
    else:
        assert expected.read_bytes() == got.read_bytes(), where


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")
            and p.suffix not in SKIPPED_SUFFIXES and p.name not in REPORTS}


def _leftovers(root: Path) -> list[str]:
    """Temporaries under ``root`` (the leftover rule of the module docstring)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name or ".old-" in p.name)


def _assert_same_trees(expected: Path, got: Path) -> None:
    assert _files(got) == _files(expected), "the resumed tree holds other files than the uninterrupted one"
    for name in sorted(_files(expected)):
        _same_file(expected / name, got / name, name)


# ------------------------------------------------------------------------------------ the scenario
def _kill_then_resume(tmp_path: Path, base: Path | None, name: str, launch_factory, rng) -> list[str]:
    """Reference run, ``KILLS`` random kills, a final run; the trees compared; returns the schedule."""
    work, reference = tmp_path / name, tmp_path / f"{name}-reference"

    def fresh():
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work) if base is not None else work.mkdir(parents=True)

    fresh()
    launch, finish = launch_factory(work)
    began = time.perf_counter()
    finish()
    duration = time.perf_counter() - began
    os.replace(work, reference)
    fresh()
    launch, finish = launch_factory(work)
    schedule = _kill_at_random_points(launch, duration, rng)
    finish()
    print(f"{name}: reference {duration:.1f} s; {'; '.join(schedule)}")
    assert not _leftovers(work), f"{name}: temporaries left behind: {_leftovers(work)}"
    _assert_same_trees(reference, work)
    return schedule


def _cli_factory(*args, out: str | None = None):
    """launch_factory for an ``ifbeta`` command run in ``work`` (its store; ``out`` under it)."""
    def factory(work: Path):
        extra = ["--out", str(work / out)] if out else []
        command = [*args, *extra]
        return _popen_launch(cli(work / "store", *command)), lambda: run(work / "store", *command)
    return factory


@pytest.fixture(scope="module")
def bases(tmp_path_factory, session_store, digits_teacher):
    """Starting stores: one with only the digits ``--teacher auto`` checkpoint, one scored as well."""
    root = tmp_path_factory.mktemp("bases")
    teacher_only = root / "teacher" / "store"
    shutil.copytree(session_store.root / "teachers", teacher_only / "teachers",
                    ignore=shutil.ignore_patterns("*.lock", "trained"))
    scored = root / "scored"
    shutil.copytree(root / "teacher", scored)
    run(scored / "store", "score", "--dataset", "digits", "--teacher", "auto")
    return {"teacher": root / "teacher", "scored": scored}


COMMANDS = {
    "train-teacher": (None, ("train-teacher", "--dataset", "digits", "--epochs", "3", "--seed", "4", "--json"),
                      "out/teacher.safetensors"),
    "extract": ("teacher", ("extract", "--dataset", "digits", "--teacher", "auto", "--json"), None),
    "score": ("teacher", ("score", "--dataset", "digits", "--teacher", "auto", "--json"), None),
    "prune": ("scored", ("prune", "--dataset", "digits", "--teacher", "auto", "--ratio", "0.5", "0.8", "--steps",
                         "4", "--json"), "out"),
    "bench": ("teacher", ("bench", "--preset", "digits", "--methods", "random", "--ratios", "0.5", "--seeds", "0",
                          "--epochs", "3"), "out"),
}


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path, bases, monkeypatch):
    for name, value in env().items():  # runs.launch starts its process with this process's environment
        if name in ("OMP_NUM_THREADS", "IFBETA_BLAS_THREADS", "CUDA_VISIBLE_DEVICES"):
            monkeypatch.setenv(name, value)
    rng = np.random.default_rng(SEED)
    landed = {}
    for name, (base, args, out) in COMMANDS.items():
        schedule = _kill_then_resume(tmp_path, bases.get(base), name, _cli_factory(*args, out=out), rng)
        landed[name] = sum(entry.startswith("killed") for entry in schedule)
    schedule = _kill_then_resume(tmp_path, bases["teacher"], "distill", _launcher_factory, rng)
    landed["distill"] = sum(entry.startswith("killed") for entry in schedule)
    assert all(count >= 1 for count in landed.values()), f"some command was never killed mid-run: {landed}"


# ------------------------------------------------------------------------------------ the app's launcher
def _launcher_factory(work: Path):
    """A background ``distill`` started by ``runs.launch`` (as the Distill page does); a killed run is
    resumed by running its recorded command again (``launched.json``), into the same run folder."""
    from ifbeta.distill import runs
    from ifbeta.store import Store

    store = Store(work / "store")
    name = "kd-full-s0"

    def launch_or_resume() -> subprocess.Popen | int:
        record = read_json(runs.runs_root(store) / name / runs.LAUNCHED)
        if record is None:
            run_dir = runs.launch(store, name=name, dataset="digits", subset="full", student="resnet8", epochs=3,
                                  seed=0)
            return runs.read_json(run_dir / runs.LAUNCHED)["pid"]
        assert runs.status(runs.runs_root(store) / name)["status"] in ("failed", "finished"), "a killed run is alive"
        return start_command(record["command"]).pid

    def launch():
        pid = launch_or_resume()

        def finished(timeout):
            return _wait_pid(pid, timeout)
        return pid, finished

    def finish():
        record = read_json(runs.runs_root(store) / name / runs.LAUNCHED)
        if record is None:
            pid = launch_or_resume()
            _wait_pid(pid, None)
        if runs.status(runs.runs_root(store) / name)["status"] != "finished":
            done = subprocess.run(read_json(runs.runs_root(store) / name / runs.LAUNCHED)["command"],
                                  capture_output=True, text=True, timeout=600, env=env())
            assert done.returncode == 0, done.stderr[-2000:]
        assert runs.status(runs.runs_root(store) / name)["status"] == "finished"
    return launch, finish


def _wait_pid(pid: int, timeout: float | None) -> bool:
    """Wait for a child process ``pid`` to end (True) or for ``timeout`` seconds (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# ------------------------------------------------------------------------------------ a kill point, by hand
def test_a_run_killed_between_its_metrics_and_its_record_is_recorded_by_the_rerun(tmp_path, digits, digits_teacher,
                                                                                  digits_features):
    """kill -9 between ``metrics.json`` and the ``runs.jsonl`` append used to leave a finished run listed
    as 'stopped' forever (the rerun found metrics.json and returned). The state that kill leaves is made
    here exactly: the run finished, its record removed (or cut short)."""
    from ifbeta.distill import student
    from ifbeta.pipeline import Workspace
    from ifbeta.store import Store

    store = Store(tmp_path / "store")
    workspace = Workspace(*digits, digits_teacher, digits_features, store)
    out, registry = store.root / "runs" / "kd", store.root / "runs.jsonl"

    def again() -> dict:
        return student.run(workspace, subset=None, out=out, student="resnet8", epochs=1, seed=0)

    first = again()
    record = registry.read_text()
    registry.unlink()
    assert [r["status"] for r in student.list_runs(store)] == ["stopped"]  # what the app showed, before the rerun
    assert again() == first  # found finished: nothing trained again
    assert registry.read_text() == record and [r["status"] for r in student.list_runs(store)] == ["finished"]
    again()
    assert registry.read_text() == record, "a rerun of a recorded run added a second record"
    registry.write_text(record[:40])  # a record cut short by a kill mid-append
    again()
    assert registry.read_text() == record[:40] + "\n" + record
    assert [(r["status"], r["test_top1"]) for r in student.list_runs(store)] == [("finished", first["test_top1"])]


@pytest.mark.slow
def test_a_resumed_distill_run_keeps_the_epochs_before_the_kill_in_its_progress(tmp_path, session_store,
                                                                               digits_teacher):
    """progress.json (the Distill page's live curve) of a resumed run used to hold only the epochs run
    after the resume; it now starts from the checkpoint's history, as the uninterrupted run's does."""
    epochs = 10  # a digits epoch takes about 0.1 s: this leaves most of a second to kill the run in
    args = ["distill", "--subset", "full", "--epochs", str(epochs), "--seed", "5", "--json"]
    out = tmp_path / "run"
    kill_9_when(start(session_store.root, *args, "--out", str(out)),
                lambda: (read_json(out / "progress.json") or {"epoch": 0})["epoch"] >= 1, every=0.01)
    before = read_json(out / "progress.json")["history"]
    run(session_store.root, *args, "--out", str(out))
    progress, metrics = read_json(out / "progress.json"), read_json(out / "metrics.json")
    assert 1 <= metrics["resumed_from_epoch"] < epochs
    assert [record["epoch"] for record in progress["history"]] == list(range(1, epochs + 1))
    assert progress["history"][:len(before)] == before
    assert [{k: v for k, v in record.items() if k != "epochs"} for record in progress["history"]] == metrics["history"]

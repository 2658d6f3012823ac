"""Cached reports (ifbeta.reports), peeking cached steps (compute=False) and background-run management (ifbeta.runs),
on a synthetic workspace (no teacher to train) and on stand-in processes (no distillation to run)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ifbeta import pipeline
from ifbeta.config import InfluenceConfig, PolicyConfig
from ifbeta.distill import runs
from ifbeta.distill import student as distill
from ifbeta.evaluation import diagnostics as reports
from ifbeta.models.features import FeatureSet
from ifbeta.store import Store


def synthetic_workspace(root: Path, n: int = 240, d: int = 5, classes: int = 3) -> pipeline.Workspace:
    """Gaussian classes with teacher logits from a noisy linear map: enough for the proxy and the policy."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), n // classes).astype(np.int64)
    features = (rng.normal(size=(n, d)) + 2.0 * np.eye(classes, d)[labels]).astype(np.float32)
    logits = (features @ rng.normal(size=(d, classes)) + 3.0 * np.eye(classes)[labels]).astype(np.float32)
    feature_set = FeatureSet(features, logits, labels, key="synthetic-features", dataset="synthetic",
                             fingerprint="f" * 16)
    train = SimpleNamespace(labels=labels, num_classes=classes, images=None, name="synthetic")
    teacher = SimpleNamespace(info=SimpleNamespace(sha256="0" * 64, arch="linear"))
    return pipeline.Workspace(train, None, teacher, feature_set, Store(root))


@pytest.fixture
def workspace(tmp_path):
    return synthetic_workspace(tmp_path / "cache")


def counting():
    events = []
    return events, lambda step, info: events.append(step)


# ------------------------------------------------------------------------------------------ reports
def test_loo_report_is_cached_and_peekable(workspace):
    config = InfluenceConfig()
    assert reports.loo_report(workspace, config, samples=12, compute=False) is None
    events, on_step = counting()
    first = reports.loo_report(workspace, config, samples=12, seed=1, on_step=on_step)
    assert events and first["n"] == 12 and len(first["predicted"]) == 12 and -1 <= first["spearman"] <= 1
    json.dumps(first)  # JSON-ready
    events.clear()
    assert reports.loo_report(workspace, config, samples=12, seed=1, on_step=on_step) == first and not events
    assert reports.loo_report(workspace, config, samples=12, seed=1, compute=False) == first
    assert reports.loo_report(workspace, config, samples=12, seed=2, compute=False) is None  # other key
    assert len(workspace.store.entries("loo")) == 1


def test_landscape_is_cached_and_peekable(workspace):
    config = PolicyConfig(steps=2)
    assert reports.landscape(workspace, 0.5, grid=3, policy_config=config, compute=False) is None
    events, on_step = counting()
    first = reports.landscape(workspace, 0.5, grid=3, policy_config=config, on_step=on_step)
    assert events and np.asarray(first["J"]).shape == (3, 3) and len(first["alpha"]) == 3
    events.clear()
    assert reports.landscape(workspace, 0.5, grid=3, policy_config=config, on_step=on_step) == first and not events
    assert reports.landscape(workspace, 0.5, grid=3, policy_config=config, compute=False) == first
    assert reports.landscape(workspace, 0.3, grid=3, policy_config=config, compute=False) is None


def test_transfer_report_peek_is_none_before_any_run(workspace):
    assert reports.transfer_report(workspace, 0.5, policies=2, epochs=1, seeds=1, compute=False) is None


# ------------------------------------------------------------------------ the CLI writes what the app reads
CLI_POOL = 150  # a small stratified digits pool: the leave-one-out refits take a moment


@pytest.fixture
def digits_cli(tmp_path, digits_teacher, capsys):
    """Run ``ifbeta ...`` in this process on digits with a fresh ``--cache``; -> (run, workspace of that store)."""
    from ifbeta.cli.commands import main

    cache, teacher = tmp_path / "cli-cache", str(digits_teacher.info.path)
    shared = ["--dataset", "digits", "--pool", str(CLI_POOL), "--teacher", teacher]

    def run(*args) -> tuple[int, dict]:
        code = main(["--cache", str(cache), *args, *shared, "--json"])
        return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    run("validate-influence", "--samples", "3")  # opens the workspace once: data, features
    return run, pipeline.open_workspace("digits", teacher=teacher, store=Store(cache), pool=CLI_POOL)


def refuse(*args, **options):
    raise AssertionError("recomputed: the stored report was not found")


def test_validate_influence_reads_and_writes_the_stored_loo_report(digits_cli, monkeypatch):
    import dataclasses

    from ifbeta.influence import families

    run, workspace = digits_cli
    assert reports.loo_report(workspace, InfluenceConfig(), samples=4, seed=1, compute=False) is None
    code, printed = run("validate-influence", "--samples", "4", "--seed", "1")
    stored = reports.loo_report(workspace, InfluenceConfig(), samples=4, seed=1, compute=False)
    assert code in (0, 1) and stored is not None and stored["n"] == 4
    assert {k: stored[k] for k in ("spearman", "slope", "sign_agreement")} == {
        k: printed[k] for k in ("spearman", "slope", "sign_agreement")}
    computed_here = reports.loo_report(workspace, InfluenceConfig(), samples=4, seed=2)
    monkeypatch.setitem(families.FAMILIES, "linear", dataclasses.replace(families.FAMILIES["linear"], loo_check=refuse))
    _, printed = run("validate-influence", "--samples", "4", "--seed", "2")
    assert printed["spearman"] == computed_here["spearman"] and printed["slope"] == computed_here["slope"]


def stand_in_check(calls: list):
    """transfer.transfer_check without students: records its options, returns a report of the right shape."""
    def check(workspace, **options):
        calls.append(options)
        entry = {"label": "uniform", "alpha": 1.0, "beta": 1.0, "J": 0.5, "accuracies": [0.9], "mean_accuracy": 0.9}
        return {"dataset": workspace.train.name, "ratio": options["ratio"], "k": 75, "student": "stand-in",
                "epochs": options["epochs"], "seeds": list(options["seeds"]), "policies": [entry, entry],
                "spearman": None, "agreement": None, "learned_minus_uniform": 0.0,
                "learned_minus_uniform_std": None, "trust": "inconclusive", "verdict": f"stand-in {len(calls)}"}
    return check


def test_transfer_check_reads_and_writes_the_stored_transfer_report(digits_cli, monkeypatch):
    from ifbeta.evaluation import transfer
    from ifbeta.models import zoo as models

    run, workspace = digits_cli
    calls = []
    monkeypatch.setattr(transfer, "transfer_check", stand_in_check(calls))
    epochs = transfer.default_epochs("digits")
    assert epochs == max(1, distill.STUDENT_EPOCHS["digits"] // 3)
    assert reports.transfer_report(workspace, 0.5, policies=2, epochs=epochs, seeds=1, compute=False) is None
    code, printed = run("transfer-check", "--ratio", "0.5", "--policies", "2", "--seeds", "1")
    assert code == 0 and len(calls) == 1 and printed["verdict"] == "stand-in 1"
    assert (calls[0]["epochs"], calls[0]["student"], calls[0]["budget"]) == (epochs, None, "epochs")
    # what the app's panel asks for with its default epochs: the same stored report
    assert reports.transfer_report(workspace, 0.5, policies=2, epochs=epochs, seeds=1, compute=False) == printed
    student = models.default_architectures("digits", workspace.train.image_size)[1]
    for again in ([], ["--epochs", str(epochs)], ["--student", student]):  # the defaults spelt out: one key
        assert run("transfer-check", "--ratio", "0.5", "--policies", "2", "--seeds", "1", *again)[1] == printed
    assert len(calls) == 1
    _, steps = run("transfer-check", "--ratio", "0.5", "--policies", "2", "--seeds", "1", "--budget", "steps")
    assert len(calls) == 2 and calls[1]["budget"] == "steps" and steps["verdict"] == "stand-in 2"  # its own key
    computed_here = reports.transfer_report(workspace, 0.5, policies=3, epochs=2, seeds=1)
    assert run("transfer-check", "--ratio", "0.5", "--policies", "3", "--epochs", "2", "--seeds", "1")[1] == (
        computed_here) and len(calls) == 3


# ------------------------------------------------------------------------------------ peeking steps
def test_policies_compute_false_is_none_before_and_the_result_after(workspace):
    config = PolicyConfig(steps=2, shrinkage=0.0)
    assert pipeline.policies(workspace, [0.3, 0.6], config, compute=False) is None
    assert not workspace.store.entries("scores")  # peeking computed nothing, not even the scores
    learned = pipeline.policies(workspace, [0.3], config)
    assert pipeline.policies(workspace, [0.3, 0.6], config, compute=False) is None  # one ratio still missing
    peeked = pipeline.policies(workspace, [0.3], config, compute=False)
    assert [(p.ratio, p.alpha, p.beta) for p in peeked] == [(p.ratio, p.alpha, p.beta) for p in learned]
    np.testing.assert_array_equal(peeked[0].indices, learned[0].indices)


@pytest.mark.parametrize("method", ["influence-top", "ifbeta"])
def test_choose_compute_false_is_none_before_and_the_selection_after(workspace, method):
    config = PolicyConfig(steps=2, shrinkage=0.0)
    assert pipeline.choose(workspace, method, 0.5, seed=3, policy_config=config, compute=False) is None
    assert not workspace.store.entries("selections")
    chosen = pipeline.choose(workspace, method, 0.5, seed=3, policy_config=config)
    peeked = pipeline.choose(workspace, method, 0.5, seed=3, policy_config=config, compute=False)
    np.testing.assert_array_equal(peeked.indices, chosen.indices)
    assert peeked.info == chosen.info and len(chosen.indices) == 120
    assert pipeline.choose(workspace, method, 0.5, seed=4, policy_config=config, compute=False) is None


# ----------------------------------------------------------------------------------------- liveness
def stand_in(run_dir: Path, seconds: float = 60, **options) -> subprocess.Popen:
    """A process whose command line names ``run_dir``, like ``ifbeta distill --out run_dir``."""
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})", "--out", str(run_dir)],
                            **options)


def wait_for_state(pid: int, state: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never reached state {state}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs procfs")
def test_liveness_finished_zombie_and_reused_pids(tmp_path):
    run_dir = tmp_path / "runs" / "one"
    living = stand_in(run_dir)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a 'reused' pid
    zombie = stand_in(run_dir, seconds=0)
    try:
        assert runs.alive(living.pid, run_dir)
        assert not runs.alive(living.pid, tmp_path / "runs" / "two")
        assert not runs.alive(other.pid, run_dir)
        wait_for_state(zombie.pid, "Z")  # exited, not reaped: its pid still exists
        assert not runs.alive(zombie.pid, run_dir)
        zombie.wait()
        assert not runs.alive(zombie.pid, run_dir)  # finished and reaped
        assert not runs.alive(None, run_dir) and not runs.alive("junk", run_dir)
    finally:
        for process in (living, other, zombie):
            process.kill()
            process.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs procfs")
def test_list_runs_starting_running_and_stopped(tmp_path):
    store = Store(tmp_path / "cache")
    starting, zombie_run = runs.runs_root(store) / "starting", runs.runs_root(store) / "zombie"
    for directory in (starting, zombie_run):
        directory.mkdir(parents=True)
    living = stand_in(starting)
    zombie = stand_in(zombie_run, seconds=0)
    try:
        (starting / runs.LAUNCHED).write_text(json.dumps({"pid": living.pid, "out": str(starting)}))
        (zombie_run / "config.json").write_text(json.dumps({"dataset": "digits"}))
        wait_for_state(zombie.pid, "Z")
        (zombie_run / "progress.json").write_text(json.dumps({"epoch": 1, "epochs": 3, "pid": zombie.pid,
                                                              "history": [{"test_top1": 0.5}]}))
        listed = {r["name"]: r for r in distill.list_runs(store)}
        assert listed["starting"]["status"] == "starting"
        assert listed["zombie"]["status"] == "stopped" and listed["zombie"]["test_top1"] == 0.5
        (starting / "progress.json").write_text(json.dumps({"epoch": 1, "epochs": 3, "pid": living.pid}))
        assert {r["name"]: r for r in distill.list_runs(store)}["starting"]["status"] == "running"
    finally:
        for process in (living, zombie):
            process.kill()
            process.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs procfs")
def test_status_and_cancel_of_a_launched_process_group(tmp_path):
    store = Store(tmp_path / "cache")
    run_dir = runs.runs_root(store) / "long"
    run_dir.mkdir(parents=True)
    record = runs.record_path(store, "long")
    record.parent.mkdir(parents=True)
    process = stand_in(run_dir, start_new_session=True)
    try:
        document = {"name": "long", "out": str(run_dir), "pid": process.pid, "record": str(record)}
        for path in (run_dir / runs.LAUNCHED, record):
            path.write_text(json.dumps(document))
        assert runs.status(run_dir)["status"] == "running"
        assert [r["status"] for r in runs.launched_runs(store)] == ["running"]
        runs.cancel(run_dir)
        assert process.wait(timeout=10) != 0
        assert runs.status(run_dir)["status"] == "cancelled"
        assert json.loads(record.read_text())["cancelled"]
        assert [r["status"] for r in runs.launched_runs(store)] == ["cancelled"]
    finally:
        process.kill()
        process.wait()


def test_launch_refuses_an_existing_name(tmp_path):
    store = Store(tmp_path / "cache")
    (runs.runs_root(store) / "taken").mkdir(parents=True)
    with pytest.raises(ValueError, match="exists already"):
        runs.launch(store, name="taken", dataset="digits", subset="full", student="mlp", epochs=1, seed=0)


def test_one_distill_command_builder_speaks_the_cli(tmp_path):
    """The command every launcher builds parses with the real ``ifbeta`` parser, flag for flag."""
    from ifbeta.cli.commands import build_parser
    from ifbeta.evaluation import bench
    from ifbeta.evaluation.grid import BenchSpec

    store = Store(tmp_path / "cache")
    command = runs.distill_command(store.root, runs.runs_root(store) / "x", dataset="digits", subset="full",
                                   student="mlp", epochs=2, seed=1, pool=100, teacher_arch="cnn-tiny", json=True)
    assert command[1:3] == ["-m", "ifbeta.cli"]
    args = build_parser().parse_args(command[3:])
    assert (args.command, args.out, args.epochs, args.seed, args.pool, args.teacher_arch, args.json) == (
        "distill", str(runs.runs_root(store) / "x"), 2, 1, 100, "cnn-tiny", True)
    assert "--batch-size" not in command and "--lr" not in command  # unset: the command's own defaults apply
    spec = BenchSpec(dataset="digits", epochs=3, batch_size=32, learning_rate=0.2)
    cell = {"method": "random", "ratio": 0.5, "seed": 4, "budget": "steps"}
    graded = build_parser().parse_args(bench._distill_command(spec, cell, tmp_path / "grid", store.root)[3:])
    assert (graded.epochs, graded.batch_size, graded.lr, graded.seed, graded.budget) == (3, 32, 0.2, 4, "steps")
    assert graded.subset == str(tmp_path / "grid" / "subsets" / "random" / "r0.5-s4")


def test_progress_events_describe_fraction_and_text():
    from ifbeta.progress import describe

    assert describe(0, {"event": "batch", "batch": 3, "batches": 10}) == (0.3, "teacher features, batch 3/10")
    fraction, text = describe(2, {"alpha": 1.0, "beta": 2.0, "ratio": 0.5, "J": 0.1}, total=4)
    assert fraction == 0.75 and text.startswith("r=0.5, step 3: alpha=1")
    fraction, text = describe(0, {"event": "epoch", "epoch": 1, "epochs": 2, "run": 1, "runs": 2, "label": "u",
                                  "seed": 0})
    assert fraction == 0.75 and text == "run 2/2 (u, seed 0): epoch 1/2"
    assert describe(5, {"stage": "fold", "fold": 0, "folds": 2}) == (0.5, "fold 1/2")

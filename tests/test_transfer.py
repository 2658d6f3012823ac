"""The transfer check on digits: real (tiny) students at policies along the trajectory and at uniform."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from ifbeta.evaluation import transfer


def ifbeta(*args, cache):
    return subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args],
                          capture_output=True, text=True, timeout=600)


POOL = 400  # a stratified pool keeps the policy optimisation and the students cheap


@pytest.fixture(scope="module")
def workspace(session_store, digits_teacher):
    from ifbeta import pipeline

    return pipeline.open_workspace("digits", store=session_store, pool=POOL)


@pytest.fixture(scope="module")
def checked(workspace, tmp_path_factory):
    """3 learned policies + uniform + one extra point at (1, 1): uniform twice, 2 paired seeds, 2 epochs."""
    out = tmp_path_factory.mktemp("transfer")
    events = []
    report = transfer.transfer_check(workspace, ratio=0.5, policies=3, epochs=2, seeds=(0, 1), points=[(1.0, 1.0)],
                                     out=out, on_step=lambda step, info: events.append(info))
    return report, events, out


# ----------------------------------------------------------------------------- pure logic


def test_trajectory_steps_are_evenly_spaced_after_the_start_and_end_at_the_last():
    trace = [{}] * 21
    assert transfer.trajectory_steps(trace, 4) == [5, 10, 15, 20]
    assert transfer.trajectory_steps(trace, 1) == [20]
    assert transfer.trajectory_steps([{}] * 3, 5) == [1, 2]  # short trace: fewer, distinct, never step 0
    assert transfer.trajectory_steps([{}], 3) == [] and transfer.trajectory_steps(trace, 0) == []


def test_policy_effect_separates_policy_differences_from_seed_noise():
    seeds_only = [[0.5, 0.7], [0.5, 0.7], [0.5, 0.7]]  # every policy identical, seeds differ
    assert transfer.policy_effect(seeds_only) is None
    assert transfer.policy_effect([[0.50, 0.70], [0.60, 0.80], [0.70, 0.90]]) == 0.0  # additive: clear effect
    noisy = [[0.50, 0.71], [0.52, 0.69], [0.49, 0.70]]
    assert transfer.policy_effect(noisy) > 0.5
    assert transfer.policy_effect([[0.5], [0.6]]) is None  # one seed: no noise estimate


@pytest.mark.parametrize("agreement, difference, trust", [
    (0.9, 0.01, "yes"), (0.9, -0.01, "yes"), (0.4, 0.01, "weak"), (-0.5, -0.02, "no"), (None, 0.0, "inconclusive")])
def test_verdict_levels(agreement, difference, trust):
    interval = None if agreement is None else (agreement - 0.1, agreement + 0.1)  # excludes 0
    spread = (difference - 0.004, difference + 0.004)
    level, line = transfer.verdict(agreement, interval, difference, spread, policies=6, seeds=8, policy_effect_p=0.01)
    assert level == trust and "\n" not in line and "uniform" in line
    if agreement is not None:
        assert f"{agreement:+.2f}" in line
    if difference < 0:
        assert "lost to" in line


def test_verdict_is_inconclusive_when_policies_differ_like_seeds():
    level, line = transfer.verdict(1.0, (0.9, 1.0), 0.01, (-0.01, 0.03), policies=4, seeds=8, policy_effect_p=0.8)
    assert level == "inconclusive" and "p = 0.80" in line


@pytest.mark.parametrize("options, message", [
    ({"ratio": 0.0}, "ratio"), ({"ratio": 1.0}, "ratio"), ({"ratio": 0.5, "policies": 1}, "policies"),
    ({"ratio": 0.5, "seeds": ()}, "seeds"), ({"ratio": 0.5, "seeds": (0, 0)}, "seeds"),
    ({"ratio": 0.5, "epochs": 0}, "epochs")])
def test_bad_input_is_refused_before_any_work(options, message):
    with pytest.raises(ValueError, match=message):
        transfer.transfer_check(None, **options)  # no workspace needed: checked first


# ----------------------------------------------------------------------------- real students


@pytest.mark.slow
def test_result_structure(checked):
    report, _, _ = checked
    labels = [entry["label"] for entry in report["policies"]]
    assert labels[0] == "uniform" and labels[-2:] == ["learned", "point-0"]
    trajectory = report["policies"][1:-2]
    assert 1 <= len(trajectory) <= 2 and all(label.startswith("step-") for label in labels[1:-2])
    assert [entry["step"] for entry in trajectory] == sorted(entry["step"] for entry in trajectory)
    assert all(entry["step"] > 0 and (entry["alpha"], entry["beta"]) != (1.0, 1.0) for entry in trajectory)
    for entry in report["policies"]:
        assert len(entry["accuracies"]) == 2 and all(0.0 <= a <= 1.0 for a in entry["accuracies"])
        assert entry["mean_accuracy"] == pytest.approx(np.mean(entry["accuracies"]))
        assert math.isfinite(entry["J"]) and entry["J"] > 0 and entry["k"] == report["k"] == POOL // 2
    means = [entry["mean_accuracy"] for entry in report["policies"]]
    js = [entry["J"] for entry in report["policies"]]
    if report["spearman"] is not None:
        assert report["spearman"] == pytest.approx(scipy.stats.spearmanr(js, means)[0])
        assert report["agreement"] == pytest.approx(-report["spearman"])
    learned, uniform = report["policies"][-2], report["policies"][0]
    paired = np.subtract(learned["accuracies"], uniform["accuracies"])
    assert report["learned_minus_uniform_per_seed"] == pytest.approx(paired.tolist())
    assert report["learned_minus_uniform"] == pytest.approx(paired.mean())
    assert report["learned_minus_uniform_std"] == pytest.approx(paired.std(ddof=1))
    assert report["trust"] in ("yes", "weak", "no", "inconclusive") and report["verdict"]
    assert report["seeds"] == [0, 1] and report["epochs"] == 2 and report["student"]
    json.dumps(report, allow_nan=False)  # JSON-ready as returned


@pytest.mark.slow
def test_seeds_are_paired_same_seed_same_subset_same_student(checked):
    report, _, _ = checked
    uniform, again = report["policies"][0], report["policies"][-1]
    assert (again["alpha"], again["beta"]) == (1.0, 1.0)
    assert again["J"] == pytest.approx(uniform["J"], rel=1e-4)  # re-evaluated on the optimiser's problem
    assert set(again["runs"]).isdisjoint(uniform["runs"])  # really trained twice ...
    assert again["accuracies"] == uniform["accuracies"]  # ... with identical results, seed by seed
    histories = [json.loads((Path(run) / "metrics.json").read_text())["history"]
                 for run in uniform["runs"] + again["runs"]]
    losses = [[epoch["train_loss"] for epoch in history] for history in histories]
    assert losses[0] == losses[2] and losses[1] == losses[3]
    assert losses[0] != losses[1]  # another seed: another subset and another initialisation


@pytest.mark.slow
def test_progress_events_and_resume(checked, workspace):
    report, events, out = checked
    runs = len(report["policies"]) * 2
    started = [e for e in events if e.get("event") == "run"]
    assert len(started) == runs and {e["runs"] for e in started} == {runs}
    assert sum(e.get("event") == "run-finished" for e in events) == runs
    assert any(e.get("event") == "epoch" and e.get("label") == "learned" for e in events)
    metrics = sorted(out.glob("*/run/metrics.json"))
    assert len(metrics) == runs
    stamps = [path.stat().st_mtime_ns for path in metrics]
    again = transfer.transfer_check(workspace, ratio=0.5, policies=3, epochs=2, seeds=(0, 1), points=[(1.0, 1.0)],
                                    out=out)
    assert [path.stat().st_mtime_ns for path in metrics] == stamps  # nothing retrained
    assert [e["accuracies"] for e in again["policies"]] == [e["accuracies"] for e in report["policies"]]


@pytest.mark.slow
def test_cli_json_last_line(session_store, workspace, tmp_path):
    result = ifbeta("transfer-check", "--dataset", "digits", "--pool", str(POOL), "--ratio", "0.5", "--policies", "2",
                    "--epochs", "1",
                    "--seeds", "1", "--out", str(tmp_path / "runs"), "--json", cache=session_store.root)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert {"spearman", "agreement", "learned_minus_uniform", "policies", "verdict", "trust"} <= set(report)
    assert [p["label"] for p in report["policies"]][0] == "uniform" and len(report["policies"]) == 3
    assert all(len(p["accuracies"]) == 1 for p in report["policies"])
    assert report["learned_minus_uniform_std"] is None and report["policy_effect_p"] is None
    assert report["verdict"] in result.stdout.splitlines()  # also printed for people
    assert "Spearman(J, accuracy)" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.5"], "--ratio"), (["--ratio", "0"], "--ratio"), (["--ratio", "0.5", "--policies", "1"],
                                                                     "--policies"),
    (["--ratio", "0.5", "--seeds", "0"], "--seeds"), (["--ratio", "0.5", "--student", "nope"], "unknown student")])
def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    result = ifbeta("transfer-check", "--dataset", "digits", *args, cache=tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and message in lines[0]
    assert lines[0].startswith("ifbeta transfer-check: error:")

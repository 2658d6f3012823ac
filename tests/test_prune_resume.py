"""kill -9 during `ifbeta prune` (the bilevel loop): the rerun continues from the last outer step."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ARGS = ["prune", "--dataset", "digits", "--teacher", "auto", "--ratio", "0.5", "0.8", "--steps", "12", "--json"]


def _store_copy(session_store, target):
    """The session's teacher and features, without any learned policy."""
    shutil.copytree(session_store.root, target,
                    ignore=shutil.ignore_patterns("policies", "selections", "checkpoints", "*.lock"))
    return target


def _prune(cache, out, **popen):
    command = [sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *ARGS, "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)


@pytest.mark.slow
def test_kill_9_during_prune_then_resume_equals_an_uninterrupted_run(tmp_path, session_store, digits_features):
    reference = _prune(_store_copy(session_store, tmp_path / "ref-cache"), tmp_path / "ref")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    cache = _store_copy(session_store, tmp_path / "cache")
    victim = _prune(cache, tmp_path / "killed")
    deadline, state = time.time() + 600, None
    while time.time() < deadline and victim.poll() is None:  # wait for the second ratio's 4th step
        for file in (cache / "checkpoints").glob("policies-*.json") if (cache / "checkpoints").is_dir() else []:
            try:
                state = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
        if state and state.get("ratio") == 0.8 and state["adam"]["step"] >= 4:
            break
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert state and state.get("ratio") == 0.8, "the run ended before it could be killed in the second ratio"
    assert not (tmp_path / "killed" / "ratio-0.8" / "manifest.json").exists()
    killed_at = json.loads(next((cache / "checkpoints").glob("policies-*.json")).read_text())["adam"]

    rerun = _prune(cache, tmp_path / "killed")
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()
    assert not list((cache / "checkpoints").glob("policies-*.json")), "the checkpoint outlived a finished run"
    for ratio in ("0.5", "0.8"):
        expected = json.loads((tmp_path / "ref" / f"ratio-{ratio}" / "trace.json").read_text())
        got = json.loads((tmp_path / "killed" / f"ratio-{ratio}" / "trace.json").read_text())
        assert len(got["steps"]) == len(expected["steps"])
        assert (got["alpha"], got["beta"]) == pytest.approx((expected["alpha"], expected["beta"]), rel=1e-6)
        indices = [np.load(tmp_path / run / f"ratio-{ratio}" / "indices.npy") for run in ("ref", "killed")]
        assert np.array_equal(*indices)
    resumed_trace = json.loads((tmp_path / "killed" / "ratio-0.8" / "trace.json").read_text())["steps"]
    assert resumed_trace[:killed_at["step"]] == killed_at["trace"]  # steps before the kill were not recomputed

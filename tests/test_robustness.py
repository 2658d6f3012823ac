"""Faults and hostile input: kill -9 and resume, NaN features, disk full, property tests of the store."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ifbeta.store import Store, make_key


def _cli(cache, *args):
    return [sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args]


@pytest.mark.slow
def test_kill_9_during_distill_then_resume_equals_an_uninterrupted_run(tmp_path, session_store):
    cache = session_store.root
    args = ["distill", "--subset", "full", "--epochs", "4", "--seed", "3", "--json"]
    reference = subprocess.run(_cli(cache, *args, "--out", str(tmp_path / "ref")), capture_output=True, text=True,
                               timeout=600)
    assert reference.returncode == 0, reference.stderr
    victim = subprocess.Popen(_cli(cache, *args, "--out", str(tmp_path / "killed")), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    progress = tmp_path / "killed" / "progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until at least one epoch is checkpointed
        if progress.is_file() and json.loads(progress.read_text())["epoch"] >= 1:
            break
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = subprocess.run(_cli(cache, *args, "--out", str(tmp_path / "killed")), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (reference, resumed))
    assert second["resumed_from_epoch"] >= 1
    assert second["test_top1"] == pytest.approx(first["test_top1"], abs=1e-9)
    losses = lambda m: [h["train_loss"] for h in m["history"]]  # noqa: E731
    saved = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert losses(saved) == pytest.approx(losses(json.loads((tmp_path / "ref" / "metrics.json").read_text())))


def test_nan_features_are_refused_by_scoring(digits_features):
    from ifbeta import influence

    features = np.array(digits_features.features, dtype=np.float64)
    features[3, 5] = np.nan
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        influence.score(features, digits_features.logits, digits_features.labels)
    logits = np.array(digits_features.logits)
    logits[0, 0] = np.inf
    with pytest.raises(ValueError, match="(?i)nan|inf|finite"):
        influence.score(digits_features.features, logits, digits_features.labels)


def test_disk_full_during_subset_write_leaves_no_partial_directory(tmp_path, digits, monkeypatch):
    from ifbeta import subset

    train, _ = digits
    real_save = np.save

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError):
        subset.write(tmp_path / "s", indices=np.arange(10), dataset=train, method="random", ratio=0.99, seed=0)
    monkeypatch.setattr(np, "save", real_save)
    assert not (tmp_path / "s").exists() and [p for p in tmp_path.iterdir()] == []


@settings(max_examples=25, deadline=None)
@given(config=st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.floats(allow_nan=False),
                                                                        st.text(max_size=5)), max_size=4),
       values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=20))
def test_store_round_trips_any_config_and_array(tmp_path_factory, config, values):
    store = Store(tmp_path_factory.mktemp("store"))
    key = make_key(config)
    arrays, _, again = store.get_or_compute("kind", config, [], lambda: ({"a": np.asarray(values)}, {"n": len(values)}))
    assert again == key and np.array_equal(arrays["a"], np.asarray(values))
    loaded, meta = store.load("kind", key, config)
    assert np.array_equal(loaded["a"], np.asarray(values)) and meta == {"n": len(values)}

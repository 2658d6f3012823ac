"""Faults and hostile input: kill -9 and resume (real subprocesses), NaN features, disk full, property tests
of the store."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fault_support import kill_9_when, last_json, read_json, run, start
from hypothesis import given, settings
from hypothesis import strategies as st

from ifbeta.store import Store, make_key


@pytest.mark.slow
def test_kill_9_during_distill_then_resume_equals_an_uninterrupted_run(tmp_path, session_store):
    cache = session_store.root
    # a digits epoch takes about 0.1 s: 12 epochs leave a second of training after the first one to kill in
    args = ["distill", "--subset", "full", "--epochs", "12", "--seed", "3", "--json"]
    reference = run(cache, *args, "--out", str(tmp_path / "ref"))
    progress = tmp_path / "killed" / "progress.json"
    kill_9_when(start(cache, *args, "--out", str(tmp_path / "killed")),
                 lambda: (read_json(progress) or {"epoch": 0})["epoch"] >= 1, every=0.01)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run(cache, *args, "--out", str(tmp_path / "killed"))
    first, second = last_json(reference), last_json(resumed)
    assert second["resumed_from_epoch"] >= 1
    assert second["test_top1"] == pytest.approx(first["test_top1"], abs=1e-9)
    losses = lambda m: [h["train_loss"] for h in m["history"]]  # noqa: E731
    saved = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert losses(saved) == pytest.approx(losses(json.loads((tmp_path / "ref" / "metrics.json").read_text())))


@pytest.mark.slow
def test_kill_9_during_train_teacher_then_resume_equals_an_uninterrupted_run(tmp_path, session_store):
    import torch
    from safetensors.torch import load_file

    cache, epochs = session_store.root, 6
    args = ["train-teacher", "--dataset", "digits", "--epochs", str(epochs), "--seed", "4", "--json"]
    reference_out, killed_out = tmp_path / "ref" / "teacher.safetensors", tmp_path / "killed" / "teacher.safetensors"
    reference = last_json(run(cache, *args, "--out", str(reference_out)))
    resume_file = Path(f"{killed_out}.resume") / "last.pt"  # written atomically after every epoch
    kill_9_when(start(cache, *args, "--out", str(killed_out)), resume_file.is_file)
    assert not killed_out.exists()
    resumed = last_json(run(cache, *args, "--out", str(killed_out)))
    assert reference["resumed_from_epoch"] == 0 and 1 <= resumed["resumed_from_epoch"] < epochs
    assert (resumed["test_top1"], resumed["test_top5"]) == (reference["test_top1"], reference["test_top5"])
    expected, weights = load_file(str(reference_out)), load_file(str(killed_out))
    assert expected.keys() == weights.keys()
    assert all(torch.equal(expected[name], weights[name]) for name in expected), "resumed weights differ"
    # a finished training removes its resume folder, the killed one included
    assert not Path(f"{killed_out}.resume").exists() and not Path(f"{reference_out}.resume").exists()


def _visible(kind_dir: Path) -> set[str]:
    """Names a listing of the store shows (hidden temporaries excluded)."""
    return {d.name for d in kind_dir.iterdir() if not d.name.startswith(".")} if kind_dir.is_dir() else set()


def _complete_keys(kind_dir: Path) -> set[str]:
    """Store keys whose directory is marked finished (config.json present); temporary directories excluded."""
    return {key for key in _visible(kind_dir) if (kind_dir / key / "config.json").is_file()}


def _extracting_after_a_finished_split(kind_dir: Path) -> bool:
    """One features artefact is finished and another one is being computed (its lock exists, it is not finished)."""
    finished = _complete_keys(kind_dir)
    locked = {p.name[1:-len(".lock")] for p in kind_dir.glob(".*.lock")} if kind_dir.is_dir() else set()
    return bool(finished) and bool(locked - finished)


def _assert_only_complete_artefacts_are_visible(store: Store, kind: str, verified: set[str]) -> None:
    """Every visible entry of ``kind`` is a finished, loadable artefact whose arrays match its recorded size.

    The run goes on writing while this looks, and entries only ever appear: each view is taken once and
    compared with the views after it (a second listing may hold an artefact finished in between)."""
    kind_dir = store.root / kind
    visible = _visible(kind_dir)
    assert all((kind_dir / key / "config.json").is_file() for key in visible), \
        "a directory without config.json is visible in the store"
    listed = {key for key, _ in store.entries(kind)}
    assert visible <= listed <= _visible(kind_dir)
    for key in visible - verified:
        arrays, meta = store.load(kind, key)
        assert arrays["features"].shape == (meta["n"], meta["dim"]) and len(arrays["logits"]) == meta["n"]
        verified.add(key)


@pytest.mark.slow
def test_kill_9_during_extract_then_rerun_gives_identical_features(tmp_path, digits_teacher):
    args = ["extract", "--dataset", "digits", "--teacher", digits_teacher.info.path, "--json"]
    reference = last_json(run(tmp_path / "ref", *args))
    store, verified = Store(tmp_path / "killed"), set()
    kind_dir = store.root / "features"
    kill_9_when(start(store.root, *args), lambda: _extracting_after_a_finished_split(kind_dir), every=0.002,
                 watch=lambda: _assert_only_complete_artefacts_are_visible(store, "features", verified))
    _assert_only_complete_artefacts_are_visible(store, "features", verified)
    finished = {key: (kind_dir / key / "config.json").stat().st_mtime_ns for key in _complete_keys(kind_dir)}
    assert len(finished) == 1, "killed while the second split was being extracted"
    resumed = last_json(run(store.root, *args))
    assert {key: (kind_dir / key / "config.json").stat().st_mtime_ns for key in finished} == finished  # reused
    assert not list(kind_dir.glob(".*.tmp-*")), "a temporary directory of the killed write was left behind"
    reference_store = Store(tmp_path / "ref")
    for split, summary in reference["splits"].items():
        assert resumed["splits"][split]["key"] == summary["key"]
        expected, _ = reference_store.load("features", summary["key"])
        arrays, _ = store.load("features", summary["key"])
        assert all(np.array_equal(expected[name], arrays[name]) for name in ("features", "logits")), split


TIMING_COLUMNS = ("distill_seconds", "selection_seconds")


def _results_without_timing(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_kill_9_during_bench_then_rerun_equals_an_uninterrupted_grid(tmp_path, session_store, digits_teacher):
    cache = session_store.root
    args = ["bench", "--preset", "digits", "--methods", "random", "moderate", "--ratios", "0.5", "--seeds", "0",
            "--epochs", "8"]
    run(cache, *args, "--out", str(tmp_path / "ref"))
    runs = tmp_path / "killed" / "runs"
    done_cell, partial_cell = runs / "full-s0", runs / "random-r0.5-s0-epochs"  # the grid's first two cells

    def second_cell_mid_training() -> bool:
        return (done_cell / "metrics.json").is_file() and \
            (read_json(partial_cell / "progress.json") or {"epoch": 0})["epoch"] >= 1

    kill_9_when(start(cache, *args, "--out", str(tmp_path / "killed")), second_cell_mid_training)
    assert not (partial_cell / "metrics.json").exists() and not (tmp_path / "killed" / "results.csv").exists()
    untouched = [done_cell / "metrics.json", runs / "full-s0.log"]
    stamps = [path.stat().st_mtime_ns for path in untouched]
    run(cache, *args, "--out", str(tmp_path / "killed"))
    assert [path.stat().st_mtime_ns for path in untouched] == stamps, "a finished cell was recomputed"
    assert json.loads((partial_cell / "metrics.json").read_text())["resumed_from_epoch"] >= 1
    rows = _results_without_timing(tmp_path / "killed")
    assert len(rows) == 3 and rows == _results_without_timing(tmp_path / "ref")


def test_nan_features_are_refused_by_scoring(digits_features):
    from ifbeta.influence import scores as influence

    features = np.array(digits_features.features, dtype=np.float64)
    features[3, 5] = np.nan
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        influence.score(features, digits_features.logits, digits_features.labels)
    logits = np.array(digits_features.logits)
    logits[0, 0] = np.inf
    with pytest.raises(ValueError, match="(?i)nan|inf|finite"):
        influence.score(digits_features.features, logits, digits_features.labels)


def test_disk_full_during_subset_write_leaves_no_partial_directory(tmp_path, digits, monkeypatch):
    from ifbeta.subsets import files as subset

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

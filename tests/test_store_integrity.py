"""Artefacts that check themselves (store.py, integrity.py): each file's size and sha256 in config.json;
a corrupted or truncated file is quarantined (never deleted) and recomputed with one warning;
``ifbeta store verify`` reports problems (exit 1), ``ifbeta store gc`` removes the quarantine and
leftovers; an overwrite keeps the old artefact until the new one is in place."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifbeta import integrity
from ifbeta.errors import CorruptArtefact
from ifbeta.store import Store, make_key

LEGACY = Path(__file__).parent / "data" / "store-before-layout" / "cache"
TEACHER = "teachers/f561382ed539dd32/teacher.safetensors"


def ifbeta(*args, cache, stdin=None):
    return subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args], input=stdin,
                          capture_output=True, text=True, timeout=600)


def zero_after(path: Path, offset: int) -> bytes:
    """Overwrite every byte after ``offset`` with zeros, keeping the size; returns the new content."""
    data = path.read_bytes()
    damaged = data[:offset] + bytes(len(data) - offset)
    path.write_bytes(damaged)
    return damaged


def open_workspace(cache: Path):
    from ifbeta import pipeline

    return pipeline.open_workspace("digits", teacher=str(cache / TEACHER), store=Store(cache))


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A store holding the legacy digits teacher and features and freshly computed influence scores:
    (cache, scores key, the scores array)."""
    from ifbeta import pipeline

    cache = tmp_path_factory.mktemp("integrity") / "cache"
    shutil.copytree(LEGACY, cache)
    shutil.rmtree(cache / "scores")  # written before records existed; recomputed here with them
    result, key = pipeline.scores(open_workspace(cache))
    return cache, key, result.scores.copy()


@pytest.fixture
def store_copy(scored, tmp_path):
    cache, key, original = scored
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "cache", key, original


def quarantined(cache: Path) -> list[Path]:
    return sorted((cache / "quarantine").glob("*/*"))


@pytest.mark.parametrize("damage, reason", [
    (lambda file: zero_after(file, 200), "scores.npy does not match its recorded sha256 (changed or corrupted on disk)"),
    (lambda file: file.write_bytes(file.read_bytes()[:1000]), "scores.npy is truncated (1000 of {size} bytes)"),
])
def test_a_damaged_scores_file_is_quarantined_and_recomputed_to_the_same_values(store_copy, caplog, damage, reason):
    from ifbeta import pipeline

    cache, key, original = store_copy
    file = cache / "scores" / key / "scores.npy"
    size = file.stat().st_size
    damage(file)
    damaged = file.read_bytes()
    with caplog.at_level(logging.WARNING, logger="ifbeta"):
        result, again = pipeline.scores(open_workspace(cache))
    assert again == key
    np.testing.assert_array_equal(result.scores, original)
    assert (result.scores < 0).mean() == (original < 0).mean()
    [moved] = quarantined(cache)
    assert moved.parent.name == "scores" and moved.name.startswith(f"{key}.")
    assert (moved / "scores.npy").read_bytes() == damaged  # kept as found, never deleted
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"artefact scores/{key} failed its check: {reason.format(size=size)}; moved to {moved}, "
                        "recomputing it"]
    assert Store(cache).verify() == []


def test_verify_reports_a_damaged_artefact_and_gc_removes_the_quarantine(store_copy):
    from ifbeta import pipeline

    cache, key, _ = store_copy
    clean = ifbeta("store", "verify", cache=cache)
    assert clean.returncode == 0, clean.stderr[-2000:]
    zero_after(cache / "scores" / key / "scores.npy", 200)
    found = ifbeta("store", "verify", cache=cache)
    assert found.returncode == 1 and found.stdout.splitlines() == [
        f"scores/{key}: scores.npy does not match its recorded sha256 (changed or corrupted on disk)",
        f"1 problem(s) in {cache}"]
    assert (cache / "scores" / key).is_dir()  # verify moves nothing
    pipeline.scores(open_workspace(cache))  # the load quarantines and recomputes
    [moved] = quarantined(cache)
    refused = ifbeta("store", "gc", cache=cache, stdin="")
    assert refused.returncode == 1 and moved.is_dir()  # no answer: nothing removed
    removed = ifbeta("store", "gc", "--yes", cache=cache)
    assert removed.returncode == 0, removed.stderr[-2000:]
    assert quarantined(cache) == [] and not moved.exists() and removed.stdout.splitlines()[-1].startswith(
        "removed 1 item(s)")
    assert ifbeta("store", "gc", cache=cache).stdout.strip() == f"nothing to remove in {cache}"
    assert ifbeta("store", "verify", cache=cache).returncode == 0


@pytest.mark.slow
def test_score_on_a_corrupted_store_reports_the_original_result(store_copy):
    cache, key, original = store_copy
    zero_after(cache / "scores" / key / "scores.npy", 200)
    done = ifbeta("score", "--dataset", "digits", "--teacher", str(cache / TEACHER), "--json", cache=cache)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["scores_key"] == key and summary["harmful_fraction"] == float((original < 0).mean())
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and f"artefact scores/{key} failed its check" in warnings[0]


def test_an_overwrite_keeps_the_old_artefact_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    import ifbeta.store as store_module

    store = Store(tmp_path)
    store.save("scores", "k", {"a": 1}, {"s": np.arange(3.0)})
    real_replace = os.replace

    def failing_replace(source, target):  # the rename that puts the new folder in place fails (disk error)
        raise OSError("rename failed")

    monkeypatch.setattr(store_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        store.save("scores", "k", {"a": 1}, {"s": np.arange(5.0)})
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    arrays, _ = store.load("scores", "k", {"a": 1})
    assert arrays["s"].tolist() == [0.0, 1.0, 2.0]
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == ["k"]  # no temporary, no set-aside copy
    store.save("scores", "k", {"a": 1}, {"s": np.arange(5.0)})
    assert store.load("scores", "k", {"a": 1})[0]["s"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == ["k"]


def test_config_json_records_the_size_and_sha256_of_every_file(tmp_path):
    store = Store(tmp_path)
    folder = store.save("features", "k", {"x": 1}, {"features": np.eye(3)}, files={"notes.txt": b"hello"})
    records = json.loads((folder / "config.json").read_text())["files"]
    assert records == {name: {"size": (folder / name).stat().st_size, "sha256": integrity.sha256_of(folder / name)}
                       for name in ("features.npy", "notes.txt")}


@pytest.mark.parametrize("damage, reason", [
    (lambda d: (d / "features.npy").write_bytes((d / "features.npy").read_bytes()[:150]),
     "features.npy is truncated (150 of 200 bytes)"),
    (lambda d: (d / "config.json").write_text("{not json"), "unreadable config.json"),
])
def test_an_artefact_written_before_records_existed_is_checked_by_its_headers(tmp_path, caplog, damage, reason):
    store = Store(tmp_path)
    key = make_key({"x": 1})
    folder = store.path("features", key)
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", np.arange(9.0))  # 128-byte header + 72 bytes
    (folder / "config.json").write_text(json.dumps({"config": {"x": 1}, "meta": {}}))  # no "files"
    assert store.verify() == [] and store.load("features", key, {"x": 1})[0]["features"].tolist() == list(range(9))
    damage(folder)
    assert store.verify()[0].startswith(f"features/{key}: {reason}")
    with caplog.at_level(logging.WARNING, logger="ifbeta"):
        arrays, _, _ = store.get_or_compute("features", {"x": 1}, [], lambda: ({"features": np.ones(2)}, {}))
    assert arrays["features"].tolist() == [1.0, 1.0] and len(quarantined(tmp_path)) == 1
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"artefact features/{key} failed its check: {reason}" in warning and warning.endswith("recomputing it")


def test_a_large_file_is_checked_by_samples_on_load_and_in_full_by_verify(tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "FULL_CHECK_BYTES", 2**16)
    monkeypatch.setattr(integrity, "EDGE_BYTES", 4096)
    monkeypatch.setattr(integrity, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(integrity, "SAMPLE_BYTES", 1024)
    store = Store(tmp_path)
    values = np.arange(2**16, dtype=np.float64)  # 512 KiB + header: above the full-check limit
    folder = store.save("features", "k", {}, {"features": values})
    file = folder / "features.npy"
    size = file.stat().st_size
    assert "sampled" in json.loads((folder / "config.json").read_text())["files"]["features.npy"]
    step = size // 5
    unsampled = step + 2048  # between the first sampled block (at step, 1 KiB long) and the second
    data = bytearray(file.read_bytes())
    data[unsampled] ^= 0xFF
    file.write_bytes(bytes(data))
    assert store.load("features", "k", {}, mmap=True)[0]["features"].shape == (2**16,)  # lazy: not seen on load
    assert store.verify(full=False) == []
    assert store.verify() == ["features/k: features.npy does not match its recorded sha256 (changed or corrupted "
                              "on disk)"]
    data[step + 10] ^= 0xFF  # inside a sampled block: seen on load
    file.write_bytes(bytes(data))
    with pytest.raises(CorruptArtefact, match="failed its check: features.npy does not match"):
        store.load("features", "k", {}, mmap=True)
    assert len(quarantined(tmp_path)) == 1


def test_garbage_is_the_quarantine_and_leftovers_no_writer_holds(tmp_path):
    from ifbeta.cli.store import garbage

    store = Store(tmp_path)
    dead = tmp_path / "scores" / ".aaaa.tmp-dead"
    busy = tmp_path / "scores" / ".bbbb.tmp-live"
    aside = tmp_path / "scores" / ".cccc.old-1234"
    for folder in (dead, busy, aside):
        folder.mkdir(parents=True)
    store.save("scores", "cccc", {}, {"s": np.zeros(1)})
    (tmp_path / "quarantine" / "scores" / "dddd.20260101T000000").mkdir(parents=True)
    finished = tmp_path / "teachers" / "eeee"
    (finished / "resume").mkdir(parents=True)
    (finished / "teacher.safetensors").write_bytes(b"x")
    running = tmp_path / "teachers" / "ffff" / "resume"  # a training still under way: kept
    running.mkdir(parents=True)
    with store.lock("scores", "bbbb"):
        found = garbage(store)
    assert found == [tmp_path / "quarantine" / "scores" / "dddd.20260101T000000", dead, aside, finished / "resume"]

"""One teacher identity (models/registry.py): per dataset fingerprint and architecture the store lists
its teachers and one default; ``train-teacher`` sets it, ``--teacher auto`` uses it and trains only
when there is none, ``ifbeta teachers --set-default`` changes it; old stores and bundled files take part."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifbeta.models import registry, teachers, zoo
from ifbeta.store import Store

LEGACY = Path(__file__).parent / "data" / "store-before-layout" / "cache"
STALE = "teachers/00000000000000aa"  # a finished training's slot whose resume folder stayed


def ifbeta(*args, cache):
    return subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args],
                          capture_output=True, text=True, timeout=600)


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def checkpoint_files(cache: Path) -> list[Path]:
    return sorted((cache / "teachers").rglob("*.safetensors"))


def write_checkpoint(path: Path, train, *, epochs: int, top1: float, seed: int, arch: str = "cnn-small") -> Path:
    """A real (untrained) checkpoint of ``train`` whose header records these settings and accuracy."""
    torch.manual_seed(seed)
    model = zoo.build(arch, num_classes=train.num_classes, in_channels=train.channels)
    settings = teachers.teacher_config(train, arch, epochs, 0).to_dict()
    metadata = {"dataset": train.name, "fingerprint": train.fingerprint, "mean": [0.3], "std": [0.37],
                "test_top1": top1, "train": settings}
    return zoo.save_checkpoint(model, path, arch=arch, num_classes=train.num_classes, in_channels=train.channels,
                               metadata=metadata)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A clean store after ``ifbeta train-teacher --dataset digits --epochs 1`` (and its JSON line); it
    held only a finished training of an earlier version that had kept its resume folder."""
    cache = tmp_path_factory.mktemp("registry") / "cache"
    (cache / STALE / "resume").mkdir(parents=True)
    (cache / STALE / "resume" / "last.pt").write_bytes(b"resume state")
    (cache / STALE / "teacher.safetensors").write_bytes(b"not a checkpoint of any dataset")
    done = ifbeta("train-teacher", "--dataset", "digits", "--epochs", "1", "--json", cache=cache)
    assert done.returncode == 0, done.stderr[-2000:]
    return cache, last_json(done)


@pytest.fixture
def store_copy(trained, tmp_path):
    """A copy of ``trained`` (its JSON's checkpoint path moved into the copy: the index names teachers
    inside the store by name, so a copied store keeps its default)."""
    cache, summary = trained
    shutil.copytree(cache, tmp_path / "cache")
    moved = tmp_path / "cache" / Path(summary["checkpoint"]).relative_to(cache)
    return tmp_path / "cache", {**summary, "checkpoint": str(moved)}


@pytest.mark.slow
def test_auto_uses_the_teacher_train_teacher_made_and_trains_no_second_one(store_copy):
    cache, summary = store_copy
    assert summary["default"] is True and summary["epochs"] == 1
    extracted = ifbeta("extract", "--dataset", "digits", "--json", cache=cache)
    assert extracted.returncode == 0, extracted.stderr[-2000:]
    assert "training one" not in extracted.stderr
    teachers_now = [p for p in checkpoint_files(cache) if p != cache / STALE / "teacher.safetensors"]
    assert teachers_now == [Path(summary["checkpoint"])]  # exactly one teacher in the store
    assert list((cache / "teachers").rglob("*resume*")) == []  # no resume folder left, the stale one neither
    listed = ifbeta("teachers", "--dataset", "digits", "--json", cache=cache)
    assert listed.returncode == 0, listed.stderr[-2000:]
    [entry] = last_json(listed)["teachers"]
    assert (entry["path"], entry["arch"], entry["epochs"], entry["default"]) == (
        summary["checkpoint"], "cnn-small", 1, True)
    assert entry["test_top1"] == summary["test_top1"]
    first = listed.stdout.splitlines()[0]
    assert first.startswith("* ") and summary["checkpoint"] in first and f"{summary['test_top1']:.4f}" in first


@pytest.mark.slow
def test_set_default_changes_what_auto_uses(store_copy, digits):
    cache, summary = store_copy
    train, _ = digits
    store = Store(cache)
    other = write_checkpoint(teachers.trained_teacher_path(train, "cnn-small", 2, store=store), train,
                             epochs=2, top1=0.5, seed=1)
    # the newer file does not take over: the store names its default
    assert teachers.resolve_teacher("auto", train, store=store).info.path == summary["checkpoint"]
    changed = ifbeta("teachers", "--dataset", "digits", "--set-default", other.stem, "--json", cache=cache)
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert changed.stdout.splitlines()[0] == f"default cnn-small teacher for digits: {other.stem}"
    marks = {e["path"]: e["default"] for e in last_json(changed)["teachers"]}
    assert marks == {str(other): True, summary["checkpoint"]: False}
    resolved = teachers.resolve_teacher("auto", train, store=store)
    assert resolved.info.sha256 == zoo.file_sha256(other)
    back = ifbeta("teachers", "--dataset", "digits", "--set-default", summary["checkpoint"], cache=cache)
    assert back.returncode == 0 and teachers.auto_teacher_path(train, "cnn-small", store=store) == Path(
        summary["checkpoint"])
    unknown = ifbeta("teachers", "--dataset", "digits", "--set-default", "nobody", cache=cache)
    assert unknown.returncode == 2 and unknown.stderr.strip() == (
        "ifbeta teachers: error: no teacher of digits is named 'nobody'; 'ifbeta teachers --dataset digits' lists them")


def test_registering_without_default_keeps_the_default_and_lists_both(tmp_path, digits):
    train, _ = digits
    store = Store(tmp_path / "cache")
    first = write_checkpoint(tmp_path / "elsewhere" / "a.safetensors", train, epochs=3, top1=0.9, seed=2)
    second = write_checkpoint(tmp_path / "elsewhere" / "b.safetensors", train, epochs=4, top1=0.8, seed=3)
    os.utime(first, (first.stat().st_atime, second.stat().st_mtime - 60))  # coarse clocks: make the order explicit
    assert registry.register(store, first, make_default=True).default
    assert not registry.register(store, second, make_default=False).default
    listed = registry.entries(store, fingerprint=train.fingerprint)
    assert [(e.name, e.source, e.epochs, e.test_top1, e.default) for e in listed] == [
        (str(second), "registered", 4, 0.8, False), (str(first), "registered", 3, 0.9, True)]  # newest first
    assert teachers.auto_teacher_path(train, "cnn-small", store=store) == first


def test_teachers_of_an_earlier_store_are_found_and_listed(tmp_path, digits):
    train, _ = digits
    cache = tmp_path / "cache"
    shutil.copytree(LEGACY, cache)
    store = Store(cache)
    slot = cache / "teachers" / "f561382ed539dd32" / "teacher.safetensors"
    app_trained = teachers.trained_teacher_path(train, "cnn-tiny", 1, store=store)
    app_trained.parent.mkdir(parents=True)
    shutil.copy2(slot, app_trained)  # what the app's Train button wrote under teachers/trained/
    listed = sorted(registry.entries(store, fingerprint=train.fingerprint), key=lambda e: e.source)
    assert [(e.name, e.source, e.arch, e.epochs, e.path) for e in listed] == [
        ("f561382ed539dd32", "store", "cnn-tiny", 1, slot), (app_trained.stem, "trained", "cnn-tiny", 1, app_trained)]
    assert [e.test_top1 for e in listed] == [0.31555555555555553] * 2
    assert sum(e.default for e in listed) == 1  # one default per (fingerprint, arch)
    assert teachers.teacher_missing("auto", train, store=store, arch="cnn-tiny", trains_itself=False) is None
    assert teachers.auto_teacher_path(train, "cnn-tiny", store=store) in (slot, app_trained)


def test_a_bundled_teacher_is_the_default_until_the_store_names_another(tmp_path, digits):
    train, _ = digits
    store = Store(tmp_path / "cache")
    bundled = tmp_path / "bundled"
    shipped = write_checkpoint(bundled / f"{train.fingerprint[:16]}-cnn-small.safetensors", train,
                               epochs=30, top1=0.99, seed=4)
    os.utime(shipped, (shipped.stat().st_atime, shipped.stat().st_mtime - 60))  # shipped a minute before
    assert registry.default(store, train.fingerprint, "cnn-small", bundled=bundled).path == shipped
    slot = teachers.teacher_slot(train, "cnn-small", store=store, epochs=5)
    write_checkpoint(slot, train, epochs=5, top1=0.7, seed=5)  # a newer teacher in the store
    listed = registry.entries(store, fingerprint=train.fingerprint, bundled=bundled)
    assert [(e.name, e.source, e.default) for e in listed] == [(slot.parent.name, "store", False),
                                                                (shipped.stem, "bundled", True)]
    registry.set_default(store, listed[0])
    assert registry.default(store, train.fingerprint, "cnn-small", bundled=bundled).path == slot
    assert registry.default(store, "0" * 64, "cnn-small", bundled=bundled) is None  # another dataset: none


@pytest.mark.slow
def test_auto_trains_only_when_there_is_no_teacher_and_says_so_in_one_line(tmp_path, digits):
    train, test = digits
    store = Store(tmp_path / "cache")
    events = []
    first = teachers.resolve_teacher("auto", train, store=store, epochs=1, test=test,
                                     on_step=lambda step, info: events.append(info))
    slot = teachers.teacher_slot(train, "cnn-small", store=store, epochs=1)
    notices = [e for e in events if e.get("event") == "notice"]
    assert events[0] == notices[0] and notices == [{"event": "notice", "text": (
        f"no cnn-small teacher for digits in the store: training one (1 epoch, resumable) into {slot.parent}")}]
    assert first.info.path == str(slot) and checkpoint_files(store.root) == [slot]
    assert not (slot.parent / "resume").exists()
    again = []
    second = teachers.resolve_teacher("auto", train, store=store, on_step=lambda step, info: again.append(info))
    assert again == [] and second.info.sha256 == first.info.sha256  # the default is reused, nothing trains
    assert [e.default for e in registry.entries(store, fingerprint=train.fingerprint)] == [True]


def test_the_setup_page_lists_the_same_teachers_and_changes_the_default(tmp_path, digits, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:  # the app's glue (pages/_studio) imports from the project root
        sys.path.insert(0, str(root))
    from streamlit.runtime import pages_manager

    original = pages_manager.PagesManager.__init__

    def init(self, *args, **kwargs):  # route reruns through app.py's st.navigation (as tests/test_app.py does)
        original(self, *args, **kwargs)
        pages_manager.PagesManager.uses_pages_directory = False

    monkeypatch.setattr(pages_manager.PagesManager, "__init__", init)
    train, _ = digits
    store = Store(tmp_path / "cache")
    monkeypatch.setenv("IFBETA_CACHE", str(store.root))
    first = write_checkpoint(teachers.teacher_slot(train, "cnn-small", store=store, epochs=3), train,
                             epochs=3, top1=0.9123, seed=6)
    registry.register(store, first, make_default=True)
    second = write_checkpoint(teachers.trained_teacher_path(train, "cnn-small", 2, store=store), train,
                              epochs=2, top1=0.5, seed=7)
    at = AppTest.from_file(str(root / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table[["default", "name", "epochs", "test top-1", "path"]].values.tolist() == [
        ["", second.stem, 2, 50.0, str(second)], ["✓", first.parent.name, 3, 91.23, str(first)]]
    sidebar = at.sidebar.selectbox[1]
    assert sidebar.options[:3] == ["auto (the dataset's default teacher)",
                                   f"{second.stem} (digits, cnn-small, 2 epochs, test top-1 50.0%)",
                                   f"{first.parent.name} (digits, cnn-small, 3 epochs, test top-1 91.2%)"]
    assert [m.value for m in at.metric if m.label == "Teacher test top-1"] == ["91.2%"]
    at.selectbox(key="default_teacher").set_value(second.stem).run()
    at.button[[b.label for b in at.button].index("Make default")].click().run()
    assert not at.exception, at.exception
    assert registry.default(store, train.fingerprint, "cnn-small").path == second
    assert at.dataframe[0].value["default"].tolist() == ["✓", ""]
    assert [m.value for m in at.metric if m.label == "Teacher test top-1"] == ["50.0%"]

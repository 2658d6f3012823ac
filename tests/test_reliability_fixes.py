"""Inputs benchmarks/reliability.py found read wrongly, each refused now with one clear line: a teacher's
--epochs 0 (it trained the default 15), distill's --batch-size 0 (it used the default) and --lr <= 0, prune's
--steps 0 (a TypeError traceback), a pool smaller than the class count or below 1 (scikit-learn's words), and
a default teacher whose file is cut short (auto trained another teacher in its place without a word)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ifbeta.cli.commands import main
from ifbeta.config import PolicyConfig
from ifbeta.errors import DatasetError, ModelError
from ifbeta.models import registry, teachers
from ifbeta.pipeline import pool_of
from ifbeta.store import Store


def refused(capsys, *argv) -> str:
    """Run ``ifbeta argv`` in this process: it must exit 2 with exactly one error line; -> that line."""
    assert main(list(argv)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_train_teacher_refuses_epochs_below_one(capsys, tmp_path, epochs):
    line = refused(capsys, "--cache", str(tmp_path), "train-teacher", "--epochs", epochs)
    assert line == f"ifbeta train-teacher: error: --epochs must be at least 1, got {epochs}"
    assert not (tmp_path / "teachers").exists()  # nothing trained


@pytest.mark.parametrize("flag, value, said", [("--batch-size", "0", "--batch-size must be at least 1, got 0"),
                                               ("--lr", "0", "--lr must be positive, got 0.0"),
                                               ("--lr", "-1", "--lr must be positive, got -1.0")])
def test_distill_refuses_batch_sizes_and_learning_rates_that_cannot_train(capsys, tmp_path, flag, value, said):
    out = tmp_path / "run"
    line = refused(capsys, "--cache", str(tmp_path), "distill", "--subset", "full", "--out", str(out), flag, value)
    assert line == f"ifbeta distill: error: {said}"
    assert not out.exists()


def test_prune_refuses_zero_steps_before_any_work(capsys, tmp_path):
    line = refused(capsys, "--cache", str(tmp_path), "prune", "--ratio", "0.5", "--steps", "0", "--out",
                   str(tmp_path / "out"))
    assert line == "ifbeta prune: error: --steps must be at least 1, got 0"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"^steps must be at least 1 \(outer steps of the policy\), got 0$"):
        PolicyConfig(steps=0)
    with pytest.raises(ValueError, match=r"^learning_rate must be positive, got 0.0$"):
        PolicyConfig(learning_rate=0.0)
    assert PolicyConfig(steps=1).steps == 1


def test_pools_below_the_class_count_are_refused_and_the_smallest_allowed_holds_one_per_class(digits):
    train, _ = digits
    with pytest.raises(DatasetError, match=r"^a pool of 5 samples is smaller than the 10 classes; use at least 10"):
        pool_of(train, 5)
    with pytest.raises(DatasetError, match=r"^the pool size must be positive, got -5 \(0 or none: the whole"):
        pool_of(train, -5)
    smallest = pool_of(train, 10)
    assert np.array_equal(np.sort(smallest.labels), np.arange(10))  # one sample of each class
    assert len(pool_of(train, 0)) == len(train) == len(pool_of(train, None))


def test_auto_refuses_a_default_teacher_cut_short_instead_of_training_another(tmp_path, digits, digits_teacher,
                                                                              session_store):
    train, test = digits
    source = registry.find(session_store, digits_teacher.info.path, fingerprint=train.fingerprint,
                           bundled=teachers.BUNDLED)
    assert source is not None
    store = Store(tmp_path / "store")
    slot = store.root / "teachers" / "0123456789abcdef" / "teacher.safetensors"  # not the default settings' slot
    assert slot.parent != teachers.teacher_slot(train, source.arch, store=store).parent
    slot.parent.mkdir(parents=True)
    shutil.copy2(source.path, slot)
    registry.set_default(store, registry.find(store, str(slot), fingerprint=train.fingerprint))
    data = slot.read_bytes()
    slot.write_bytes(data[: len(data) // 2])
    assert registry.unreadable_default(store, train.fingerprint, source.arch) == slot
    with pytest.raises(ModelError) as error:
        teachers.resolve_teacher("auto", train, store=store, test=test)
    assert str(error.value) == (f"the default {source.arch} teacher of digits, {slot}, is not a readable checkpoint "
                                "(cut short or damaged); delete it to train a new one, or make another teacher the "
                                "default")
    assert sorted(p.relative_to(store.root) for p in store.root.rglob("*.safetensors")) == [slot.relative_to(store.root)]
    assert json.loads((store.root / "teachers" / "index.json").read_text())["defaults"]  # the record is kept
    slot.write_bytes(data)  # mended: read again
    assert registry.unreadable_default(store, train.fingerprint, source.arch) is None
    assert teachers.resolve_teacher("auto", train, store=store).info.sha256 == digits_teacher.info.sha256

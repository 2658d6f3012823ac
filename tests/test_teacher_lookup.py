"""One teacher lookup (models.teachers): the path ``--teacher`` names, whether it can be resolved,
and where a teacher trained on request is written."""
from __future__ import annotations

from ifbeta.models import teachers


def test_auto_finds_the_trained_default_teacher(digits, digits_teacher, session_store):
    train, _ = digits
    path = teachers.teacher_path("auto", train, store=session_store)
    assert path.is_file() and path == teachers.auto_teacher_path(train, teachers.default_arch(train),
                                                                 store=session_store)
    from ifbeta.models import zoo

    assert teachers.resolve_teacher("auto", train, store=session_store).info.sha256 == zoo.file_sha256(path)
    assert teachers.teacher_missing("auto", train, store=session_store, trains_itself=False) is None


def test_missing_teachers_are_named_in_one_line(digits, tmp_path):
    from ifbeta.store import Store

    train, _ = digits
    empty = Store(tmp_path / "cache")
    missing = teachers.teacher_missing("auto", train, store=empty, arch="resnet8", trains_itself=False)
    assert missing == f"no resnet8 teacher for {train.name} yet: train one or choose a checkpoint"
    assert teachers.teacher_missing("auto", train, store=empty, arch="resnet8") is None  # auto would train it
    absent = tmp_path / "nope.safetensors"
    assert teachers.teacher_missing(str(absent), train, store=empty) == f"teacher checkpoint {absent} does not exist"
    assert teachers.teacher_path(str(absent), train, store=empty) == absent


def test_trained_teachers_are_named_by_dataset_fingerprint_arch_and_epochs(digits, tmp_path):
    from ifbeta.store import Store

    train, _ = digits
    store = Store(tmp_path / "cache")
    path = teachers.trained_teacher_path(train, "cnn-tiny", 3, store=store)
    assert path == tmp_path / "cache" / "teachers" / "trained" / f"digits-{train.fingerprint[:12]}-cnn-tiny-e3.safetensors"
    assert path.parent == teachers.trained_folder(store)
    checkpoint = teachers.teacher_path(str(path), train, store=store)
    assert checkpoint == path  # a trained teacher is then used by its path


def test_auto_finds_the_bundled_teachers_of_the_project(tmp_path):
    """Every file in the project's teachers/ folder is what ``auto`` returns for its dataset fingerprint."""
    from pathlib import Path
    from types import SimpleNamespace

    from ifbeta.store import Store

    folder = Path(__file__).resolve().parents[1] / "teachers"
    assert teachers.BUNDLED == folder
    bundled = sorted(folder.glob("*.safetensors"))
    assert bundled, "the project ships at least one teacher"
    for path in bundled:
        fingerprint, arch = path.stem.split("-", 1)
        data = SimpleNamespace(fingerprint=fingerprint + "0" * 48)
        assert teachers.auto_teacher_path(data, arch, store=Store(tmp_path / "cache")) == path

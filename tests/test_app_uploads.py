"""The Setup page's teacher upload (AppTest, digits): a bad upload shows one message and is neither stored
under cache/uploads nor listed nor made the teacher; a good one is checked, stored and selected. Also the
allowed roots of a shared deployment (IFBETA_ALLOWED_ROOTS)."""
from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from ifbeta.models import zoo  # noqa: E402
from tests.test_app import APP, TIMEOUT, navigation_routing  # noqa: E402,F401  (the routing fixture)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notes
TRUST = ("turn on 'trust this pickle' if you trust this file (loading it runs code from the file)")


def safetensors_bytes(tmp_path: Path, *, num_classes: int = 10) -> bytes:
    torch.manual_seed(0)
    model = zoo.build("cnn-tiny", num_classes=num_classes, in_channels=1)
    path = zoo.save_checkpoint(model, tmp_path / f"tiny{num_classes}.safetensors", arch="cnn-tiny",
                               num_classes=num_classes, in_channels=1)
    return path.read_bytes()


def state_dict_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(zoo.build("cnn-tiny", num_classes=10, in_channels=1).state_dict(), buffer)
    return buffer.getvalue()


def torchscript_bytes() -> bytes:
    model = zoo.build("resnet8", num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace_module(model, {"forward": x, "forward_features": x}), buffer)
    return buffer.getvalue()


def bad_uploads(tmp_path: Path) -> list[tuple[str, bytes, str, str]]:
    """(file name, bytes, architecture chosen, the message the page shows)."""
    tail = "; expected safetensors, a state_dict saved with torch.save, or TorchScript"
    return [
        ("garbage.pt", bytes(range(256)) * 4, "(recorded in the checkpoint)",
         "the upload garbage.pt is not a checkpoint (it is neither a ZIP archive nor a pickle)" + tail),
        ("notes.pt", b"my teacher, trained last week\n", "(recorded in the checkpoint)",
         "the upload notes.pt is not a checkpoint (it is plain text)" + tail),
        ("empty.pt", b"", "(recorded in the checkpoint)",
         "the upload empty.pt is not a checkpoint (it is empty)" + tail),
        ("three.safetensors", safetensors_bytes(tmp_path, num_classes=3), "(recorded in the checkpoint)",
         "the upload three.safetensors predicts 3 classes but the dataset has 10"),
        ("weights.pt", state_dict_bytes(), "resnet8", None),  # message checked by its prefix below
        ("traced.pt", torchscript_bytes(), "(recorded in the checkpoint)",
         "the upload traced.pt is a TorchScript archive, which runs its own code when loaded; " + TRUST),
    ]


@pytest.fixture
def setup_page(session_store, digits_features):  # the digits teacher is trained before the first page run
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, name: str, content: bytes, arch: str, *, trust: bool = False) -> AppTest:
    at.file_uploader(key="teacher_upload").set_value((name, content, "application/octet-stream"))
    at.run()
    at.selectbox(key="upload_arch").set_value(arch).run()
    at.checkbox(key="upload_trust").set_value(trust).run()
    next(b for b in at.button if b.label == "Use the uploaded checkpoint").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def stored(session_store) -> list[str]:
    folder = session_store.root / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_bad_uploads_are_refused_and_nothing_is_kept(setup_page, session_store, tmp_path):
    before = stored(session_store)
    for name, content, arch, message in bad_uploads(tmp_path):
        at = upload(setup_page, name, content, arch)
        errors = [e.value for e in at.error]
        if message is None:
            assert len(errors) == 1 and errors[0].startswith("the upload weights.pt does not fit resnet8: "), errors
            assert errors[0].endswith("is the chosen architecture right?"), errors
        else:
            assert errors == [message], (name, errors)
        assert stored(session_store) == before, name  # nothing stored, not even a temporary
        assert at.session_state["teacher"] == "auto", name  # not made the teacher
        assert not any(name.split(".")[0] in option for option in at.selectbox(key="teacher").options), name


def test_a_good_upload_is_checked_stored_and_selected(setup_page, session_store, tmp_path):
    at = upload(setup_page, "good teacher.safetensors", safetensors_bytes(tmp_path), "(recorded in the checkpoint)")
    assert not at.error, [e.value for e in at.error]
    teacher = Path(at.session_state["teacher"])
    assert teacher.parent == session_store.root / "uploads" and teacher.name.endswith("-good_teacher.safetensors")
    assert teacher.name in at.selectbox(key="teacher").options  # the sidebar lists it (by name)
    assert any("uploaded teacher checked and stored" in s.value for s in at.success)
    at = upload(at, "traced.pt", torchscript_bytes(), "(recorded in the checkpoint)", trust=True)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["teacher"].endswith("-traced.pt") and at.session_state["trust_pickle"] is True
    assert any("runs code from the file" in w.value for w in at.warning)  # the trust checkbox's warning


def test_uploads_stored_before_checking_are_no_longer_listed(session_store, digits_features, tmp_path):
    folder = session_store.root / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0123456789abcdef-old_garbage.pt").write_bytes(b"not a model")
    (folder / "fedcba9876543210-old_good.safetensors").write_bytes(safetensors_bytes(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    options = at.selectbox(key="teacher").options
    assert "fedcba9876543210-old_good.safetensors" in options
    assert "0123456789abcdef-old_garbage.pt" not in options


def test_allowed_roots_limit_checkpoint_paths_and_image_folders(session_store, digits_features, tmp_path, monkeypatch):
    allowed, outside = tmp_path / "class", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    for folder in (allowed, outside):
        (folder / "tiny.safetensors").write_bytes(safetensors_bytes(tmp_path))
    monkeypatch.setenv("IFBETA_ALLOWED_ROOTS", os.pathsep.join([str(allowed), str(tmp_path / "other")]))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.text_input(key="checkpoint_path").set_value(str(outside / "tiny.safetensors")).run()
    next(b for b in at.button if b.label == "Use this checkpoint").click().run()
    assert [e.value for e in at.error] == [
        f"checkpoint {outside / 'tiny.safetensors'} is outside the folders this server may read ({allowed}, "
        f"{tmp_path / 'other'}); put it under one of them"]
    assert at.session_state["teacher"] == "auto"
    at.text_input(key="checkpoint_path").set_value(str(allowed / "tiny.safetensors")).run()
    next(b for b in at.button if b.label == "Use this checkpoint").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["teacher"] == str((allowed / "tiny.safetensors").resolve())
    at.selectbox(key="dataset_choice").set_value("imagefolder").run()
    at.text_input(key="imagefolder_path").set_value(str(outside)).run()
    assert [e.value for e in at.error] == [
        f"ImageFolder root {outside} is outside the folders this server may read ({allowed}, {tmp_path / 'other'}); "
        "put it under one of them"]

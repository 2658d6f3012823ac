"""Every input is read or refused with the right fix: checkpoints of every kind (TorchScript end to end),
hidden class folders, export folder names, feature shapes, u outside (0, 1), runs that share an --out,
temporary names no two writers share."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ifbeta.data import datasets as data
from ifbeta.errors import ModelError, in_app
from ifbeta.models import teachers, zoo
from ifbeta.subsets import export
from ifbeta.subsets import files as subset_files
from tests.conftest import write_image
from tests.toy_subsets import make_dataset, write_toy

ROOT = Path(__file__).resolve().parent.parent
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notes


def cli(*args, cache, timeout=300):
    """``ifbeta <args>`` in a fresh process: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


def error_line(stderr: str) -> str:
    """The one line a refused command prints (no traceback)."""
    lines = [line for line in stderr.splitlines() if line.startswith("ifbeta ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def traced(path: Path, *, num_classes=10, features=True) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = zoo.build("resnet8", num_classes=num_classes, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    if features:
        script = torch.jit.trace_module(model, {"forward": x, "forward_features": x})
    else:
        script = torch.jit.trace(model, x)
    torch.jit.save(script, str(path))
    return path, model


# ------------------------------------------------------------------------------------------ TorchScript
def test_torchscript_needs_trust_and_the_right_class_count(tmp_path, digits):
    train, _ = digits
    path, _ = traced(tmp_path / "traced.pt")
    with pytest.raises(ModelError) as refused:
        teachers.load_teacher(path, train)
    assert str(refused.value) == (f"{path} is a TorchScript archive, which runs its own code when loaded; pass "
                                  "--trust-pickle if you trust this file (loading it runs code from the file)")
    assert in_app(refused.value).endswith("turn on 'trust this pickle' if you trust this file (loading it runs "
                                          "code from the file)")
    three, _ = traced(tmp_path / "three.pt", num_classes=3)
    with pytest.raises(ModelError, match=re.escape(f"{three} predicts 3 classes but digits has 10")):
        teachers.load_teacher(three, train, trust_pickle=True)
    plain, _ = traced(tmp_path / "plain.pt", features=False)
    with pytest.raises(ModelError, match="TorchScript without forward_features: the penultimate features"):
        teachers.load_teacher(plain, train, trust_pickle=True)


def test_traced_teacher_features_are_the_eager_models(tmp_path, digits, session_store):
    from ifbeta.models.features import teacher_features
    from ifbeta.models.training import Normaliser

    train, _ = digits
    path, eager = traced(tmp_path / "traced.pt")
    teacher = teachers.load_teacher(path, train, trust_pickle=True)
    got = teacher_features(teacher, train, store=session_store)
    x = Normaliser(*data.channel_statistics(train.images))(train.images)
    with torch.inference_mode():
        phi = eager.forward_features(x)
        logits = eager.classifier(phi)
    assert got.features.shape == (len(train), 64) and got.logits.shape == (len(train), 10)
    np.testing.assert_allclose(got.features, phi.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.logits, logits.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cli_scores_digits_with_a_traced_resnet(tmp_path, session_store):
    path, _ = traced(tmp_path / "traced.pt")
    code, out, err = cli("score", "--teacher", str(path), "--trust-pickle", "--json", cache=session_store.root)
    assert code == 0 and "Traceback" not in err, err
    assert json.loads(out.splitlines()[-1])["n"] == 1347
    code, _, err = cli("score", "--teacher", str(path), cache=session_store.root)
    assert code == 2 and error_line(err).endswith("pass --trust-pickle if you trust this file (loading it runs code "
                                                  "from the file)")


# ---------------------------------------------------------------------------------- checkpoint messages
def test_checkpoints_that_are_not_checkpoints(tmp_path, digits):
    train, _ = digits
    cases = {"text.pt": b"just some notes\n", "empty.pt": b"", "garbage.pt": bytes(range(256)) * 4}
    said = {}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelError) as refused:
            teachers.load_teacher(tmp_path / name, train)
        said[name] = str(refused.value).removeprefix(f"{tmp_path / name} ")
    tail = "; expected safetensors, a state_dict saved with torch.save, or TorchScript"
    assert said == {"text.pt": "is not a checkpoint (it is plain text)" + tail,
                    "empty.pt": "is not a checkpoint (it is empty)" + tail,
                    "garbage.pt": "is not a checkpoint (it is neither a ZIP archive nor a pickle)" + tail}
    with pytest.raises(ModelError, match=re.escape(f"{tmp_path} is a folder, not a checkpoint file")):
        teachers.load_teacher(tmp_path, train)


def test_cli_names_teacher_arch_and_refuses_a_folder(tmp_path, digits, session_store):
    train, _ = digits
    model = zoo.build("cnn-tiny", num_classes=10, in_channels=1)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    zoo.save_checkpoint(model, tmp_path / "tiny.safetensors", arch="cnn-tiny", num_classes=10, in_channels=1)
    cache = session_store.root
    code, _, err = cli("extract", "--teacher", str(tmp_path / "state.pt"), cache=cache)
    assert code == 2 and error_line(err).endswith(f"{tmp_path / 'state.pt'} does not record its architecture; pass "
                                                  f"--teacher-arch (one of {', '.join(zoo.ARCHITECTURES)})")
    code, _, err = cli("extract", "--teacher", str(tmp_path / "tiny.safetensors"), "--teacher-arch", "cnn-small",
                       cache=cache)
    assert code == 2 and error_line(err).endswith("holds a cnn-tiny, not a cnn-small; pass --teacher-arch cnn-tiny")
    code, _, err = cli("extract", "--teacher", str(tmp_path), cache=cache)
    assert code == 2 and error_line(err).endswith(f"{tmp_path} is a folder, not a checkpoint file; give the "
                                                  "checkpoint file inside it")
    assert teachers.teacher_missing(str(tmp_path), train) == (f"teacher {tmp_path} is a folder, not a checkpoint "
                                                              "file; give the checkpoint file inside it")


def test_store_upload_checks_before_storing(tmp_path, digits):
    train, _ = digits
    folder = tmp_path / "uploads"
    with pytest.raises(ModelError, match=r"^the upload notes\.pt is not a checkpoint \(it is plain text\)"):
        teachers.store_upload(folder, "notes.pt", b"hello", max_mb=1, dataset=train)
    assert list(folder.iterdir()) == []  # nothing stored, not even a temporary
    model = zoo.build("cnn-tiny", num_classes=10, in_channels=1)
    zoo.save_checkpoint(model, tmp_path / "tiny.safetensors", arch="cnn-tiny", num_classes=10, in_channels=1)
    stored = teachers.store_upload(folder, "tiny.safetensors", (tmp_path / "tiny.safetensors").read_bytes(), max_mb=1,
                                   dataset=train)
    assert sorted(p.name for p in folder.iterdir()) == [stored.name, stored.name + ".json"]
    assert teachers.usable_checkpoints([stored, tmp_path / "missing.pt"], train) == [str(stored)]


# -------------------------------------------------------------------------------------- hidden folders
def test_hidden_class_folders_are_named_with_what_they_hold(tmp_path, image_folder, session_store):
    for i in range(4):
        write_image(image_folder / "train" / ".hidden" / f"{i}.png", seed=i)
    write_image(image_folder / "test" / ".hidden" / "0.png")
    train = data.load(f"imagefolder:{image_folder}", "train", store=session_store)
    test = data.load(f"imagefolder:{image_folder}", "test", store=session_store)
    assert (len(train), train.class_names, train.hidden) == (18, ["cat", "dog", "eel"], ["train/.hidden (4 files)"])
    assert test.hidden == ["test/.hidden (1 file)"]
    line = ("not read: 2 hidden class folder(s) (names starting with '.'): train/.hidden (4 files), test/.hidden "
            "(1 file); rename them without the leading '.' to use them as classes")
    assert data.hidden_warning((train, test)) == line
    code, _, err = cli("info", "--dataset", f"imagefolder:{image_folder}", cache=session_store.root)
    assert code == 0 and line in err.splitlines()


# ---------------------------------------------------------------------------------------------- export
def test_export_keeps_real_names_and_maps_changed_ones(tmp_path):
    dataset = make_dataset(n=6, classes=("a b", "a_b", "ünï猫"))
    path = write_toy(tmp_path / "s", dataset, indices=[0, 1, 2, 3, 4, 5])
    images = np.zeros((6, 1, 4, 4), dtype=np.uint8)
    destination = export.export_imagefolder(subset_files.load(path), images, dataset,
                                            tmp_path / "out")
    assert export._class_folders(["a b", "a_b", "ünï猫"]) == ["a_b_0", "a_b", "ünï猫"]
    manifest = json.loads((destination / "manifest.json").read_text())
    assert manifest["class_folders"] == {"0_a_b_0": "a b", "1_a_b": "a_b", "2_ünï猫": "ünï猫"}
    assert sorted(p.name for p in (destination / "train").iterdir()) == ["0_a_b_0", "1_a_b", "2_ünï猫"]
    plain = make_dataset(n=6, classes=("cat", "dog", "eel"))
    same = export.export_imagefolder(subset_files.load(write_toy(tmp_path / "p", plain, indices=[0, 1, 2])),
                                     images, plain, tmp_path / "plain")
    assert "class_folders" not in json.loads((same / "manifest.json").read_text())


# ------------------------------------------------------------------------------------ array arguments
@pytest.mark.parametrize("shape", [(40,), (40, 3, 2)])
def test_features_of_the_wrong_rank_are_refused(shape):
    from ifbeta.influence import scores

    labels = np.arange(40) % 2
    with pytest.raises(ValueError, match=re.escape(f"features must be a 2-d array (N, d), got shape {shape}")):
        scores.score(np.ones(shape), np.zeros((40, 2)), labels)
    with pytest.raises(ValueError, match=re.escape("teacher_logits must be a 2-d array (N, C), got shape (40,)")):
        scores.score(np.ones((40, 3)), np.zeros(40), labels)


def test_fold_advice_fits_the_fold_count():
    from ifbeta.config import InfluenceConfig
    from ifbeta.influence import scores

    rng = np.random.default_rng(0)
    features, logits, labels = rng.normal(size=(1, 3)), rng.normal(size=(1, 2)), np.array([0])
    with pytest.raises(ValueError) as two:
        scores.score(features, logits, labels, config=InfluenceConfig(folds=2))
    assert str(two.value).endswith("every class has fewer than folds=2 samples; add samples")
    with pytest.raises(ValueError) as three:
        scores.score(features, logits, labels, config=InfluenceConfig(folds=3))
    assert str(three.value).endswith("add samples; or use fewer folds (folds=3, at least 2)")


@pytest.mark.parametrize("bad, row", [(0.0, 3), (1.0, 3), (1.5, 3), (np.nan, 3), (-0.2, 3)])
def test_u_outside_the_unit_interval_is_refused(bad, row):
    from ifbeta.policy import beta

    u = (np.arange(10) + 0.5) / 10
    u[row] = bad
    labels = np.arange(10) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning, no NaN weights behind it
        with pytest.raises(ValueError, match=rf"u must lie strictly inside \(0, 1\).*row {row} is"):
            beta.sample_subset(u, labels, 4, 2.0, 1.0, seed=0)
        with pytest.raises(ValueError, match=rf"row {row} is"):
            beta.policy_probabilities(u, labels, 4, 2.0, 1.0)
    assert np.array_equal(beta.sample_subset((np.arange(10) + 0.5) / 10, labels, 4, 2.0, 1.0, seed=0),
                          beta.sample_subset((np.arange(10) + 0.5) / 10, labels, 4, 2.0, 1.0, seed=0))


# -------------------------------------------------------------------------------- runs and temporaries
def test_temporary_names_are_unique_and_no_fixed_tmp_name_is_left():
    from ifbeta import atomic

    target = Path("/x/last.pt")
    first, second = atomic.temporary_sibling(target), atomic.temporary_sibling(target)
    assert first != second and first.parent == target.parent
    assert re.fullmatch(rf"\.last\.pt\.{os.getpid()}-[0-9a-f]{{8}}\.tmp", first.name)
    fixed = re.compile(r"""(\+ *["']\.tmp["']|with_suffix\(["']\.tmp["']\)|["'][\w.]+\.tmp["'])""")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "ifbeta").rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if fixed.search(line)]
    offenders += [f"pages:{n}" for path in sorted((ROOT / "pages").rglob("*.py"))
                  for n, line in enumerate(path.read_text().splitlines(), 1) if fixed.search(line)]
    assert offenders == []


def test_a_second_distill_into_the_same_out_is_refused(tmp_path, digits_teacher, session_store):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ifbeta.cli", "--cache", str(session_store.root), "distill", "--subset", "full",
               "--epochs", "500", "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             cwd=ROOT, start_new_session=True)
    try:
        while not (out / "progress.json").is_file():  # the first run is training: it holds the lock
            assert first.poll() is None, "the first run ended before its first epoch"
            time.sleep(0.2)
        code, _, err = cli("distill", "--subset", "full", "--epochs", "500", "--out", str(out),
                           cache=session_store.root)
        assert code == 2
        assert re.fullmatch(rf"ifbeta distill: error: {re.escape(str(out))} is in use by another run \(pid "
                            rf"{first.pid} on .+, started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\); wait for it to finish, or "
                            r"stop it first", error_line(err))
        assert first.poll() is None  # the running one goes on
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=60)


def test_a_file_where_a_folder_is_needed(tmp_path, session_store):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    code, _, err = cli("info", "--dataset", f"imagefolder:{file}", cache=session_store.root)
    assert code == 2 and error_line(err) == (f"ifbeta info: error: {file} is a file, not a folder; give the ImageFolder "
                                             "root (the folder holding train/ and test/)")
    code, _, err = cli("distill", "--subset", str(file), "--out", str(tmp_path / "run"), cache=session_store.root)
    assert code == 2 and error_line(err) == (f"ifbeta distill: error: {file} is a file, not a folder; give a subset "
                                             "directory written by `ifbeta prune` / `ifbeta select`, or 'full'")
    with pytest.raises(subset_files.SubsetError, match=re.escape(f"{file} is a file, not a folder; pass the subset")):
        subset_files.read_manifest(file)

import pickle

import pytest
import torch

from ifbeta.models import zoo as models


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_every_architecture_exposes_features_and_logits(arch):
    small = arch.startswith("cnn")
    model = models.build(arch, num_classes=7, in_channels=1 if small else 3).eval()
    x = torch.randn(2, 1 if small else 3, 8 if small else 32, 8 if small else 32)
    with torch.no_grad():
        phi, logits = model.forward_features(x), model(x)
    assert phi.shape == (2, model.feature_dim) and logits.shape == (2, 7)
    assert torch.allclose(model.classifier(phi), logits, atol=1e-5)


def test_cifar_resnet_sizes_match_the_literature():
    count = lambda name: sum(p.numel() for p in models.build(name, num_classes=10).parameters())  # noqa: E731
    assert count("resnet20") == 272_474 and count("resnet8") == 78_042 and count("resnet56") == 855_770


def _saved(tmp_path, arch="cnn-tiny", classes=10):
    torch.manual_seed(0)
    model = models.build(arch, num_classes=classes, in_channels=1).eval()
    path = models.save_checkpoint(model, tmp_path / "m.safetensors", arch=arch, num_classes=classes,
                                  in_channels=1, metadata={"note": "x"})
    return model, path


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    model, path = _saved(tmp_path)
    loaded, info = models.load_checkpoint(path, num_classes=10, in_channels=1)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), loaded(x)) and info.arch == "cnn-tiny" and info.metadata == {"note": "x"}
    assert len(info.sha256) == 64


def test_state_dict_and_torchscript_files_load(tmp_path):
    model, _ = _saved(tmp_path)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "sd.pt")
    loaded, _ = models.load_checkpoint(tmp_path / "sd.pt", arch="cnn-tiny", num_classes=10, in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    torch.jit.save(torch.jit.trace_module(model, {"forward": x, "forward_features": x}), tmp_path / "ts.pt")
    with pytest.raises(models.ModelError, match="TorchScript archive, which runs its own code"):
        models.load_checkpoint(tmp_path / "ts.pt", num_classes=10, in_channels=1)  # an archive is code
    scripted, _ = models.load_checkpoint(tmp_path / "ts.pt", num_classes=10, in_channels=1, trust_pickle=True)
    assert torch.allclose(scripted(x), model(x))
    assert torch.allclose(scripted.classifier(scripted.forward_features(x)), model(x))


def test_wrong_architecture_class_count_and_keys_are_refused(tmp_path):
    model, path = _saved(tmp_path)
    with pytest.raises(models.ModelError, match="holds a cnn-tiny, not a resnet8"):
        models.load_checkpoint(path, arch="resnet8")
    with pytest.raises(models.ModelError, match="predicts 10 classes but the dataset has 5"):
        models.load_checkpoint(path, num_classes=5)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(models.ModelError, match="does not fit resnet8"):
        models.load_checkpoint(tmp_path / "sd.pt", arch="resnet8", in_channels=1)
    with pytest.raises(models.ModelError, match="class count differs"):
        models.load_checkpoint(tmp_path / "sd.pt", arch="cnn-tiny", num_classes=4, in_channels=1)
    with pytest.raises(models.ModelError, match="does not record its architecture"):
        models.load_checkpoint(tmp_path / "sd.pt")


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, bytes(range(256)) * 8])
def test_garbage_and_truncated_files_are_refused(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(models.ModelError):
        models.load_checkpoint(tmp_path / "bad.pt", arch="cnn-tiny")
    _, path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(models.ModelError):
        models.load_checkpoint(path)
    with pytest.raises(models.ModelError, match="does not exist"):
        models.load_checkpoint(tmp_path / "missing.safetensors")


def test_nan_weights_are_refused(tmp_path):
    model = models.build("cnn-tiny", num_classes=10, in_channels=1)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    path = models.save_checkpoint(model, tmp_path / "nan.safetensors", arch="cnn-tiny", num_classes=10, in_channels=1)
    with pytest.raises(models.ModelError, match="NaN"):
        models.load_checkpoint(path)


class Payload:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickled_payload_never_runs_without_the_trust_flag(tmp_path):
    marker = tmp_path / "payload-ran"
    Payload.marker = marker
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    with pytest.raises(models.ModelError, match="trust-pickle"):
        models.load_checkpoint(tmp_path / "evil.pt", arch="cnn-tiny")
    assert not marker.exists()


def test_full_pickled_model_loads_only_when_trusted(tmp_path):
    model = models.build("cnn-tiny", num_classes=10, in_channels=1).eval()
    torch.save(model, tmp_path / "full.pt")
    with pytest.raises(models.ModelError, match="trust-pickle"):
        models.load_checkpoint(tmp_path / "full.pt")
    loaded, _ = models.load_checkpoint(tmp_path / "full.pt", trust_pickle=True, num_classes=10)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_no_unsafe_torch_load_in_the_package():
    import pathlib
    import re

    root = pathlib.Path(models.__file__).parent
    offenders = []
    for file in root.rglob("*.py"):
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{file.name}:{number}")
    assert offenders == []


def test_package_never_imports_streamlit():
    import pathlib
    import re

    root = pathlib.Path(models.__file__).parent
    hits = [f.name for f in root.rglob("*.py") if re.search(r"^\s*(import|from)\s+streamlit", f.read_text(), re.M)]
    assert hits == []


def test_default_teacher_epochs_per_dataset():
    from ifbeta.models import teachers

    assert teachers.default_epochs("digits") == teachers.TEACHER_EPOCHS["digits"]
    assert teachers.default_epochs("some-folder") == teachers.DEFAULT_TEACHER_EPOCHS

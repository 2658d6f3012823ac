"""Subset file: round-trip, validation, refusal, atomic writes, torch_subset."""
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ifbeta
from ifbeta.subsets import files as subset
from ifbeta.subsets.files import SubsetError
from tests.toy_subsets import make_dataset, write_toy


def test_round_trip(tmp_path):
    dataset = make_dataset()
    path = write_toy(tmp_path / "s", dataset, indices=[7, 1, 4])
    loaded = subset.load(path, dataset)
    assert loaded.indices.dtype == np.int64 and list(loaded.indices) == [1, 4, 7]
    manifest = loaded.manifest
    assert manifest["format_version"] == subset.FORMAT_VERSION == 1
    assert manifest["n"] == 12 and manifest["k"] == 3 and manifest["dataset"] == "toy"
    assert manifest["fingerprint"] == dataset.fingerprint and manifest["method"] == "if-beta"
    assert manifest["alpha"] == 2.0 and manifest["beta"] == 0.5 and manifest["seed"] == 3
    assert manifest["teacher"]["arch"] == "resnet20" and manifest["package_version"] == ifbeta.__version__
    assert manifest["extra"] == {"mu": 0.1, "trace": [1, 2]} and manifest["created"]
    samples = subset.read_samples(path)
    assert list(samples.columns) == list(subset.COLUMNS) and len(samples) == 12
    assert list(np.flatnonzero(samples["kept"])) == [1, 4, 7]
    assert samples["class_name"][4] == "dog" and samples["id"][4] == "toy/4"
    assert np.allclose(samples["score"], np.linspace(-1, 1, 12))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary left over


def test_optional_columns_are_empty(tmp_path):
    path = write_toy(tmp_path / "s", scores=None, u=None, inclusion=None, alpha=None, beta=None, teacher=None)
    samples = subset.read_samples(path)
    assert samples["score"].isna().all() and samples["u"].isna().all()
    assert subset.load(path).manifest["alpha"] is None


def test_ids_with_commas_and_quotes_survive(tmp_path):
    dataset = make_dataset()
    dataset.ids[2] = 'a,b"c\nd'
    path = write_toy(tmp_path / "s", dataset)
    assert subset.read_samples(path)["id"][2] == 'a,b"c\nd'


def test_fingerprint_refusal(tmp_path):
    path = write_toy(tmp_path / "s", make_dataset(name="digits", fingerprint="1" * 64))
    with pytest.raises(SubsetError, match=r"made for dataset 'digits'.*not 'cifar10'") as info:
        subset.load(path, make_dataset(name="cifar10", fingerprint="2" * 64))
    assert "\n" not in str(info.value)
    with pytest.raises(SubsetError, match="changed since"):
        subset.load(path, make_dataset(name="digits", fingerprint="3" * 64))
    with pytest.raises(SubsetError, match="N=13"):
        subset.load(path, make_dataset(n=13, name="digits", fingerprint="1" * 64))
    assert isinstance(SubsetError("x"), ValueError)


def test_tampered_indices_are_refused(tmp_path):
    path = write_toy(tmp_path / "s")
    np.save(path / "indices.npy", np.array([1, 4, 8], dtype=np.int64))
    with pytest.raises(SubsetError, match="sha256"):
        subset.load(path)


def rewrite_indices(path, indices):
    """Replace indices.npy and fix the manifest's sha so that only the content check can fail."""
    np.save(path / "indices.npy", np.asarray(indices))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["indices_sha256"] = subset._sha256_file(path / "indices.npy")
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("indices,message", [([1, 4, 4], "duplicated"), ([4, 1, 7], "unsorted"),
                                             ([1, 4, 12], r"\[0, 12\)"), ([-1, 4, 7], r"\[0, 12\)"),
                                             ([1.0, 2.0, 3.0], "integer"), ([1, 4], "k=3")])
def test_invalid_indices_are_refused(tmp_path, indices, message):
    path = write_toy(tmp_path / "s")
    rewrite_indices(path, indices)
    with pytest.raises(SubsetError, match=message):
        subset.load(path)


def test_write_rejects_bad_indices(tmp_path):
    with pytest.raises(SubsetError, match="duplicated"):
        write_toy(tmp_path / "s", indices=[1, 1, 2])
    with pytest.raises(SubsetError, match="lie in"):
        write_toy(tmp_path / "s", indices=[1, 99])
    with pytest.raises(SubsetError, match="empty"):
        write_toy(tmp_path / "s", indices=np.array([], dtype=np.int64))
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_version_and_missing_files(tmp_path):
    path = write_toy(tmp_path / "s")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SubsetError, match="format version 99"):
        subset.load(path)
    (path / "samples.csv").unlink()
    with pytest.raises(SubsetError, match="missing samples.csv"):
        subset.load(path)
    with pytest.raises(SubsetError, match="does not exist"):
        subset.load(tmp_path / "nowhere")
    (path / "samples.csv").write_text("x")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(SubsetError, match="not valid JSON"):
        subset.load(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(subset, "_write_samples", broken)
    with pytest.raises(OSError, match="disk full"):
        write_toy(tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_atomic_overwrite_keeps_old_subset_on_failure(tmp_path, monkeypatch):
    path = write_toy(tmp_path / "s", indices=[1, 2])
    monkeypatch.setattr(subset.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        write_toy(tmp_path / "s", indices=[5, 6, 7])
    monkeypatch.undo()
    assert list(subset.load(path).indices) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    write_toy(tmp_path / "s", indices=[5, 6, 7])  # a successful overwrite replaces it
    assert list(subset.load(path).indices) == [5, 6, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_write_refuses_to_replace_a_foreign_directory(tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(SubsetError, match="not a subset directory"):
        write_toy(foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_torch_subset(tmp_path, digits):
    train, _ = digits
    indices = np.sort(np.random.default_rng(0).choice(len(train), size=17, replace=False))
    loaded = subset.load(subset.write(tmp_path / "s", indices=indices, dataset=train, method="random", ratio=0.5, seed=0), train)
    view = subset.torch_subset(loaded, train)
    assert isinstance(view, torch.utils.data.Subset) and len(view) == 17
    for position in (0, 8, 16):
        image, label = view[position]
        i = int(indices[position])
        assert torch.equal(image, train.images[i]) and image.dtype == torch.uint8
        assert int(label) == int(train.labels[i])
    ready = torch.utils.data.TensorDataset(train.images, torch.as_tensor(train.labels))
    assert list(subset.torch_subset(loaded, ready).indices) == list(indices)
    with pytest.raises(SubsetError):
        subset.torch_subset(loaded, torch.utils.data.TensorDataset(train.images[:10], torch.zeros(10)))


@given(n=st.integers(1, 40), data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip_property(tmp_path, n, data):
    indices = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))
    scores = data.draw(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=n, max_size=n))
    dataset = make_dataset(n=n, classes=("x", "y"))
    ratio = 1 - len(indices) / n if len(indices) < n else 0.0
    path = write_toy(tmp_path / "prop", dataset, indices=list(indices), scores=scores, u=None, inclusion=None,
                     ratio=ratio)
    loaded = subset.load(path, dataset)
    assert loaded.indices.tolist() == sorted(indices) and loaded.k == len(indices) and loaded.n == n
    samples = subset.read_samples(path)
    assert np.array_equal(samples["score"].to_numpy(), np.array(scores, dtype=np.float64))
    assert samples["kept"].sum() == len(indices)

"""ifbeta export / export.export_imagefolder (modes, sanitised names, refusals, loading back) / export.zip_bytes."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifbeta import cli
from ifbeta.data import datasets as data
from ifbeta.subsets import export
from ifbeta.subsets import files as subset
from ifbeta.subsets.files import SubsetError
from tests.toy_subsets import make_dataset, write_toy


def write_subset(directory, dataset, indices):
    return subset.write(directory, indices=np.asarray(indices), dataset=dataset, method="random", ratio=0.5, seed=0)


def kept_indices(dataset, k, seed=0):
    return np.sort(np.random.default_rng(seed).choice(len(dataset), size=k, replace=False))


def test_digits_export_writes_k_pngs_per_class(tmp_path, digits, session_store):
    train, _ = digits
    indices = kept_indices(train, 25)
    path = write_subset(tmp_path / "s", train, indices)
    out = tmp_path / "out"
    code = cli.main(["--cache", str(session_store.root), "export", "--dataset", "digits", "--subset", str(path),
                     "--format", "imagefolder", "--out", str(out), "--mode", "symlink"])
    assert code == 0
    pngs = sorted((out / "train").rglob("*"))
    files = [p for p in pngs if p.is_file()]
    assert len(files) == 25 and all(p.suffix == ".png" and not p.is_symlink() for p in files)
    labels = np.asarray(train.labels)
    for c, name in enumerate(train.class_names):
        folder = out / "train" / subset.safe_name(name, fallback=f"class_{c}")
        expected = int(np.sum(labels[indices] == c))
        assert folder.is_dir() and len(list(folder.glob("*.png"))) == expected  # every class has its folder
    first = min(files, key=lambda p: p.name)
    i = int(first.name.split("_")[0])
    assert i == indices[0]
    assert np.array_equal(np.asarray(Image.open(first)), train.images[i, 0].numpy())


def test_imagefolder_symlink_export_links_originals(tmp_path, image_folder, session_store):
    name = f"imagefolder:{image_folder}"
    train = data.load(name, "train", store=session_store)
    indices = [0, 4, 7, 11, 16]
    path = write_subset(tmp_path / "s", train, indices)
    out = tmp_path / "linked"
    code = cli.main(["--cache", str(session_store.root), "export", "--dataset", name, "--subset", str(path),
                     "--out", str(out), "--mode", "symlink", "--include-pruned"])
    assert code == 0
    test = data.load(name, "test", store=session_store)
    tested = sorted((out / "test").rglob("*.png"))
    assert len(tested) == len(test) and all(link.is_symlink() for link in tested)
    assert sorted(link.resolve() for link in tested) == sorted((image_folder / i).resolve() for i in test.ids)
    links = sorted((out / "train").rglob("*.png"))
    assert len(links) == len(indices) and len(list((out / "pruned").rglob("*.png"))) == len(train) - len(indices)
    for link in links:
        assert link.is_symlink()
        i = int(link.name.split("_")[0])
        assert i in indices
        assert link.resolve() == (image_folder / train.ids[i]).resolve()
        assert link.parent.name == train.class_names[int(train.labels[i])]
    hard = export.export_imagefolder(subset.load(path, train), train.images, train, tmp_path / "hard", mode="hardlink")
    for f in (hard / "train").rglob("*.png"):
        i = int(f.name.split("_")[0])
        assert not f.is_symlink() and os.path.samefile(f, image_folder / train.ids[i])
    copied = export.export_imagefolder(subset.load(path, train), train.images, train, tmp_path / "copy",
                                       materialise_links="copy")
    for f in (copied / "train").rglob("*.png"):
        i = int(f.name.split("_")[0])
        assert not f.is_symlink() and not os.path.samefile(f, image_folder / train.ids[i])
        assert f.read_bytes() == (image_folder / train.ids[i]).read_bytes()


def test_non_empty_target_refused_without_force(tmp_path, digits, session_store):
    train, _ = digits
    path = write_subset(tmp_path / "s", train, kept_indices(train, 12))
    out = tmp_path / "busy"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    command = [sys.executable, "-m", "ifbeta.cli", "--cache", str(session_store.root), "export", "--dataset", "digits",
               "--subset", str(path), "--format", "imagefolder", "--out", str(out)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert "not empty" in lines[0] and "--force" in lines[0]
    assert not (out / "train").exists()
    accepted = subprocess.run(command + ["--force"], capture_output=True, text=True, timeout=300)
    assert accepted.returncode == 0, accepted.stderr
    assert len(list((out / "train").rglob("*.png"))) == 12
    assert (out / "thesis.tex").read_text() == "precious"
    # a second forced export replaces the previous one rather than piling files up
    smaller = write_subset(tmp_path / "s2", train, kept_indices(train, 5, seed=1))
    export.export_imagefolder(subset.load(smaller, train), train.images, train, out, force=True)
    assert len(list((out / "train").rglob("*.png"))) == 5
    with pytest.raises(SubsetError, match="not empty"):
        export.export_imagefolder(subset.load(smaller, train), train.images, train, out)


def test_bad_mode_and_missing_subset_are_one_line_errors(tmp_path, digits, session_store, capsys):
    train, _ = digits
    path = write_subset(tmp_path / "s", train, kept_indices(train, 12))
    with pytest.raises(SubsetError, match="unknown export mode"):
        export.export_imagefolder(subset.load(path, train), train.images, train, tmp_path / "o", mode="move")
    code = cli.main(["--cache", str(session_store.root), "export", "--dataset", "digits",
                     "--subset", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_malicious_class_name_cannot_escape(tmp_path, session_store):
    root = tmp_path / "folder"
    from conftest import write_image

    for c, cls in enumerate(["bad", "ok"]):
        for i in range(3):
            write_image(root / "train" / cls / f"{i}.png", seed=c * 10 + i)
            write_image(root / "test" / cls / f"{i}.png", seed=c * 10 + i + 5)
    train = data.load(f"imagefolder:{root}", "train", store=session_store)
    train.class_names = ["../../escape", "/abs"]  # as if the cached metadata were tampered with
    train.fingerprint = data.fingerprint(train.ids, train.labels)
    path = write_subset(tmp_path / "s", train, [0, 1, 3, 4])
    out = tmp_path / "a" / "out"
    for mode in (None, "symlink"):
        target = export.export_imagefolder(subset.load(path, train), train.images, train, out / str(mode), mode=mode,
                                           split_name="../..", include_pruned=True)
        written = [p for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink()]
        inside = [p for p in written if target in p.parents]
        top = sorted(p.name for p in inside if p.parent == target)
        assert top == sorted([*subset.FILES, export.CLASSES_FILE])
        images = [p for p in inside if p.parent != target]
        assert len(images) == 6
        for p in images:
            relative = p.relative_to(target)
            assert ".." not in relative.parts and len(relative.parts) == 3
            assert relative.parts[1] in ("0_escape", "1_abs")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "a" / "escape").exists()
    train.ids[0] = "../../../etc/passwd"
    train.fingerprint = data.fingerprint(train.ids, train.labels)
    path = write_subset(tmp_path / "s3", train, [0, 1])
    with pytest.raises(SubsetError, match="not a file inside"):
        export.export_imagefolder(subset.load(path, train), train.images, train, tmp_path / "x", mode="symlink")


@pytest.mark.parametrize("name", ["../..", "._..", "_.._", "..", ".", "/..", "\\..\\.."])
def test_safe_name_never_dots(name):
    cleaned = subset.safe_name(name, fallback="x")
    assert cleaned and not cleaned.startswith(".") and "/" not in cleaned


def test_export_imagefolder_sanitises_names(tmp_path):
    classes = ("../evil", "/abs", "..", "ok name")
    dataset = make_dataset(n=8, classes=classes)
    dataset.ids = ["../../x", "/etc/passwd", "..", "a/b/../c.jpg", "é", "", "n6", "n7"]
    path = write_toy(tmp_path / "s", dataset, indices=[0, 1, 2, 3, 5])
    images = torch.arange(8 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(8, 3, 4, 4)
    destination = tmp_path / "out" / "export"
    export.export_imagefolder(subset.load(path, dataset), images, dataset, destination, split_name="../train",
                              include_pruned=True)
    written = sorted(p for p in (tmp_path).rglob("*.png"))
    assert len(written) == 8
    for png in written:
        relative = png.resolve().relative_to(destination.resolve())
        assert ".." not in relative.parts and len(relative.parts) == 3
    assert {p.parent.parent.name for p in written} == {"train", "pruned"}
    # sanitised, then prefixed with the label: sorted as the ImageFolder loader sorts, they keep the label order
    assert {p.parent.name for p in written} == {"0_evil", "1_abs", "2_class_2", "3_ok_name"}
    mapping = json.loads((destination / export.CLASSES_FILE).read_text())["classes"]
    assert [(c["label"], c["folder"], c["name"]) for c in mapping] == [
        (0, "0_evil", "../evil"), (1, "1_abs", "/abs"), (2, "2_class_2", ".."), (3, "3_ok_name", "ok name")]
    kept = sorted((destination / "train").rglob("*.png"))
    assert len(kept) == 5
    first = next(p for p in kept if p.name.startswith("0000000_"))
    assert np.array_equal(np.asarray(Image.open(first)), images[0].permute(1, 2, 0).numpy())


def test_export_greyscale_numpy_and_refusal(tmp_path):
    dataset = make_dataset(n=6)
    path = write_toy(tmp_path / "s", dataset, indices=[0, 5])
    images = np.random.default_rng(0).integers(0, 256, size=(6, 1, 5, 5), dtype=np.uint8)
    destination = export.export_imagefolder(subset.load(path), images, dataset, tmp_path / "out")
    pngs = sorted(destination.rglob("*.png"), key=lambda p: p.name)
    assert len(pngs) == 2 and np.array_equal(np.asarray(Image.open(pngs[0])), images[0, 0])
    with pytest.raises(SubsetError, match="made for dataset"):
        export.export_imagefolder(subset.load(path), images, make_dataset(n=6, name="other", fingerprint="9" * 64),
                                  tmp_path / "out2")


def test_class_folders_stay_distinct():
    # a name that is already a safe folder name keeps it; the sanitised one that collides takes its label
    assert export._class_folders(["a/b", "a_b", "A_B"]) == ["a_b_0", "a_b", "A_B_2"]


def test_loader_folders_sort_in_label_order():
    assert export.loader_folders([str(c) for c in range(10)]) == [str(c) for c in range(10)]
    assert export.loader_folders(["airplane", "automobile", "bird"]) == ["airplane", "automobile", "bird"]
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    folders = export.loader_folders(fashion)
    assert folders[:2] == ["0_T-shirt_top", "1_Trouser"] and sorted(folders) == folders
    twelve = export.loader_folders([f"c{11 - i}" for i in range(12)])
    assert twelve[0] == "00_c11" and sorted(twelve) == twelve


def test_digits_export_loads_back_as_imagefolder(tmp_path, digits, session_store):
    train, test = digits
    indices = kept_indices(train, 300, seed=4)
    path = write_subset(tmp_path / "s", train, indices)
    out = export.export_imagefolder(subset.load(path, train), train.images, train, tmp_path / "out", test=test,
                                    include_pruned=True)
    back_train = data.load(f"imagefolder:{out}", "train", store=session_store)
    back_test = data.load(f"imagefolder:{out}", "test", store=session_store)
    assert back_train.class_names == train.class_names == back_test.class_names
    # exactly the kept samples, each once, pixel for pixel, with their labels (file names start with the index)
    source = np.asarray([int(Path(i).name.split("_")[0]) for i in back_train.ids])
    assert len(back_train) == len(indices) and sorted(source.tolist()) == indices.tolist()
    assert np.array_equal(back_train.labels, np.asarray(train.labels)[source])
    assert torch.equal(back_train.images, train.images[torch.from_numpy(source)])
    assert np.array_equal(back_train.class_counts(), np.bincount(train.labels[indices], minlength=10))
    # the test split complete and untouched
    source = np.asarray([int(Path(i).name.split("_")[0]) for i in back_test.ids])
    assert len(back_test) == len(test) and sorted(source.tolist()) == list(range(len(test)))
    assert np.array_equal(back_test.class_counts(), test.class_counts())
    assert np.array_equal(back_test.labels, test.labels[source])
    assert torch.equal(back_test.images, test.images[torch.from_numpy(source)])
    # the subset file sits beside the splits and still applies to the original dataset
    assert subset.load(out, train).indices.tolist() == indices.tolist()
    counts = json.loads((out / export.CLASSES_FILE).read_text())["samples"]
    assert counts == {"train": 300, "pruned": len(train) - 300, "test": len(test)}


def test_export_keeps_label_order_of_unsorted_class_names(tmp_path, session_store):
    rng = np.random.default_rng(0)
    classes = ["zebra", "Ant", "mole/rat"]  # sorted folder names would give another label order

    def split(name, n):
        labels = np.arange(n) % 3
        return data.DatasetSplit("toy", name, torch.from_numpy(rng.integers(0, 256, (n, 3, 6, 6), dtype=np.uint8)),
                                 labels, [f"toy/{name}/{i}" for i in range(n)], list(classes))

    train, test = split("train", 9), split("test", 6)
    path = write_subset(tmp_path / "s", train, [0, 2, 4, 8])  # no "Ant" (label 1) kept but 4
    out = export.export_imagefolder(subset.load(path, train), train.images, train, tmp_path / "out", test=test)
    back_train = data.load(f"imagefolder:{out}", "train", store=session_store)
    back_test = data.load(f"imagefolder:{out}", "test", store=session_store)
    assert back_train.class_names == ["0_zebra", "1_Ant", "2_mole_rat"] == back_test.class_names
    # the loader reads class by class: zebra (0), Ant (4), mole/rat (2, 8)
    assert back_train.labels.tolist() == [0, 1, 2, 2] and torch.equal(back_train.images, train.images[[0, 4, 2, 8]])
    order = [0, 3, 1, 4, 2, 5]
    assert back_test.labels.tolist() == test.labels[order].tolist() and torch.equal(back_test.images, test.images[order])
    mapping = json.loads((out / export.CLASSES_FILE).read_text())["classes"]
    assert [c["name"] for c in mapping] == classes


def test_split_name_clashing_with_test_or_pruned_is_refused(tmp_path, digits):
    train, test = digits
    path = write_subset(tmp_path / "s", train, kept_indices(train, 5))
    for name in ("test", "Pruned"):
        with pytest.raises(SubsetError, match="clashes"):
            export.export_imagefolder(subset.load(path, train), train.images, train, tmp_path / "o", test=test,
                                      split_name=name)
    with pytest.raises(SubsetError, match="holds the subset"):
        export.export_imagefolder(subset.load(path, train), train.images, train, path, force=True)
    assert subset.load(path, train).k == 5  # the subset was not touched


def test_zip_bytes(tmp_path):
    path = write_toy(tmp_path / "my subset")
    with zipfile.ZipFile(io.BytesIO(export.zip_bytes(path))) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(f"my_subset/{name}" for name in subset.FILES)
        assert np.load(io.BytesIO(archive.read("my_subset/indices.npy"))).tolist() == [1, 4, 7]

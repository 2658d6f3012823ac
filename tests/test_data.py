import numpy as np
import pytest
import torch

from ifbeta.data import datasets as data
from ifbeta.store import Store
from tests.conftest import write_image


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.images.shape == (1347, 1, 8, 8) and train.images.dtype.is_floating_point is False
    assert not set(train.ids) & set(test.ids)
    fractions = train.class_counts() / (train.class_counts() + test.class_counts())
    assert np.allclose(fractions, 0.75, atol=0.02)
    again = data.load("digits", "train")
    assert again.fingerprint == train.fingerprint and len(set(train.ids)) == len(train)


def test_fingerprint_changes_with_labels_or_order():
    ids, labels = ["a", "b", "c"], np.array([0, 1, 2])
    base = data.fingerprint(ids, labels)
    assert data.fingerprint(ids, np.array([0, 1, 1])) != base
    assert data.fingerprint(["b", "a", "c"], labels) != base
    assert data.fingerprint(list(ids), labels.copy()) == base


def test_imagefolder_decodes_once_and_keeps_relative_ids(image_folder, tmp_path):
    store = Store(tmp_path / "cache")
    train = data.load(f"imagefolder:{image_folder}", "train", store=store)
    assert train.images.shape == (18, 3, 12, 12) and train.class_names == ["cat", "dog", "eel"]
    assert train.ids[0] == "train/cat/000.png" and np.bincount(train.labels).tolist() == [6, 6, 6]
    assert len(store.entries("datasets")) == 1
    again = data.load(f"imagefolder:{image_folder}", "train", store=store)
    assert again.fingerprint == train.fingerprint and len(store.entries("datasets")) == 1
    assert np.array_equal(again.images.numpy(), train.images.numpy())


def test_cached_images_are_mapped_copy_on_write(image_folder, tmp_path):
    store = Store(tmp_path / "cache")
    data.load(f"imagefolder:{image_folder}", "train", store=store)
    train = data.load(f"imagefolder:{image_folder}", "train", store=store)
    stored = np.load(next((tmp_path / "cache" / "datasets").glob("*/images.npy")))
    train.images[0] = 0  # writable in memory ...
    assert np.array_equal(np.load(next((tmp_path / "cache" / "datasets").glob("*/images.npy"))), stored)  # ... not on disk
    assert np.array_equal(data.load(f"imagefolder:{image_folder}", "train", store=store).images.numpy(), stored)


def test_source_signature_matches_the_sorted_rglob_it_replaced(tmp_path):
    """The scandir walk must give the old hash (else every decoded ImageFolder is decoded again)."""
    import hashlib
    import os

    def reference(folder):
        stat = [(str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime))
                for p in sorted(folder.rglob("*")) if p.is_file()] if folder.is_dir() else []
        return {"files": hashlib.sha256(repr(stat).encode()).hexdigest()}

    folder = tmp_path / "set" / "train"
    for name in ["a/1.png", "a/10.png", "a/2.png", "a b/x.png", "a-b/y.png", "A/z.png", ".hidden/q.png", "a/.dot",
                 "b/c/d/e.png", "ab/1.png", "a.png"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x" * len(name))
    os.symlink(folder / "a", folder / "linked-folder")  # not entered, as rglob does not
    os.symlink(folder / "a" / "1.png", folder / "b" / "linked.png")  # a file through a link counts
    os.symlink(folder / "missing", folder / "b" / "broken.png")
    (folder / "empty").mkdir()
    for split in ("train", "test"):  # test/ does not exist
        assert data._source_signature(f"imagefolder:{tmp_path / 'set'}", split) == reference(tmp_path / "set" / split)


def test_mixed_sizes_and_grey_rgb_are_normalised(image_folder, tmp_path):
    write_image(image_folder / "train" / "cat" / "big.png", size=(20, 16), mode="RGB")
    write_image(image_folder / "train" / "dog" / "grey.png", size=(12, 12), mode="L")
    train = data.load(f"imagefolder:{image_folder}", "train", store=Store(tmp_path / "c"))
    assert train.images.shape == (20, 3, 12, 12)  # resized to the most common size, grey -> RGB


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", b"not an image at all"])
def test_corrupt_images_are_listed_or_skipped_with_a_report(image_folder, tmp_path, content):
    bad = image_folder / "train" / "dog" / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(data.DatasetError, match="broken.png"):
        data.load(f"imagefolder:{image_folder}", "train", store=Store(tmp_path / "c1"))
    loaded = data.load(f"imagefolder:{image_folder}", "train", store=Store(tmp_path / "c2"), skip_corrupt=True)
    assert len(loaded) == 18 and loaded.skipped == [str(bad)]


def test_truncated_jpeg_is_reported(image_folder, tmp_path):
    from PIL import Image

    path = image_folder / "train" / "eel" / "cut.jpg"
    Image.new("RGB", (12, 12), (200, 10, 10)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(data.DatasetError, match="cut.jpg"):
        data.load(f"imagefolder:{image_folder}", "train", store=Store(tmp_path / "c"))


def test_bad_folders_give_actionable_errors(tmp_path):
    with pytest.raises(data.DatasetError, match="does not exist"):
        data.load(f"imagefolder:{tmp_path / 'nothing'}", store=Store(tmp_path / "c"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(data.DatasetError, match="no class sub-folders"):
        data.load(f"imagefolder:{tmp_path / 'empty'}", store=Store(tmp_path / "c"))
    write_image(tmp_path / "nosplit" / "train" / "a" / "0.png")
    with pytest.raises(data.DatasetError, match="missing split folder"):
        data.load(f"imagefolder:{tmp_path / 'nosplit'}", "test", store=Store(tmp_path / "c"))
    with pytest.raises(data.DatasetError, match="unknown dataset"):
        data.load("imagenet-21k")


def test_torchvision_dataset_offline_names_the_folder(tmp_path):
    with pytest.raises(data.DatasetError, match="cifar-100-python"):
        data.load("cifar100", store=Store(tmp_path / "c"))


def test_stratified_pool_is_fixed_and_balanced():
    labels = np.repeat(np.arange(4), 50)
    pool = data.stratified_pool(labels, 40, seed=0)
    assert np.array_equal(pool, data.stratified_pool(labels, 40, seed=0))
    assert np.bincount(labels[pool]).tolist() == [10, 10, 10, 10] and np.all(np.diff(pool) > 0)


def test_channel_statistics_floor_a_constant_channel():
    images = torch.zeros(4, 2, 3, 3, dtype=torch.uint8)
    images[:, 1] = torch.arange(4, dtype=torch.uint8).view(4, 1, 1) * 60  # channel 1 varies
    images[:, 0] = 128  # channel 0 is constant
    mean, std = data.channel_statistics(images)
    assert mean[0] == pytest.approx(128 / 255, rel=1e-6) and std[0] == pytest.approx(data.MIN_CHANNEL_STD, rel=1e-6)
    expected = (torch.arange(4.0).repeat_interleave(9) * 60 / 255).std().item()
    assert mean[1] == pytest.approx(90 / 255, rel=1e-6) and std[1] == pytest.approx(expected, rel=1e-6)

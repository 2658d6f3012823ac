"""Dataset registry, stable sample ids, fingerprints and the decoded uint8 tensor cache.

Every split is held as one uint8 tensor ``images`` (N, C, H, W) plus ``labels`` (N,) int64, so
training and feature extraction index memory and never decode an image twice. Registry names:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 1 channel), the embedded default,
  with a fixed stratified 75/25 train/test split (seed 0).
- ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``: torchvision datasets under
  ``<cache>/downloads`` (downloaded when online; offline a clear message names the folder).
- ``imagefolder:<path>``: ``<path>/train/<class>/*`` and ``<path>/test/<class>/*``.

ImageFolder transform (documented behaviour): every image is converted to RGB if any image in the
split is colour, otherwise to greyscale; images whose size differs from the most common size of
the train split are resized to it with bilinear filtering (or to ``image_size`` when given).
Unreadable images raise ``DatasetError`` listing the files, unless ``skip_corrupt=True``, which
drops them and reports every skipped path in ``DatasetSplit.skipped``. Class folders whose names
start with '.' (``.git``, ``.ipynb_checkpoints``) are not classes: they are not read, and
``DatasetSplit.hidden`` names each with its file count (``hidden_warning``: the line both faces show).
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ifbeta.errors import DatasetError  # noqa: F401  (raised here; its home is errors.py)
from ifbeta.store import Store

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLITS = ("train", "test")



@dataclass
class DatasetSplit:
    """One split of a dataset, decoded. images: (N, C, H, W) uint8; labels: (N,) int64."""

    name: str
    split: str
    images: torch.Tensor
    labels: np.ndarray
    ids: list[str]
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)
    fingerprint: str = ""
    hidden: list[str] = field(default_factory=list)  # "<split>/.<name> (n files)": hidden class folders not read

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.ids, self.labels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def class_counts(self) -> np.ndarray:
        """(C,) number of samples per class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices: np.ndarray, split: str | None = None) -> "DatasetSplit":
        """A new split holding only ``indices`` (ids keep their original values)."""
        indices = np.asarray(indices, dtype=np.int64)
        return DatasetSplit(self.name, split or self.split, self.images[torch.from_numpy(indices)],
                            self.labels[indices], [self.ids[i] for i in indices], self.class_names,
                            hidden=list(self.hidden))


def fingerprint(ids: list[str], labels: np.ndarray) -> str:
    """sha256 over the ordered (id, label) pairs; identifies a split's content and order."""
    digest = hashlib.sha256()
    for sample_id, label in zip(ids, np.asarray(labels).tolist()):
        digest.update(f"{sample_id}\t{label}\n".encode())
    return digest.hexdigest()


MIN_CHANNEL_STD = 1e-3  # floor of a channel's std (in [0, 1] units): a constant channel normalises to 0, not inf


def channel_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of uint8 images (N, C, H, W) in [0, 1] units: C floats each; the std
    (sample std, N - 1) is floored at ``MIN_CHANNEL_STD``. The one normalisation rule of teachers,
    students and the training-based selection methods."""
    x = images.float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(MIN_CHANNEL_STD)
    return mean.tolist(), std.tolist()


# ---------------------------------------------------------------------------------- digits
def _load_digits(split: str, **_: object) -> DatasetSplit:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    index = np.arange(len(pixels))
    train, test = train_test_split(index, test_size=0.25, random_state=0, stratify=bunch.target)
    chosen = np.sort(train if split == "train" else test)
    images = torch.from_numpy(pixels[chosen][:, None])  # (N, 1, 8, 8)
    ids = [f"digits/{i}" for i in chosen]
    return DatasetSplit("digits", split, images, bunch.target[chosen].astype(np.int64), ids,
                        [str(c) for c in range(10)])


# ------------------------------------------------------------------------------ torchvision
_TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw"),
}


def _load_torchvision(name: str, split: str, *, root: Path, **_: object) -> DatasetSplit:
    import torchvision

    class_name, folder = _TORCHVISION[name]
    constructor = getattr(torchvision.datasets, class_name)
    train = split == "train"
    try:
        dataset = constructor(str(root), train=train, download=False)
    except RuntimeError:
        try:
            dataset = constructor(str(root), train=train, download=True)
        except Exception as error:  # offline: any network error
            raise DatasetError(
                f"{name} is not on disk and cannot be downloaded ({type(error).__name__}); put the "
                f"torchvision files into {root / folder} or use imagefolder:<path>") from None
    data = dataset.data
    array = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    images = torch.from_numpy(array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)).contiguous()
    labels = np.asarray(dataset.targets, dtype=np.int64)
    ids = [f"{name}/{split}/{i}" for i in range(len(labels))]
    return DatasetSplit(name, split, images, labels, ids, list(dataset.classes))


# ------------------------------------------------------------------------------ imagefolder
def _scan(directory: Path, class_names: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    if directory.is_file():
        raise DatasetError(f"{directory} is a file, not a folder; an ImageFolder needs train/ and test/ folders "
                           "with one sub-folder per class")
    if not directory.is_dir():
        raise DatasetError(f"missing split folder {directory}: an ImageFolder needs train/ and test/ "
                           "folders with one sub-folder per class")
    found = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DatasetError(f"{directory} has no class sub-folders: put images into {directory}/<class>/")
    names = class_names or found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise DatasetError(f"{directory} has classes not in train/: {', '.join(unknown[:5])}")
    paths, labels = [], []
    for label, name in enumerate(names):
        folder = directory / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                paths.append(path)
                labels.append(label)
    if not paths:
        raise DatasetError(f"{directory} holds no files in its class folders")
    return paths, labels, names


def _decode(args: tuple[str, str | None, tuple[int, int] | None]) -> np.ndarray | str:
    """Decode one file into (H, W, C) uint8, or return an error message."""
    from PIL import Image

    path, mode, size = args
    try:
        with Image.open(path) as image:
            image.load()
            if mode is None:
                return image.mode + "|" + f"{image.size[0]}x{image.size[1]}"
            image = image.convert(mode)
            if size is not None and image.size != size:
                image = image.resize(size, Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
            return array[:, :, None] if array.ndim == 2 else array
    except Exception as error:  # PIL raises many types for bad files
        return f"ERROR:{type(error).__name__}: {error}"


def _map(function, items, workers: int):
    if workers <= 1 or len(items) < 2000:
        return [function(item) for item in items]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(function, items, chunksize=512))


def _load_imagefolder(name: str, split: str, *, skip_corrupt: bool = False,
                      image_size: int | None = None, workers: int | None = None, **_: object) -> DatasetSplit:
    root = Path(name.split(":", 1)[1]).expanduser()
    if root.is_file():
        raise DatasetError(f"{root} is a file, not a folder; give the ImageFolder root (the folder holding train/ "
                           "and test/)")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    _, _, class_names = _scan(root / "train", None)
    paths, labels, _ = _scan(root / split, class_names)
    workers = workers or min(os.cpu_count() or 1, 8)
    probes = _map(_decode, [(str(p), None, None) for p in paths], workers)
    bad = [(p, r[6:]) for p, r in zip(paths, probes) if r.startswith("ERROR:")]
    if bad and not skip_corrupt:
        listed = "; ".join(f"{p} ({why})" for p, why in bad[:10])
        raise DatasetError(f"{len(bad)} unreadable image(s) in {root / split}: {listed}"
                           f"{' ...' if len(bad) > 10 else ''}", fix="skip_corrupt")
    good = [i for i, r in enumerate(probes) if not r.startswith("ERROR:")]
    modes = Counter(probes[i].split("|")[0] for i in good)
    mode = "L" if set(modes) <= {"L", "1", "I", "I;16", "F"} else "RGB"
    sizes = Counter(probes[i].split("|")[1] for i in good)
    width, height = (image_size, image_size) if image_size else map(int, sizes.most_common(1)[0][0].split("x"))
    arrays = _map(_decode, [(str(paths[i]), mode, (width, height)) for i in good], workers)
    failed = [paths[good[j]] for j, a in enumerate(arrays) if isinstance(a, str)]
    if failed and not skip_corrupt:
        raise DatasetError(f"{len(failed)} image(s) failed to decode: {', '.join(map(str, failed[:10]))}")
    keep = [j for j, a in enumerate(arrays) if not isinstance(a, str)]
    stacked = np.stack([arrays[j] for j in keep]).transpose(0, 3, 1, 2)  # (N, C, H, W)
    kept_paths = [paths[good[j]] for j in keep]
    skipped = [str(p) for p, _ in bad] + [str(p) for p in failed]
    ids = [str(p.relative_to(root)) for p in kept_paths]
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s", len(skipped), root / split)
    return DatasetSplit(f"imagefolder:{root}", split, torch.from_numpy(np.ascontiguousarray(stacked)),
                        np.asarray([labels[good[j]] for j in keep], dtype=np.int64), ids, class_names, skipped)


DATASETS = {
    "digits": ("scikit-learn's bundled 8x8 digits: 1,347 train / 450 test, offline, seconds", _load_digits),
    "cifar10": ("CIFAR-10 through torchvision (download when online)", lambda s, **k: _load_torchvision("cifar10", s, **k)),
    "cifar100": ("CIFAR-100 through torchvision (download when online)", lambda s, **k: _load_torchvision("cifar100", s, **k)),
    "mnist": ("MNIST through torchvision (download when online)", lambda s, **k: _load_torchvision("mnist", s, **k)),
    "fashion-mnist": ("Fashion-MNIST through torchvision (download when online)",
                      lambda s, **k: _load_torchvision("fashion-mnist", s, **k)),
    "imagefolder": ("imagefolder:<path> with <path>/train/<class>/* and <path>/test/<class>/*", None),
}


def _source_signature(name: str, split: str) -> dict:
    """What identifies the on-disk source, so that a changed folder gives a new cache key: a hash of
    (relative path, size, mtime) of every file, in path order (symlinked folders are not entered).

    Runs on every load (a cached split is only reused if its folder is unchanged), so it walks with
    os.scandir and one stat per file: CIFAR-10's 50,000 files take ~0.25 s instead of 1.3-2 s with
    Path.rglob, and the hash is the one ``sorted(folder.rglob("*"))`` gave (cache keys stay valid)."""
    if not name.startswith("imagefolder:"):
        return {}
    folder = Path(name.split(":", 1)[1]) / split
    stat: list[tuple[str, int, int]] = []
    if folder.is_dir():
        _walk_files(str(folder), "", stat)
    return {"files": hashlib.sha256(repr(stat).encode()).hexdigest()}


def _walk_files(directory: str, prefix: str, out: list) -> None:
    """Append ("a/b.jpg", size, int mtime) of every file under ``directory`` to ``out``, depth first with
    each folder's entries sorted by name (the order of sorted(Path.rglob(...))); like Path.rglob, skips
    folders it may not read and does not enter symlinked folders."""
    try:
        with os.scandir(directory) as iterator:
            entries = sorted(iterator, key=lambda entry: entry.name)
    except PermissionError:
        return
    for entry in entries:
        try:
            if entry.is_dir() and not entry.is_symlink():
                _walk_files(entry.path, f"{prefix}{entry.name}/", out)
            elif entry.is_file():
                status = entry.stat()
                out.append((prefix + entry.name, status.st_size, int(status.st_mtime)))
        except OSError:  # vanished or a broken link: Path.is_file() is False for it too
            continue


def canonical_name(name: str) -> str:
    if name.startswith("imagefolder:"):
        path = Path(name.split(":", 1)[1]).expanduser()
        return f"imagefolder:{path.resolve()}"
    if name not in DATASETS or name == "imagefolder":
        known = ", ".join(k for k in DATASETS if k != "imagefolder")
        raise DatasetError(f"unknown dataset {name!r}; choose one of {known}, or imagefolder:<path>")
    return name


def load(name: str, split: str = "train", *, store: Store | None = None, skip_corrupt: bool = False,
         image_size: int | None = None) -> DatasetSplit:
    """Load a split, decoding it once into ``<cache>/datasets/<key>/`` and reusing it afterwards."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use train or test")
    name = canonical_name(name)
    if name == "digits":
        return _load_digits(split)
    store = store or Store.default()
    config = {"name": name, "split": split, "skip_corrupt": skip_corrupt, "image_size": image_size,
              "source": _source_signature(name, split)}

    def compute():
        if name.startswith("imagefolder:"):
            loaded = _load_imagefolder(name, split, skip_corrupt=skip_corrupt, image_size=image_size)
        else:
            loaded = DATASETS[name][1](split, root=store.root / "downloads")
        meta = {"ids": loaded.ids, "class_names": loaded.class_names, "skipped": loaded.skipped,
                "fingerprint": loaded.fingerprint}
        return {"images": loaded.images.numpy(), "labels": loaded.labels}, meta

    # images copy-on-write mapped: a page showing 40 thumbnails reads only those (the OS caches the file)
    arrays, meta, _ = store.get_or_compute("datasets", config, [], compute, mmap="c")
    return DatasetSplit(name, split, torch.from_numpy(arrays["images"]), np.array(arrays["labels"]),
                        list(meta["ids"]), list(meta["class_names"]), list(meta["skipped"]), meta["fingerprint"],
                        hidden_class_folders(name, split))


def hidden_class_folders(name: str, split: str) -> list[str]:
    """The class folders of an ``imagefolder:<root>`` split that are not read because their names start
    with '.' (``.git``, ``.ipynb_checkpoints``, ``.hidden``), each as "<split>/<folder> (<n> files)";
    [] for every other dataset. A warning names them, so no image is dropped without a word."""
    if not name.startswith("imagefolder:"):
        return []
    directory = Path(name.split(":", 1)[1]) / split
    if not directory.is_dir():
        return []
    hidden = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(".")):
        files = sum(1 for path in folder.rglob("*") if path.is_file())
        hidden.append(f"{split}/{folder.name} ({files} file{'s' if files != 1 else ''})")
    if hidden:
        log.warning("not read: hidden class folder(s) %s in %s", ", ".join(hidden), directory.parent)
    return hidden


def hidden_warning(splits) -> str | None:
    """One line naming the hidden class folders of ``splits`` that were not read, or None."""
    hidden = [entry for split in splits for entry in split.hidden]
    if not hidden:
        return None
    return (f"not read: {len(hidden)} hidden class folder(s) (names starting with '.'): {', '.join(hidden[:5])}"
            f"{' ...' if len(hidden) > 5 else ''}; rename them without the leading '.' to use them as classes")


def stratified_pool(labels: np.ndarray, size: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of a fixed class-stratified subset of ``size`` samples (e.g. the 10k CIFAR pool).
    A ``size`` below 1 or below the class count is a ``DatasetError``."""
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(labels))
    if size < 1:
        raise DatasetError(f"the pool size must be positive, got {size} (0 or none: the whole training split)")
    if size < classes and size < len(labels):
        raise DatasetError(f"a pool of {size} samples is smaller than the {classes} classes; use at least "
                           f"{classes} (or the whole training split)")
    if size >= len(labels):
        return np.arange(len(labels))
    chosen, _ = train_test_split(np.arange(len(labels)), train_size=size, random_state=seed, stratify=labels)
    return np.sort(chosen)

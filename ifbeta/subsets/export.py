"""Exporting a subset: the kept images as an ImageFolder tree, or the subset's three files as a zip.

``export_imagefolder`` writes a folder that loads back as ``imagefolder:<destination>``::

    destination/train/<class>/<index>_<id>.<ext>   the kept training samples, each once
    destination/test/<class>/...                   the whole test split, untouched (when given)
    destination/pruned/<class>/...                 the pruned samples (only with include_pruned)
    destination/indices.npy, samples.csv, manifest.json   the subset file itself (files.FILES)
    destination/classes.json                       label -> class folder -> original class name

When any folder name differs from its class name (sanitised, made distinct, prefixed), the copied
manifest.json also records ``class_folders``: folder -> original class name, for every class.

Images are PNGs decoded from the arrays, or the original files of an ImageFolder dataset copied /
linked. Every class gets a folder in every split (empty when no sample of it is kept), so the
loader's sorted folder list is the dataset's class list; when the sanitised names would not sort
in label order they are prefixed with the label ("3_Dress"). Nothing is written outside
``destination``: class names, ids and the split name become single safe path components, and a
linked folder leading out of the destination is refused. ``zip_bytes`` archives a subset directory
(files.FILES) for download. The subset format itself is files.py.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ifbeta.errors import SubsetError
from ifbeta.store import safe_name
from ifbeta.subsets.files import FILES, Subset, check_dataset, read_manifest

__all__ = ["CLASSES_FILE", "EXPORT_MODES", "export_imagefolder", "loader_folders", "zip_bytes"]

EXPORT_MODES = ("copy", "symlink", "hardlink")
CLASSES_FILE = "classes.json"
_RESERVED = ("test", "pruned")  # split folders the export writes besides the kept one
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


_FOLDER_UNSAFE = re.compile(r"[^\w.-]+")  # \w is Unicode: letters and digits of every script stay


def _folder_name(name: str, index: int) -> str:
    """One safe path component for a class name: runs of anything but letters, digits, '.', '-', '_'
    become '_', no leading dots; never empty ("class_<index>")."""
    cleaned = _FOLDER_UNSAFE.sub("_", str(name)).lstrip("._")[:100].rstrip("_")
    return cleaned or f"class_{index}"


def _class_folders(class_names: list[str]) -> list[str]:
    """Distinct folder names (case-insensitively), one per class. A class whose name is already a safe
    folder name keeps it; a sanitised name that collides gets the label appended ("a_b_0")."""
    wanted = [_folder_name(name, index) for index, name in enumerate(class_names)]
    exact: dict[str, int] = {}
    for index, (name, folder) in enumerate(zip(class_names, wanted)):
        if folder == name:
            exact.setdefault(folder.lower(), index)
    folders: list[str] = []
    used: set[str] = set()
    for index, folder in enumerate(wanted):
        candidate, extra = folder, 0
        while candidate.lower() in used or exact.get(candidate.lower(), index) != index:
            candidate = f"{folder}_{index}" if extra == 0 else f"{folder}_{index}_{extra}"
            extra += 1
        used.add(candidate.lower())
        folders.append(candidate)
    return folders


def loader_folders(class_names: list[str]) -> list[str]:
    """Class folder names, one per label, that the ImageFolder loader (which sorts the folder names)
    reads back in label order: the sanitised names, prefixed with the zero-padded label when they
    would not sort that way."""
    folders = _class_folders(class_names)
    if folders == sorted(folders):
        return folders
    width = len(str(len(folders) - 1))
    return [f"{label:0{width}d}_{folder}" for label, folder in enumerate(folders)]


def _to_pil(image: np.ndarray):
    from PIL import Image

    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"images must be (N, C, H, W) with C in (1, 3, 4), got one of shape {image.shape}")
    if image.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(image[0]))
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))


def _within(destination: Path, path: Path) -> bool:
    """``path`` (not followed if it is a link) lies strictly inside ``destination`` (both resolved)."""
    return destination in (path.parent.resolve() / path.name).parents


def _prepare_destination(destination: Path, names: list[str], force: bool) -> None:
    if destination.exists() and not destination.is_dir():
        raise SubsetError(f"export destination {destination} exists and is not a folder; choose a new or empty folder")
    if destination.is_dir() and any(destination.iterdir()):
        if not force:
            raise SubsetError(f"export destination {destination} is not empty", fix="force")
        for name in names:  # only the folders and files this export writes; anything else there is left alone
            target = destination / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)


def _source_files(dataset: Any) -> Path | None:
    """The ImageFolder root when the dataset's ids are file paths inside it, else None."""
    name = str(getattr(dataset, "name", ""))
    if not name.startswith("imagefolder:"):
        return None
    root = Path(name.split(":", 1)[1]).expanduser()
    return root.resolve() if root.is_dir() else None


def _materialise(source: Path, path: Path, mode: str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    if mode == "symlink":
        os.symlink(source, path)
    elif mode == "hardlink":
        os.link(source, path)
    else:
        shutil.copy2(source, path)


def _export_mode(mode: str | None, materialise_links: str | None) -> str | None:
    """The one export mode given (``mode`` or its alias ``materialise_links``), checked; None = PNGs."""
    if mode is not None and materialise_links is not None and mode != materialise_links:
        raise SubsetError(f"mode={mode!r} and materialise_links={materialise_links!r} disagree; pass one of them")
    mode = mode if mode is not None else materialise_links
    if mode is not None and mode not in EXPORT_MODES:
        raise SubsetError(f"unknown export mode {mode!r}; choose one of {', '.join(EXPORT_MODES)}")
    return mode


def _image_array(images: Any, n: int) -> np.ndarray:
    """``images`` (torch tensor or array) as an (n, C, H, W) uint8 numpy array, or a ValueError."""
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or len(array) != n:
        raise ValueError(f"images must be (N={n}, C, H, W) uint8, got {array.dtype} {array.shape}")
    return array


def _export_parts(subset: Subset, train: Any, test: Any, split_name: str,
                  include_pruned: bool) -> list[tuple[str, Any, np.ndarray]]:
    """[(split folder, dataset split, sample indices)]: the kept samples, the pruned ones when asked
    for, then the whole test split when given."""
    folder = safe_name(split_name, fallback="train")
    if folder.lower() in _RESERVED:
        raise SubsetError(f"split name {split_name!r} clashes with the {folder}/ folder the export writes; "
                          "choose another (the default train loads back as imagefolder:<out>)")
    kept = np.zeros(len(train.ids), dtype=bool)
    kept[subset.indices] = True
    parts = [(folder, train, np.flatnonzero(kept))]
    if include_pruned:
        parts.append(("pruned", train, np.flatnonzero(~kept)))
    if test is not None:
        if list(test.class_names) != list(train.class_names):
            raise SubsetError("the test split's classes differ from the training split's; load both from one dataset")
        parts.append(("test", test, np.arange(len(test.ids))))
    return parts


def _file_name(i: int, sample_id: str, root: Path | None) -> tuple[Path | None, str]:
    """(original file or None, exported file name) of sample ``i``; the original must lie inside ``root``."""
    if root is None:
        return None, f"{i:07d}_{safe_name(sample_id, fallback='sample', max_length=80)}.png"
    source = (root / sample_id).resolve()
    if root not in source.parents or not source.is_file():
        raise SubsetError(f"sample id {sample_id!r} is not a file inside {root}; reload the dataset")
    suffix = source.suffix if _SUFFIX.match(source.suffix) else ""
    stem = safe_name(Path(sample_id).with_suffix('').as_posix(), fallback='sample', max_length=80)
    return source, f"{i:07d}_{stem}{suffix}"


def _make_folder(destination: Path, folder: Path) -> None:
    """Create ``folder``, refused unless it lies strictly inside ``destination`` (no linked folder leading out)."""
    if not _within(destination, folder):
        raise SubsetError(f"refusing to write {folder} outside {destination}")
    folder.mkdir(parents=True, exist_ok=True)
    if destination not in folder.resolve().parents:
        raise SubsetError(f"refusing to write {folder} outside {destination}")


def _target_path(destination: Path, folder: Path, name: str) -> Path:
    """``folder / name``, its folder created, refused unless it lies inside ``destination``."""
    path = folder / name
    if destination not in Path(os.path.abspath(path)).parents:  # defence in depth; safe_name forbids it
        raise SubsetError(f"refusing to write {path} outside {destination}")
    folder.mkdir(parents=True, exist_ok=True)
    if not _within(destination, path):  # and no linked folder leads out of it
        raise SubsetError(f"refusing to write {path} outside {destination}")
    return path


def _write_split(destination: Path, folder: Path, split: Any, array: np.ndarray, members: np.ndarray,
                 class_folders: list[str], root: Path | None, mode: str | None) -> None:
    """Write ``members`` of ``split`` under ``folder/<class>/``; every class folder exists afterwards."""
    for class_folder in class_folders:  # every class, so the loader sees the full class list
        _make_folder(destination, folder / class_folder)
    labels = np.asarray(split.labels).reshape(-1)
    for i in members:
        source, name = _file_name(int(i), str(split.ids[i]), root)
        path = _target_path(destination, folder / class_folders[int(labels[i])], name)
        if source is not None:
            _materialise(source, path, mode)
        else:
            _to_pil(array[i]).save(path)


def _refuse_replacing_subset(destination: Path, written: list[str], directory: Path) -> None:
    """The export must not replace the subset directory it copies its files from."""
    directory = directory.expanduser().resolve()
    inside = [destination / name for name in written]
    if directory == destination or any(path == directory or path in directory.parents for path in inside):
        raise SubsetError(f"cannot export into {destination}: it holds the subset {directory} the export reads; "
                          "choose another folder")


def _write_subset_files(destination: Path, subset: Subset, class_names: list[str], class_folders: list[str],
                        counts: dict[str, int]) -> None:
    """The subset's own files and classes.json at the top of the export."""
    for name in FILES:
        path = _target_path(destination, destination, name)
        if path.is_symlink():
            path.unlink()
        shutil.copyfile(Path(subset.directory) / name, path)
    if any(folder != str(name) for folder, name in zip(class_folders, class_names)):
        manifest_path = destination / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["class_folders"] = {folder: str(name) for folder, name in zip(class_folders, class_names)}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    classes = [{"label": label, "folder": folder, "name": str(name)}
               for label, (folder, name) in enumerate(zip(class_folders, class_names))]
    path = _target_path(destination, destination, CLASSES_FILE)
    if path.is_symlink():
        path.unlink()
    path.write_text(json.dumps({"classes": classes, "samples": counts}, indent=2) + "\n")


def export_imagefolder(subset: Subset, images: Any, dataset: Any, destination: str | Path, *, test: Any = None,
                       split_name: str = "train", include_pruned: bool = False, mode: str | None = None,
                       materialise_links: str | None = None, force: bool = False) -> Path:
    """Write the kept images in ImageFolder layout and return ``destination``.

    Layout: ``destination/<split_name>/<class>/<index>_<id>.<ext>`` for the kept samples of
    ``dataset`` (the training split the subset was made for), ``destination/test/<class>/...`` for
    every sample of ``test`` (that dataset's test split) when given, ``destination/pruned/<class>/...``
    for the others when ``include_pruned``, and at the top the subset's files (files.FILES) and
    classes.json (label, folder, original name). With ``test`` and the default ``split_name`` the
    folder loads back as ``imagefolder:<destination>`` with the same classes in the same order and
    exactly the kept samples in train (module docstring). Class names, ids and the split name are
    sanitised to single safe path components, so nothing is written outside ``destination``.
    ``images``: (N, C, H, W) uint8, torch tensor or numpy array, of ``dataset``.

    ``mode`` (alias ``materialise_links``): None (default) writes PNGs decoded from the images for
    every dataset. "copy" | "symlink" | "hardlink": for an ImageFolder dataset (name
    ``imagefolder:<root>``, ids ``<split>/<class>/<file>``) the original files are copied / linked;
    datasets without files (digits, torchvision) still get PNGs. A non-empty ``destination`` is
    refused unless ``force``, which replaces only the folders and files this export writes.
    """
    mode = _export_mode(mode, materialise_links)
    check_dataset(subset.manifest, dataset, subset.directory)
    if test is not None and str(test.name) != str(dataset.name):
        raise SubsetError(f"the test split is of dataset {test.name}, the training split of {dataset.name}")
    destination = Path(destination).expanduser().resolve()
    arrays = {id(dataset): _image_array(images, len(dataset.ids))}
    if test is not None:
        arrays[id(test)] = _image_array(test.images, len(test.ids))
    root = _source_files(dataset) if mode is not None else None
    class_names = [str(name) for name in dataset.class_names]
    class_folders = loader_folders(class_names)
    parts = _export_parts(subset, dataset, test, split_name, include_pruned)
    written = [folder for folder, _, _ in parts] + [*FILES, CLASSES_FILE]
    _refuse_replacing_subset(destination, written, Path(subset.directory))
    _prepare_destination(destination, written, force)
    for split_folder, split, members in parts:
        _write_split(destination, destination / split_folder, split, arrays[id(split)], members, class_folders,
                     root, mode)
    _write_subset_files(destination, subset, class_names, class_folders,
                        {folder: int(len(members)) for folder, _, members in parts})
    return destination


def zip_bytes(directory: str | Path) -> bytes:
    """A zip archive (bytes) of the subset's three files under a folder named like the directory."""
    directory = Path(directory)
    read_manifest(directory)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in FILES:
            archive.write(directory / name, arcname=f"{safe_name(directory.name, fallback='subset')}/{name}")
    return buffer.getvalue()

"""Exporting a subset: the kept images as an ImageFolder tree, or the subset's three files as a zip.

``export_imagefolder`` writes ``destination/<split>/<class>/<index>_<id>.<ext>`` (PNGs decoded from
the images, or the original files of an ImageFolder dataset copied / linked), never outside
``destination``: class names, ids and the split name become single safe path components, and a
linked folder leading out of the destination is refused. ``zip_bytes`` archives a subset directory
(files.FILES) for download. The subset format itself is files.py.
"""
from __future__ import annotations

import io
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

__all__ = ["EXPORT_MODES", "export_imagefolder", "zip_bytes"]

EXPORT_MODES = ("copy", "symlink", "hardlink")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def _class_folders(class_names: list[str]) -> list[str]:
    folders, seen = [], set()
    for index, name in enumerate(class_names):
        folder = safe_name(name, fallback=f"class_{index}")
        if folder.lower() in seen:
            folder = f"{folder}_{index}"
        seen.add(folder.lower())
        folders.append(folder)
    return folders


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


def _prepare_destination(destination: Path, folders: list[str], force: bool) -> None:
    if destination.exists() and not destination.is_dir():
        raise SubsetError(f"export destination {destination} exists and is not a folder; choose a new or empty folder")
    if destination.is_dir() and any(destination.iterdir()):
        if not force:
            raise SubsetError(f"export destination {destination} is not empty; choose a new or empty folder, "
                              "or pass force=True (--force) to replace the exported folders in it")
        for folder in folders:  # only the folders this export writes; anything else there is left alone
            target = destination / folder
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


def _export_parts(indices: np.ndarray, n: int, split_name: str, include_pruned: bool) -> list[tuple[str, np.ndarray]]:
    """[(split folder, sample indices)]: the kept samples, then the pruned ones when asked for."""
    kept = np.zeros(n, dtype=bool)
    kept[indices] = True
    parts = [(safe_name(split_name, fallback="train"), np.flatnonzero(kept))]
    if include_pruned:
        parts.append(("pruned", np.flatnonzero(~kept)))
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


def _target_path(destination: Path, folder: Path, name: str) -> Path:
    """``folder / name``, its folder created, refused unless it lies inside ``destination``."""
    path = folder / name
    if destination not in Path(os.path.abspath(path)).parents:  # defence in depth; safe_name forbids it
        raise SubsetError(f"refusing to write {path} outside {destination}")
    folder.mkdir(parents=True, exist_ok=True)
    if not _within(destination, path):  # and no linked folder leads out of it
        raise SubsetError(f"refusing to write {path} outside {destination}")
    return path


def export_imagefolder(subset: Subset, images: Any, dataset: Any, destination: str | Path, *,
                       split_name: str = "train", include_pruned: bool = False, mode: str | None = None,
                       materialise_links: str | None = None, force: bool = False) -> Path:
    """Write the kept images in ImageFolder layout and return ``destination``.

    Layout: ``destination/<split_name>/<class>/<index>_<id>.<ext>`` for kept samples, plus
    ``destination/pruned/<class>/...`` for the others when ``include_pruned``. Class names, ids
    and the split name are sanitised to single safe path components, so nothing is written
    outside ``destination``. ``images``: (N, C, H, W) uint8, torch tensor or numpy array.

    ``mode`` (alias ``materialise_links``): None (default) writes PNGs decoded from ``images`` for
    every dataset. "copy" | "symlink" | "hardlink": for an ImageFolder dataset (name
    ``imagefolder:<root>``, ids ``<split>/<class>/<file>``) the original files are copied / linked;
    datasets without files (digits, torchvision) still get PNGs. A non-empty ``destination`` is
    refused unless ``force``, which replaces only the split folders this export writes.
    """
    mode = _export_mode(mode, materialise_links)
    check_dataset(subset.manifest, dataset, subset.directory)
    destination = Path(destination).expanduser().resolve()
    array = _image_array(images, len(dataset.ids))
    root = _source_files(dataset) if mode is not None else None
    folders = _class_folders(list(dataset.class_names))
    labels = np.asarray(dataset.labels).reshape(-1)
    parts = _export_parts(subset.indices, len(labels), split_name, include_pruned)
    _prepare_destination(destination, [folder for folder, _ in parts], force)
    for split_folder, members in parts:
        for i in members:
            source, name = _file_name(i, str(dataset.ids[i]), root)
            path = _target_path(destination, destination / split_folder / folders[int(labels[i])], name)
            if source is not None:
                _materialise(source, path, mode)
            else:
                _to_pil(array[i]).save(path)
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

"""The subset file: what users export and what ``ifbeta distill`` reads (docs/ARCHITECTURE.md contract).

A subset is a directory of three files:

- ``indices.npy``: (k,) int64, sorted, unique, in [0, N): the kept samples.
- ``samples.csv``: all N rows: index, id, label, class_name, score, u, inclusion_probability,
  kept (1 / 0). Empty cells where a column does not apply to the method.
- ``manifest.json``: format_version, dataset (name), split, fingerprint, n, k, ratio, method,
  alpha, beta, seed, teacher ({arch, checkpoint_sha256} or null), package_version,
  indices_sha256, created (UTC, ISO 8601), extra (method-specific, JSON).

Writes are atomic (a temporary sibling directory, renamed into place), so a reader never sees a
half-written subset. ``load`` validates everything and refuses, with ``SubsetError``, a subset
that does not belong to the dataset it is applied to. Exporting a subset (ImageFolder tree, zip)
is export.py.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import ifbeta
from ifbeta.errors import SubsetError
from ifbeta.store import safe_name  # noqa: F401  (re-exported for subset file names; its home is store.py)

FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = (1,)
FILES = ("indices.npy", "samples.csv", "manifest.json")
COLUMNS = ("index", "id", "label", "class_name", "score", "u", "inclusion_probability", "kept")

__all__ = ["FORMAT_VERSION", "SubsetError", "Subset", "check_dataset", "write", "load", "read_manifest", "read_samples",
           "torch_subset", "safe_name"]


@dataclass
class Subset:
    """A validated subset. indices: (k,) int64 sorted unique; manifest: the parsed manifest.json."""

    indices: np.ndarray
    manifest: dict
    directory: Path

    @property
    def k(self) -> int:
        return int(len(self.indices))

    @property
    def n(self) -> int:
        return int(self.manifest["n"])


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _column(values: Any, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} entries but the dataset has {n} samples")
    return array


def _check_indices(indices: np.ndarray, n: int, where: str) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 1 or (len(indices) and not np.issubdtype(indices.dtype, np.integer)):
        raise SubsetError(f"{where}: indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    indices = indices.astype(np.int64)
    if len(indices) == 0:
        raise SubsetError(f"{where}: the subset is empty; keep at least one sample")
    if indices.min() < 0 or indices.max() >= n:
        raise SubsetError(f"{where}: indices must lie in [0, {n}), found {indices.min()}..{indices.max()}")
    if np.any(np.diff(indices) <= 0):
        kind = "duplicated" if len(np.unique(indices)) < len(indices) else "unsorted"
        raise SubsetError(f"{where}: indices are {kind}; a subset lists each sample once, in ascending order")
    return indices


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _format(value: float | None) -> str:
    return "" if value is None or not np.isfinite(value) else repr(float(value))


def _write_samples(path: Path, dataset: Any, kept: np.ndarray, columns: dict) -> None:
    labels = np.asarray(dataset.labels).reshape(-1)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i, sample_id in enumerate(dataset.ids):
            label = int(labels[i])
            row = [i, sample_id, label, dataset.class_names[label]]
            row += [_format(None if columns[name] is None else columns[name][i])
                    for name in ("score", "u", "inclusion_probability")]
            writer.writerow(row + [int(kept[i])])


def write(directory: str | Path, *, indices: np.ndarray, dataset: Any, method: str, ratio: float,
          seed: int | None, alpha: float | None = None, beta: float | None = None,
          scores: np.ndarray | None = None, u: np.ndarray | None = None,
          inclusion: np.ndarray | None = None, teacher: dict | None = None,
          extra: dict | None = None) -> Path:
    """Write the subset directory atomically and return its path.

    ``dataset``: any object with name, fingerprint, ids (N), labels (N,), class_names.
    ``indices``: the kept samples (any order, no duplicates). ``scores``, ``u``, ``inclusion``:
    optional (N,) per-sample columns. An existing ``directory`` is replaced only if it is empty or
    is itself a subset (holds a manifest.json); anything else is refused.
    """
    directory = Path(directory)
    n = len(dataset.ids)
    if len(np.asarray(dataset.labels).reshape(-1)) != n:
        raise ValueError(f"dataset has {n} ids but {len(dataset.labels)} labels")
    indices = np.asarray(indices)
    indices = _check_indices(np.sort(indices) if indices.ndim == 1 else indices, n, "write")
    columns = {"score": _column(scores, n, "scores"), "u": _column(u, n, "u"),
               "inclusion_probability": _column(inclusion, n, "inclusion")}
    kept = np.zeros(n, dtype=bool)
    kept[indices] = True
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir())
                                                           and not (directory / "manifest.json").exists())):
        raise SubsetError(f"{directory} exists and is not a subset directory; choose a new or empty directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        np.save(temporary / "indices.npy", indices)
        _write_samples(temporary / "samples.csv", dataset, kept, columns)
        manifest = {
            "format_version": FORMAT_VERSION, "dataset": str(dataset.name),
            "split": getattr(dataset, "split", None), "fingerprint": str(dataset.fingerprint),
            "n": n, "k": int(len(indices)), "ratio": float(ratio), "method": str(method),
            "alpha": None if alpha is None else float(alpha), "beta": None if beta is None else float(beta),
            "seed": None if seed is None else int(seed), "teacher": _json_safe(teacher),
            "package_version": ifbeta.__version__,
            "indices_sha256": _sha256_file(temporary / "indices.npy"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "extra": _json_safe(extra or {}),
        }
        (temporary / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        _replace_directory(temporary, directory)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return directory


def _replace_directory(source: Path, destination: Path) -> None:
    """Rename ``source`` onto ``destination``; an old ``destination`` is moved aside, then removed."""
    if not destination.exists():
        os.replace(source, destination)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
    os.rmdir(backup)
    os.replace(destination, backup)
    try:
        os.replace(source, destination)
    except BaseException:
        os.replace(backup, destination)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def read_manifest(directory: Path) -> dict:
    """manifest.json of a complete subset directory of a known format version, or ``SubsetError``."""
    if directory.is_file():
        raise SubsetError(f"{directory} is a file, not a folder; pass the subset folder holding manifest.json")
    if not directory.is_dir():
        raise SubsetError(f"{directory} is not a subset directory (it does not exist); pass the folder holding manifest.json")
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise SubsetError(f"{directory} is not a complete subset: missing {', '.join(missing)}; re-export it")
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SubsetError(f"{directory}/manifest.json is not valid JSON ({error}); re-export the subset") from error
    if not isinstance(manifest, dict):
        raise SubsetError(f"{directory}/manifest.json is not a JSON object; re-export the subset")
    version = manifest.get("format_version")
    if version not in KNOWN_FORMAT_VERSIONS:
        raise SubsetError(f"{directory} has subset format version {version!r}, this ifbeta "
                          f"{ifbeta.__version__} reads {list(KNOWN_FORMAT_VERSIONS)}; upgrade ifbeta or re-export")
    for key in ("n", "k", "fingerprint", "dataset", "indices_sha256"):
        if key not in manifest:
            raise SubsetError(f"{directory}/manifest.json lacks '{key}'; re-export the subset")
    return manifest


def check_dataset(manifest: dict, dataset: Any, directory: Path) -> None:
    """``SubsetError`` unless ``dataset`` (name, fingerprint, ids) is the one the subset was made for."""
    name, fingerprint, n = str(dataset.name), str(dataset.fingerprint), len(dataset.ids)
    made_for = f"'{manifest['dataset']}' (fingerprint {str(manifest['fingerprint'])[:12]}..., N={manifest['n']})"
    given = f"'{name}' (fingerprint {fingerprint[:12]}..., N={n})"
    if manifest["fingerprint"] != fingerprint or int(manifest["n"]) != n:
        hint = ("the dataset changed since the subset was made (other samples, order or labels)"
                if manifest["dataset"] == name else "apply it to the dataset it was made for")
        raise SubsetError(f"subset {directory} was made for dataset {made_for}, not {given}: "
                          f"{hint}, or make a new subset for this dataset")


def load(directory: str | Path, dataset: Any = None) -> Subset:
    """Read and validate a subset directory; with ``dataset``, refuse a subset made for another.

    Raises ``SubsetError`` (a ValueError) with a one-line, actionable message.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if dataset is not None:
        check_dataset(manifest, dataset, directory)
    digest = _sha256_file(directory / "indices.npy")
    if digest != manifest["indices_sha256"]:
        raise SubsetError(f"{directory}/indices.npy does not match its manifest (sha256 {digest[:12]}... "
                          f"vs {str(manifest['indices_sha256'])[:12]}...): the file was modified; re-export the subset")
    try:
        indices = np.load(directory / "indices.npy", allow_pickle=False)
    except ValueError as error:
        raise SubsetError(f"{directory}/indices.npy is not a valid numpy array ({error}); re-export the subset") from error
    indices = _check_indices(indices, int(manifest["n"]), str(directory))
    if len(indices) != int(manifest["k"]):
        raise SubsetError(f"{directory}: manifest says k={manifest['k']} but indices.npy holds {len(indices)}; re-export")
    return Subset(indices=indices, manifest=manifest, directory=directory)


def read_samples(directory: str | Path) -> "pandas.DataFrame":  # noqa: F821
    """samples.csv as a DataFrame (all N rows; kept as bool)."""
    import pandas

    frame = pandas.read_csv(Path(directory) / "samples.csv", keep_default_na=True, dtype={"id": str, "class_name": str})
    frame["kept"] = frame["kept"].astype(bool)
    return frame


def torch_subset(subset: Subset, dataset_or_tensor_dataset: Any) -> "torch.utils.data.Subset":  # noqa: F821
    """A ``torch.utils.data.Subset`` of the kept samples.

    ``dataset_or_tensor_dataset``: a DatasetSplit (images (N, C, H, W) uint8, labels (N,)), checked
    against the subset's manifest and wrapped as ``TensorDataset(images, labels)``, or a ready
    ``torch.utils.data.TensorDataset`` (only its length is checked). Items are (image, label).
    """
    import torch
    from torch.utils.data import Subset as TorchSubset
    from torch.utils.data import TensorDataset

    source = dataset_or_tensor_dataset
    if isinstance(source, TensorDataset):
        tensors = source
    else:
        if not hasattr(source, "images") or not hasattr(source, "labels"):
            raise SubsetError(f"torch_subset needs a DatasetSplit or a TensorDataset, got {type(source).__name__}")
        if hasattr(source, "ids") and hasattr(source, "fingerprint"):
            check_dataset(subset.manifest, source, subset.directory)
        images = source.images if isinstance(source.images, torch.Tensor) else torch.as_tensor(np.asarray(source.images))
        labels = torch.as_tensor(np.asarray(source.labels).reshape(-1).astype(np.int64))
        if len(images) != len(labels):
            raise SubsetError(f"dataset has {len(images)} images but {len(labels)} labels")
        tensors = TensorDataset(images, labels)
    if len(tensors) != subset.n:
        raise SubsetError(f"subset {subset.directory} is for N={subset.n} samples, the dataset has {len(tensors)}")
    return TorchSubset(tensors, [int(i) for i in subset.indices])

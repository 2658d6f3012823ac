"""Artefact store: ``cache/<kind>/<key>/`` with ``config.json`` beside the arrays.

The key is a hash of the step's config and of the keys of its inputs, so a changed input or
setting gives a new key and nothing is ever silently reused. Writes are atomic (temporary sibling
directory, then rename) and guarded by a file lock, so two processes computing the same artefact
never corrupt it: one computes, the other waits and then reuses. A writer killed mid-save leaves
only a hidden temporary directory, never listed and removed when the artefact is next computed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from ifbeta.errors import StoreError  # noqa: F401  (raised here; its home is errors.py)

log = logging.getLogger(__name__)

_COMPLETE = "config.json"  # written last: its presence marks a finished artefact



def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def make_key(config: dict, inputs: list[str] | tuple[str, ...] = ()) -> str:
    """Hash of a JSON-able config and the keys of the artefacts it was computed from (16 hex)."""
    payload = json.dumps({"config": _canonical(config), "inputs": list(inputs)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

def safe_name(name: str, *, fallback: str, max_length: int = 100) -> str:
    """One safe path component: only [A-Za-z0-9._-], no leading dots, never empty, '.' or '..'."""
    cleaned = _UNSAFE.sub("_", str(name)).lstrip("._")[:max_length].rstrip("_")  # "._.." must not become ".."
    return cleaned or fallback


class Store:
    """Directory-backed artefact store. ``Store(root)``; no root: :meth:`default_root`."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else self.default_root()

    @staticmethod
    def default_root() -> Path:
        """The one rule every face uses: ``$IFBETA_CACHE`` if set, else ``./cache`` of the working
        directory; read at call time (never at import), absolute, so the CLI and the app started in
        the same folder share one cache."""
        return Path(os.environ.get("IFBETA_CACHE") or "cache").absolute()

    @classmethod
    def default(cls) -> "Store":
        """The store at :meth:`default_root`."""
        return cls(cls.default_root())

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def exists(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / _COMPLETE).is_file()

    def lock(self, kind: str, key: str) -> FileLock:
        lock_dir = self.root / kind
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f".{key}.lock"))

    def save(self, kind: str, key: str, config: dict, arrays: dict[str, np.ndarray] | None = None,
             meta: dict | None = None, files: dict[str, bytes] | None = None) -> Path:
        """Atomically write arrays (``.npy``), raw files and ``config.json`` (config + meta)."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
        try:
            for name, array in (arrays or {}).items():
                np.save(tmp / f"{name}.npy", np.asarray(array), allow_pickle=False)
            for name, data in (files or {}).items():
                (tmp / name).write_bytes(data)
            document = {"config": _canonical(config), "meta": _canonical(meta or {})}
            (tmp / _COMPLETE).write_text(json.dumps(document, indent=2, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def load(self, kind: str, key: str, config: dict | None = None, *, mmap: bool | str = False
             ) -> tuple[dict[str, np.ndarray], dict]:
        """Return (arrays, meta). If ``config`` is given it must equal the stored one.

        ``mmap``: False reads the arrays into memory; True maps them read-only; ``"c"`` maps them
        copy-on-write (writable in memory, the file never changes)."""
        directory = self.path(kind, key)
        if not (directory / _COMPLETE).is_file():
            raise StoreError(f"no finished artefact at {directory}")
        try:
            document = json.loads((directory / _COMPLETE).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise StoreError(f"unreadable config in {directory}: {error}; delete the folder to recompute") from None
        if config is not None and document["config"] != _canonical(config):
            raise StoreError(f"artefact {directory} was made with a different config; delete it to recompute")
        arrays = {}
        for file in sorted(directory.glob("*.npy")):
            try:
                mode = mmap if isinstance(mmap, str) else ("r" if mmap else None)
                arrays[file.stem] = np.load(file, mmap_mode=mode, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise StoreError(f"corrupt array {file}: {error}; delete {directory} to recompute") from None
        return arrays, document.get("meta", {})

    def get_or_compute(self, kind: str, config: dict, inputs: list[str] | tuple[str, ...],
                       compute: Callable[[], tuple[dict[str, np.ndarray], dict]], *, mmap: bool | str = False
                       ) -> tuple[dict[str, np.ndarray], dict, str]:
        """Load the artefact for (config, inputs) or compute it once under a lock; returns (arrays, meta, key)."""
        key = make_key(config, inputs)
        if not self.exists(kind, key):
            with self.lock(kind, key):
                if not self.exists(kind, key):
                    self._remove_stale_temporaries(kind, key)
                    log.info("computing %s/%s", kind, key)
                    arrays, meta = compute()
                    self.save(kind, key, config, arrays, meta)
        arrays, meta = self.load(kind, key, config, mmap=mmap)
        return arrays, meta, key

    def _remove_stale_temporaries(self, kind: str, key: str) -> None:
        """Delete temporary directories of ``key`` left by a writer killed mid-save (call under its lock)."""
        for stale in (self.root / kind).glob(f".{key}.tmp-*"):
            log.info("removing %s, left by an interrupted write", stale)
            shutil.rmtree(stale, ignore_errors=True)

    def entries(self, kind: str) -> list[tuple[str, dict]]:
        """(key, config.json document) for every finished artefact of a kind, newest first (temporary
        directories of unfinished writes are skipped even when their config.json is already written)."""
        base = self.root / kind
        if not base.is_dir():
            return []
        found = []
        for directory in base.iterdir():
            marker = directory / _COMPLETE
            if directory.is_dir() and not directory.name.startswith(".") and marker.is_file():
                try:
                    found.append((marker.stat().st_mtime, directory.name, json.loads(marker.read_text())))
                except (OSError, json.JSONDecodeError):
                    continue
        return [(key, doc) for _, key, doc in sorted(found, reverse=True)]


def json_ready(value, *, finite: bool = False):
    """``value`` with numpy arrays and scalars turned into lists and Python numbers (for JSON);
    with ``finite=True`` NaN and inf become None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v, finite=finite) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v, finite=finite) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None
    return value

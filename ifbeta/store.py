"""Artefact store: ``cache/<kind>/<key>/`` with ``config.json`` beside the arrays.

The key is a hash of the step's config and of the keys of its inputs, so a changed input or
setting gives a new key and nothing is ever silently reused. Writes are atomic (temporary sibling
directory, then rename) and guarded by a file lock, so two processes computing the same artefact
never corrupt it: one computes, the other waits and then reuses. A writer killed mid-save leaves
only a hidden temporary directory, never listed and removed when the artefact is next computed.
Overwriting a finished artefact renames the old folder aside first and removes it only once the
new one is in place.

``config.json`` records the size and sha256 of every file of the artefact (``integrity.py``). A load
that finds a file truncated, changed or unreadable moves the artefact to ``<root>/quarantine/``
(never deleted) and raises :class:`CorruptArtefact`; ``get_or_compute`` then warns in one line and
computes it again. ``verify`` checks the whole store, ``garbage`` lists what ``ifbeta store gc``
removes.
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
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from ifbeta import integrity
from ifbeta.errors import CorruptArtefact, StoreError  # noqa: F401  (raised here; their home is errors.py)

log = logging.getLogger(__name__)

_COMPLETE = "config.json"  # written last: its presence marks a finished artefact
KINDS = ("datasets", "features", "scores", "policies", "selections", "embeddings", "loo", "landscapes", "transfer")
"""The artefact kinds (``<root>/<kind>/<key>/``) that ``verify`` checks and ``garbage`` sweeps."""
QUARANTINE = "quarantine"  # <root>/quarantine/<kind>/<key>.<UTC time>/: artefacts that failed their check


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
        """Atomically write arrays (``.npy``), raw files and ``config.json`` (config, meta and the
        size and sha256 of every file). An existing artefact stays in place until the new one lands."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
        try:
            for name, array in (arrays or {}).items():
                np.save(tmp / f"{name}.npy", np.asarray(array), allow_pickle=False)
            for name, data in (files or {}).items():
                (tmp / name).write_bytes(data)
            records = {file.name: integrity.record_of(file) for file in sorted(tmp.iterdir())}
            document = {"config": _canonical(config), "meta": _canonical(meta or {}), "files": records}
            (tmp / _COMPLETE).write_text(json.dumps(document, indent=2, sort_keys=True))
            _replace_folder(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def load(self, kind: str, key: str, config: dict | None = None, *, mmap: bool | str = False
             ) -> tuple[dict[str, np.ndarray], dict]:
        """Return (arrays, meta). If ``config`` is given it must equal the stored one.

        ``mmap``: False reads the arrays into memory; True maps them read-only; ``"c"`` maps them
        copy-on-write (writable in memory, the file never changes). A file that is truncated, changed
        since it was written or unreadable moves the artefact to the quarantine and raises
        :class:`CorruptArtefact` (recomputing replaces it)."""
        directory = self.path(kind, key)
        if not (directory / _COMPLETE).is_file():
            raise StoreError(f"no finished artefact at {directory}")
        try:
            document = json.loads((directory / _COMPLETE).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise self._quarantined(kind, key, f"unreadable {_COMPLETE} ({error})") from None
        if config is not None and document.get("config") != _canonical(config):
            raise StoreError(f"artefact {directory} was made with a different config; delete it to recompute")
        found = check_files(directory, document.get("files"), full=False)
        if found:
            raise self._quarantined(kind, key, found[0])
        arrays = {}
        for file in sorted(directory.glob("*.npy")):
            try:
                mode = mmap if isinstance(mmap, str) else ("r" if mmap else None)
                arrays[file.stem] = np.load(file, mmap_mode=mode, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise self._quarantined(kind, key, f"{file.name} is unreadable ({error})") from None
        return arrays, document.get("meta", {})

    def _quarantined(self, kind: str, key: str, reason: str) -> CorruptArtefact:
        """Move ``kind/key`` to ``<root>/quarantine/<kind>/<key>.<UTC time>`` (never deleted; ``ifbeta
        store gc`` removes it) and return the error that says so."""
        target = self.root / QUARANTINE / kind / f"{key}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        target.parent.mkdir(parents=True, exist_ok=True)
        while target.exists():
            target = target.with_name(target.name + "+")
        try:
            os.rename(self.path(kind, key), target)
        except FileNotFoundError:  # another process moved it first
            pass
        return CorruptArtefact(f"artefact {kind}/{key} failed its check: {reason}; moved to {target}, "
                               "rerun to recompute it")

    def get_or_compute(self, kind: str, config: dict, inputs: list[str] | tuple[str, ...],
                       compute: Callable[[], tuple[dict[str, np.ndarray], dict]], *, mmap: bool | str = False
                       ) -> tuple[dict[str, np.ndarray], dict, str]:
        """Load the artefact for (config, inputs) or compute it once under a lock; returns (arrays, meta, key).
        A stored artefact that fails its check is quarantined and computed again, with one warning."""
        key = make_key(config, inputs)
        if self.exists(kind, key):
            try:
                arrays, meta = self.load(kind, key, config, mmap=mmap)
                return arrays, meta, key
            except CorruptArtefact as error:
                log.warning("%s", str(error).replace("rerun to recompute it", "recomputing it"))
        with self.lock(kind, key):
            if not self.exists(kind, key):
                self._remove_stale_temporaries(kind, key)
                log.info("computing %s/%s", kind, key)
                arrays, meta = compute()
                self.save(kind, key, config, arrays, meta)
        arrays, meta = self.load(kind, key, config, mmap=mmap)
        return arrays, meta, key

    def _remove_stale_temporaries(self, kind: str, key: str) -> None:
        """Delete temporary and set-aside directories of ``key`` left by a writer killed mid-save
        (call under its lock)."""
        for pattern in (f".{key}.tmp-*", f".{key}.old-*"):
            for stale in (self.root / kind).glob(pattern):
                log.info("removing %s, left by an interrupted write", stale)
                shutil.rmtree(stale, ignore_errors=True)

    def verify(self, *, full: bool = True) -> list[str]:
        """Check every finished artefact of ``KINDS`` against its records (``full``: hash large files
        in full, not sampled); one line ``<kind>/<key>: <problem>`` per problem, nothing moved."""
        found = []
        for kind in KINDS:
            base = self.root / kind
            for directory in sorted(base.iterdir()) if base.is_dir() else []:
                if directory.name.startswith(".") or not (directory / _COMPLETE).is_file():
                    continue
                try:
                    records = json.loads((directory / _COMPLETE).read_text()).get("files")
                except (OSError, json.JSONDecodeError, AttributeError) as error:
                    found.append(f"{kind}/{directory.name}: unreadable {_COMPLETE} ({error})")
                    continue
                found += [f"{kind}/{directory.name}: {line}" for line in check_files(directory, records, full=full)]
        return found

    def garbage(self) -> list[Path]:
        """What no load ever reads: everything in ``<root>/quarantine/``, and in each kind of ``KINDS``
        the hidden temporaries (``.<key>.tmp-*``) and set-aside copies (``.<key>.old-*``) of writes
        that no live process holds the lock of (a killed writer's leftovers)."""
        found = sorted((self.root / QUARANTINE).glob("*/*"))
        for kind in KINDS:
            base = self.root / kind
            leftovers = sorted(base.glob(".*.tmp-*")) + sorted(base.glob(".*.old-*")) if base.is_dir() else []
            for path in leftovers:
                key = path.name[1:].split(".")[0]
                lock = FileLock(str(base / f".{key}.lock"))
                try:
                    with lock.acquire(timeout=0):
                        found.append(path)
                except TimeoutError:  # a writer is at work on it (filelock.Timeout is a TimeoutError)
                    continue
        return found

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


def _replace_folder(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final``; an existing ``final`` is renamed aside first (a folder cannot be
    replaced in one rename) and removed only after ``new`` is in place, or put back if that fails."""
    aside = None
    if final.exists():
        aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def check_files(directory: Path, records: dict | None, *, full: bool) -> list[str]:
    """Problems (one line each) of the files of the artefact at ``directory`` against their records
    (``integrity.problem``). An artefact written before records existed (``records`` None) is checked
    by its ``.npy`` headers: each array must have the bytes its header promises."""
    if records is None:
        return [line for file in sorted(directory.glob("*.npy")) if (line := _npy_problem(file))]
    found = [line for name, record in sorted(records.items())
             if (line := integrity.problem(directory / name, record, full=full))]
    found += [f"{file.name} is not recorded in {_COMPLETE}" for file in sorted(directory.glob("*.npy"))
              if file.name not in records]
    return found


def _npy_problem(file: Path) -> str | None:
    """None when the ``.npy`` file holds as many bytes as its header says, else one line."""
    try:
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(handle)
            expected = handle.tell() + int(np.prod(shape)) * dtype.itemsize
    except (OSError, ValueError) as error:
        return f"{file.name} is unreadable ({error})"
    size = file.stat().st_size
    return None if size == expected else f"{file.name} is truncated ({size} of {expected} bytes)"


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

"""The teachers a store knows, per dataset fingerprint and architecture, and the default of each pair.

An entry is one safetensors checkpoint whose header records the dataset fingerprint, the
architecture, the training settings and the test accuracy (``teachers.train_teacher`` writes them;
the header is read without loading the weights). Entries come from four places:

- ``<store>/teachers/<key>/teacher.safetensors``: trained by ``ifbeta train-teacher`` or by
  ``--teacher auto`` (``key`` hashes the fingerprint, architecture and training settings; earlier
  versions used the same slots), named by ``key``;
- ``<store>/teachers/trained/*.safetensors``: trained from the app (and by earlier versions), named
  by the file's stem;
- files outside the store recorded by ``register`` (``train-teacher --out PATH``), named by their path;
- ``teachers/<fingerprint16>-<arch>.safetensors`` bundled with the project (read-only; the folder is
  ``teachers.BUNDLED``, passed as ``bundled``), named by stem.

Datasets are matched by the first 16 hex digits of their fingerprint (as the bundled names and the
index keys spell them).

The index ``<store>/teachers/index.json`` holds ``{"defaults": {"<fingerprint16>/<arch>": name},
"paths": [absolute paths outside the store]}``. Names, not paths, are recorded for teachers inside the
store, so a copied store keeps its defaults. The default of a pair is the one the index names; when
it names none (or a file since removed): the bundled teacher, else the one trained with the preferred
(default) settings, else the newest.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ifbeta.store import Store

INDEX = "index.json"
_HEADERS: dict[str, tuple[tuple[int, int], dict | None]] = {}  # path -> ((size, mtime_ns), header)


@dataclass(frozen=True)
class Entry:
    """One teacher checkpoint of a dataset: ``test_top1`` in [0, 1] (higher is better) or None."""
    name: str
    path: Path
    source: str  # "store" (a training slot), "trained" (the app's folder), "registered" or "bundled"
    arch: str
    fingerprint: str
    dataset: str
    train: dict  # the training settings (epochs, batch size, learning rate, seed, ...)
    test_top1: float | None
    mtime: float
    default: bool = False

    @property
    def epochs(self) -> int | None:
        return self.train.get("epochs")

    def describe(self) -> dict:
        """A JSON-able summary (path as text)."""
        return {"name": self.name, "path": str(self.path), "source": self.source, "arch": self.arch,
                "dataset": self.dataset, "epochs": self.epochs, "test_top1": self.test_top1,
                "default": self.default, "train": self.train}


def header(path: str | Path) -> dict | None:
    """The safetensors metadata of ``path`` (``arch``, ``extra`` parsed into a dict), or None when the
    file is not a readable safetensors checkpoint. Cached per (size, mtime)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    state = (stat.st_size, stat.st_mtime_ns)
    cached = _HEADERS.get(str(path))
    if cached is not None and cached[0] == state:
        return cached[1]
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        meta["extra"] = json.loads(meta.get("extra") or "{}")
    except Exception:  # not safetensors, damaged, or a foreign header: not a listed teacher
        meta = None
    _HEADERS[str(path)] = (state, meta)
    return meta


def folder(store: Store) -> Path:
    """``<store>/teachers``: the training slots, ``trained/`` and the index."""
    return store.root / "teachers"


def _candidates(store: Store, bundled: Path | None) -> list[tuple[str, Path, str]]:
    """(name, path, source) of every checkpoint file the four places hold."""
    base = folder(store)
    found = [(p.parent.name, p, "store") for p in sorted(base.glob("*/teacher.safetensors"))
             if not p.parent.name.startswith(".")]
    found += [(p.stem, p, "trained") for p in sorted((base / "trained").glob("*.safetensors"))]
    found += [(str(p), Path(p), "registered") for p in _read_index(store).get("paths", [])]
    if bundled is not None and bundled.is_dir():
        found += [(p.stem, p, "bundled") for p in sorted(bundled.glob("*.safetensors"))]
    return found


def entries(store: Store, *, fingerprint: str | None = None, arch: str | None = None,
            preferred: Callable[[], dict] | None = None, bundled: Path | None = None) -> list[Entry]:
    """The teachers of ``fingerprint`` (all datasets when None) and ``arch`` (all when None), each with
    ``default`` set; sorted by dataset, architecture, then newest first. ``preferred()``: the training
    settings whose teacher is the default when the index and the bundle name none (asked only then).
    ``bundled``: the folder of bundled teachers (None: none)."""
    listed, seen = [], set()
    for name, path, source in _candidates(store, bundled):
        meta = header(path)
        extra = (meta or {}).get("extra") or {}
        if source == "bundled" and not extra.get("fingerprint"):
            extra = {**extra, "fingerprint": name.split("-", 1)[0]}  # named <fingerprint16>-<arch>
        if meta is None or not extra.get("fingerprint") or path.resolve() in seen:
            continue
        if (fingerprint and extra["fingerprint"][:16] != fingerprint[:16]) or (arch and meta.get("arch") != arch):
            continue
        seen.add(path.resolve())
        top1 = extra.get("test_top1")
        listed.append(Entry(name, path, source, str(meta.get("arch")), extra["fingerprint"], str(extra.get("dataset")),
                            dict(extra.get("train") or {}), None if top1 is None else float(top1),
                            path.stat().st_mtime))
    defaults = {_default_of(store, group, preferred) for group in _groups(listed)}
    marked = [replace(e, default=(e.fingerprint[:16], e.arch, e.name) in defaults) for e in listed]
    return sorted(marked, key=lambda e: (e.dataset, e.fingerprint, e.arch, -e.mtime, e.name))


def _groups(listed: list[Entry]) -> list[list[Entry]]:
    """``listed`` split by (fingerprint, arch)."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in listed:
        groups.setdefault((entry.fingerprint[:16], entry.arch), []).append(entry)
    return list(groups.values())


def _default_of(store: Store, group: list[Entry], preferred: Callable[[], dict] | None) -> tuple[str, str, str]:
    """(fingerprint, arch, name) of the default among one pair's entries (see the module docstring)."""
    first = group[0]
    named = _read_index(store).get("defaults", {}).get(pair_key(first.fingerprint, first.arch))
    choice = next((e for e in group if e.name == named), None)
    choice = choice or next((e for e in group if e.source == "bundled"), None)
    if choice is None and preferred is not None:
        settings = preferred()
        choice = next((e for e in group if e.train == settings), None)
    choice = choice or max(group, key=lambda e: (e.mtime, e.name))
    return first.fingerprint[:16], first.arch, choice.name


def pair_key(fingerprint: str, arch: str) -> str:
    """The index key of a (dataset fingerprint, architecture) pair."""
    return f"{fingerprint[:16]}/{arch}"


def default(store: Store, fingerprint: str, arch: str, *, preferred: Callable[[], dict] | None = None,
            bundled: Path | None = None) -> Entry | None:
    """The default teacher of (fingerprint, arch), or None when the store and the bundle hold none."""
    return next((e for e in entries(store, fingerprint=fingerprint, arch=arch, preferred=preferred,
                                    bundled=bundled) if e.default), None)


def unreadable_default(store: Store, fingerprint: str, arch: str, *, bundled: Path | None = None) -> Path | None:
    """The file the index names as the default of (fingerprint, arch) when it is there but its header cannot
    be read (cut short or damaged), so ``entries`` leaves it out; else None."""
    named = _read_index(store).get("defaults", {}).get(pair_key(fingerprint, arch))
    return next((path for name, path, _ in _candidates(store, bundled)
                 if name == named and path.is_file() and header(path) is None), None)


def find(store: Store, name_or_path: str, *, fingerprint: str, bundled: Path | None = None) -> Entry | None:
    """The entry of ``fingerprint`` named ``name_or_path`` (its name, or a path to its file)."""
    listed = entries(store, fingerprint=fingerprint, bundled=bundled)
    by_name = next((e for e in listed if e.name == name_or_path), None)
    if by_name is not None:
        return by_name
    wanted = Path(name_or_path).expanduser().resolve()
    return next((e for e in listed if e.path.resolve() == wanted), None)


def register(store: Store, path: str | Path, *, make_default: bool, bundled: Path | None = None) -> Entry:
    """Record the checkpoint at ``path`` (a file outside the store is added to the index; one inside is
    found anyway) and, with ``make_default``, make it the default of its pair; returns its entry."""
    path = Path(path).absolute()
    extra = (header(path) or {}).get("extra") or {}
    if not extra.get("fingerprint"):
        raise ValueError(f"{path} does not record the dataset it was trained on; it cannot be registered")
    with store.lock("teachers", "index"):
        index = _read_index(store)
        inside = _inside(path, folder(store)) or (bundled is not None and _inside(path, bundled))
        if not inside and str(path) not in index["paths"]:
            index["paths"].append(str(path))
            _write_index(store, index)
    entry = find(store, str(path), fingerprint=extra["fingerprint"], bundled=bundled)
    if entry is None:
        raise ValueError(f"{path} is not a teacher the store can list")
    return set_default(store, entry) if make_default else entry


def set_default(store: Store, entry: Entry) -> Entry:
    """Make ``entry`` the default of its (fingerprint, arch) pair; returns it marked as default."""
    with store.lock("teachers", "index"):
        index = _read_index(store)
        index["defaults"][pair_key(entry.fingerprint, entry.arch)] = entry.name
        _write_index(store, index)
    return replace(entry, default=True)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _read_index(store: Store) -> dict:
    try:
        index = json.loads((folder(store) / INDEX).read_text())
    except (OSError, json.JSONDecodeError):
        index = {}
    return {"version": 1, "defaults": dict(index.get("defaults") or {}), "paths": list(index.get("paths") or [])}


def _write_index(store: Store, index: dict) -> None:
    """Write the index atomically (call under the index lock)."""
    target = folder(store) / INDEX
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{INDEX}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(index, indent=2, sort_keys=True))
    os.replace(temporary, target)

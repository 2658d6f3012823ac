"""The subsets a store holds: every ``<store>/subsets/<name>/`` directory, validated, newest first.

The app's Distill page lists these as what a student can train on; the CLI reads a subset by path
(``ifbeta distill --subset DIR``). A directory that fails ``files.load`` is listed with its reason,
never silently dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ifbeta.errors import SubsetError
from ifbeta.store import Store
from ifbeta.subsets import files

__all__ = ["Entry", "folder", "scan"]


def folder(store: Store) -> Path:
    """``<store>/subsets``: where the app and ``pipeline.save_selection`` write subsets."""
    return store.root / "subsets"


@dataclass(frozen=True)
class Entry:
    """One subset directory. manifest: its parsed manifest.json ({} when unreadable); error: why
    ``files.load`` refused it (None = valid); modified: the manifest's mtime (seconds since epoch)."""

    directory: Path
    modified: float
    manifest: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def ratio(self) -> float:
        """The pruning ratio (fraction removed) recorded in the manifest."""
        return float(self.manifest["ratio"])

    @property
    def name(self) -> str:
        return self.directory.name


def _entry(directory: Path) -> Entry:
    modified = (directory / "manifest.json").stat().st_mtime
    try:
        return Entry(directory, modified, files.load(directory).manifest)
    except SubsetError as error:
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {}
        return Entry(directory, modified, manifest if isinstance(manifest, dict) else {}, str(error))


def scan(store: Store, *, fingerprint: str | None = None) -> list[Entry]:
    """Subset directories of ``store`` newest first; with ``fingerprint``, only those made for that
    pool (``DatasetSplit.fingerprint``), plus broken ones whose pool cannot be read."""
    root = folder(store)
    if not root.is_dir():
        return []
    entries = [_entry(manifest.parent) for manifest in root.glob("*/manifest.json")]
    if fingerprint is not None:
        entries = [e for e in entries if e.manifest.get("fingerprint", fingerprint) == fingerprint]
    return sorted(entries, key=lambda e: (e.modified, e.name), reverse=True)

"""Tags on the samples of a pool, kept in the artefact store: ``<store>/tags/<fingerprint[:16]>.json``.

A tag is a short name (``EXCLUDE``, ``SUSPECT`` or any other) mapped to the sorted, unique sample ids
(``DatasetSplit.ids``) that carry it. The file belongs to one pool (its ``DatasetSplit.fingerprint``),
so tags made on one pool never show on another. Every change is a read-modify-write under the store's
file lock, written to a hidden temporary sibling and moved into place (``os.replace``), so concurrent
writers (two app sessions, the app and a script) never lose each other's tags or leave half a file.

``read_id_list`` reads the id lists the CLI's ``--exclude FILE`` takes: one id a line, or a CSV with an
``id`` column (such as a subset's samples.csv).
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ifbeta.errors import StoreError
from ifbeta.store import Store

EXCLUDE = "exclude"
"""Samples left out of every selection of the pool (``pipeline.choose(exclude=...)``)."""
SUSPECT = "suspect label"
"""Samples whose label a person doubts (shown, not acted on)."""

MAX_TAG_LENGTH = 64
KIND = "tags"


def path(store: Store, fingerprint: str) -> Path:
    """The tag file of the pool with ``fingerprint``: ``<store.root>/tags/<fingerprint[:16]>.json``."""
    return store.root / KIND / f"{_file_key(fingerprint)}.json"


def load(store: Store, fingerprint: str) -> dict[str, list[str]]:
    """tag -> sorted unique sample ids of the pool with ``fingerprint``; {} when nothing is tagged.
    Raises StoreError for an unreadable file or one written for another pool."""
    file = path(store, fingerprint)
    try:
        document = json.loads(file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as error:
        raise StoreError(f"unreadable tag file {file}: {error}; delete it to start without tags") from None
    if not isinstance(document, dict) or document.get("fingerprint") != fingerprint:
        raise StoreError(f"tag file {file} belongs to another pool; delete it to start without tags")
    return {str(tag): sorted({str(i) for i in ids}) for tag, ids in sorted(document.get("tags", {}).items()) if ids}


def add(store: Store, fingerprint: str, tag: str, ids: Iterable[str], *,
        known: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Tag ``ids`` with ``tag`` (ids already tagged stay once); -> the new mapping (as ``load``).

    ``known``: the pool's ids (``DatasetSplit.ids``); when given, ids outside it are refused with a
    ValueError naming how many and one of them. A tag must be 1 to 64 characters (not only spaces)."""
    tag, ids = check_tag(tag), _as_ids(ids)
    if known is not None:
        refuse_unknown(ids, known)
    return _update(store, fingerprint, lambda tags: tags.setdefault(tag, set()).update(ids))


def remove(store: Store, fingerprint: str, tag: str, ids: Iterable[str]) -> dict[str, list[str]]:
    """Untag ``ids`` (ids without the tag are ignored); a tag left with no ids disappears;
    -> the new mapping (as ``load``)."""
    tag, ids = check_tag(tag), _as_ids(ids)
    return _update(store, fingerprint, lambda tags: tags.get(tag, set()).difference_update(ids))


def check_tag(tag: str) -> str:
    """``tag`` stripped of surrounding spaces; ValueError if empty or longer than 64 characters."""
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError(f"a tag needs a name (1 to {MAX_TAG_LENGTH} characters), got {tag!r}")
    tag = tag.strip()
    if len(tag) > MAX_TAG_LENGTH:
        raise ValueError(f"tag {tag[:20]!r}... is {len(tag)} characters long; use at most {MAX_TAG_LENGTH}")
    return tag


def refuse_unknown(ids: Iterable[str], known: Iterable[str]) -> None:
    """ValueError naming how many of ``ids`` are not in ``known`` and one example (the first in sorted
    order, so the message does not depend on set order); else nothing."""
    known = known if isinstance(known, (set, frozenset, dict)) else set(known)
    unknown = sorted({i for i in ids if i not in known})
    if unknown:
        raise ValueError(f"{len(unknown)} sample id(s) are not in this pool, e.g. {unknown[0]!r}; "
                         "check the dataset, the pool size and the id list")


def read_id_list(file: str | Path) -> list[str]:
    """Sample ids from a text file (one id a line; blank lines and lines starting with ``#`` ignored)
    or from a CSV whose header has an ``id`` column (e.g. a subset's samples.csv); -> sorted unique ids.
    Raises ValueError in one line for a missing, unreadable or empty file."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"id list {file} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"id list {file} is a folder; give a text or CSV file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"id list {file} cannot be read as text: {error}") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"id list {file} holds no sample id (one id a line, or a CSV with an 'id' column)")
    header = next(csv.reader([lines[0]]))
    if "," in lines[0] or file.suffix.lower() == ".csv":
        if "id" not in [name.strip() for name in header]:
            raise ValueError(f"id list {file} looks like a CSV but its header {lines[0][:60]!r} has no 'id' column")
        rows = csv.DictReader(lines, fieldnames=[name.strip() for name in header])
        next(rows)  # the header itself
        ids = [str(row.get("id") or "").strip() for row in rows]
        ids = [i for i in ids if i]
        if not ids:
            raise ValueError(f"id list {file} has an 'id' column but no ids")
        return sorted(set(ids))
    return sorted(set(lines))


# ------------------------------------------------------------------------------------------ helpers
def _file_key(fingerprint: str) -> str:
    key = str(fingerprint)[:16]
    if not key or not key.isalnum():
        raise ValueError(f"tags need the pool's fingerprint (hex digits), got {fingerprint!r}")
    return key


def _as_ids(ids: Iterable[str]) -> set[str]:
    if isinstance(ids, str):
        raise ValueError("ids must be a list of sample ids, not one string")
    return {str(i) for i in ids}


def _update(store: Store, fingerprint: str, change) -> dict[str, list[str]]:
    """Apply ``change(tags: dict[str, set[str]])`` to the stored tags under the lock, write atomically."""
    with store.lock(KIND, _file_key(fingerprint)):
        tags = {tag: set(ids) for tag, ids in load(store, fingerprint).items()}
        change(tags)
        mapping = {tag: sorted(ids) for tag, ids in sorted(tags.items()) if ids}
        _write(path(store, fingerprint), {"fingerprint": fingerprint, "tags": mapping})
    return mapping


def _write(file: Path, document: dict) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{file.name}.tmp-", dir=file.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=1, sort_keys=True)
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

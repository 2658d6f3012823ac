"""Content records of artefact files, and the check that a file still matches its record.

A record is ``{"size": bytes, "sha256": hex}`` (plus ``"sampled": hex`` for a file larger than
``FULL_CHECK_BYTES``). ``problem(path, record)`` is None when the file matches, else one line saying
what is wrong. Loading checks the size always (truncation) and the full sha256 of files up to
``FULL_CHECK_BYTES``; a larger file (a memory-mapped feature matrix of gigabytes) is checked on load
by its sampled digest (its head, its tail and ``SAMPLE_BLOCKS`` evenly spaced blocks), and in full by
``ifbeta store verify`` (``full=True``). sha256 ran at 0.3 to 1 GB/s on two shared CPU cores
(benchmarks/results/store-integrity.md): 2 GiB took 7 s in full, so a full check stays under ~0.2 s
only up to the limit, and the sampled digest of 2 GiB takes milliseconds.
A file already checked in this process and unchanged since (same size, mtime and inode) is not
hashed again.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

FULL_CHECK_BYTES = 64 * 2**20  # files up to this size are hashed in full on every (first) load
SAMPLE_BLOCKS = 64  # evenly spaced blocks of a larger file, plus its head and tail
SAMPLE_BYTES = 64 * 2**10  # bytes per sampled block
EDGE_BYTES = 2**20  # head and tail bytes in the sampled digest (the .npy header lives in the head)
_READ = 2**20

_CHECKED: dict[str, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, inode) that matched its record


def sha256_of(path: str | Path) -> str:
    """The sha256 (hex) of a whole file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_READ), b""):
            digest.update(block)
    return digest.hexdigest()


def sampled_sha256(path: str | Path, size: int) -> str:
    """The sha256 (hex) of the file's first and last ``EDGE_BYTES`` and of ``SAMPLE_BLOCKS`` blocks of
    ``SAMPLE_BYTES`` at evenly spaced offsets (``size`` is part of the digest)."""
    digest = hashlib.sha256(str(size).encode())
    offsets = [0, max(size - EDGE_BYTES, 0)]
    step = max(size // (SAMPLE_BLOCKS + 1), 1)
    offsets[1:1] = [step * (i + 1) for i in range(SAMPLE_BLOCKS)]
    with open(path, "rb") as handle:
        for index, offset in enumerate(offsets):
            handle.seek(offset)
            edge = index in (0, len(offsets) - 1)
            digest.update(handle.read(EDGE_BYTES if edge else SAMPLE_BYTES))
    return digest.hexdigest()


def record_of(path: str | Path) -> dict:
    """{"size", "sha256"} of a file, plus "sampled" when it is larger than ``FULL_CHECK_BYTES``."""
    size = os.stat(path).st_size
    record = {"size": size, "sha256": sha256_of(path)}
    if size > FULL_CHECK_BYTES:
        record["sampled"] = sampled_sha256(path, size)
    return record


def problem(path: str | Path, record: dict, *, full: bool = False) -> str | None:
    """None when ``path`` matches ``record``, else one line ("missing", "truncated: ...", "content
    differs ..."). ``full``: hash large files in full rather than by their sampled digest."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return f"{path.name} is missing"
    if stat.st_size != record.get("size"):
        kind = "truncated" if stat.st_size < record.get("size", 0) else "longer than recorded"
        return f"{path.name} is {kind} ({stat.st_size} of {record.get('size')} bytes)"
    state = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if _CHECKED.get(str(path)) == state and not full:
        return None
    if full or "sampled" not in record:
        matches = sha256_of(path) == record.get("sha256")
    else:
        matches = sampled_sha256(path, stat.st_size) == record["sampled"]
    if not matches:
        _CHECKED.pop(str(path), None)
        return f"{path.name} does not match its recorded sha256 (changed or corrupted on disk)"
    _CHECKED[str(path)] = state
    return None

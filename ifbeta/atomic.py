"""Atomic file writes with temporary names no two writers share.

Every file the package rewrites in place (checkpoints, progress, traces, uploads) is written to a
hidden sibling named after the writer (``.<name>.<pid>-<random>.tmp``) and then moved over the
target with ``os.replace``, so two processes writing the same file never rename each other's
temporary away and a reader sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def temporary_sibling(path: str | Path) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<pid>-<8 hex>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def replace_with(path: str | Path, write) -> Path:
    """Call ``write(temporary)`` on a :func:`temporary_sibling`, then move it over ``path``; the
    temporary is removed if ``write`` fails."""
    path = Path(path)
    temporary = temporary_sibling(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically replace ``path`` with ``text``."""
    return replace_with(path, lambda temporary: temporary.write_text(text))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return replace_with(path, lambda temporary: temporary.write_bytes(data))

"""The folders a shared deployment lets people read checkpoints and ImageFolders from (IFBETA_ALLOWED_ROOTS)."""
from __future__ import annotations

import os
from pathlib import Path

from ifbeta.errors import ModelError
from ifbeta.models import teachers
from ifbeta.store import Store

ALLOWED_ROOTS = "IFBETA_ALLOWED_ROOTS"


def allowed_roots() -> list[Path]:
    """The folders a shared deployment lets people read checkpoints and ImageFolders from:
    ``$IFBETA_ALLOWED_ROOTS``, os.pathsep-separated, read at call time; [] = unrestricted."""
    value = os.environ.get(ALLOWED_ROOTS, "")
    return [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip()]


def refuse_imagefolder_outside_roots(dataset: str) -> None:
    """``refuse_outside_roots`` for the root of an ``imagefolder:<root>`` dataset (others pass)."""
    if dataset.startswith("imagefolder:"):
        refuse_outside_roots(dataset.split(":", 1)[1], "ImageFolder root")


def refuse_outside_roots(path: str | Path, what: str) -> None:
    """``ModelError`` when ``path`` (resolved, links followed) is outside every allowed root (for a
    checkpoint the store and the bundled teachers count as allowed too)."""
    named = allowed_roots()
    if not named:
        return
    roots = named + ([Store.default().root.resolve(), teachers.BUNDLED.resolve()] if what == "checkpoint" else [])
    resolved = Path(path).expanduser().resolve()  # the app's own uploads, trained and bundled teachers stay usable
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise ModelError(f"{what} {path} is outside the folders this server may read "
                         f"({', '.join(map(str, named))}); put it under one of them")

"""The store written before the package layout (tests/data/store-before-layout): a digits teacher and its
artefacts, copied per test so a command line run can add to it; and the command line on such a store."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

LEGACY = Path(__file__).parent / "data" / "store-before-layout" / "cache"
TEACHER = "teachers/f561382ed539dd32/teacher.safetensors"


def legacy_cache(folder: Path) -> Path:
    """A fresh copy of the legacy store under ``folder``; returns its path."""
    cache = folder / "cache"
    shutil.copytree(LEGACY, cache)
    return cache


def ifbeta(cache, *args):
    """``python -m ifbeta.cli --cache CACHE ARGS`` -> CompletedProcess (text, captured)."""
    return subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args], capture_output=True,
                          text=True, timeout=300)

"""Artefacts written before the package took its current layout are found, not recomputed.

``tests/data/store-before-layout/`` is a store written by the flat-layout release (0.1.0 at the
commit before the subpackages): a one-epoch cnn-tiny digits teacher, its features, its influence
scores, a CCS selection and a learned IF-Beta policy at ratio 0.5, plus the subsets' indices. The
store's keys hash configs, never module paths, so the same commands must reuse every artefact and
reproduce the same subsets.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "data" / "store-before-layout"
TEACHER = "teachers/f561382ed539dd32/teacher.safetensors"


def artefacts(cache: Path) -> set[str]:
    """``kind/key`` of every artefact folder (a trained teacher's folder holds its checkpoint only)."""
    return {f"{path.parent.name}/{path.name}" for path in cache.glob("*/*") if path.is_dir()}


@pytest.fixture
def legacy_cache(tmp_path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(FIXTURE / "cache", cache)
    return cache


@pytest.mark.parametrize("command, expected", [
    (["select", "--method", "ccs"], "ccs-indices.npy"),
    (["prune"], "ifbeta-indices.npy"),
])
def test_an_artefact_stored_before_the_layout_is_found_after_it(legacy_cache, tmp_path, command, expected):
    before = artefacts(legacy_cache)
    assert {kind.split("/")[0] for kind in before} == {"teachers", "features", "scores", "selections", "policies"}
    out = tmp_path / "subset"
    result = subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(legacy_cache), *command,
                             "--dataset", "digits", "--teacher", str(legacy_cache / TEACHER), "--ratio", "0.5",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert artefacts(legacy_cache) == before  # every step was read from the store, none recomputed
    np.testing.assert_array_equal(np.load(out / "indices.npy"), np.load(FIXTURE / "expected" / expected))

"""The command line and the app resolve one store: what ``ifbeta score`` writes, the app finds."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the app's glue (pages/_studio) imports from the project root
    sys.path.insert(0, str(ROOT))


def test_scores_from_the_cli_are_found_by_the_app(digits_teacher, session_store, tmp_path, monkeypatch):
    # a fresh project folder without IFBETA_CACHE; the digits teacher is copied in so nothing trains
    shutil.copytree(session_store.root / "teachers", tmp_path / "cache" / "teachers")
    env = {key: value for key, value in os.environ.items() if key != "IFBETA_CACHE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "ifbeta.cli", "score", "--dataset", "digits", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    key = json.loads(done.stdout.strip().splitlines()[-1])["scores_key"]
    assert (tmp_path / "cache" / "scores" / key).is_dir()  # the CLI wrote under ./cache of its folder

    monkeypatch.delenv("IFBETA_CACHE")
    monkeypatch.chdir(tmp_path)  # the app started in the same folder
    from ifbeta import pipeline
    from ifbeta.config import InfluenceConfig
    from ifbeta.store import Store
    from pages._studio import state, steps

    assert steps.store().root == Store.default().root == (tmp_path / "cache").absolute()
    app_config = dataclasses.replace(InfluenceConfig(), **{name: state.WIDGETS[key]
                                                           for key, name in state.INFLUENCE_KEYS.items()})
    ws = pipeline.open_workspace("digits", store=steps.store())
    assert pipeline.scores_key(ws, app_config) == key  # the app's default settings name the CLI's artefact
    assert ws.store.exists("scores", key)  # ... and find it, so nothing is recomputed


def test_the_store_follows_the_environment_at_call_time(tmp_path, monkeypatch):
    from ifbeta.store import Store
    from pages._studio import steps

    monkeypatch.setenv("IFBETA_CACHE", str(tmp_path / "one"))
    first = steps.store().root
    monkeypatch.setenv("IFBETA_CACHE", str(tmp_path / "two"))
    assert first == tmp_path / "one" and steps.store().root == Store.default().root == tmp_path / "two"

"""Several openers of one workspace at once compute each artefact once.

Across processes (two servers, or the CLI beside the app, on one store) the store's file locks do it: two
processes open the digits workspace at the same moment on an empty store; the teacher is trained once, the
features extracted once (the store's own "computing" log lines and the notices of training, from both), both
get the same bytes, and nothing but lock files is left. Within one process (the app's sessions are threads)
``pages._studio.steps.workspace`` opens it once: sessions arriving meanwhile wait for the first, and no
opened workspace is left behind in the hand-off to the cached loader.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

OPENER = """
import hashlib, json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from ifbeta import pipeline
from ifbeta.store import Store
from ifbeta.threads import limit_blas_threads
limit_blas_threads()
start = Path(sys.argv[2])
while not start.exists():  # both processes have imported everything: go at once
    time.sleep(0.01)
ws = pipeline.open_workspace("digits", store=Store(sys.argv[1]))
print(json.dumps({"key": ws.features.key, "teacher": ws.teacher.info.sha256,
                  "features": hashlib.sha256(ws.features.features.tobytes()).hexdigest(),
                  "logits": hashlib.sha256(ws.features.logits.tobytes()).hexdigest()}))
"""


def test_two_processes_opening_one_workspace_compute_each_artefact_once(tmp_path):
    store, start = tmp_path / "store", tmp_path / "start"
    openers = [subprocess.Popen([sys.executable, "-c", OPENER, str(store), str(start)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
               for _ in range(2)]
    time.sleep(8)  # imports done in both (they wait on the start file)
    start.touch()
    done = [opener.communicate(timeout=900) for opener in openers]
    assert [opener.returncode for opener in openers] == [0, 0], [err[-2000:] for _, err in done]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in done]
    log = "".join(err for _, err in done)
    features = sorted(p.name for p in (store / "features").iterdir() if not p.name.startswith("."))
    assert results[0] == results[1]  # one teacher, one features artefact, the same bytes
    assert features == [results[0]["key"]]
    assert log.count(f"computing features/{results[0]['key']}") == 1, log
    assert log.count("computing ") == 1, log  # digits is embedded: nothing else goes through get_or_compute
    assert log.count("training one") == 1, log  # the teacher trained by one of them, read by the other
    assert len(list((store / "teachers").glob("*/teacher.safetensors"))) == 1
    left = [p.name for p in store.rglob(".*") if not p.name.endswith(".lock")]
    assert left == [], left


@pytest.fixture
def bare_steps(session_store, digits_features, monkeypatch):
    """pages._studio.steps outside a script run (its st calls are no-ops there), on the session's store."""
    pytest.importorskip("streamlit")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pages._studio import steps

    steps._workspace.clear()
    steps._READY.clear()
    steps._HANDOFF.clear()
    yield steps
    steps._workspace.clear()
    steps._READY.clear()


def test_sessions_of_one_process_open_a_workspace_once(bare_steps, monkeypatch):
    from ifbeta import pipeline
    from pages._studio.state import WorkspaceSpec

    opened, real = [], pipeline.open_workspace

    def counted(*args, **kwargs):  # the real open, counted
        opened.append(threading.current_thread().name)
        time.sleep(0.5)  # long enough for every session to arrive while it opens
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "open_workspace", counted)
    spec = WorkspaceSpec("digits")
    barrier, got, failed = threading.Barrier(4), {}, []

    def session(name):
        try:
            barrier.wait()
            got[name] = bare_steps.workspace(spec)
        except BaseException as error:  # noqa: BLE001  (reported below)
            failed.append(repr(error))

    threads = [threading.Thread(target=session, args=(f"s{i}",), name=f"s{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert failed == []
    assert len(opened) == 1, opened
    assert len({id(ws) for ws in got.values()}) == 1 and len(got) == 4
    assert bare_steps._HANDOFF == {}

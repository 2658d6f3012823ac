"""A classroom at once, in real browsers: several sessions open Influence then Feature map on an empty store.

One ``streamlit run app.py`` on a fresh store holding only the digits ``--teacher auto`` checkpoint (the
session's trained teacher, copied in); four Chromium sessions, the first a second ahead of the others,
so they arrive while it computes. The store's own log of what it computed (any thread, any session)
shows every artefact computed once; no session shows an exception or an error. The full-size run
(20 sessions, memory and page times) is benchmarks/classroom_load.py.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from browser_support import CHROMIUM

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium, or `make browser-deps`)", allow_module_level=True)
pytest.importorskip("playwright.async_api")

import classroom_support as room  # noqa: E402

SESSIONS = 4


async def _visit_all(url: str) -> list[room.Visit]:
    async with room.chromium() as browser:
        visits, contexts = await room.classroom(url, SESSIONS, head_start=1.0, browser=browser)
        for context in contexts:
            await context.close()
    return visits


def test_sessions_at_once_compute_every_artefact_once_and_see_no_error(tmp_path, session_store, digits_teacher):
    store_root = tmp_path / "store"
    room.seed_teacher(store_root, Path(digits_teacher.info.path), session_store.root)
    with room.logged_server(store_root, tmp_path / "server") as (url, _, log_path):
        visits = asyncio.run(_visit_all(url))
        computed = [artefact for _, artefact in room.computed(log_path)]
    census = room.store_census(store_root)
    stored = sorted(f"{kind}/{key}" for kind in ("features", "scores") for key in census[kind]["finished"])
    assert len(stored) == 2, census  # one features and one scores artefact
    assert sorted(computed) == stored, f"computed: {computed}"  # each once, by whichever session got there first
    assert [visit.errors for visit in visits] == [[]] * SESSIONS
    assert all(set(visit.seconds) == {"influence", "feature_map"} for visit in visits)
    left = [f"{kind}/{name}" for kind, entry in census.items() for name in entry["hidden"]]
    assert all(name.endswith(".lock") for name in left), f"temporaries left in the store: {left}"

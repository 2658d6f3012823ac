"""A classroom of concurrent app sessions in real headless Chromium, and what the server did meanwhile.

Used by tests/test_classroom.py (a few sessions) and benchmarks/classroom_load.py (20). Each session is
its own browser context (its own cookies and renderer, as one student's browser) that opens the
Influence page by URL, waits until the script run has ended, then follows the sidebar link to the
Feature map. The server is a real ``streamlit run app.py`` (``browser_support.serve_app``); a
``sitecustomize`` on its PYTHONPATH writes the store's "computing <kind>/<key>" log lines to a file,
so every artefact the server computed is counted, whichever thread computed it.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from browser_support import ARGS, CHROMIUM, serve_app

PAGES = (("influence", "Influence", "Samples to refit"), ("feature_map", "Feature map", "No selection yet"))
"""(url path, sidebar title, text near the end of the page: drawn once its scores and charts are) of each page."""
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
WARNINGS = '[data-testid="stAlertContentWarning"]'
RUNNING = '[data-testid="stStatusWidget"]'  # the "Running..." indicator, present while the script runs
PAGE_TIMEOUT_MS = 600_000

_SITECUSTOMIZE = """import logging, os
_handler = logging.FileHandler(os.environ["IFBETA_COMPUTE_LOG"])
_handler.setFormatter(logging.Formatter("%(created).3f %(threadName)s %(message)s"))
_log = logging.getLogger("ifbeta.store")
_log.addHandler(_handler)
_log.setLevel(logging.INFO)
"""


@dataclass
class Visit:
    """One session's walk: seconds each page took (from its request to the end of its script run),
    and the error or warning texts it showed."""

    name: str
    started: float = 0.0  # time.time() of the first request
    seconds: dict = field(default_factory=dict)
    finished: dict = field(default_factory=dict)  # page -> time.time() when it had drawn
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def computed(log_path: Path) -> list[tuple[float, str]]:
    """(time.time(), "<kind>/<key>") of every artefact the server started computing, in order."""
    if not log_path.is_file():
        return []
    return [(float(line.split(" ", 1)[0]), line.split("computing ", 1)[1].strip())
            for line in log_path.read_text().splitlines() if " computing " in line]


def finished_at(store_root: Path, artefact: str) -> float:
    """time.time() at which ``"<kind>/<key>"`` was finished (its config.json, written last)."""
    return (Path(store_root) / artefact / "config.json").stat().st_mtime


def store_census(root: Path) -> dict:
    """kind -> {"finished": keys with config.json, "hidden": dot-entries (locks, temporaries) left}."""
    census = {}
    for kind_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        entries = list(kind_dir.iterdir())
        census[kind_dir.name] = {
            "finished": sorted(p.name for p in entries if not p.name.startswith(".") and (p / "config.json").is_file()),
            "hidden": sorted(p.name for p in entries if p.name.startswith(".")),
        }
    return census


def seed_teacher(store_root: Path, teacher_path: Path, teacher_store: Path) -> None:
    """Copy a trained ``--teacher auto`` checkpoint into an otherwise empty store, at the same relative path."""
    target = Path(store_root) / Path(teacher_path).relative_to(teacher_store)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(teacher_path, target)


@contextlib.contextmanager
def logged_server(store_root: Path, work: Path):
    """``serve_app`` with the store's compute log on; yields (url, server pid, compute log path)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    log_path = work / "computed.log"
    log_path.unlink(missing_ok=True)
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "IFBETA_COMPUTE_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work), saved["PYTHONPATH"]]))
    os.environ["IFBETA_COMPUTE_LOG"] = str(log_path)
    try:
        before = set(_children())
        with serve_app(store_root, work / "streamlit.log") as url:
            (pid,) = [p for p in _children() if p not in before and b"streamlit" in _cmdline(p)]
            yield url, pid, log_path
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _children() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def memory_kib(pid: int) -> dict:
    """{"rss": VmRSS, "peak": VmHWM} of a process, in KiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]), "peak": int(fields["VmHWM"].split()[0])}


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def chromium_pss_kib() -> int:
    """Proportional set size of the Chromium processes this process started (shared pages counted once), KiB."""
    total = 0
    for pid in descendants(os.getpid()):
        if b"chromium" in _cmdline(pid).split(b"\0", 1)[0]:
            with contextlib.suppress(OSError, StopIteration):
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                total += int(next(line for line in rollup.splitlines() if line.startswith("Pss:")).split()[1])
    return total


async def _settled(page, text: str) -> None:
    """Wait until ``text`` is on the page and the script run has ended (no status widget)."""
    from playwright.async_api import expect

    await expect(page.get_by_text(text, exact=False).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    await expect(page.locator(RUNNING)).to_be_hidden(timeout=PAGE_TIMEOUT_MS)


async def _record(page, visit: Visit, name: str, text: str, started: float) -> None:
    await _settled(page, text)
    visit.finished[name] = time.time()
    visit.seconds[name] = visit.finished[name] - started
    visit.errors += [f"{name}: {t}" for t in await page.locator(ERRORS).all_inner_texts()]
    visit.warnings += [f"{name}: {t}" for t in await page.locator(WARNINGS).all_inner_texts()]


async def walk(browser, url: str, visit: Visit) -> object:
    """One session: Influence by URL, then Feature map from the sidebar; returns its open context."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)  # a busy machine serves 20 sessions slowly, not wrongly
    page = await context.new_page()
    (first, _, first_text), (_, second_title, second_text) = PAGES
    visit.started = time.time()
    await page.goto(f"{url}/{first}", timeout=PAGE_TIMEOUT_MS)
    await _record(page, visit, first, first_text, visit.started)
    started = time.time()
    await page.locator('[data-testid="stSidebarNav"] a', has_text=second_title).first.click()
    await _record(page, visit, PAGES[1][0], second_text, started)
    return context


async def classroom(url: str, sessions: int, *, head_start: float = 2.0, browser=None) -> tuple[list[Visit], list]:
    """``sessions`` concurrent walks; the first starts ``head_start`` s before the others (it triggers the
    first computation, the others arrive while it runs). Returns the visits and the open contexts."""
    visits = [Visit(f"session {i}") for i in range(sessions)]

    async def delayed(i: int):
        await asyncio.sleep(head_start if i else 0.0)
        return await walk(browser, url, visits[i])

    contexts = await asyncio.gather(*(delayed(i) for i in range(sessions)))
    return visits, list(contexts)


@contextlib.asynccontextmanager
async def chromium():
    """One headless Debian Chromium (never a downloaded one), closed after."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()

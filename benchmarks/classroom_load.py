"""A classroom at once: 20 concurrent app sessions (real headless Chromium) on one ``streamlit run app.py``.

Two phases, each on its own fresh server:

- **cold**: an EMPTY store (only the digits ``--teacher auto`` checkpoint, trained once beforehand and
  copied in, so teacher training is not part of the wait); session 0 opens the Influence page, the
  other sessions arrive ``--head-start`` s later while it computes the dataset cache, the features and
  the influence scores; every session then opens the Feature map. Checks: every artefact computed
  once (the store's own "computing" log lines, whichever thread computed), one finished artefact per
  kind, no temporary left, no session showing an exception or an error; reports page times (p50,
  p95), how long after the computing session each other session was served, the server's peak RSS.
- **growth**: the store now warm, sessions are added in steps (1, 5, 10, 20), each walking both
  pages and staying open; the server's RSS after each step gives the memory cost of one more session.

Usage: python benchmarks/classroom_load.py [--sessions 20] [--steps 1 5 10 20] [--label NAME]
       [--out benchmarks/results/classroom-load.md] [--work /tmp/classroom]
"""
from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import classroom_support as room  # noqa: E402

SETTLE_SECONDS = 3.0  # after a step, before reading RSS (the last replies and garbage collection)


def train_teacher(work: Path) -> Path:
    """The digits ``--teacher auto`` checkpoint in ``work/teacher-store`` (trained the first time, ~1 min)."""
    from ifbeta.data import datasets as data
    from ifbeta.models.teachers import resolve_teacher
    from ifbeta.store import Store
    from ifbeta.threads import limit_blas_threads

    limit_blas_threads()
    store = Store(work / "teacher-store")
    train, test = data.load("digits", "train", store=store), data.load("digits", "test", store=store)
    return Path(resolve_teacher("auto", train, store=store, test=test).info.path)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; values non-empty."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def cold(url: str, sessions: int, head_start: float) -> dict:
    async with room.chromium() as browser:
        visits, contexts = await room.classroom(url, sessions, head_start=head_start, browser=browser)
        browsers_kib = room.chromium_pss_kib()
        for context in contexts:
            await context.close()
    return {"visits": visits, "chromium_kib": browsers_kib}


async def growth(url: str, pid: int, steps: list[int]) -> list[dict]:
    rows = [{"sessions": 0, **room.memory_kib(pid), "seconds": []}]
    async with room.chromium() as browser:
        contexts, open_ = [], 0
        for target in steps:
            visits = [room.Visit(f"session {i}") for i in range(open_, target)]
            contexts += await asyncio.gather(*(room.walk(browser, url, v) for v in visits))
            open_ = target
            await asyncio.sleep(SETTLE_SECONDS)
            errors = [e for v in visits for e in v.errors]
            rows.append({"sessions": target, **room.memory_kib(pid), "errors": errors,
                         "seconds": [s for v in visits for s in v.seconds.values()],
                         "chromium_kib": room.chromium_pss_kib()})
        for context in contexts:
            await context.close()
    return rows


def run_cold(work: Path, teacher: Path, sessions: int, head_start: float) -> dict:
    store_root = work / "store"
    shutil.rmtree(store_root, ignore_errors=True)
    room.seed_teacher(store_root, teacher, work / "teacher-store")
    with room.logged_server(store_root, work / "cold-server") as (url, pid, log_path):
        started = time.time()
        result = asyncio.run(cold(url, sessions, head_start))
        computed = room.computed(log_path)
        result.update(wall=time.time() - started, memory=room.memory_kib(pid), computed=[a for _, a in computed],
                      census=room.store_census(store_root))
        if computed:
            result["compute"] = (computed[0][0], max(room.finished_at(store_root, a) for _, a in computed))
    return result


def run_growth(work: Path, steps: list[int]) -> dict:
    with room.logged_server(work / "store", work / "growth-server") as (url, pid, log_path):
        rows = asyncio.run(growth(url, pid, steps))
        return {"rows": rows, "computed": room.computed(log_path), "peak": room.memory_kib(pid)["peak"]}


def cold_section(result: dict) -> list[str]:
    visits = result["visits"]
    first = visits[0]
    influence = [v.seconds["influence"] for v in visits]
    feature_map = [v.seconds["feature_map"] for v in visits]
    began, ended = result.get("compute", (first.started, first.started))
    lag = [v.finished["influence"] - ended for v in visits]
    kinds = {kind: len(entry["finished"]) for kind, entry in result["census"].items() if kind != "teachers"}
    hidden = sorted(f"{kind}/{name}" for kind, entry in result["census"].items() for name in entry["hidden"])
    computed = result["computed"]
    lines = [f"Cold store, {len(visits)} sessions (session 0 first, the others {result['head_start']:g} s later); "
             f"wall {result['wall']:.1f} s.", "",
             "| measure | value |", "|---|---|",
             f"| artefacts computed (store log) | {len(computed)}: {', '.join(computed)} |",
             f"| distinct artefacts computed | {len(set(computed))} "
             f"(each once: {len(set(computed)) == len(computed)}) |",
             f"| finished artefacts per kind | {kinds} |",
             f"| hidden entries left (locks, temporaries) | {', '.join(hidden) or 'none'} |",
             f"| sessions showing an exception or error | {sum(bool(v.errors) for v in visits)} |",
             f"| sessions showing a warning | {sum(bool(v.warnings) for v in visits)} |",
             f"| computation (first 'computing' line to the last artefact finished) | {ended - began:.1f} s, "
             f"starting {began - first.started:.1f} s after session 0's request |",
             f"| Influence, session 0 | {first.seconds['influence']:.1f} s |",
             f"| Influence, all sessions p50 / p95 / max | {_spread(influence)} |",
             f"| Feature map (after Influence) p50 / p95 / max | {_spread(feature_map)} |",
             f"| Influence drawn after the computation ended, p50 / p95 / max | {_spread(lag)} |",
             f"| server peak RSS (VmHWM) | {result['memory']['peak'] / 1024:.0f} MiB |",
             f"| server RSS at the end | {result['memory']['rss'] / 1024:.0f} MiB |",
             f"| Chromium PSS, all sessions open | {result['chromium_kib'] / 1024:.0f} MiB |"]
    errors = [e for v in visits for e in v.errors + v.warnings]
    return lines + ([""] + [f"- {e}" for e in errors[:10]] if errors else [])


def _spread(values: list[float]) -> str:
    return f"{percentile(values, 0.5):.1f} / {percentile(values, 0.95):.1f} / {max(values):.1f} s"


def growth_section(result: dict) -> list[str]:
    rows = result["rows"]
    lines = ["Warm store, fresh server; sessions added in steps, every one kept open; RSS read "
             f"{SETTLE_SECONDS:g} s after each step.", "",
             "| open sessions | server RSS | added per new session | page p50 / p95 of the step | Chromium PSS |",
             "|---|---|---|---|---|"]
    for previous, row in zip([None] + rows, rows):
        per = "" if previous is None or row["sessions"] == previous["sessions"] else \
            f"{(row['rss'] - previous['rss']) / 1024 / (row['sessions'] - previous['sessions']):+.1f} MiB"
        pages = _spread(row["seconds"]).rsplit(" / ", 1)[0] + " s" if row["seconds"] else ""
        chromium = f"{row['chromium_kib'] / 1024:.0f} MiB" if "chromium_kib" in row else ""
        lines.append(f"| {row['sessions']} | {row['rss'] / 1024:.0f} MiB | {per} | {pages} | {chromium} |")
    first_open = next(row for row in rows if row["sessions"] >= 1)
    last = rows[-1]
    slope = (last["rss"] - first_open["rss"]) / 1024 / max(last["sessions"] - first_open["sessions"], 1)
    errors = [e for row in rows for e in row.get("errors", [])]
    return lines + ["", f"RSS per extra session ({first_open['sessions']} -> {last['sessions']}): {slope:+.1f} MiB; "
                    f"server peak RSS {result['peak'] / 1024:.0f} MiB; artefacts computed: "
                    f"{len(result['computed'])}; sessions' errors: {len(errors)}."]


def _write(out: Path, lines: list[str]) -> None:
    text = "\n".join(lines)
    print(text, flush=True)
    with open(out, "a") as handle:
        handle.write("\n" + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--steps", type=int, nargs="*", default=[1, 5, 10, 20], help="none: skip the growth phase")
    parser.add_argument("--head-start", type=float, default=2.0)
    parser.add_argument("--label", default="run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/classroom"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "classroom-load.md")
    args = parser.parse_args(argv)
    teacher = train_teacher(args.work)
    load_before = Path("/proc/loadavg").read_text().split()[0]
    cold_result = run_cold(args.work, teacher, args.sessions, args.head_start)
    cold_result["head_start"] = args.head_start
    header = [f"## {args.label}", "", f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
              f"Python {platform.python_version()}; load average {load_before} at the start, "
              f"{Path('/proc/loadavg').read_text().split()[0]} after the cold phase (2 cores, shared).", ""]
    _write(args.out, header + ["### Cold store", "", *cold_section(cold_result), ""])  # kept if growth fails
    if args.steps:
        _write(args.out, ["### RSS growth with sessions", "", *growth_section(run_growth(args.work, args.steps)), ""])
    failed = any(v.errors for v in cold_result["visits"]) or len(set(cold_result["computed"])) != len(
        cold_result["computed"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every bad input on every face, tried and checked: regenerates benchmarks/results/reliability.md.

    python benchmarks/reliability.py [--out benchmarks/results/reliability.md] [--work DIR]

Faces: the command line (a fresh ``python -m ifbeta.cli`` per row: its exit code and the one line it
printed), the Python API (the exception's type and message) and the app (``streamlit.testing.v1.AppTest``
through app.py: the messages on the page). Everything runs on digits (embedded) and small temporary
folders, in one store whose digits teacher is trained once (``train-teacher --epochs 3``) and reused.

Each row names the outcome it expects: ``clear error`` (the command exits 2 with one ``ifbeta <cmd>: error:``
line and no traceback; the API raises the named error; the page shows the message and no exception),
``refused`` (a clear error, and nothing was stored, listed, run or selected), ``recomputed`` (a damaged
artefact is quarantined with one warning and computed again to values equal to the originals), ``read with
warning`` (it works, and says what it left out or what it trusted) or ``read`` (it works). A row fails on a
traceback, a wrong exit code, a missing or second error line, an app message naming a ``--flag``, or any of
its own checks; the script exits 1 when a row fails. Rows are checked, never assumed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notes

OUTCOMES = ("clear error", "refused", "recomputed", "read with warning", "read")


@dataclass
class Row:
    face: str  # CLI | API | app
    input: str
    expected: str  # one of OUTCOMES
    observed: str
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Run:
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("ifbeta") and ": error:" in line]

    def said(self, needle: str) -> str | None:
        """The first stderr or stdout line holding ``needle``."""
        return next((line for line in (self.err + "\n" + self.out).splitlines() if needle in line), None)


class Bench:
    """The work folder, the shared store and the rows found so far."""

    def __init__(self, work: Path):
        self.work, self.cache = work, work / "cache"
        self.rows: list[Row] = []
        os.environ["IFBETA_CACHE"] = str(self.cache)

    # ------------------------------------------------------------------------------------ running
    def cli(self, *args, cache: Path | None = None, env: dict | None = None, timeout: int = 600) -> Run:
        done = subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache or self.cache), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
        return Run(done.returncode, done.stdout, done.stderr)

    def short(self, text: str, limit: int = 230) -> str:
        text = str(text).replace(str(self.work), "<tmp>").replace(str(ROOT), "<repo>").strip()
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def add(self, face: str, what: str, expected: str, observed: str, problems: list) -> Row:
        assert expected in OUTCOMES, expected
        if "Traceback" in observed:
            problems = problems + ["traceback"]
        row = Row(face, self.short(what, 120), expected, self.short(observed), problems)
        self.rows.append(row)
        mark = "ok  " if row.ok else "FAIL"
        print(f"{mark} {face:<4} {row.input[:70]:<70} {row.observed[:110]}"
              + ("" if row.ok else f"  <- {'; '.join(row.problems)}"), flush=True)
        return row

    # ------------------------------------------------------------------------------------ CLI checks
    def cli_error(self, what: str, args: tuple, contains=(), *, expected: str = "clear error", code: int = 2,
                  run: Run | None = None, env: dict | None = None, extra=None) -> Row:
        run = run or self.cli(*args, env=env)
        lines = run.error_lines()
        problems = [] if run.code == code else [f"exit {run.code}, expected {code}"]
        if "Traceback" in run.err + run.out:
            problems.append("traceback")
        if len(lines) != 1:
            problems.append(f"{len(lines)} error lines")
        line = lines[0] if lines else (run.err.strip().splitlines() or ["(nothing on stderr)"])[-1]
        problems += [f"no {needle!r}" for needle in ((contains,) if isinstance(contains, str) else contains)
                     if needle not in line]
        problems += list(extra() if extra else [])
        return self.add("CLI", what, expected, f"exit {run.code}: {line}", problems)

    def cli_ok(self, what: str, args: tuple, *, expected: str = "read", warning: str | None = None,
               run: Run | None = None, extra=None) -> tuple[Row, Run]:
        run = run or self.cli(*args)
        problems = [] if run.code == 0 else [f"exit {run.code}"]
        if "Traceback" in run.err + run.out:
            problems.append("traceback")
        said = run.said(warning) if warning else None
        if warning and said is None:
            problems.append(f"no line with {warning!r}")
        problems += list(extra(run) if extra else [])
        last = said or ((run.out.strip().splitlines() or run.err.strip().splitlines() or [""])[-1])
        return self.add("CLI", what, expected, f"exit {run.code}: {last}", problems), run

    def cli_errors(self, cases: list[tuple]) -> None:
        """Independent ``(what, args, contains)`` error rows, two processes at a time (rows in order)."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = list(pool.map(lambda case: self.cli(*case[1]), cases))
        for (what, args, contains), run in zip(cases, runs):
            self.cli_error(what, args, contains, run=run)

    # ------------------------------------------------------------------------------------ API checks
    def api(self, what: str, call, expected: str, errors: tuple = (), contains=(), check=None, *,
            warned: bool = False, show=None) -> Row:
        import logging

        seen: list[str] = []
        handler = logging.Handler(level=logging.WARNING)
        handler.emit = lambda record: seen.append(record.getMessage())
        logging.getLogger("ifbeta").addHandler(handler)
        try:
            value = call()
        except Exception as error:  # noqa: BLE001  (every exception is an observation)
            text = (str(error).strip().splitlines() or [""])[0]
            observed, problems = f"{type(error).__name__}: {text}", []
            if expected not in ("clear error", "refused"):
                problems.append("raised")
            elif not isinstance(error, errors):
                problems.append(f"{type(error).__name__}, expected {'/'.join(e.__name__ for e in errors)}")
            problems += [f"no {n!r}" for n in ((contains,) if isinstance(contains, str) else contains) if n not in text]
            problems += list(check(error) if check else [])
        else:
            observed = "returned" + (f" {show(value)}" if show else "") + (f"; {'; '.join(seen)}" if seen else "")
            problems = ["no error raised"] if expected in ("clear error", "refused") else []
            if (expected == "read with warning" or warned) and not seen:
                problems.append("no warning logged")
            problems += list(check(value) if check else [])
        finally:
            logging.getLogger("ifbeta").removeHandler(handler)
        return self.add("API", what, expected, observed, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reliability.md"))
    parser.add_argument("--work", default=None, help="work folder (default: a new temporary one, removed after)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ifbeta-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.time()
    bench = Bench(work)
    import reliability_faces as faces

    try:
        for step in faces.STEPS:
            step(bench)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.time() - began
    Path(args.out).write_text(faces.report(bench.rows, seconds))
    failed = [row for row in bench.rows if not row.ok]
    print(f"{len(bench.rows)} rows, {len(failed)} failed, {seconds:.0f} s -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

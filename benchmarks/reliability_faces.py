"""The rows of benchmarks/reliability.py for the command line and the Python API, in the order they run
(``STEPS``; the app's rows are in reliability_app.py), and the report they make."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import reliability_inputs as inputs

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
"""A command-line flag, as the app must never name one."""


def json_of(run) -> dict:
    """The JSON object a ``--json`` command printed last."""
    return json.loads(run.out.strip().splitlines()[-1])


def _store(b):
    from ifbeta.store import Store

    return Store(b.cache)


# ------------------------------------------------------------------------------------------- teachers
def prepare(b) -> None:
    """Bad files, image folders, and the one digits teacher every row reuses (the registry's case)."""
    from ifbeta.models import zoo

    b.marker = b.work / "pickle-ran"
    b.ckpt = inputs.checkpoints(b.work / "checkpoints", b.marker)
    b.folders = inputs.image_folders(b.work / "folders")
    _, run = b.cli_ok("`train-teacher --epochs 3` into an empty store", ("train-teacher", "--epochs", "3", "--json"),
                      extra=lambda r: [] if json_of(r)["default"] else ["not made the default"])
    b.teacher = Path(json_of(run)["checkpoint"])
    b.teacher_sha = zoo.file_sha256(b.teacher)

    def one_teacher(run):
        listed = json_of(run)["teachers"]
        wrong = len(listed) != 1 or not listed[0]["default"] or listed[0]["path"] != str(b.teacher)
        return [f"{len(listed)} teachers listed: {[t['path'] for t in listed]}"] if wrong else []

    b.cli_ok("then `teachers`: exactly one teacher, the one just trained, the default", ("teachers", "--json"),
             extra=one_teacher)

    def uses_it(run):
        key = json_of(run)["splits"]["train"]["key"]
        document = json.loads((_store(b).path("features", key) / "config.json").read_text())
        sha = document["config"]["teacher_sha256"]
        slots = sorted((b.cache / "teachers").glob("*/teacher.safetensors"))
        problems = [] if sha == b.teacher_sha else ["features of another teacher"]
        problems += [] if "training one" not in run.err else ["trained a second teacher"]
        return problems + ([] if len(slots) == 1 else [f"{len(slots)} teachers in the store"])

    _, run = b.cli_ok("then `extract --teacher auto`: uses that teacher, trains none", ("extract", "--teacher", "auto",
                      "--json"), extra=uses_it)
    b.features_key = json_of(run)["splits"]["train"]["key"]
    _, run = b.cli_ok("then `score --teacher auto`: the same teacher's features", ("score", "--teacher", "auto", "--json"),
                      extra=lambda r: [] if "training one" not in r.err else ["trained a second teacher"])
    b.scores_key = json_of(run)["scores_key"]
    b.subset = b.work / "subset"
    b.cli_ok("`select --method random --ratio 0.5` (a subset for the export rows)",
             ("select", "--method", "random", "--ratio", "0.5", "--out", str(b.subset)))


# ---------------------------------------------------------------------------------------- corruption
def _damaged(b, what: str, kind: str, key: str, name: str, damage, command: tuple, *, warned: bool = True) -> None:
    store = _store(b)
    original = {n: np.array(a) for n, a in store.load(kind, key)[0].items()}
    damage(store.path(kind, key) / name)
    quarantined = set((b.cache / "quarantine" / kind).glob(f"{key}.*"))

    def recomputed(run):
        arrays = _store(b).load(kind, key)[0]
        problems = [] if all(np.array_equal(original[n], arrays[n]) for n in original) else ["values differ"]
        moved = set((b.cache / "quarantine" / kind).glob(f"{key}.*")) - quarantined
        if warned and len(moved) != 1:
            problems.append(f"{len(moved)} folders quarantined")
        if warned and run.err.count("failed its check") != 1:
            problems.append(f"{run.err.count('failed its check')} warnings")
        return problems

    b.cli_ok(what + ": values equal to the originals", command, expected="recomputed",
             warning="failed its check" if warned else None, extra=recomputed)


def corruption(b) -> None:
    f, s = b.features_key, b.scores_key
    store = _store(b)
    inputs.truncate(store.path("features", f) / "features.npy")

    def names_it(run):
        return [] if run.code == 1 and run.said(f"features/{f}: features.npy") else ["the damage not reported"]

    run = b.cli("store", "verify")
    b.add("CLI", "`store verify` with features.npy cut short", "clear error",
          f"exit {run.code}: {run.said(f'features/{f}') or run.out.strip()}", names_it(run))
    shutil.rmtree(store.path("features", f))  # the verify row only reads; put the artefact back as it was
    b.cli("extract")
    _damaged(b, "features.npy cut to half its size, then `extract`", "features", f, "features.npy", inputs.truncate,
             ("extract",))
    _damaged(b, "one byte of logits.npy changed (size kept), then `extract`", "features", f, "logits.npy",
             inputs.flip_byte, ("extract",))
    _damaged(b, "scores.npy data zeroed (valid .npy header), then `score`", "scores", s, "scores.npy",
             inputs.zero_data, ("score",))
    _damaged(b, "fold.npy deleted, then `score`", "scores", s, "fold.npy", Path.unlink, ("score",))
    _damaged(b, "config.json overwritten with garbage, then `score`", "scores", s, "config.json",
             lambda p: p.write_text("{not json"), ("score",))
    _damaged(b, "config.json deleted (an unfinished artefact), then `score`", "scores", s, "config.json",
             Path.unlink, ("score",), warned=False)
    b.cli_ok("`store verify` after the recomputations", ("store", "verify"), warning="no problem found")

    def emptied(run):
        left = list((b.cache / "quarantine").glob("*/*"))
        return [f"{len(left)} quarantined folders left"] if left else []

    b.cli_ok("`store gc --yes`: the quarantine removed", ("store", "gc", "--yes"), extra=emptied)
    good = f"imagefolder:{b.folders['good']}"
    b.cli_ok("`info` of a small ImageFolder (decoded into the store)", ("info", "--dataset", good))
    keys = [key for key, doc in _store(b).entries("datasets") if doc["config"]["split"] == "train"]
    _damaged(b, "the ImageFolder's decoded images.npy cut short, then `info`", "datasets", keys[0], "images.npy",
             inputs.truncate, ("info", "--dataset", good))
    copy = b.work / "cache-cut-teacher"
    shutil.copytree(b.cache, copy, ignore=shutil.ignore_patterns("*.lock"))
    inputs.truncate(copy / b.teacher.relative_to(b.cache))
    run = b.cli("extract", cache=copy)
    b.cli_error("the default teacher's checkpoint cut short, then `extract --teacher auto`", (), "teacher.safetensors",
                run=run)


# --------------------------------------------------------------------------------------------- flags
def flags(b) -> None:
    """Bad flags and values of every command (``what``, args, text the error line must hold)."""
    out, missing, notes = str(b.work / "out"), str(b.work / "missing"), str(b.folders["file"])
    ids = b.work / "unknown-ids.txt"
    ids.write_text("digits/train/999999\n")
    def full(name):  # a run folder of its own per row: a run that started by mistake blocks no other row
        return ("--subset", "full", "--out", str(b.work / f"run-{name}"))

    cases = [
        ("unknown command `frobnicate`", ("frobnicate",), "invalid choice"),
        ("`info --bogus`", ("info", "--bogus"), "unrecognized arguments"),
        ("`info --dataset digitz`", ("info", "--dataset", "digitz"), "unknown dataset 'digitz'"),
        ("`train-teacher --epochs 1.5`", ("train-teacher", "--epochs", "1.5"), "invalid int value"),
        ("`train-teacher --epochs 0`", ("train-teacher", "--epochs", "0"), "--epochs must be at least 1"),
        ("`train-teacher --epochs -3`", ("train-teacher", "--epochs", "-3"), "--epochs must be at least 1"),
        ("`train-teacher --arch magic`", ("train-teacher", "--arch", "magic"), "unknown architecture 'magic'"),
        ("`teachers --set-default nobody`", ("teachers", "--set-default", "nobody"), "no teacher of digits is named"),
        ("`extract --pool ten`", ("extract", "--pool", "ten"), "invalid int value"),
        ("`extract --pool -5`", ("extract", "--pool", "-5"), "pool"),
        ("`extract --pool 5` (fewer than the 10 classes)", ("extract", "--pool", "5"), "10 classes"),
        ("`score --solver magic`", ("score", "--solver", "magic"), "invalid choice"),
        ("`score --proxy magic`", ("score", "--proxy", "magic"), "invalid choice"),
        ("`score --neighbours 5` without `--proxy knn`", ("score", "--neighbours", "5"), "add --proxy knn"),
        ("`score --proxy knn --neighbours 0`", ("score", "--proxy", "knn", "--neighbours", "0"), "at least 1"),
        ("`score --proxy knn --bandwidth -1`", ("score", "--proxy", "knn", "--bandwidth", "-1"), "must be positive"),
        ("`score --solver cg --cg-tolerance -1`", ("score", "--solver", "cg", "--cg-tolerance", "-1"), "cg_tolerance"),
        ("`score --cg-tolerance 0.1` without cg", ("score", "--cg-tolerance", "0.1"), "cg solver only"),
        ("`validate-influence --samples 2`", ("validate-influence", "--samples", "2"), "--samples must be at least 3"),
        ("`prune` without --ratio", ("prune", "--out", out), "required"),
        ("`prune --ratio abc`", ("prune", "--ratio", "abc", "--out", out), "invalid float value"),
        ("`prune --ratio 0`", ("prune", "--ratio", "0", "--out", out), "strictly between 0 and 1"),
        ("`prune --ratio 1.5`", ("prune", "--ratio", "1.5", "--out", out), "strictly between 0 and 1"),
        ("`prune --ratio 0.999` (k below the class count)", ("prune", "--ratio", "0.999", "--out", out), "lower the ratio"),
        ("`prune --estimator magic`", ("prune", "--ratio", "0.5", "--estimator", "magic", "--out", out), "invalid choice"),
        ("`prune --steps 0`", ("prune", "--ratio", "0.5", "--steps", "0", "--out", out), "--steps must be at least 1"),
        ("`select` without --method", ("select", "--ratio", "0.5", "--out", out), "--method, --ratio and --out"),
        ("`select --method magic`", ("select", "--method", "magic", "--ratio", "0.5", "--out", out), "unknown method"),
        ("`select --option oops`", ("select", "--method", "random", "--ratio", "0.5", "--out", out, "--option", "oops"),
         "KEY=VALUE"),
        ("`select --ratio 1`", ("select", "--method", "random", "--ratio", "1", "--out", out), "strictly between"),
        ("`select --exclude` a missing file", ("select", "--method", "random", "--ratio", "0.5", "--out", out,
                                               "--exclude", missing), "does not exist"),
        ("`select --exclude` ids not in the pool", ("select", "--method", "random", "--ratio", "0.5", "--out", out,
                                                    "--exclude", str(ids)), "not in this pool"),
        ("`select --exclude-tag nobody`", ("select", "--method", "random", "--ratio", "0.5", "--out", out,
                                           "--exclude-tag", "nobody"), "no sample of this pool is tagged"),
        ("`distill` without --subset", ("distill", "--out", out), "required"),
        ("`distill --epochs 0`", ("distill", *full("epochs"), "--epochs", "0"), "--epochs must be at least 1"),
        ("`distill --eval-every 0`", ("distill", *full("eval-every"), "--eval-every", "0"), "--eval-every must be at least 1"),
        ("`distill --batch-size 0`", ("distill", *full("batch-size"), "--batch-size", "0"), "--batch-size must be at least 1"),
        ("`distill --lr -1`", ("distill", *full("lr"), "--lr", "-1"), "--lr must be positive"),
        ("`distill --student magic`", ("distill", *full("student"), "--student", "magic"), "unknown student"),
        ("`distill --budget magic`", ("distill", *full("budget"), "--budget", "magic"), "invalid choice"),
        ("`distill --subset` a missing folder", ("distill", "--subset", missing, "--out", out), "does not exist"),
        ("`distill --subset` a file (file given as a folder)", ("distill", "--subset", notes, "--out", out),
         "is a file, not a folder"),
        ("`bench` without --preset or --dataset", ("bench", "--out", out), "give --preset or --dataset"),
        ("`bench --preset magic`", ("bench", "--preset", "magic", "--out", out), "invalid choice"),
        ("`bench --methods magic`", ("bench", "--preset", "digits", "--methods", "magic", "--out", out), "unknown method"),
        ("`bench --ratios 1.5`", ("bench", "--preset", "digits", "--ratios", "1.5", "--out", out), "strictly between"),
        ("`bench --policy foo=1`", ("bench", "--preset", "digits", "--policy", "foo=1", "--out", out),
         "unknown --policy setting"),
        ("`transfer-check` without --ratio", ("transfer-check",), "required"),
        ("`transfer-check --policies 1`", ("transfer-check", "--ratio", "0.5", "--policies", "1"), "at least 2"),
        ("`transfer-check --seeds 0`", ("transfer-check", "--ratio", "0.5", "--seeds", "0"), "at least 1"),
        ("`transfer-check --student magic`", ("transfer-check", "--ratio", "0.5", "--student", "magic"), "unknown student"),
        ("`export --subset` a missing folder", ("export", "--subset", missing, "--out", out), "does not exist"),
        ("`export --mode magic`", ("export", "--subset", str(b.subset), "--out", out, "--mode", "magic"), "invalid choice"),
        ("`store clean` (no such action)", ("store", "clean"), "invalid choice"),
        ("`--cache` a file, then `extract`", ("extract",), "not a folder"),
    ]
    b.cli_errors(cases[:-1])
    run = b.cli("extract", cache=b.folders["file"])
    b.cli_error(*cases[-1][::2], run=run)
    taken = b.work / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    b.cli_error("`export --out` a folder holding other files", ("export", "--subset", str(b.subset), "--out", str(taken)),
                "--force", extra=lambda: [] if sorted(p.name for p in taken.iterdir()) == ["notes.txt"] else ["touched"])


# ---------------------------------------------------------------------------------------- checkpoints
def checkpoints(b) -> None:
    c, arch = b.ckpt, ("--teacher-arch",)
    cases = [
        ("plain-text .pt as --teacher", ("extract", "--teacher", str(c["text"])), "not a checkpoint (it is plain text)"),
        ("empty .pt as --teacher", ("extract", "--teacher", str(c["empty"])), "not a checkpoint (it is empty)"),
        ("random bytes .pt as --teacher", ("extract", "--teacher", str(c["garbage"])), "neither a ZIP archive nor a pickle"),
        ("a folder as --teacher (folder given as a file)", ("extract", "--teacher", str(c["folder"])),
         "is a folder, not a checkpoint file"),
        ("a missing --teacher file", ("extract", "--teacher", str(c["missing"])), "does not exist"),
        ("state_dict without its architecture", ("extract", "--teacher", str(c["state dict"])), "--teacher-arch"),
        ("state_dict with the wrong --teacher-arch", ("extract", "--teacher", str(c["state dict"]), *arch, "resnet8"),
         "does not fit resnet8"),
        ("safetensors cnn-tiny with --teacher-arch cnn-small", ("extract", "--teacher", str(c["good"]), *arch,
                                                                 "cnn-small"), "pass --teacher-arch cnn-tiny"),
        ("safetensors of 3 classes on digits (wrong class count)", ("extract", "--teacher", str(c["3 classes"])),
         "predicts 3 classes"),
        ("safetensors for RGB images on digits", ("extract", "--teacher", str(c["rgb"])), "cnn-tiny expects (8, 1, 3, 3)"),
        ("safetensors with NaN weights", ("extract", "--teacher", str(c["nan weights"])), "NaN or Inf"),
        ("safetensors cut short", ("extract", "--teacher", str(c["truncated safetensors"])), "not a readable safetensors"),
        ("a state_dict named model.txt", ("extract", "--teacher", str(c["txt suffix"])), "--teacher-arch"),
        ("malicious pickle (torch.save ZIP) without trust", ("extract", "--teacher", str(c["malicious pickle"])),
         "--trust-pickle"),
        ("malicious bare pickle without trust", ("extract", "--teacher", str(c["malicious bare pickle"])), "pickle"),
        ("a pickled nn.Module without trust", ("extract", "--teacher", str(c["pickled module"])), "--trust-pickle"),
        ("TorchScript without --trust-pickle", ("extract", "--teacher", str(c["torchscript"])), "--trust-pickle"),
        ("TorchScript of 3 classes with trust", ("extract", "--teacher", str(c["torchscript 3 classes"]),
                                                 "--trust-pickle"), "predicts 3 classes"),
        ("TorchScript without forward_features, with trust", ("extract", "--teacher",
                                                              str(c["torchscript no forward_features"]),
                                                              "--trust-pickle"), "without forward_features"),
        ("`--teacher-arch magic`", ("extract", "--teacher", str(c["state dict"]), *arch, "magic"), "magic"),
    ]
    b.cli_errors(cases)
    ran = b.marker.exists()
    b.add("CLI", "after every malicious pickle above: did its code run?", "refused",
          "the payload's folder was created" if ran else "the payload's folder does not exist: nothing ran",
          ["the pickle ran"] if ran else [])
    b.cli_ok("TorchScript with --trust-pickle", ("extract", "--teacher", str(c["torchscript"]), "--trust-pickle"),
             expected="read with warning", warning="because trust_pickle=True")


# ------------------------------------------------------------------------------------------ datasets
def datasets(b) -> None:
    f = b.folders
    cases = [
        ("`--dataset imagefolder:` a file (file given as a folder)", ("info", "--dataset", f"imagefolder:{f['file']}"),
         "is a file, not a folder"),
        ("`--dataset imagefolder:` a missing folder", ("info", "--dataset", f"imagefolder:{f['missing']}"),
         "does not exist"),
        ("ImageFolder without train/", ("info", "--dataset", f"imagefolder:{f['no train']}"), "train"),
        ("ImageFolder whose train/ holds no class folder", ("info", "--dataset", f"imagefolder:{f['no classes']}"),
         "class"),
        ("ImageFolder with an unreadable image", ("info", "--dataset", f"imagefolder:{f['corrupt']}"), "--skip-corrupt"),
        ("path traversal: `imagefolder:<good>/train/../../missing`",
         ("info", "--dataset", f"imagefolder:{f['good']}/train/../../missing"), "does not exist"),
    ]
    b.cli_errors(cases)
    b.cli_ok("ImageFolder with an unreadable image, --skip-corrupt", ("info", "--dataset", f"imagefolder:{f['corrupt']}",
             "--skip-corrupt"), expected="read with warning", warning="skipped 1 unreadable")
    b.cli_ok("ImageFolder with a hidden class folder (train/.secret)", ("info", "--dataset", f"imagefolder:{f['hidden']}"),
             expected="read with warning", warning="not read: 1 hidden class folder")
    b.cli_ok("ImageFolder with class names 'a b', 'a_b', 'ünï猫'", ("info", "--dataset", f"imagefolder:{f['non-ascii']}"),
             extra=lambda r: [] if "ünï猫" in r.out and "a b" in r.out else ["class names changed"])


# --------------------------------------------------------------------------------------- concurrency
def _start(b, *args, cache: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache or b.cache), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            cwd=ROOT, start_new_session=True)


def concurrency(b) -> None:
    out = b.work / "run"
    first = _start(b, "distill", "--subset", "full", "--epochs", "500", "--out", str(out))
    try:
        deadline = time.monotonic() + 300
        while not (out / "progress.json").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        b.cli_error("a second `distill` into the --out of a running one", ("distill", "--subset", "full", "--epochs",
                    "500", "--out", str(out)), (f"pid {first.pid}", "is in use by another run"),
                    extra=lambda: [] if first.poll() is None else ["the first run stopped"])
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)
    cold = b.work / "cache-cold"
    shutil.copytree(b.cache / "teachers", cold / "teachers", ignore=shutil.ignore_patterns("*.lock"))
    both = [_start(b, "-v", "score", "--json", cache=cold) for _ in range(2)]
    done = [process.communicate(timeout=600) for process in both]
    log = "".join(err for _, err in done)
    counts = {kind: len(re.findall(rf"computing {kind}/", log)) for kind in ("features", "scores")}
    keys = {json.loads(o.strip().splitlines()[-1])["scores_key"] for o, _ in done if o.strip()}
    problems = [f"exit {p.returncode}" for p in both if p.returncode != 0]
    problems += [f"{kind} computed {n} times" for kind, n in counts.items() if n != 1] + ([] if len(keys) == 1 else
                                                                                          ["different keys"])
    b.add("CLI", "two `score` at once on a store holding only the teacher", "read",
          f"exit {[p.returncode for p in both]}; computed once each: {counts}; one scores key: {len(keys) == 1}",
          problems)


STEPS = [prepare, corruption, flags, checkpoints, datasets, concurrency]


def _api_steps():
    import reliability_api
    import reliability_app

    return [reliability_api.rows, reliability_app.rows]


STEPS += [lambda b: [step(b) for step in _api_steps()]]


# ---------------------------------------------------------------------------------------------- report
def kill_points() -> list[str]:
    """What tests/test_kill_anywhere.py covers, read from its own constants (not run here)."""
    tree = ast.parse((ROOT / "tests" / "test_kill_anywhere.py").read_text())
    values = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
    kills, seed = ast.literal_eval(values["KILLS"]), ast.literal_eval(values["SEED"])
    commands = [ast.literal_eval(k) for k in values["COMMANDS"].keys] + ["distill (the app's launcher)"]
    return [f"`tests/test_kill_anywhere.py` (marked slow, not run by this script): for each of {len(commands)} "
            f"commands ({', '.join(commands)}), {kills} runs SIGKILLed (whole process group) after a delay drawn "
            f"uniformly over (0, 1] of the uninterrupted run's wall time (seed {seed}), then one run to the end; every "
            f"file of the result is compared bitwise with an uninterrupted run, and no temporary may be left. That is "
            f"{kills * len(commands)} kill points per run of the test; the test asserts that at least one kill of "
            "every command landed mid-run (where each lands depends on the machine's speed)."]


def sessions() -> list[str]:
    """The classroom numbers, quoted from benchmarks/results/classroom-load.md."""
    text = (ROOT / "benchmarks" / "results" / "classroom-load.md").read_text()
    wanted = ("artefacts computed (store log)", "sessions showing an exception or error", "server peak RSS",
              "RSS per extra session")
    quoted = [line for line in text.splitlines() if any(w in line for w in wanted)]
    heading = next((line for line in text.splitlines() if line.startswith("## ")), "")
    return [f"From benchmarks/results/classroom-load.md ({heading.lstrip('# ')}):", ""] + [f"> {line}" for line in quoted]


def report(rows, seconds: float) -> str:
    failed = [r for r in rows if not r.ok]
    faces = {face: sum(r.face == face for r in rows) for face in ("CLI", "API", "app")}
    outcomes = {o: sum(r.expected == o for r in rows) for o in ("clear error", "refused", "recomputed",
                                                                 "read with warning", "read")}
    lines = ["# Reliability: every bad input, on every face", "",
             "`python benchmarks/reliability.py` (regenerates this file; exits 1 if a row fails). "
             "Digits and small temporary folders, one store whose digits teacher is trained once "
             "(`train-teacher --epochs 3`). See the script's docstring for what each outcome means and how "
             "rows are checked.", "",
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, Python {sys.version.split()[0]}, "
             f"{os.cpu_count()} CPUs; {seconds:.0f} s.", "",
             f"**{len(rows)} inputs, {len(rows) - len(failed)} pass, {len(failed)} fail.** Per face: "
             + ", ".join(f"{k} {v}" for k, v in faces.items()) + ". Per expected outcome: "
             + ", ".join(f"{k} {v}" for k, v in outcomes.items()) + ".", "",
             "| # | face | input | expected | observed | result |", "|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        cells = [str(i), row.face, row.input, row.expected, row.observed,
                 "pass" if row.ok else "**FAIL**: " + "; ".join(row.problems)]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += ["", "## Kill points survived", ""] + kill_points()
    lines += ["", "## Sessions held", ""] + sessions() + [""]
    return "\n".join(lines)

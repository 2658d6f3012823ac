"""Benchmark grids (BENCHMARKS.md): select with every method, distil, and report paired results.

A grid is (method x ratio x seed x budget) plus the full-pool ceiling per seed. Every subset and
every run lives under ``OUT/`` (``subsets/<method>/r<ratio>-s<seed>/``, ``runs/<cell>/``); a killed
grid rerun with the same arguments reuses finished runs, resumes partial ones from their last epoch
and continues. Seeds are paired: the same seed gives the same student initialisation for every
method. Reports last-epoch test accuracy as mean +- std and the paired difference to ``random``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ifbeta import distill, pipeline
from ifbeta.config import PolicyConfig
from ifbeta.store import Store
from ifbeta.train import OnStep

log = logging.getLogger(__name__)

CHEAP_METHODS = ("random", "random-balanced", "ifbeta", "ifbeta-entropy", "influence-top", "entropy",
                 "el2n-teacher", "ccs", "dual-beta", "moderate")


@dataclass(frozen=True)
class BenchSpec:
    dataset: str
    teacher: str = "auto"
    student: str | None = None
    pool: int | None = None
    ratios: tuple[float, ...] = (0.5, 0.7, 0.9)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = CHEAP_METHODS
    budgets: tuple[str, ...] = ("epochs",)
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float = 0.05
    steps_ratios: tuple[float, ...] | None = None  # ratios run under the steps budget (None: all)
    notes: tuple[str, ...] = field(default_factory=tuple)
    full: bool = True  # include the full-pool ceiling (one run per seed)
    policy: dict = field(default_factory=dict)  # PolicyConfig overrides for ifbeta / ifbeta-entropy (e.g. shrinkage)


PRESETS = {
    "digits": BenchSpec(dataset="digits", seeds=(0, 1, 2, 3, 4), epochs=30,
                        notes=("digits: for tests and demos, not for claims",)),
    "cifar10-cpu": BenchSpec(dataset="imagefolder:../shared/data/cifar10", pool=10_000, student="resnet8",
                             epochs=15, budgets=("epochs", "steps"), steps_ratios=(0.5, 0.7), batch_size=256,
                             learning_rate=0.1,
                             notes=("pool: fixed stratified 10,000 of the 50,000 training images (seed 0)",)),
    "paper": BenchSpec(dataset="cifar100", teacher="auto", student="resnet8x4", ratios=(0.3, 0.5, 0.7, 0.9),
                       epochs=240, batch_size=64, learning_rate=0.05, budgets=("epochs", "steps"),
                       notes=("needs a GPU; teacher resnet32x4 via --teacher", "cosine schedule")),
}


def cells(spec: BenchSpec) -> list[dict]:
    """Every distillation run of the grid: one dict per (method, ratio, seed, budget) + full per seed."""
    out = [{"method": "full", "ratio": 0.0, "seed": s, "budget": "epochs"} for s in spec.seeds] if spec.full else []
    for budget in spec.budgets:
        ratios = spec.ratios if budget == "epochs" or spec.steps_ratios is None else spec.steps_ratios
        out += [{"method": m, "ratio": r, "seed": s, "budget": budget}
                for r in ratios for m in spec.methods for s in spec.seeds]
    return out


def cell_name(cell: dict) -> str:
    if cell["method"] == "full":
        return f"full-s{cell['seed']}"
    return f"{cell['method']}-r{cell['ratio']:g}-s{cell['seed']}-{cell['budget']}"


def select_all(workspace: pipeline.Workspace, spec: BenchSpec, out: Path, on_step: OnStep | None = None) -> dict:
    """Write every (method, ratio, seed) subset; returns {(method, ratio, seed): selection info}."""
    result, _ = pipeline.scores(workspace)
    infos, total = {}, len(spec.methods) * len(spec.ratios) * len(spec.seeds)
    for position, (method, ratio, seed) in enumerate(
            (m, r, s) for m in spec.methods for r in spec.ratios for s in spec.seeds):
        directory = out / "subsets" / method / f"r{ratio:g}-s{seed}"
        chosen = pipeline.choose(workspace, method, ratio, seed=seed, policy_config=PolicyConfig(**spec.policy))
        if not (directory / "manifest.json").is_file():
            pipeline.write_subset(workspace, chosen, directory, ratio=ratio, seed=seed, influence_result=result)
        infos[(method, ratio, seed)] = {k: v for k, v in chosen.info.items() if k != "trace"}
        if on_step:
            on_step(position + 1, {"event": "batch", "batch": position + 1, "batches": total, "method": method})
    return infos


def _distill_command(spec: BenchSpec, cell: dict, out: Path, cache: Path) -> list[str]:
    subset = "full" if cell["method"] == "full" else str(out / "subsets" / cell["method"] /
                                                         f"r{cell['ratio']:g}-s{cell['seed']}")
    command = [sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), "distill", "--dataset", spec.dataset,
               "--teacher", spec.teacher, "--subset", subset, "--seed", str(cell["seed"]), "--budget",
               cell["budget"], "--out", str(out / "runs" / cell_name(cell)), "--lr", str(spec.learning_rate),
               "--eval-every", "1000000"]  # the grid reports the last epoch only: test once, at the end
    for flag, value in (("--pool", spec.pool), ("--student", spec.student), ("--epochs", spec.epochs),
                        ("--batch-size", spec.batch_size)):
        if value is not None:
            command += [flag, str(value)]
    return command


def distill_all(spec: BenchSpec, out: Path, store: Store, *, workers: int = 1, on_step: OnStep | None = None) -> None:
    """Run every cell as its own ``ifbeta distill`` process (``workers`` at a time); finished cells are skipped."""
    todo = [c for c in cells(spec) if not (out / "runs" / cell_name(c) / "metrics.json").is_file()]
    done = [0]
    env = {**os.environ, "IFBETA_BLAS_THREADS": "1"}
    if workers > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // workers)))

    def launch(cell: dict) -> None:
        log_path = out / "runs" / f"{cell_name(cell)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as handle:
            code = subprocess.call(_distill_command(spec, cell, out, store.root), stdout=handle,
                                   stderr=subprocess.STDOUT, env=env)
        if code != 0:
            raise RuntimeError(f"distillation {cell_name(cell)} failed (exit {code}); see {log_path}")
        done[0] += 1
        if on_step:
            on_step(done[0], {"event": "batch", "batch": done[0], "batches": len(todo), "cell": cell_name(cell)})

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        list(pool.map(launch, todo))


def collect(spec: BenchSpec, out: Path, selection_infos: dict) -> list[dict]:
    """One row per finished cell (method, ratio, seed, budget)."""
    rows = []
    for cell in cells(spec):
        metrics_path = out / "runs" / cell_name(cell) / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        info = selection_infos.get((cell["method"], cell["ratio"], cell["seed"]), {})
        rows.append({**cell, "test_top1": metrics["test_top1"], "test_top5": metrics["test_top5"],
                     "train_samples": metrics["train_samples"], "epochs_run": metrics["epochs_run"],
                     "steps": metrics["steps"], "distill_seconds": metrics["seconds"],
                     "selection_seconds": info.get("seconds", 0.0) + info.get("policy_seconds", 0.0),
                     "alpha": info.get("alpha"), "beta": info.get("beta")})
    return rows


def run(spec: BenchSpec, out: str | Path, *, store: Store | None = None, workers: int = 1,
        on_step: OnStep | None = None, report_only: bool = False) -> list[dict]:
    """The whole protocol: workspace, selections, distillations, then results.{csv,md,png} in ``out``."""
    from ifbeta import report

    out, store = Path(out), store or Store()
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    began = time.perf_counter()
    workspace = pipeline.open_workspace(spec.dataset, teacher=spec.teacher, store=store, pool=spec.pool, on_step=on_step)
    infos = select_all(workspace, spec, out, on_step)
    if not report_only:
        distill_all(spec, out, store, workers=workers, on_step=on_step)
    rows = collect(spec, out, infos)
    report.write(rows, spec, out, workspace=workspace, seconds=time.perf_counter() - began)
    return rows


def spec_from(preset: str | None, **overrides) -> BenchSpec:
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset] if preset else BenchSpec(dataset=overrides.get("dataset") or "digits")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def paired_difference(rows: list[dict], method: str, ratio: float, budget: str, baseline: str = "random"
                      ) -> tuple[float, float, int]:
    """Mean and std over seeds of acc(method) - acc(baseline) at the same (ratio, seed, budget)."""
    by_seed = {r["seed"]: r["test_top1"] for r in rows
               if r["method"] == baseline and r["ratio"] == ratio and r["budget"] == budget}
    diffs = [r["test_top1"] - by_seed[r["seed"]] for r in rows if r["method"] == method and r["ratio"] == ratio
             and r["budget"] == budget and r["seed"] in by_seed]
    if not diffs:
        return float("nan"), float("nan"), 0
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(diffs)

"""Benchmark grids (docs/BENCHMARKS.md): select with every method, distil, and report paired results.

A grid is (method x ratio x seed x budget) plus the full-pool ceiling per seed. Every subset and
every run lives under ``OUT/`` (``subsets/<method>/r<ratio>-s<seed>/``, ``runs/<cell>/``); a killed
grid rerun with the same arguments reuses finished runs, resumes partial ones from their last epoch
and continues. Seeds are paired: the same seed gives the same student initialisation for every
method. Reports last-epoch test accuracy as mean +- std and the paired difference to ``random``.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from ifbeta import pipeline
from ifbeta.config import PolicyConfig
from ifbeta.distill import runs
from ifbeta.evaluation import bench_report as report
from ifbeta.evaluation.grid import BenchSpec, cell_name, cells
from ifbeta.progress import OnStep
from ifbeta.store import Store

log = logging.getLogger(__name__)

def select_all(workspace: pipeline.Workspace, spec: BenchSpec, out: Path, on_step: OnStep | None = None) -> dict:
    """Write every (method, ratio, seed) subset; returns {(method, ratio, seed): selection info}."""
    influence_config = spec.influence_config()
    result, _ = pipeline.scores(workspace, influence_config)
    infos, total = {}, len(spec.methods) * len(spec.ratios) * len(spec.seeds)
    for position, (method, ratio, seed) in enumerate(
            (m, r, s) for m in spec.methods for r in spec.ratios for s in spec.seeds):
        directory = out / "subsets" / method / f"r{ratio:g}-s{seed}"
        chosen = pipeline.choose(workspace, method, ratio, seed=seed, policy_config=PolicyConfig(**spec.policy),
                                 influence_config=influence_config)
        if not (directory / "manifest.json").is_file():
            pipeline.write_subset(workspace, chosen, directory, ratio=ratio, seed=seed, influence_result=result)
        infos[(method, ratio, seed)] = {k: v for k, v in chosen.info.items() if k != "trace"}
        if on_step:
            on_step(position + 1, {"event": "batch", "batch": position + 1, "batches": total, "method": method})
    return infos


def _distill_command(spec: BenchSpec, cell: dict, out: Path, cache: Path) -> list[str]:
    subset = "full" if cell["method"] == "full" else str(out / "subsets" / cell["method"] /
                                                         f"r{cell['ratio']:g}-s{cell['seed']}")
    return runs.distill_command(cache, out / "runs" / cell_name(cell), dataset=spec.dataset, subset=subset,
                                teacher=spec.teacher, student=spec.student, epochs=spec.epochs, seed=cell["seed"],
                                budget=cell["budget"], pool=spec.pool, batch_size=spec.batch_size,
                                learning_rate=spec.learning_rate, teacher_arch=spec.teacher_arch,
                                trust_pickle=spec.trust_pickle, skip_corrupt=spec.skip_corrupt,
                                eval_every=1_000_000)  # the grid reports the last epoch only: test once, at the end


def pending_cells(spec: BenchSpec, out: Path) -> list[dict]:
    """The cells without a finished run in ``out``, seed-major (every method and ratio of seed 0, then
    of seed 1, ...), so a grid stopped part way holds complete paired seeds across all methods."""
    return sorted((c for c in cells(spec) if not (out / "runs" / cell_name(c) / "metrics.json").is_file()),
                  key=lambda c: c["seed"])


def distill_all(spec: BenchSpec, out: Path, store: Store, *, workers: int = 1, on_step: OnStep | None = None) -> None:
    """Run every cell as its own ``ifbeta distill`` process (``workers`` at a time); finished cells are skipped."""
    todo = pending_cells(spec, out)
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

    out, store = Path(out), store or Store.default()
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    began = time.perf_counter()
    workspace = pipeline.open_workspace(spec.dataset, teacher=spec.teacher, store=store, pool=spec.pool,
                                        teacher_arch=spec.teacher_arch, trust_pickle=spec.trust_pickle,
                                        skip_corrupt=spec.skip_corrupt, on_step=on_step)
    infos = select_all(workspace, spec, out, on_step)
    if not report_only:
        distill_all(spec, out, store, workers=workers, on_step=on_step)
    rows = collect(spec, out, infos)
    report.write(rows, spec, out, workspace=workspace, seconds=None if report_only else time.perf_counter() - began)
    return rows

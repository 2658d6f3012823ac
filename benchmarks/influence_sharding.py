"""Sharded influence scoring under torchrun against one process, on a seeded synthetic problem.

N = 50,000, d = 256, C = 100 (the teacher-like class clusters of influence_scaling.py, float32 in
memory, every process generates the same arrays from seed 0), 2-fold cross-fitting, fixed mu = 1 (no
mu search, as influence-scaling.md), first-order scores, solver ekfac (``--solver cg`` also works).
Three runs, each in its own processes:

  1 process x 1 thread, 1 process x 2 threads, torchrun 2 processes x 1 thread (gloo)

(torch and BLAS threads set explicitly). Seconds per stage (score()'s clock), peak RSS per rank
(VmHWM) and the RSS before scoring (the data and torch), and the agreement of the scores with the
1 x 1 run. Usage:  python benchmarks/influence_sharding.py [--solver ekfac] [--size 50000x256x100]
Writes benchmarks/results/influence-sharding.md.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("standardise", "fit", "solve", "scores", "teacher_scores")


def synthetic(n: int, d: int, c: int):
    """Class clusters and a random linear teacher with label noise (influence_scaling.py), float32."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, c, n)
    centres = rng.normal(size=(c, d)) * 2
    features = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 4096):  # in blocks, so float64 temporaries do not set the peak RSS
        stop = min(n, start + 4096)
        features[start:stop] = centres[labels[start:stop]] + rng.normal(size=(stop - start, d))
    weights = (rng.normal(size=(d, c)) / np.sqrt(d)).astype(np.float32)
    logits = features @ weights * 4
    logits[np.arange(n), labels] += 3
    return features, logits, labels


def rss_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> None:
    import torch

    from ifbeta.config import InfluenceConfig, ProxyConfig
    from ifbeta.influence import scores as influence
    from ifbeta.influence import sharding
    from ifbeta.threads import limit_blas_threads

    torch.set_num_threads(args.threads)
    limit_blas_threads(args.threads)
    rank, world = sharding.context()  # opens the gloo group under torchrun
    n, d, c = (int(v) for v in args.size.split("x"))
    features, logits, labels = synthetic(n, d, c)
    before = rss_mib("VmRSS")
    config = InfluenceConfig(solver=args.solver, estimator="first_order", proxy=ProxyConfig(mu=1.0))
    start, cpu = time.perf_counter(), time.process_time()
    result = influence.score(features, logits, labels, config=config)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    report = {"rank": rank, "world": world, "threads": args.threads, "seconds": seconds, "cpu_seconds": cpu,
              "load": os.getloadavg()[0], "stages": result.seconds,
              "rss_before_mib": before, "peak_rss_mib": rss_mib("VmHWM"), "grad_norms": result.grad_norms}
    (Path(args.folder) / f"report{rank}.json").write_text(json.dumps(report))
    if rank == 0:
        np.save(Path(args.folder) / "scores.npy", result.scores)
    sharding.barrier()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, threads: int, args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        command = [str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--size", args.size,
                   "--solver", args.solver, "--folder", folder]
        if processes > 1:
            command = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
                       "127.0.0.1", "--master_port", str(free_port()), *command]
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "IFBETA_BLAS_THREADS": str(threads),
                       "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
        began = time.perf_counter()
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=environment)
        if done.returncode != 0:
            raise SystemExit(f"{processes} x {threads} failed:\n{done.stderr[-3000:]}")
        reports = [json.loads((Path(folder) / f"report{r}.json").read_text()) for r in range(processes)]
        return {"processes": processes, "threads": threads, "wall": time.perf_counter() - began, "ranks": reports,
                "scores": np.load(Path(folder) / "scores.npy")}


def agreement(scores: np.ndarray, reference: np.ndarray) -> str:
    from scipy.stats import spearmanr

    relative = float(np.abs(scores - reference).max() / np.abs(reference).max())
    same = float((np.argsort(scores, kind="stable") == np.argsort(reference, kind="stable")).mean())
    return f"{relative:.1e} / {spearmanr(scores, reference)[0]:.8f} / {100 * same:.2f}%"


def write(runs: list[dict], args) -> None:
    reference = runs[0]["scores"]
    lines = [f"# Sharded influence scoring: 1 process against torchrun 2 processes ({args.solver})", "",
             f"Seeded synthetic problem (not real features): N x d x C = {args.size}, teacher-like class clusters",
             "and a random linear teacher with label noise (benchmarks/influence_sharding.py, seed 0, float32 in",
             "memory), 2-fold cross-fitting, fixed mu = 1 (no mu search), first-order scores, solver "
             f"`{args.solver}`, CPU.", "",
             "This machine has 2 cores (shared with other jobs, so timings are noisy), so torchrun's 2 processes x",
             "1 thread (gloo, each rank streams half the rows of every pass) are compared to 1 process x 2 threads",
             "AND 1 process x 1 thread; torch and BLAS threads are set explicitly in every process.", "",
             "Wall seconds depend on what else runs on the cores; CPU seconds (this process's, all its threads)",
             "show the work each rank does. Load = the machine's 1-minute load average at the end of the run.", "",
             "| run | rank | total s | CPU s | load | " + " | ".join(STAGES) + " | RSS before scoring (MiB) "
             "| peak RSS (MiB) | scores vs 1 x 1: max rel diff / Spearman / same rank |",
             "|---|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|"]
    for run in runs:
        for report in run["ranks"]:
            stages = " | ".join(f"{report['stages'].get(stage, 0.0):.1f}" for stage in STAGES)
            match = "reference" if run is runs[0] else agreement(run["scores"], reference)
            lines.append(f"| {run['processes']} proc x {run['threads']} thread | {report['rank']} "
                         f"| {report['seconds']:.1f} | {report['cpu_seconds']:.1f} | {report['load']:.1f} | {stages} | {report['rss_before_mib']:.0f} "
                         f"| {report['peak_rss_mib']:.0f} | {match} |")
    single = runs[0]["ranks"][0]["seconds"]
    lines += ["", "Speed-up of the scoring (total s of rank 0) over 1 x 1: " + ", ".join(
        f"{run['processes']} x {run['threads']}: {single / run['ranks'][0]['seconds']:.2f}x" for run in runs[1:]) + ".",
        "Wall seconds of each launch (imports, data generation, process group): " + ", ".join(
        f"{run['processes']} x {run['threads']}: {run['wall']:.0f}" for run in runs) + ".", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="50000x256x100")
    parser.add_argument("--solver", default="ekfac", choices=["cg", "ekfac"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "influence-sharding.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    runs = []
    for processes, threads in ((1, 1), (1, 2), (2, 1)):
        runs.append(launch(processes, threads, args))
        print(f"{processes} x {threads}: {runs[-1]['ranks'][0]['seconds']:.1f} s", flush=True)
    write(runs, args)


if __name__ == "__main__":
    main()

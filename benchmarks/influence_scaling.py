"""Influence scoring time and peak memory per solver on synthetic teacher-like features.

Each (N, d, C, solver) runs in its own process so its peak memory is that run's alone: peak RSS
(VmHWM, includes the pages of the memory-mapped feature file the process touched) and peak
anonymous memory (RssAnon sampled every 0.2 s: what the scoring itself allocates). Features are a
float16 memory-mapped file (as a large pool would be stored); teacher logits come from a random
linear teacher with label noise (the distribution of ``synthetic`` in bilevel_timing.py). Usage:
  python benchmarks/influence_scaling.py --sizes 50000x64x10 50000x256x100 --solvers direct cg ekfac
Writes benchmarks/results/influence-scaling.md (the per-solver table between its markers; the other
sections of the file are kept). ``direct`` is reported as not run, with the arithmetic, when its dense
Hessian would not fit in memory (see ``direct_infeasible``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, logging, resource, sys, threading, time
import numpy as np
from ifbeta.threads import limit_blas_threads
from ifbeta.influence import scores as influence
from ifbeta.config import InfluenceConfig, ProxyConfig
limit_blas_threads()

peak = {"anon": 0, "file": 0}
def sample():
    while True:
        fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
        for key, name in (("anon", "RssAnon"), ("file", "RssFile")):
            peak[key] = max(peak[key], int(fields[name].split()[0]))
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()

class Capture(logging.Handler):  # the cg solver logs its iteration count
    messages = []
    def emit(self, record):
        self.messages.append(record.getMessage())
logging.getLogger("ifbeta").addHandler(Capture())
logging.getLogger("ifbeta").setLevel(logging.INFO)

n, d, c, solver, folder = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rng = np.random.default_rng(0)
features = np.lib.format.open_memmap(f"{folder}/phi.npy", mode="w+", dtype=np.float16, shape=(n, d))
labels = rng.integers(0, c, n)
centres = rng.normal(size=(c, d)) * 2
for start in range(0, n, 65536):
    stop = min(n, start + 65536)
    features[start:stop] = (centres[labels[start:stop]] + rng.normal(size=(stop - start, d))).astype(np.float16)
features.flush()
weights = rng.normal(size=(d, c)) / np.sqrt(d)
logits = (np.asarray(features, np.float32) @ weights * 4).astype(np.float32)
logits[np.arange(n), labels] += 3
del features
features = np.load(f"{folder}/phi.npy", mmap_mode="r")
time.sleep(0.5)
generation = dict(peak)
peak["anon"] = peak["file"] = 0
config = InfluenceConfig(solver=solver, estimator="first_order", proxy=ProxyConfig(mu=1.0))
folds = []
start = time.perf_counter()
result = influence.score(features, logits, labels, config=config,
                         on_step=lambda step, info: folds.append(info) if info["stage"] == "fold" else None)
seconds = time.perf_counter() - start
time.sleep(0.3)
cg = [int(m.split()[2]) for m in Capture.messages if m.startswith("cg solver:")]
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mib": peak["anon"] / 1024, "peak_file_mib": peak["file"] / 1024,
                  "generation_anon_mib": generation["anon"] / 1024, "stages": result.seconds,
                  "fit_iterations": [f["iterations"] for f in folds], "grad_norms": result.grad_norms,
                  "cg_iterations": cg, "harmful": float((result.scores < 0).mean()),
                  "finite": bool(np.isfinite(result.scores).all())}))
"""

MEMORY_BYTES = 24 * 2**30  # this machine
DIRECT_COPIES = 5  # objective.hessian: result, lower, tril(lower), tril(lower, -1).T and the sum coexist


def direct_infeasible(n: int, d: int, c: int) -> str | None:
    """Why ``direct`` cannot run at this size on this machine, or None."""
    size = c * (d + 1)
    gib = DIRECT_COPIES * 8 * size**2 / 2**30
    if gib < 0.5 * MEMORY_BYTES / 2**30:
        return None
    build = (n // 2) * size**2  # syrk: 2 rows of C(d+1) per sample, one triangle -> ~ n/2 * size^2 per fold x 2 folds
    return (f"not run: C(d+1) = {size:,}; the dense Hessian is {8 * size**2 / 2**30:.1f} GiB and objective.hessian holds "
            f"~{DIRECT_COPIES} such arrays at once (~{gib:.0f} GiB, this machine has 24 GB); building it costs "
            f"~{2 * build:.1e} multiply-adds for the two folds (N/2 x (C(d+1))^2 each), ~{4 * build / 5e10 / 60:.0f} "
            f"min at 50 GFLOP/s, plus a {size:,}^3/3 Cholesky per fold")


def run_one(n: int, d: int, c: int, solver: str) -> dict:
    with tempfile.TemporaryDirectory(dir=os.environ.get("IFBETA_BENCH_TMP")) as folder:
        done = subprocess.run([sys.executable, "-c", CHILD, str(n), str(d), str(c), solver, folder],
                              capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows) -> list[str]:
    lines = ["| N x d x C | solver | seconds | fit / solve / scores (s) | peak RSS (MiB) | peak anon (MiB) "
             "| fit Newton its | solver CG its | final grad norm |", "|---|---|---|---|---|---|---|---|---|"]
    for size, solver, report in rows:
        if "error" in report or "skipped" in report:
            lines.append(f"| {size} | {solver} | {report.get('error') or report['skipped']} | | | | | | |")
            continue
        stages = report["stages"]
        split = " / ".join(f"{stages.get(k, 0.0):.1f}" for k in ("fit", "solve", "scores"))
        norms = ", ".join(f"{g:.1e}" for g in report["grad_norms"])
        lines.append(f"| {size} | {solver} | {report['seconds']:.1f} | {split} | {report['peak_rss_mib']:.0f} "
                     f"| {report['peak_anon_mib']:.0f} | {report['fit_iterations']} | {report['cg_iterations'] or '-'} "
                     f"| {norms} |")
    return lines


def replace_section(path: Path, name: str, lines: list[str]) -> None:
    """Write ``lines`` between <!-- name:begin --> and <!-- name:end --> in path, keeping the rest."""
    block = "\n".join([f"<!-- {name}:begin -->", *lines, f"<!-- {name}:end -->"])
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text.lstrip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["50000x64x10", "50000x256x100"])
    parser.add_argument("--solvers", nargs="+", default=["direct", "cg", "ekfac"])
    parser.add_argument("--out", default="benchmarks/results/influence-scaling.md")
    parser.add_argument("--json", default=None, help="also write the raw reports here")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        n, d, c = (int(v) for v in size.split("x"))
        for solver in args.solvers:
            reason = direct_infeasible(n, d, c) if solver == "direct" else None
            report = {"skipped": reason} if reason else run_one(n, d, c, solver)
            rows.append((size, solver, report))
            print(size, solver, json.dumps(report), flush=True)
    lines = ["Synthetic teacher-like features (class clusters, float16 memmap), 2-fold cross-fitting, fixed mu = 1",
             "(no mu search), first-order scores, BLAS single-threaded; each run in its own process. Peak RSS",
             "includes the memory-mapped feature pages the process touched; peak anon is what scoring allocates.", "",
             *table(rows)]
    replace_section(Path(args.out), "per-solver", lines)
    if args.json:
        Path(args.json).write_text(json.dumps([{"size": s, "solver": v, **r} for s, v, r in rows], indent=1))


if __name__ == "__main__":
    main()

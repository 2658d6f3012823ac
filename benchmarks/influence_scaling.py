"""Influence scoring time and peak memory per solver on synthetic teacher-like features.

Each (N, d, C, solver) runs in its own process so peak RSS is that run's alone. Features are a
float16 memory-mapped file (as a large pool would be stored); teacher logits come from a random
linear teacher with label noise. Usage:
  python benchmarks/influence_scaling.py --sizes 50000x64x10 [50000x256x100 ...] --solvers direct cg ekfac
Writes benchmarks/results/influence-scaling.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
from ifbeta.runtime import limit_blas_threads
from ifbeta import influence
from ifbeta.config import InfluenceConfig, ProxyConfig
limit_blas_threads()
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
features = np.load(f"{folder}/phi.npy", mmap_mode="r")
config = InfluenceConfig(solver=solver, estimator="first_order", proxy=ProxyConfig(mu=1.0))
start = time.perf_counter()
result = influence.score(features, logits, labels, config=config)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "stages": result.seconds,
                  "harmful": float((result.scores < 0).mean())}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["50000x64x10"])
    parser.add_argument("--solvers", nargs="+", default=["direct", "cg", "ekfac"])
    parser.add_argument("--out", default="benchmarks/results/influence-scaling.md")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        n, d, c = (int(v) for v in size.split("x"))
        for solver in args.solvers:
            with tempfile.TemporaryDirectory() as folder:
                done = subprocess.run([sys.executable, "-c", CHILD, str(n), str(d), str(c), solver, folder],
                                      capture_output=True, text=True)
            if done.returncode != 0:
                rows.append((size, solver, "failed: " + done.stderr.strip().splitlines()[-1][:120], ""))
                continue
            report = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((size, solver, f"{report['seconds']:.1f}", f"{report['peak_mib']:.0f}"))
            print(size, solver, report, flush=True)
    lines = ["# Influence scoring: time and peak memory per solver", "",
             "Synthetic teacher-like features (class clusters, float16 memmap), 2-fold cross-fitting, fixed mu = 1",
             "(no mu search), first-order scores, BLAS single-threaded; each run in its own process.", "",
             "| N x d x C | solver | seconds | peak RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {s} | {v} | {t} | {m} |" for s, v, t, m in rows] + [""]
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()

"""Selection time of every method on the CIFAR-10 teacher's features (the benchmark pool).

Usage: python benchmarks/selection_timing.py [--pool 10000] [--ratio 0.7] [--costly]
Writes benchmarks/results/selection-timing.md. Influence scores are computed once and shared
(their cost is reported separately), as in the product; ifbeta rows include the bilevel loop.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from ifbeta import pipeline
from ifbeta.selection import registry as selection
from ifbeta.threads import limit_blas_threads

DATASET = "imagefolder:../shared/data/cifar10"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--costly", action="store_true", help="also time el2n-train and forgetting (real training)")
    parser.add_argument("--out", default="benchmarks/results/selection-timing.md")
    args = parser.parse_args()
    limit_blas_threads()
    ws = pipeline.open_workspace(DATASET, pool=args.pool)
    began = time.perf_counter()
    result, _ = pipeline.scores(ws)
    inputs = pipeline.selection_inputs(ws, result, with_images=args.costly)
    rows = []
    for method, spec in selection.METHODS.items():
        if spec.costly and not args.costly:
            continue
        options = {"alpha": 2.0, "beta": 1.0} if method == "ifbeta-fixed" else {}
        start = time.perf_counter()
        chosen = selection.select(method, inputs, args.ratio, seed=0, **options)
        seconds = time.perf_counter() - start
        rows.append((method, seconds, chosen.info.get("training_seconds")))
        print(f"{method:<16} {seconds:8.2f} s", flush=True)
    lines = [f"# Selection time per method: CIFAR-10 teacher features (resnet20, pool {args.pool}, d=64, C=10)",
             "", f"Ratio {args.ratio}; one process, BLAS single-threaded; {platform.processor() or platform.machine()}.",
             f"Influence scores (cross-fitted, direct solver; shared by influence-based methods): "
             f"{sum(v for k, v in result.seconds.items() if k == 'total'):.1f} s when first computed.",
             "", "| method | seconds | of which real training |", "|---|---|---|"]
    lines += [f"| {m} | {s:.2f} | {'' if t is None else f'{t:.1f}'} |" for m, s, t in rows]
    lines += ["", f"Total wall time of this script: {time.perf_counter() - began:.0f} s.", ""]
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()

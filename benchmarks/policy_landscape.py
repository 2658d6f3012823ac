"""How much the bilevel objective J can tell subsets apart: J over an (alpha, beta) grid.

For the benchmark pool of CIFAR-10 teacher features, the proxy's validation loss J is evaluated at
every (alpha, beta) in {1/4, 1/2, 1, 2, 4}^2 for each ratio and score axis, for the default proxy and
for variants that limit what the proxy can fit. Reported per cell: J at uniform (alpha = beta = 1,
i.e. random pruning), the grid's argmin and how much lower it is than uniform, and the grid's spread
(max - min) relative to J at uniform. Lower J is better.

Usage: python benchmarks/policy_landscape.py [--pool 10000]. Writes benchmarks/results/policy-landscape.md.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from ifbeta import pipeline
from ifbeta.config import KDConfig
from ifbeta.influence import objective, proxy
from ifbeta.policy import axes, landscape
from ifbeta.threads import limit_blas_threads

GRID = (0.25, 0.5, 1.0, 2.0, 4.0)
RATIOS = (0.5, 0.7, 0.9)


def variants(features: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
    """name -> (features, KD config of the proxy, mu or None = chosen by validation)."""
    centred = features - features.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    z, _, _ = objective.standardise(features)
    chosen, _ = proxy.choose_mu(z, logits, labels, kd=KDConfig())
    return {
        "default (teacher features, tau 4, lam 0.9, mu by validation)": (features, KDConfig(), None),
        "ridge x100": (features, KDConfig(), 100 * chosen),
        "first 8 principal components": (centred @ components[:8].T, KDConfig(), None),
        "proxy on hard labels (lam 0)": (features, KDConfig(lam=0.0), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--out", default="benchmarks/results/policy-landscape.md")
    args = parser.parse_args()
    limit_blas_threads()
    workspace = pipeline.open_workspace("imagefolder:../shared/data/cifar10", pool=args.pool)
    result, _ = pipeline.scores(workspace)
    f = workspace.features
    features, logits = np.asarray(f.features, np.float64), np.asarray(f.logits, np.float64)
    axis_values = {axis: axes.axis_values(result, axis) for axis in ("influence", "entropy")}
    rows, began = [], time.perf_counter()
    for name, (inputs, kd, mu) in variants(features, logits, f.labels).items():
        for axis, values in axis_values.items():
            for ratio in RATIOS:
                grid = landscape.landscape(inputs, logits, f.labels, ratio=ratio, axis_values=values, alphas=GRID,
                                           betas=GRID, kd=kd, mu=mu)
                J = np.array(grid["J"])
                uniform = J[GRID.index(1.0), GRID.index(1.0)]
                i, j = np.unravel_index(int(np.argmin(J)), J.shape)
                rows.append((name, axis, ratio, uniform, GRID[i], GRID[j], J[i, j] - uniform,
                             (J.max() - J.min()) / uniform))
                print(rows[-1], flush=True)
    lines = ["# The bilevel objective J over the (alpha, beta) grid", "",
             f"CIFAR-10 teacher features (resnet20, d = 64), the benchmark pool of {args.pool:,} images, 2-fold",
             f"cross-fitting; grid (alpha, beta) in {{{', '.join(f'{g:g}' for g in GRID)}}}^2. J = the proxy's validation",
             "loss (lower is better); uniform = alpha = beta = 1 = random pruning. Spread = (max - min) / J(uniform).",
             f"{time.perf_counter() - began:.0f} s on the 2-core CPU (load {os.getloadavg()[0]:.1f}).", "",
             "| proxy | axis | ratio | J(uniform) | argmin (alpha, beta) | J(argmin) - J(uniform) | spread |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {a} | {r:g} | {u:.4f} | ({ga:g}, {gb:g}) | {d:+.5f} | {s:.1%} |"
              for n, a, r, u, ga, gb, d, s in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

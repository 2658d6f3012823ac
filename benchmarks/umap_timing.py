"""UMAP of the CIFAR-10 teacher's features for all 50,000 training images: first run and cached.

Usage: python benchmarks/umap_timing.py   (writes benchmarks/results/umap-timing.md)
"""
from __future__ import annotations

import time
from pathlib import Path

from ifbeta import embed, pipeline
from ifbeta.threads import limit_blas_threads


def main() -> None:
    limit_blas_threads()
    ws = pipeline.open_workspace("imagefolder:../shared/data/cifar10")
    features = ws.features
    start = time.perf_counter()
    embed.pca(features.features)
    pca_seconds = time.perf_counter() - start
    start = time.perf_counter()
    embed.umap(features.features, store=ws.store, input_key=features.key)
    first = time.perf_counter() - start
    start = time.perf_counter()
    embed.umap(features.features, store=ws.store, input_key=features.key)
    cached = time.perf_counter() - start
    lines = ["# Feature map timings: CIFAR-10 teacher features, 50,000 x 64", "",
             "| step | seconds |", "|---|---|", f"| PCA | {pca_seconds:.2f} |",
             f"| UMAP, first run (includes importing umap-learn and numba compilation) | {first:.1f} |",
             f"| UMAP, cached (artefact store) | {cached:.2f} |", ""]
    Path("benchmarks/results/umap-timing.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

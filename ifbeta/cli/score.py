"""ifbeta score: cross-fitted influence of every training sample, plus teacher-only scores."""
from __future__ import annotations

import time

import numpy as np

from ifbeta.cli import common

HELP = "score every training sample by influence in the teacher's feature space (cached)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    common.add_influence(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    from ifbeta import pipeline

    config = common.influence_config(args)  # bad settings fail before any work
    began = time.perf_counter()
    ws = common.workspace(args, description="extract")
    opened = time.perf_counter() - began
    bar = common.ProgressBar("score")
    result, key = pipeline.scores(ws, config, on_step=bar)  # under torchrun: rows sharded over the ranks
    bar.close()
    from ifbeta.influence import sharding

    if not sharding.lead():  # rank 0 reports; every rank holds the same result
        return 0
    labels, names = ws.train.labels, ws.train.class_names
    per_class = {names[c]: float(result.scores[labels == c].mean()) for c in range(len(names))}
    summary = {"dataset": ws.train.name, "n": len(labels), "solver": result.solver, "mu": result.mu,
               "harmful_fraction": float((result.scores < 0).mean()), "mean_score_per_class": per_class,
               "seconds": {"dataset_teacher_features": opened, **result.seconds}, "scores_key": key,
               "grad_norms": result.grad_norms}
    print(f"scored {len(labels)} samples with {result.solver} (mu={result.mu:.3g}); "
          f"{100 * summary['harmful_fraction']:.1f}% harmful (s < 0)")
    print("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["seconds"].items()))
    width = max(len(n) for n in names)
    for name, value in per_class.items():
        print(f"  {name:<{width}}  mean s = {value:+.3e}")
    if args.json:
        common.print_json(summary)
    return 0 if np.isfinite(result.scores).all() else 1

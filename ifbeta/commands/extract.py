"""ifbeta extract: teacher penultimate features and logits for the training pool (cached)."""
from __future__ import annotations

from ifbeta.commands import common

HELP = "extract and cache the teacher's features and logits (shards under torchrun)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    import time

    began = time.perf_counter()
    ws = common.workspace(args, description="extract")
    features = ws.features
    summary = {"dataset": ws.train.name, "n": len(ws.train), "dim": int(features.features.shape[1]),
               "teacher": ws.teacher.info.arch, "teacher_train_accuracy": features.teacher_accuracy,
               "features_key": features.key, "seconds": time.perf_counter() - began}
    print(f"features {summary['n']} x {summary['dim']} from {summary['teacher']} "
          f"(teacher accuracy on the pool {summary['teacher_train_accuracy']:.4f}), key {features.key}")
    if args.json:
        common.print_json(summary)
    return 0

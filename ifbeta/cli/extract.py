"""ifbeta extract: teacher penultimate features and logits for the training pool (cached)."""
from __future__ import annotations

from ifbeta.cli import common

HELP = "extract and cache the teacher's features and logits (shards under torchrun)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    parser.add_argument("--float16", action="store_true", help="store features as float16 (half the size)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    import time

    from ifbeta.models.features import teacher_features

    began = time.perf_counter()
    ws = common.workspace(args, description="extract")
    summary = {"dataset": ws.train.name, "teacher": ws.teacher.info.arch, "splits": {}}
    for split in (ws.train, ws.test):
        bar = common.ProgressBar(f"extract {split.split}")
        features = teacher_features(ws.teacher, split, store=ws.store, on_step=bar, float16=args.float16)
        bar.close()
        summary["splits"][split.split] = {"n": len(split), "dim": int(features.features.shape[1]),
                                          "dtype": str(features.features.dtype), "key": features.key,
                                          "teacher_accuracy": features.teacher_accuracy}
        print(f"{split.split}: features {len(split)} x {features.features.shape[1]} ({features.features.dtype}) "
              f"from {ws.teacher.info.arch}, teacher accuracy {features.teacher_accuracy:.4f}, key {features.key}")
    summary["seconds"] = time.perf_counter() - began
    if args.json:
        common.print_json(summary)
    return 0

"""ifbeta info: what a dataset holds (split sizes, classes, samples per class); reads no teacher."""
from __future__ import annotations

from ifbeta.cli import common

HELP = "describe a dataset: samples per split and per class, class names (no teacher needed)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    train, test = common.load_splits(args)
    splits = {}
    for split in (train, test):
        counts = [int(c) for c in split.class_counts()]
        shape = [int(d) for d in split.images.shape[1:]]  # (C, H, W)
        splits[split.split] = {"n": len(split), "per_class": counts, "shape": shape}
        print(f"{split.split}: {len(split)} samples of shape {'x'.join(map(str, shape))}, per class {counts}")
    print(f"{train.name}: {train.num_classes} classes: {', '.join(train.class_names)}")
    if args.json:
        common.print_json({"dataset": train.name, "classes": list(train.class_names), "splits": splits})
    return 0

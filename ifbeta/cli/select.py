"""ifbeta select: any selection method (baselines and IF-Beta) behind one interface."""
from __future__ import annotations

import json
from pathlib import Path

from ifbeta.cli import common

HELP = "select a subset with any method (see --list) and write a subset directory"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    common.add_influence(parser)
    common.add_exclude(parser)
    parser.add_argument("--list", action="store_true", help="describe every method in one line each and exit")
    parser.add_argument("--method", default=None, help="selection method (see --list)")
    parser.add_argument("--ratio", type=float, default=None, help="pruning ratio in (0, 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, value parsed as JSON when possible (repeatable)")
    parser.add_argument("--out", default=None, help="subset directory to write")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def parse_options(pairs: list[str]) -> dict:
    from ifbeta.errors import UserError

    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def run(args) -> int:
    from ifbeta import pipeline
    from ifbeta.errors import UserError
    from ifbeta.selection import registry as selection

    if args.list:
        for name, description in selection.describe_methods():
            print(f"{name:<16} {description}")
        return 0
    if not args.method or args.ratio is None or not args.out:
        raise UserError("--method, --ratio and --out are required (or --list)")
    if args.method not in selection.METHODS:
        raise UserError(f"unknown method {args.method!r}; choose one of {', '.join(selection.METHODS)}")
    ratio = common.check_ratio(args.ratio)
    influence = common.influence_config(args)
    train, _ = common.load_splits(args)
    common.check_budget(train, ratio, stratify=args.method not in ("random",))
    exclude = common.excluded_ids(args, train)
    ws = common.workspace(args, description="extract")
    bar = common.ProgressBar(args.method)
    chosen = pipeline.choose(ws, args.method, ratio, seed=args.seed, options=parse_options(args.option),
                             influence_config=influence, exclude=exclude, on_step=bar)
    bar.close()
    result, _ = pipeline.scores(ws, influence)
    directory = pipeline.write_subset(ws, chosen, Path(args.out), ratio=ratio, seed=args.seed, influence_result=result,
                                      exclude=exclude)
    info = chosen.info
    left_out = f" (leaving out {len(exclude)})" if exclude else ""
    print(f"{args.method}: kept {len(chosen.indices)} of {len(ws.train)}{left_out} in {info.get('seconds', 0):.2f}s "
          f"-> {directory}")
    if args.json:
        common.print_json({"method": args.method, "ratio": ratio, "k": len(chosen.indices), "out": str(directory),
                           "excluded": len(exclude or []),
                           **{k: v for k, v in info.items() if k in ("seconds", "alpha", "beta", "training_seconds")}})
    return 0

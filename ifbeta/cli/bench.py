"""ifbeta bench: run a benchmark protocol (presets or any dataset/teacher/student), resumable."""
from __future__ import annotations

import dataclasses

from ifbeta.cli import common

HELP = "run a benchmark grid (select, distil, report); rerun the same command to resume"


def add_arguments(parser) -> None:
    from ifbeta.evaluation.grid import PRESETS

    parser.add_argument("--preset", default=None, choices=list(PRESETS), help="protocol of docs/BENCHMARKS.md")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--teacher-arch", default=None,
                        help="teacher architecture when the checkpoint does not record it")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a pickled or TorchScript teacher (runs code from the file; only files you trust)")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images and report them")
    parser.add_argument("--student", default=None)
    parser.add_argument("--pool", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--ratios", type=float, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--budgets", nargs="+", default=None, choices=["epochs", "steps"])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-full", action="store_true", help="skip the full-pool ceiling runs")
    parser.add_argument("--policy", action="append", default=[], metavar="KEY=VALUE",
                        help="IF-Beta policy setting for ifbeta / ifbeta-entropy, e.g. shrinkage=0.25 (repeatable)")
    parser.add_argument("--proxy", default=None, choices=common.PROXIES,
                        help="proxy family of the influence scores and of J for every selection (default linear)")
    parser.add_argument("--workers", type=int, default=1, help="distillation runs in parallel")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the runs finished so far, train nothing")
    parser.add_argument("--out", required=True, help="output folder (results.csv, results.md, results.png)")


def run(args) -> int:
    from ifbeta.errors import UserError
    from ifbeta.evaluation import bench, grid
    from ifbeta.selection import registry as selection

    if args.preset is None and args.dataset is None:
        raise UserError("give --preset or --dataset")
    for method in args.methods or []:
        if method not in selection.METHODS:
            raise UserError(f"unknown method {method!r}; see `ifbeta select --list`")
    for ratio in args.ratios or []:
        if not 0.0 < ratio < 1.0:
            raise UserError(f"--ratios must lie strictly between 0 and 1 (the fractions pruned), got {ratio}")
    policy = _policy_overrides(args.policy)
    spec = grid.spec_from(args.preset, dataset=args.dataset, teacher=args.teacher, student=args.student,
                           pool=args.pool, methods=tuple(args.methods) if args.methods else None,
                           ratios=tuple(args.ratios) if args.ratios else None,
                           seeds=tuple(args.seeds) if args.seeds else None,
                           budgets=tuple(args.budgets) if args.budgets else None, epochs=args.epochs,
                           batch_size=args.batch_size, full=False if args.no_full else None,
                           policy=policy or None, teacher_arch=args.teacher_arch,
                           trust_pickle=args.trust_pickle or None, skip_corrupt=args.skip_corrupt or None,
                           proxy=args.proxy)
    if args.ratios and spec.steps_ratios:
        spec = dataclasses.replace(spec, steps_ratios=None)
    bar = common.ProgressBar("bench")
    rows = bench.run(spec, args.out, store=common.store_of(args), workers=args.workers, on_step=bar,
                     report_only=args.report_only)
    bar.close()
    print(f"{len(rows)} runs -> {args.out}/results.csv, results.md, results.png")
    return 0


def _policy_overrides(pairs: list[str]) -> dict:
    """--policy KEY=VALUE pairs -> PolicyConfig overrides, checked against its fields."""
    from dataclasses import fields

    from ifbeta.cli.select import parse_options
    from ifbeta.config import PolicyConfig
    from ifbeta.errors import UserError

    overrides = parse_options(pairs)
    known = {f.name for f in fields(PolicyConfig)} - {"seed", "axis"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"unknown --policy setting {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return overrides

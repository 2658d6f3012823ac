"""ifbeta bench: run a benchmark protocol (presets or any dataset/teacher/student), resumable."""
from __future__ import annotations

from ifbeta.commands import common

HELP = "run a benchmark grid (select, distil, report); rerun the same command to resume"


def add_arguments(parser) -> None:
    from ifbeta.bench import PRESETS

    parser.add_argument("--preset", default=None, choices=list(PRESETS), help="protocol of BENCHMARKS.md")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--student", default=None)
    parser.add_argument("--pool", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--ratios", type=float, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--budgets", nargs="+", default=None, choices=["epochs", "steps"])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="distillation runs in parallel")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the runs finished so far, train nothing")
    parser.add_argument("--out", required=True, help="output folder (results.csv, results.md, results.png)")


def run(args) -> int:
    from ifbeta import bench, selection
    from ifbeta.cli import UserError

    if args.preset is None and args.dataset is None:
        raise UserError("give --preset or --dataset")
    for method in args.methods or []:
        if method not in selection.METHODS:
            raise UserError(f"unknown method {method!r}; see `ifbeta select --list`")
    for ratio in args.ratios or []:
        common.check_ratio(ratio)
    spec = bench.spec_from(args.preset, dataset=args.dataset, teacher=args.teacher, student=args.student,
                           pool=args.pool, methods=tuple(args.methods) if args.methods else None,
                           ratios=tuple(args.ratios) if args.ratios else None,
                           seeds=tuple(args.seeds) if args.seeds else None,
                           budgets=tuple(args.budgets) if args.budgets else None, epochs=args.epochs,
                           batch_size=args.batch_size)
    if args.ratios and spec.steps_ratios:
        spec = bench.replace(spec, steps_ratios=None)
    bar = common.ProgressBar("bench")
    rows = bench.run(spec, args.out, store=common.store_of(args), workers=args.workers, on_step=bar,
                     report_only=args.report_only)
    bar.close()
    print(f"{len(rows)} runs -> {args.out}/results.csv, results.md, results.png")
    return 0

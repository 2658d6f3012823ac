"""ifbeta distill: Hinton KD of a student on a subset (or the full pool), resumable."""
from __future__ import annotations

from ifbeta.cli import common

HELP = "distil a student on a subset directory or 'full' (resumable; DDP under torchrun)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    parser.add_argument("--subset", required=True, help="subset directory, or 'full' for the whole pool")
    parser.add_argument("--student", default=None, help="student architecture (default per dataset, smaller than the teacher)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (the full-data epoch count under --budget steps)")
    parser.add_argument("--budget", default="epochs", choices=["epochs", "steps"],
                        help="epochs: same epochs over the subset; steps: same optimiser steps as a full run")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=1, metavar="E",
                        help="test the student every E epochs (always after the last); larger is faster")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, progress.json, metrics.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    from ifbeta.distill import student as distill
    from ifbeta.errors import UserError
    from ifbeta.models import zoo as models

    if args.student and args.student not in models.ARCHITECTURES:
        raise UserError(f"unknown student {args.student!r}; choose one of {', '.join(models.ARCHITECTURES)}")
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if args.eval_every < 1:
        raise UserError("--eval-every must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    if args.subset != "full":
        from pathlib import Path

        if Path(args.subset).is_file():
            raise UserError(f"{args.subset} is a file, not a folder; give a subset directory written by "
                            "`ifbeta prune` / `ifbeta select`, or 'full'")
        if not Path(args.subset).is_dir():
            raise UserError(f"subset directory {args.subset} does not exist; give a folder written by "
                            "`ifbeta prune` / `ifbeta select`, or 'full'")
    ws = common.workspace(args, description="extract")
    bar = common.ProgressBar("distill")
    metrics = distill.run(ws, subset=None if args.subset == "full" else args.subset, out=args.out,
                          student=args.student, epochs=args.epochs, budget=args.budget, seed=args.seed,
                          batch_size=args.batch_size, learning_rate=args.lr, on_step=bar,
                          eval_every=args.eval_every)
    bar.close()
    from ifbeta.models.training import distributed_context

    if distributed_context()[0] != 0:
        return 0
    print(f"{metrics['student']} on {metrics['train_samples']} samples ({metrics['method']}), "
          f"{metrics['epochs_run']} epochs: test top-1 {metrics['test_top1']:.4f}, top-5 {metrics['test_top5']:.4f}")
    if args.json:
        common.print_json({k: v for k, v in metrics.items() if k != "history"} | {"epochs": metrics["epochs_run"]})
    return 0

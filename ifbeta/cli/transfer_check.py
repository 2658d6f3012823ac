"""ifbeta transfer-check: does the proxy's J predict real students on this data? (docs/METHOD.md section 5)

The report is the store's ``transfer`` artefact (``evaluation.diagnostics.transfer_report``), the one
the app shows; a repeated check reads it back. The last human line is the verdict; it starts with
"Inconclusive:" whenever the seed-bootstrap interval of Spearman holds 0."""
from __future__ import annotations

import sys

from ifbeta.cli import common

HELP = ("train short real KD students at policies along the learned trajectory and at uniform, and report "
        "Spearman(J, student accuracy) with a seed-bootstrap interval: negative = J agrees (lower J is "
        "better); agreement = -Spearman; inconclusive when the interval holds 0")
SEEDS_HELP = ("paired seeds 0..S-1: seed s draws every policy's subset, initialises its student and orders its "
              "batches (one pool shuffle per epoch) (default 8: on digits the seed-bootstrap interval of Spearman "
              "spans nearly its whole range with 2 seeds and narrows until about 8, "
              "benchmarks/results/transfer-power.md)")


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    common.add_influence(parser)
    parser.add_argument("--ratio", type=float, required=True, help="pruning ratio in (0, 1), the fraction removed")
    parser.add_argument("--policies", type=int, default=5,
                        help="learned policies to try: N-1 points along the J-only trajectory plus the final "
                             "learned policy (uniform is added on top); at least 2 (default 5)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="student epochs per run (default: a third of the dataset's distill default)")
    parser.add_argument("--seeds", type=int, default=None, help=SEEDS_HELP)
    parser.add_argument("--student", default=None, help="student architecture (default per dataset)")
    parser.add_argument("--budget", default="epochs", choices=["epochs", "steps"],
                        help="epochs: same epochs over each subset; steps: same optimiser steps as a full run")
    parser.add_argument("--out", default=None,
                        help="folder of the runs (default <cache>/transfer-check); rerun to resume")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object as the last line (spearman, agreement, learned_minus_uniform, "
                             "policies, verdict, ...)")


class _Progress:
    """One line per run on stderr, a tqdm bar for the policy optimisation and each student."""

    def __init__(self):
        self.bar = common.ProgressBar("policy")

    def __call__(self, step: int, info: dict) -> None:
        event = info.get("event")
        if event == "run":
            self.bar.close()
            self.bar = common.ProgressBar(f"{info['label']} seed {info['seed']}")
            print(f"run {info['run'] + 1}/{info['runs']}: {info['label']} (alpha {info['alpha']:.3g}, "
                  f"beta {info['beta']:.3g}) seed {info['seed']}", file=sys.stderr)
        elif event == "run-finished":
            self.bar.close()
        elif event in ("batch", "epoch") or "J" in info:
            self.bar(step, info)

    def close(self) -> None:
        self.bar.close()


def run(args) -> int:
    from ifbeta.errors import UserError
    from ifbeta.evaluation import diagnostics
    from ifbeta.models import zoo as models

    ratio = common.check_ratio(args.ratio)
    if args.policies < 2:
        raise UserError(f"--policies must be at least 2 (a Spearman needs several points), got {args.policies}")
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if args.student and args.student not in models.ARCHITECTURES:
        raise UserError(f"unknown student {args.student!r}; choose one of {', '.join(models.ARCHITECTURES)}")
    influence_config = common.influence_config(args)
    ws = common.workspace(args, description="extract")
    progress = _Progress()
    try:
        report = diagnostics.transfer_report(ws, ratio, policies=args.policies, epochs=args.epochs, seeds=args.seeds,
                                             student=args.student, budget=args.budget, out=args.out,
                                             influence_config=influence_config, on_step=progress)
    finally:
        progress.close()
    _print_table(report)
    if args.json:
        common.print_json(report)
    return 0


def _interval(values, scale: float = 1.0, digits: int = 3) -> str:
    """', 95% interval [low, high]' of a report's [low, high] (times ``scale``); '' for None."""
    if values is None:
        return ""
    return f", 95% interval [{scale * values[0]:+.{digits}f}, {scale * values[1]:+.{digits}f}]"


def _print_table(report: dict) -> None:
    print(f"transfer check on {report['dataset']}, ratio {report['ratio']} (k = {report['k']}), "
          f"{report['student']} x {report['epochs']} epochs, seeds {report['seeds']}")
    print(f"{'policy':<10} {'alpha':>8} {'beta':>8} {'J':>10} {'accuracy':>9}  per seed")
    for entry in report["policies"]:
        seeds = " ".join(f"{a:.4f}" for a in entry["accuracies"])
        print(f"{entry['label']:<10} {entry['alpha']:>8.3g} {entry['beta']:>8.3g} {entry['J']:>10.5g} "
              f"{entry['mean_accuracy']:>9.4f}  {seeds}")
    spearman = report["spearman"]
    shown = "n/a" if spearman is None else (f"{spearman:+.3f}{_interval(report.get('spearman_interval'))} "
                                            f"(agreement {report['agreement']:+.3f})")
    print(f"Spearman(J, accuracy) {shown}; negative means lower J went with higher accuracy")
    std = report["learned_minus_uniform_std"]
    print(f"learned - uniform: {100 * report['learned_minus_uniform']:+.2f} points"
          f"{_interval(report.get('learned_minus_uniform_interval'), 100, 2)}"
          f"{'' if std is None else f' (sd {100 * std:.2f})'}, paired by seed: "
          f"{report.get('learned_vs_uniform', 'inconclusive')}")
    print(report["verdict"])

"""ifbeta prune: learn the Beta policy (bilevel) for one or more ratios and write the subsets."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ifbeta import atomic
from ifbeta.cli import common

HELP = "learn the IF-Beta policy and write subset directories (indices.npy, samples.csv, manifest.json, trace.json)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    common.add_influence(parser)
    common.add_exclude(parser)
    parser.add_argument("--ratio", type=float, nargs="+", required=True, help="pruning ratio(s) in (0, 1)")
    parser.add_argument("--estimator", default="implicit", choices=["implicit", "reinforce", "grid"])
    parser.add_argument("--axis", default="influence", choices=["influence", "entropy"],
                        help="what the Beta ranks: influence scores (default) or teacher entropy")
    parser.add_argument("--no-stratify", action="store_true", help="rank and sample globally, not within class")
    parser.add_argument("--shrinkage", type=float, default=None, help="KL shrinkage towards uniform (units of J's spread)")
    parser.add_argument("--steps", type=int, default=None, help="maximum outer steps")
    parser.add_argument("--policy-start", default="uniform", choices=["uniform", "ratio-adaptive"],
                        help="start at and shrink towards uniform (default) or a ratio-adaptive Beta prior "
                             "(harder samples at low ratios, easier at high ratios)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="subset directory (one ratio) or parent of ratio-<r>/ folders")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def policy_config(args):
    from ifbeta.config import PolicyConfig

    config = PolicyConfig(estimator=args.estimator, axis=args.axis, stratify=not args.no_stratify, seed=args.seed,
                          start=args.policy_start)
    if args.shrinkage is not None:
        config = replace(config, shrinkage=args.shrinkage)
    if args.steps is not None:
        if args.steps < 1:
            from ifbeta.errors import UserError

            raise UserError(f"--steps must be at least 1, got {args.steps}")
        config = replace(config, steps=args.steps)
    return config


def _write_trace(directory: Path, learned) -> None:
    payload = {"ratio": learned.ratio, "alpha": learned.alpha, "beta": learned.beta, "estimator": learned.estimator,
               "axis": learned.axis, "c": learned.c, "mu": learned.mu, "converged": learned.converged,
               "steps": learned.trace}
    atomic.write_text(directory / "trace.json", json.dumps(payload, indent=2, default=float))


def run(args) -> int:
    from ifbeta import pipeline
    from ifbeta.errors import UserError

    ratios = [common.check_ratio(r) for r in args.ratio]
    config, influence = policy_config(args), common.influence_config(args)
    train, _ = common.load_splits(args)
    for ratio in ratios:
        try:
            common.check_budget(train, ratio, stratify=not args.no_stratify)
        except UserError as error:
            raise UserError(f"{error} (or pass --no-stratify)") from None
    exclude = common.excluded_ids(args, train)
    ws = common.workspace(args, description="extract")
    method = "ifbeta" if args.axis == "influence" else "ifbeta-entropy"
    bar = common.ProgressBar("policy")
    learned_all = pipeline.policies(ws, ratios, config, influence_config=influence, exclude=exclude, on_step=bar)
    bar.close()
    result, _ = pipeline.scores(ws, influence)
    from ifbeta.influence import sharding

    lead, written = sharding.lead(), []  # under torchrun every rank learns the same policy; rank 0 writes
    for ratio, learned in zip(ratios, learned_all):
        directory = Path(args.out) if len(ratios) == 1 else Path(args.out) / f"ratio-{ratio:g}"
        chosen = pipeline.choose(ws, method, ratio, seed=args.seed, policy_config=config, influence_config=influence,
                                 exclude=exclude)
        if not lead:
            continue
        pipeline.write_subset(ws, chosen, directory, ratio=ratio, seed=args.seed, influence_result=result,
                              exclude=exclude)
        _write_trace(directory, learned)
        written.append({"ratio": ratio, "k": len(chosen.indices), "alpha": learned.alpha, "beta": learned.beta,
                        "steps": len(learned.trace), "J": learned.trace[-1]["J"] if learned.trace else None,
                        "excluded": len(exclude or []), "out": str(directory)})
        print(f"ratio {ratio:g}: kept {len(chosen.indices)} of {len(ws.train)}; alpha={learned.alpha:.3f} "
              f"beta={learned.beta:.3f} after {len(learned.trace)} steps -> {directory}")
    if args.json and lead:
        common.print_json({"dataset": ws.train.name, "method": method, "subsets": written})
    return 0

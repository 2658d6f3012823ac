"""ifbeta validate-influence: predicted vs true leave-one-out changes of the validation loss.

The report is the store's ``loo`` artefact (``evaluation.diagnostics.loo_report``), the one the app shows."""
from __future__ import annotations

from ifbeta.cli import common

HELP = "check influence scores against true leave-one-out refits of the proxy (linear or knn)"
THRESHOLDS = {"spearman": 0.9, "slope": (0.8, 1.25), "sign_agreement": 0.9}


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    common.add_teacher(parser)
    common.add_influence(parser)
    parser.add_argument("--samples", type=int, default=200, help="training points refitted without (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def passes(report: dict) -> dict[str, bool]:
    low, high = THRESHOLDS["slope"]
    return {"spearman": report["spearman"] >= THRESHOLDS["spearman"], "slope": low <= report["slope"] <= high,
            "sign_agreement": report["sign_agreement"] >= THRESHOLDS["sign_agreement"],
            "group_harmful_lowers_loss": report["group_harmful_delta"] < 0,
            "group_helpful_beats_random": report["group_helpful_delta"] > report["group_random_delta"]}


def run(args) -> int:
    from ifbeta.errors import UserError
    from ifbeta.evaluation import diagnostics

    if args.samples < 3:
        raise UserError("--samples must be at least 3")
    config = common.influence_config(args)
    ws = common.workspace(args, description="extract")
    bar = common.ProgressBar("leave-one-out refits")
    try:
        report = diagnostics.loo_report(ws, config, samples=args.samples, seed=args.seed, on_step=bar)
    finally:
        bar.close()
    checks = passes(report)
    print(f"n={report['n']}  spearman={report['spearman']:.4f}  pearson={report['pearson']:.4f}  "
          f"slope={report['slope']:.3f}  sign agreement={report['sign_agreement']:.3f}")
    print(f"group check: remove 10% most harmful {report['group_harmful_delta']:+.3e}, most helpful "
          f"{report['group_helpful_delta']:+.3e}, random {report['group_random_delta']:+.3e}")
    print("checks: " + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in checks.items()))
    if args.json:
        common.print_json({k: v for k, v in report.items() if k not in ("predicted", "actual")}
                          | {"checks": checks, "passed": all(checks.values())})
    return 0 if all(checks.values()) else 1

"""How many paired seeds does the transfer check need? Its power curve on digits.

Trains the transfer check's students once for many seeds (``--seeds``, default 32: every policy of
``ifbeta transfer-check --policies 5`` on the embedded digits data, ratio 0.5, the default student and
epochs, paired seeds 0..N-1), then asks what a check with only S of those seeds would have reported:
for each S in ``--sizes``, ``--repeats`` draws of S distinct seeds out of the N, each summarised
exactly as the check does (``transfer.summarise``: Spearman(J, mean accuracy) with its 2000-resample
seed-bootstrap 95% interval, learned - uniform with its 95% t-interval, the verdict). Reported per S:
the width of the Spearman interval (median and 90th percentile over the draws), the share of draws
whose verdict is not ``inconclusive`` (the interval excludes 0 and the policies differ beyond seed
noise), the share whose learned - uniform interval excludes 0 and its median width; with S close to
N the draws overlap, so the last sizes are less independent than the first. The runs are ordinary
resumable ``distill`` directories, so a rerun only summarises again.

Usage: nice python benchmarks/transfer_power.py [--seeds 32] [--sizes 2,3,4,6,8,12,16] [--ratio 0.5]
[--cache DIR]. Writes benchmarks/results/transfer-power.md.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed

from ifbeta import pipeline  # noqa: E402
from ifbeta.evaluation import transfer  # noqa: E402
from ifbeta.evaluation import transfer_statistics as stats  # noqa: E402
from ifbeta.store import Store  # noqa: E402
from ifbeta.threads import limit_blas_threads  # noqa: E402

RESULTS = ROOT / "benchmarks/results/transfer-power.md"


def restricted(report: dict, columns: np.ndarray) -> tuple[list[dict], list[int]]:
    """The report's candidates with only the seeds at ``columns`` (positions in ``report['seeds']``)."""
    candidates = []
    for entry in report["policies"]:
        kept = copy.deepcopy(entry)
        kept["accuracies"] = [entry["accuracies"][c] for c in columns]
        candidates.append(kept)
    return candidates, [report["seeds"][c] for c in columns]


def draws(report: dict, size: int, repeats: int, seed: int = 0) -> list[dict]:
    """``repeats`` summaries of ``size`` distinct seeds drawn from the report's (one when size = N)."""
    total = len(report["seeds"])
    rng = np.random.default_rng(seed)
    picks = [np.arange(total)] if size >= total else [np.sort(rng.choice(total, size, replace=False))
                                                      for _ in range(repeats)]
    return [transfer.summarise(*restricted(report, columns)) for columns in picks]


def _width(interval) -> float:
    return float("nan") if interval is None else interval[1] - interval[0]


def _covers(interval, value) -> bool:
    return interval is not None and value is not None and interval[0] <= value <= interval[1]


def row(size: int, summaries: list[dict], everything: dict) -> dict:
    """One line of the power table from the summaries of ``size``-seed draws; ``everything``: the
    summary of all N seeds (the best estimate at hand, itself noisy)."""
    widths = np.array([_width(s["spearman_interval"]) for s in summaries])
    differences = np.array([_width(s["learned_minus_uniform_interval"]) for s in summaries])
    trust = [s["trust"] for s in summaries]
    return {"seeds": size, "draws": len(summaries),
            "width_median": float(np.nanmedian(widths)), "width_p90": float(np.nanpercentile(widths, 90)),
            "decisive": float(np.mean([t != "inconclusive" for t in trust])),
            "excludes": float(np.mean([stats.excludes_zero(s["spearman_interval"]) for s in summaries])),
            "yes": float(np.mean([t == "yes" for t in trust])), "weak": float(np.mean([t == "weak" for t in trust])),
            "no": float(np.mean([t == "no" for t in trust])),
            "spearman_median": float(np.nanmedian([np.nan if s["spearman"] is None else s["spearman"]
                                                   for s in summaries])),
            "difference_decisive": float(np.mean([s["learned_vs_uniform"] != "inconclusive" for s in summaries])),
            "difference_width": float(100 * np.nanmedian(differences)),
            "covers": float(np.mean([_covers(s["spearman_interval"], everything["spearman"]) for s in summaries]))}


def markdown(report: dict, rows: list[dict], command: str, seconds: float) -> str:
    """The results file: setup, the full-N check, the power table, what it means."""
    policies = report["policies"]
    lines = ["# Transfer check: seeds against the width of its intervals (digits)", "",
             f"Command: `{command}` ({seconds / 60:.1f} min on 2 shared CPU cores, student runs included; "
             "a rerun reuses the runs).", "",
             f"Setup: {report['dataset']}, ratio {report['ratio']} (k = {report['k']}), {len(policies)} policies "
             f"(uniform, the J-only trajectory, learned), {report['student']} x {report['epochs']} epochs, "
             f"{len(report['seeds'])} paired seeds (same subset-drawing seed, initialisation and pool batch order "
             f"per seed), {report['bootstrap']['resamples']} bootstrap resamples of the seeds.", "",
             f"## All {len(report['seeds'])} seeds", "",
             "| policy | alpha | beta | J | mean accuracy | sd over seeds |", "|---|---:|---:|---:|---:|---:|"]
    for entry in policies:
        lines.append(f"| {entry['label']} | {entry['alpha']:.3g} | {entry['beta']:.3g} | {entry['J']:.6g} | "
                     f"{entry['mean_accuracy']:.4f} | {entry['std_accuracy']:.4f} |")
    interval = report["spearman_interval"]
    difference = report["learned_minus_uniform_interval"]
    lines += ["", f"Spearman(J, accuracy) {report['spearman']:+.3f}, 95% interval [{interval[0]:+.3f}, "
              f"{interval[1]:+.3f}]; learned - uniform {100 * report['learned_minus_uniform']:+.2f} points, 95% "
              f"interval [{100 * difference[0]:+.2f}, {100 * difference[1]:+.2f}]; trust `{report['trust']}`.", "",
              f"> {report['verdict']}", "",
              "## Power: checks with S of those seeds", "",
              "| S | draws | student runs | Spearman interval width, median | p90 | interval excludes 0 "
              "| verdict not inconclusive | yes | weak "
              "| no | median Spearman | interval holds the all-seed Spearman | learned - uniform decisive "
              "| its interval width (points), median |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seeds']} | {r['draws']} | {r['seeds'] * len(policies)} | {r['width_median']:.2f} | "
                     f"{r['width_p90']:.2f} | {r['excludes']:.0%} | {r['decisive']:.0%} | {r['yes']:.0%} "
                     f"| {r['weak']:.0%} | {r['no']:.0%} "
                     f"| {r['spearman_median']:+.2f} | {r['covers']:.0%} | {r['difference_decisive']:.0%} "
                     f"| {r['difference_width']:.2f} |")
    lines += ["", "Spearman over the policies lies in [-1, 1], so a width near 2 says nothing. The verdict is "
              "`inconclusive` whenever the interval holds 0, with fewer than `transfer.MIN_SEEDS` seeds, and when "
              "the policies differ no more than the seeds. Where the all-seed check finds no effect, every draw "
              "whose interval excludes 0 is a false alarm: a 95% interval should give about 5%, and a calibrated "
              "one should hold the all-seed Spearman in most draws (the draws share seeds with it, so not in 95% "
              "exactly). `transfer.DEFAULT_SEEDS` and `MIN_SEEDS` are read off this table (see the docstring of "
              "`ifbeta/evaluation/transfer.py`)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32, help="seeds trained per policy (default 32)")
    parser.add_argument("--sizes", default="2,3,4,6,8,12,16",
                        help="seed counts S to evaluate (default 2,3,4,6,8,12,16)")
    parser.add_argument("--repeats", type=int, default=200, help="draws of S seeds per S (default 200)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--policies", type=int, default=5)
    parser.add_argument("--cache", default=None, help="artefact store (default: the usual one)")
    parser.add_argument("--out", default=None, help="folder of the runs (default <cache>/transfer-power)")
    args = parser.parse_args(argv)
    limit_blas_threads()
    torch.set_num_threads(1)
    began = time.time()
    store = Store(args.cache) if args.cache else Store.default()
    workspace = pipeline.open_workspace("digits", store=store)
    out = Path(args.out) if args.out else store.root / "transfer-power"
    report = transfer.transfer_check(workspace, ratio=args.ratio, policies=args.policies,
                                     seeds=tuple(range(args.seeds)), out=out)
    print(f"trained {len(report['policies'])} policies x {args.seeds} seeds in {time.time() - began:.0f} s",
          file=sys.stderr, flush=True)
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    rows = [row(size, draws(report, size, args.repeats), report) for size in sizes]
    given = list(argv if argv is not None else sys.argv[1:])
    shown = [a for i, a in enumerate(given)  # where the store lives is not part of the measurement
             if a != "--cache" and (i == 0 or given[i - 1] != "--cache")]
    command = "nice python benchmarks/transfer_power.py " + " ".join(shown)
    RESULTS.write_text(markdown(report, rows, command.strip(), time.time() - began))
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

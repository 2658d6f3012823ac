"""Benchmark reports: results.csv (one row per run), results.md (mean +- std, paired differences to
random with their 95% t-intervals, timings, learned policy) and results.png (accuracy against ratio
per method, and the paired difference to random with its interval).

A row is one finished cell: method, ratio, seed, budget, test_top1 (last epoch, in [0, 1], higher is
better). Seed s of a method pairs with seed s of ``random`` at the same (ratio, budget); only seeds
present for both are paired. The t-interval is ``distill.summary``'s (one rule for runs and grids)."""
from __future__ import annotations

import csv
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ifbeta.distill import summary
from ifbeta.evaluation.grid import BenchSpec


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()}), torch {torch.__version__}"


def paired_intervals(rows: list[dict], budget: str, *, confidence: float = 0.95
                     ) -> dict[tuple[str, float], summary.PairedDifference]:
    """{(method, ratio): acc(method) - acc(random) paired by seed} for one budget, through
    ``summary.summarise``: mean, std (ddof 1) and the t-interval (low / high None for one pair), as
    fractions (> 0: the method beat random). Only seeds present for both are paired; a method with
    no shared seed (and random itself) is absent."""
    chosen = [r for r in rows if r["budget"] == budget and r["method"] != "full"]
    records = [{"method": r["method"], "ratio": r["ratio"], "seed": r["seed"], "test_top1": r["test_top1"],
                "status": "finished"} for r in chosen]
    arms = {summary.arm(record): (record["method"], record["ratio"]) for record in records}
    return {arms[pair.arm]: pair for pair in summary.summarise(records, confidence=confidence).pairs}


def format_interval(pair: summary.PairedDifference | None) -> str:
    """'+0.84 [-1.20, +2.90] (n=8)' in points (x 100); '+0.84 (n=1)' without an interval; '-' for none."""
    if pair is None:
        return "-"
    if pair.low is None:
        return f"{100 * pair.mean:+.2f} (n={pair.n})"
    return f"{100 * pair.mean:+.2f} [{100 * pair.low:+.2f}, {100 * pair.high:+.2f}] (n={pair.n})"


def excluding_zero(intervals: dict[tuple[str, float], summary.PairedDifference], ratios: list[float]) -> str:
    """One line: per ratio, the methods whose interval lies wholly above zero and wholly below it."""
    parts = []
    for ratio in ratios:
        pairs = [(m, p) for (m, r), p in intervals.items() if r == ratio and p.low is not None]
        above = [m for m, p in pairs if p.low > 0]
        below = [m for m, p in pairs if p.high < 0]
        words = ([f"above {', '.join(above)}"] if above else []) + ([f"below {', '.join(below)}"] if below else [])
        parts.append(f"r={ratio:g}: {'; '.join(words) or 'none'}")
    return "95% intervals of Δ excluding zero: " + " · ".join(parts) + "."


def table(rows: list[dict], budget: str) -> list[str]:
    """Markdown lines for one budget: rows = methods, one column group per ratio (mean ± std of top-1,
    and Δ vs random with its 95% interval), then the line naming the intervals that exclude zero."""
    ratios = sorted({r["ratio"] for r in rows if r["budget"] == budget and r["method"] != "full"})
    methods = list(dict.fromkeys(r["method"] for r in rows if r["budget"] == budget and r["method"] != "full"))
    if not ratios:
        return []
    intervals = paired_intervals(rows, budget)
    header = "| method | " + " | ".join(f"r={r:g} top-1 (%) | Δ vs random (pts) [95% CI]" for r in ratios) + \
             " | selection s | distill s |"
    lines = [header, "|" + "---|" * (1 + 2 * len(ratios) + 2)]
    for method in methods:
        cells = []
        for ratio in ratios:
            accs = [r["test_top1"] for r in rows if r["method"] == method and r["ratio"] == ratio and r["budget"] == budget]
            delta = "0 (ref)" if method == "random" else format_interval(intervals.get((method, ratio)))
            cells += [_mean_std(accs), delta]
        chosen = [r for r in rows if r["method"] == method and r["budget"] == budget]
        selection = np.median([r["selection_seconds"] for r in chosen]) if chosen else float("nan")
        distill = np.median([r["distill_seconds"] for r in chosen]) if chosen else float("nan")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {selection:.2f} | {distill:.1f} |")
    return lines + ["", excluding_zero(intervals, ratios)]


def markdown(rows: list[dict], spec: BenchSpec, *, workspace=None, seconds: float | None = 0.0) -> str:
    full = [r["test_top1"] for r in rows if r["method"] == "full"]
    lines = [f"# Benchmark: {spec.dataset}", "",
             f"Teacher {workspace.teacher.info.arch if workspace else spec.teacher}"
             f"{'' if workspace is None else ' (test top-1 %.2f%%)' % (100 * workspace.teacher.info.metadata.get('test_top1', float('nan')))}"
             f", student {spec.student or 'default'}, pool {spec.pool or 'full training split'}, "
             f"epochs {spec.epochs}, seeds {list(spec.seeds)} (paired across methods), KD tau 4 / lam 0.9.",
             f"Hardware: {_hardware()}. Distillation {sum(r['distill_seconds'] for r in rows) / 3600:.1f} h summed "
             f"over the {len(rows)} runs (a grid may be resumed over several invocations)"
             + ("; this report was made from the stored runs." if seconds is None else
                f"; the last invocation took {seconds / 60:.1f} min."),
             f"Full-pool KD ceiling (last epoch): {_mean_std(full)} %.", ""]
    lines += [f"- {note}" for note in spec.notes] + [""]
    for budget in spec.budgets:
        lines += [f"## Budget `{budget}`", "", *table(rows, budget), ""]
    learned = {}
    for r in rows:
        if r["method"].startswith("ifbeta") and r.get("alpha") is not None:
            learned[(r["method"], r["ratio"])] = (r["alpha"], r["beta"])
    if learned:
        lines += ["## Learned policies", "", "| method | ratio | alpha | beta |", "|---|---|---|---|"]
        lines += [f"| {m} | {r:g} | {a:.3f} | {b:.3f} |" for (m, r), (a, b) in sorted(learned.items())]
        lines.append("")
    lines += ["Last-epoch accuracy, mean ± std over seeds; Δ is the paired (same seed) difference to random: "
              "mean [95% t-interval] (n = seeds present for both).",
              f"Spec: `{asdict(spec)}`", ""]
    return "\n".join(lines)


def _accuracy_axis(axis, rows: list[dict], budget: str, full: list[float], dataset: str) -> None:
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "full"):
        chosen = [r for r in rows if r["method"] == method and r["budget"] == budget]
        ratios = sorted({r["ratio"] for r in chosen})
        if not ratios:
            continue
        means = [100 * np.mean([r["test_top1"] for r in chosen if r["ratio"] == q]) for q in ratios]
        stds = [100 * np.std([r["test_top1"] for r in chosen if r["ratio"] == q]) for q in ratios]
        axis.errorbar(ratios, means, yerr=stds, marker="o", capsize=3, label=method, **_style(method))
    if full:
        axis.axhline(100 * np.mean(full), color="black", linestyle="--", label="full pool")
    axis.set(xlabel="pruning ratio", ylabel="student test top-1 (%)", title=f"{dataset} — budget {budget}")
    axis.grid(alpha=0.3)


def _difference_axis(axis, rows: list[dict], budget: str) -> None:
    """Δ vs random (points) per method against ratio, error bars = the 95% t-interval (none for n = 1)."""
    intervals = paired_intervals(rows, budget)
    methods = list(dict.fromkeys(m for m, _ in intervals))
    offsets = np.linspace(-0.008, 0.008, len(methods)) if len(methods) > 1 else [0.0]
    for method, offset in zip(methods, offsets):
        pairs = sorted((r, p) for (m, r), p in intervals.items() if m == method)
        ratios = np.array([r for r, _ in pairs]) + offset  # side by side, so the bars do not hide each other
        means = np.array([100 * p.mean for _, p in pairs])
        lower = [0.0 if p.low is None else 100 * (p.mean - p.low) for _, p in pairs]
        upper = [0.0 if p.high is None else 100 * (p.high - p.mean) for _, p in pairs]
        axis.errorbar(ratios, means, yerr=[lower, upper], marker="o", capsize=3, label=method, **_style(method))
    axis.axhline(0.0, color="black", linewidth=1)
    axis.set(xlabel="pruning ratio", ylabel="Δ vs random (pts), 95% CI", title=f"paired difference — budget {budget}")
    axis.grid(alpha=0.3)


def _style(method: str) -> dict:
    return {"linewidth": 2.5} if method.startswith("ifbeta") or method == "random" else {"alpha": 0.7}


def plot(rows: list[dict], spec: BenchSpec, path: Path) -> None:
    """Top row: accuracy (mean ± std) against ratio per budget; bottom row: the paired difference to
    random with its 95% t-interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(spec.budgets), figsize=(6 * len(spec.budgets), 9), squeeze=False)
    full = [r["test_top1"] for r in rows if r["method"] == "full"]
    for column, budget in enumerate(spec.budgets):
        _accuracy_axis(axes[0][column], rows, budget, full, spec.dataset)
        _difference_axis(axes[1][column], rows, budget)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(rows: list[dict], spec: BenchSpec, out: Path, *, workspace=None, seconds: float | None = 0.0) -> None:
    write_csv(rows, out / "results.csv")
    (out / "results.md").write_text(markdown(rows, spec, workspace=workspace, seconds=seconds))
    if rows:
        plot(rows, spec, out / "results.png")


def write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def paired_difference(rows: list[dict], method: str, ratio: float, budget: str, baseline: str = "random"
                      ) -> tuple[float, float, int]:
    """Mean and std over seeds of acc(method) - acc(baseline) at the same (ratio, seed, budget)."""
    by_seed = {r["seed"]: r["test_top1"] for r in rows
               if r["method"] == baseline and r["ratio"] == ratio and r["budget"] == budget}
    diffs = [r["test_top1"] - by_seed[r["seed"]] for r in rows if r["method"] == method and r["ratio"] == ratio
             and r["budget"] == budget and r["seed"] in by_seed]
    if not diffs:
        return float("nan"), float("nan"), 0
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(diffs)

"""Benchmark reports: results.csv (one row per run), results.md (mean +- std, paired differences to
random, timings, learned policy) and results.png (accuracy against ratio per method)."""
from __future__ import annotations

import csv
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

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


def table(rows: list[dict], budget: str) -> list[str]:
    """Markdown lines for one budget: rows = methods, one column group per ratio."""
    ratios = sorted({r["ratio"] for r in rows if r["budget"] == budget and r["method"] != "full"})
    methods = list(dict.fromkeys(r["method"] for r in rows if r["budget"] == budget and r["method"] != "full"))
    if not ratios:
        return []
    header = "| method | " + " | ".join(f"r={r:g} top-1 (%) | Δ vs random (pts)" for r in ratios) + \
             " | selection s | distill s |"
    lines = [header, "|" + "---|" * (1 + 2 * len(ratios) + 2)]
    for method in methods:
        cells = []
        for ratio in ratios:
            accs = [r["test_top1"] for r in rows if r["method"] == method and r["ratio"] == ratio and r["budget"] == budget]
            mean, std, n = paired_difference(rows, method, ratio, budget)
            delta = "0 (ref)" if method == "random" else ("-" if n == 0 else f"{100 * mean:+.2f} ± {100 * std:.2f}")
            cells += [_mean_std(accs), delta]
        chosen = [r for r in rows if r["method"] == method and r["budget"] == budget]
        selection = np.median([r["selection_seconds"] for r in chosen]) if chosen else float("nan")
        distill = np.median([r["distill_seconds"] for r in chosen]) if chosen else float("nan")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {selection:.2f} | {distill:.1f} |")
    return lines


def markdown(rows: list[dict], spec: BenchSpec, *, workspace=None, seconds: float = 0.0) -> str:
    full = [r["test_top1"] for r in rows if r["method"] == "full"]
    lines = [f"# Benchmark: {spec.dataset}", "",
             f"Teacher {workspace.teacher.info.arch if workspace else spec.teacher}"
             f"{'' if workspace is None else ' (test top-1 %.2f%%)' % (100 * workspace.teacher.info.metadata.get('test_top1', float('nan')))}"
             f", student {spec.student or 'default'}, pool {spec.pool or 'full training split'}, "
             f"epochs {spec.epochs}, seeds {list(spec.seeds)} (paired across methods), KD tau 4 / lam 0.9.",
             f"Hardware: {_hardware()}. Wall time {seconds / 60:.1f} min.",
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
    lines += ["Last-epoch accuracy, mean ± std over seeds; Δ is the paired (same seed) difference to random.",
              f"Spec: `{asdict(spec)}`", ""]
    return "\n".join(lines)


def plot(rows: list[dict], spec: BenchSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(spec.budgets), figsize=(6 * len(spec.budgets), 4.5), squeeze=False)
    full = [r["test_top1"] for r in rows if r["method"] == "full"]
    for axis, budget in zip(axes[0], spec.budgets):
        for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "full"):
            chosen = [r for r in rows if r["method"] == method and r["budget"] == budget]
            ratios = sorted({r["ratio"] for r in chosen})
            if not ratios:
                continue
            means = [100 * np.mean([r["test_top1"] for r in chosen if r["ratio"] == q]) for q in ratios]
            stds = [100 * np.std([r["test_top1"] for r in chosen if r["ratio"] == q]) for q in ratios]
            style = {"linewidth": 2.5} if method.startswith("ifbeta") or method == "random" else {"alpha": 0.7}
            axis.errorbar(ratios, means, yerr=stds, marker="o", capsize=3, label=method, **style)
        if full:
            axis.axhline(100 * np.mean(full), color="black", linestyle="--", label="full pool")
        axis.set(xlabel="pruning ratio", ylabel="student test top-1 (%)", title=f"{spec.dataset} — budget {budget}")
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(rows: list[dict], spec: BenchSpec, out: Path, *, workspace=None, seconds: float = 0.0) -> None:
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

"""Does the bilevel objective J predict the student? J of every benchmarked subset against its student.

The `cifar10-cpu` benchmark distilled about 100 resnet8 students on subsets from twelve selection
methods (`benchmarks/results/cifar10-cpu.csv`, `cifar10-cpu-replication.csv`, `epochs` budget). For
each of those subsets S this script evaluates J(S), the proxy's cross-fitted validation loss with S
as the training set (weights 1 on S, 0 elsewhere; the two stratified folds of the bilevel loop, each
fitting on S inside one half and validating on the other half), for several proxies:

- the features the proxy sees: the teacher's penultimate features (the default), the output of the
  teacher's first or second stage average-pooled to 2x2, or raw pixels pooled to 8x8 (no teacher);
- what it fits: the KD loss of docs/METHOD.md (tau 4, lam 0.9) or hard labels (lam 0);
- what J measures on the validation half: the KD loss or the cross-entropy on hard labels;
- the proxy family: the linear head above, or the soft k-nearest-neighbour smoother of the teacher's
  tempered soft labels (docs/METHOD.md section 9; ``--proxy knn``), whose (k, h) are chosen once per
  fold on all of the fold's candidates, as the bilevel loop chooses them, and then held fixed.

Plain coverage (the mean distance, in standardised teacher features, from each validation sample to
its nearest kept sample of the fold's training half, averaged over both directions) is a reference
with no teacher outputs at all.

A proxy whose J can steer the policy must rank the subsets like the students do: Spearman(J,
student top-1) clearly negative at every ratio (lower J, better student). Reported per ratio over
all subsets (seed noise included) and over the per-method means, with two simple subset statistics
(mean teacher confidence, share of samples the teacher gets wrong) as references.

Usage: python benchmarks/proxy_transfer.py [--add knn] [--report-only]. Writes
benchmarks/results/proxy-transfer.{md,csv}; ``--add knn`` computes only the k-NN and coverage columns
and adds them to the existing .csv (the linear variants are kept as they were measured).
The teacher is the bundled CIFAR-10 resnet20 in ``teachers/`` (``--teacher``).
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from ifbeta import pipeline
from ifbeta.config import KDConfig, ProxyConfig
from ifbeta.influence import families, objective, proxy
from ifbeta.threads import limit_blas_threads

RESULTS = Path("benchmarks/results")
RUNS = ("cifar10-cpu.csv", "cifar10-cpu-replication.csv")
KD, HARD = KDConfig(), KDConfig(lam=0.0)
NEAR_UNIFORM = ("random", "ifbeta", "ifbeta-entropy")
TEACHER = "teachers/5e5e61a7ee40e6ab-resnet20.safetensors"  # the bundled CIFAR-10 teacher of the benchmark
KNN = "teacher penultimate | knn proxy, J = KD loss"
KNN_SOFT = "teacher penultimate | knn proxy, soft term only (lam 1), J = its KD loss"
SOFT = KDConfig(lam=1.0)
COVERAGE = "coverage: mean distance to the nearest kept sample"


@torch.inference_mode()
def block_features(workspace: pipeline.Workspace, batch_size: int = 500) -> dict[str, np.ndarray]:
    """Teacher stage outputs pooled to 2x2, and raw pixels pooled to 8x8: name -> (N, d) float64."""
    model, normaliser = workspace.teacher.model.eval(), workspace.teacher.normaliser
    stages = {"teacher stage 1, 2x2 pool": model.layers[len(model.layers) // 3 - 1],
              "teacher stage 2, 2x2 pool": model.layers[2 * len(model.layers) // 3 - 1]}
    captured: dict[str, list] = {name: [] for name in stages}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: captured[name].append(
        F.adaptive_avg_pool2d(out, 2).flatten(1).double())) for name, module in stages.items()]
    pixels = []
    images = workspace.train.images
    for start in range(0, len(images), batch_size):
        x = normaliser(images[start:start + batch_size])
        model(x)
        pixels.append(F.adaptive_avg_pool2d(x, 8).flatten(1).double())
    for hook in hooks:
        hook.remove()
    out = {name: torch.cat(parts).numpy() for name, parts in captured.items()}
    out["raw pixels, 8x8 pool (no teacher)"] = torch.cat(pixels).numpy()
    return out


def benchmarked_runs() -> list[dict]:
    rows = []
    for name in RUNS:
        with open(RESULTS / name) as handle:
            for row in csv.DictReader(handle):
                if row["budget"] == "epochs" and row["method"] != "full":
                    rows.append({"source": name, "method": row["method"], "ratio": float(row["ratio"]),
                                 "seed": int(row["seed"]), "top1": 100 * float(row["test_top1"]),
                                 "train_samples": int(row["train_samples"])})
    return rows


class Objective:
    """J(S) for one proxy: features, the fit's KD config, the validation KD config; mu by validation."""

    def __init__(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray, fit_kd: KDConfig,
                 val_kd: KDConfig, seed: int = 0):
        self.z, _, _ = objective.standardise(features)
        self.t, self.y, self.fit_kd, self.val_kd = logits, labels, fit_kd, val_kd
        mu, _ = proxy.choose_mu(self.z, logits, labels, kd=fit_kd, folds=2, seed=seed)
        per_sample = mu / (len(labels) / 2)
        assignment = proxy.stratified_folds(labels, 2, seed)
        self.folds = [(np.flatnonzero(assignment == f), np.flatnonzero(assignment != f)) for f in range(2)]
        self.mu = [per_sample * len(train) for train, _ in self.folds]

    def __call__(self, subset: np.ndarray) -> float:
        """Mean over the two folds of L_V(theta fitted on S within the fold's training half); lower is better."""
        losses = []
        for (train, val), mu in zip(self.folds, self.mu):
            weights = np.isin(train, subset).astype(np.float64)
            theta = proxy.fit(self.z[train], self.t[train], self.y[train], weights=weights, mu=mu,
                              kd=self.fit_kd).theta
            losses.append(objective.validation_loss(theta, self.z[val], self.t[val], self.y[val], kd=self.val_kd))
        return float(np.mean(losses))


class KnnObjective:
    """J(S) of the k-NN proxy (``families.FAMILIES["knn"]``) and plain coverage, on the split of Objective."""

    def __init__(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray, kd: KDConfig, seed: int = 0):
        z, _, _ = objective.standardise(features)
        assignment = proxy.stratified_folds(labels, 2, seed)
        build, settings = families.family("knn").fold, ProxyConfig(kd=kd, family="knn")
        self.folds = []
        for f in range(2):
            train, val = np.flatnonzero(assignment == f), np.flatnonzero(assignment != f)
            self.folds.append((train, build((z[train], logits[train], labels[train]),
                                            (z[val], logits[val], labels[val]), settings=settings)))
        self.settings = [(fold.k, fold.bandwidth) for _, fold in self.folds]

    def __call__(self, subset: np.ndarray) -> tuple[float, float]:
        """(J, coverage) of S, each the mean over the two folds; lower is better for both."""
        values, distances = [], []
        for train, fold in self.folds:
            weights = np.isin(train, subset).astype(np.float64)
            values.append(fold.evaluate(weights, with_gradient=False)[0])
            indices, sq = fold.neighbours.cover(weights, 1.0)
            first = np.argmax(weights[indices] > 0, axis=1)  # nearest kept column of every validation row
            distances.append(float(np.sqrt(sq[np.arange(len(sq)), first]).mean()))
        return float(np.mean(values)), float(np.mean(distances))


def correlations(rows: list[dict], column: str) -> dict:
    """Per ratio: Spearman(column, top1) over all subsets, and over per-method means of the main grid
    (RUNS[0], where every method ran on the same hardware and seeds)."""
    out = {}
    for ratio in sorted({r["ratio"] for r in rows}):
        cell = [r for r in rows if r["ratio"] == ratio]
        grid = [r for r in cell if r["source"] == RUNS[0]]
        methods = sorted({r["method"] for r in grid})
        means = [(np.mean([r[column] for r in grid if r["method"] == m]),
                  np.mean([r["top1"] for r in grid if r["method"] == m])) for m in methods]
        out[ratio] = (spearmanr([r[column] for r in cell], [r["top1"] for r in cell])[0],
                      spearmanr(*zip(*means))[0], len(cell), len(methods))
    return out


def rebuilt_subsets(workspace: pipeline.Workspace) -> list[dict]:
    """The benchmarked rows, each with its subset rebuilt from the store (checked against its size) and the
    two teacher statistics of the subset."""
    f = workspace.features
    logits, labels = np.asarray(f.logits, np.float64), np.asarray(f.labels)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    confidence, wrong = probabilities.max(1), (logits.argmax(1) != labels).astype(np.float64)
    rows = benchmarked_runs()
    for row in rows:
        chosen = pipeline.choose(workspace, row["method"], row["ratio"], seed=row["seed"])
        if len(chosen.indices) != row["train_samples"]:
            raise SystemExit(f"{row}: rebuilt subset has {len(chosen.indices)} samples")
        row["subset"] = np.asarray(chosen.indices)
        row["mean teacher confidence"] = float(confidence[row["subset"]].mean())
        row["share the teacher gets wrong"] = float(wrong[row["subset"]].mean())
    return rows


def linear_variants(workspace: pipeline.Workspace, rows: list[dict]) -> list[str]:
    """J of every linear variant (features x objective) for every row; the column names, with d."""
    f = workspace.features
    logits, labels = np.asarray(f.logits, np.float64), np.asarray(f.labels)
    feature_sets = {"teacher penultimate (default)": np.asarray(f.features, np.float64), **block_features(workspace)}
    objectives = {"fit KD, J = KD loss": (KD, KD), "fit KD, J = hard-label CE": (KD, HARD),
                  "fit hard labels, J = hard-label CE": (HARD, HARD)}
    names = []
    for feature_name, features in feature_sets.items():
        for objective_name, (fit_kd, val_kd) in objectives.items():
            start = time.perf_counter()
            objective = Objective(features, logits, labels, fit_kd, val_kd)
            name = f"{feature_name} | {objective_name} (d={features.shape[1]})"
            for row in rows:
                row[name] = objective(row["subset"])
            names.append(name)
            print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    return names


def knn_variants(workspace: pipeline.Workspace, rows: list[dict]) -> list[str]:
    """J of the k-NN proxy (KD loss of tau 4, lam 0.9; and the soft term alone), and plain coverage, for
    every row; the column names."""
    f = workspace.features
    data = (np.asarray(f.features, np.float64), np.asarray(f.logits, np.float64), np.asarray(f.labels))
    for name, kd in ((KNN, KD), (KNN_SOFT, SOFT)):
        start = time.perf_counter()
        objective = KnnObjective(*data, kd)
        for row in rows:
            row[name], row[COVERAGE] = objective(row["subset"])
        print(f"{name} (k, h per fold {objective.settings}): {time.perf_counter() - start:.0f} s", flush=True)
    return [KNN, KNN_SOFT, COVERAGE]


def write_csv(out: str, rows: list[dict], columns: list[str]) -> None:
    with open(f"{out}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "method", "ratio", "seed", "top1"] + columns)
        for row in rows:
            writer.writerow([row["source"], row["method"], row["ratio"], row["seed"], f"{row['top1']:.2f}"]
                            + [f"{row[c]:.6g}" for c in columns])


def merged_with_stored(out: str, rows: list[dict], added: list[str]) -> list[str]:
    """Copy every column of the stored {out}.csv into ``rows`` (same rows, same order, checked) and return
    the column order: the stored columns with ``added`` inserted before the two teacher statistics."""
    with open(f"{out}.csv") as handle:
        stored = list(csv.DictReader(handle))
    if len(stored) != len(rows):
        raise SystemExit(f"{out}.csv has {len(stored)} rows, the benchmark {len(rows)}: rerun without --add")
    columns = [c for c in stored[0] if c not in ("source", "method", "ratio", "seed", "top1") and c not in added]
    for row, old in zip(rows, stored):
        if (old["source"], old["method"], float(old["ratio"]), int(old["seed"])) != (
                row["source"], row["method"], row["ratio"], row["seed"]):
            raise SystemExit(f"{out}.csv row {old} does not match {row['method']} r={row['ratio']} s={row['seed']}")
        row.update({c: float(old[c]) for c in columns})
    statistics = ["mean teacher confidence", "share the teacher gets wrong"]
    return [c for c in columns if c not in statistics] + added + statistics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(RESULTS / "proxy-transfer"))
    parser.add_argument("--teacher", default=TEACHER, help="teacher checkpoint (default: the bundled resnet20)")
    parser.add_argument("--add", choices=["knn"], default=None,
                        help="compute only the k-NN and coverage columns and add them to the stored .csv")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the .csv")
    args = parser.parse_args()
    if args.report_only:
        report(args.out)
        return
    limit_blas_threads()
    began = time.perf_counter()
    workspace = pipeline.open_workspace("imagefolder:../shared/data/cifar10", pool=10_000, teacher=args.teacher)
    rows = rebuilt_subsets(workspace)
    print(f"{len(rows)} subsets rebuilt in {time.perf_counter() - began:.0f} s", flush=True)
    if args.add:
        columns = merged_with_stored(args.out, rows, knn_variants(workspace, rows))
    else:
        columns = (linear_variants(workspace, rows) + knn_variants(workspace, rows)
                   + ["mean teacher confidence", "share the teacher gets wrong"])
    write_csv(args.out, rows, columns)
    report(args.out, seconds=time.perf_counter() - began)


def report(out: str, seconds: float | None = None) -> None:
    """Write {out}.md from {out}.csv."""
    with open(f"{out}.csv") as handle:
        table = list(csv.DictReader(handle))
    columns = [c for c in table[0] if c not in ("source", "method", "ratio", "seed", "top1")]
    rows = [{**{c: float(r[c]) for c in columns}, "source": r["source"], "method": r["method"],
             "ratio": float(r["ratio"]), "top1": float(r["top1"])} for r in table]
    ratios = sorted({r["ratio"] for r in rows})
    header = " | ".join(f"r={r}: subsets / method means" for r in ratios)
    made = f" in {seconds:.0f} s" if seconds else ""
    lines = ["# Does J predict the student? Spearman(J, student top-1) over the benchmarked subsets", "",
             f"{len(rows)} subsets from `{'`, `'.join(RUNS)}` (`epochs` budget, resnet20 -> resnet8, 15 epochs,",
             "10k CIFAR-10 pool), each with the last-epoch test top-1 of its student. J(S) = the proxy's",
             "cross-fitted validation loss with S as its training set (lower is better), so a proxy that can",
             "steer the policy needs a clearly NEGATIVE Spearman at every ratio. The k-NN rows are the proxy of",
             "docs/METHOD.md section 9 ((k, h) chosen once per fold on all of its candidates). The last three rows",
             "(coverage: mean distance from each validation sample to its nearest kept sample, in standardised",
             "teacher features; and two teacher statistics) are references, not proxies. Generated by",
             f"`benchmarks/proxy_transfer.py`{made}.", "",
             "## Across all selection rules", "",
             f"| proxy (features \\| objective) | {header} |", "|---|" + "---|" * len(ratios)]
    for column in columns:
        cells = correlations(rows, column)
        label = column.replace(" | ", " \\| ")
        lines.append(f"| {label} | " + " | ".join(f"{cells[r][0]:+.2f} / {cells[r][1]:+.2f}" for r in ratios) + " |")
    counts = correlations(rows, columns[0])
    lines += ["", "Subsets / methods per ratio: " + ", ".join(f"r={r}: {counts[r][2]} / {counts[r][3]}" for r in ratios)]
    default = columns[0]
    near = [r for r in rows if r["method"] in NEAR_UNIFORM]
    near_ratios = sorted({r["ratio"] for r in near})
    counts = correlations(near, default)
    lines += ["", f"## Near uniform: only {', '.join(NEAR_UNIFORM)}", "",
              "Spearman(J, top-1) over those subsets ("
              + ", ".join(f"r={r}: {counts[r][2]} subsets" for r in near_ratios) + ").", "",
              "| proxy | " + " | ".join(f"r={r}" for r in near_ratios) + " |", "|---|" + "---|" * len(near_ratios)]
    for column in columns:
        cells = correlations(near, column)
        label = column.replace(" | ", " \\| ")
        lines.append(f"| {label} | " + " | ".join(f"{cells[r][0]:+.2f}" for r in near_ratios) + " |")
    lines += ["",
              f"## Default J and student top-1 per method (`{RUNS[0]}`, means over its seeds; Δ = method - random)",
              "",
              "| method | " + " | ".join(f"r={r}: ΔJ x 1e4 / Δ top-1" for r in ratios) + " |",
              "|---|" + "---|" * len(ratios)]
    grid = [x for x in rows if x["source"] == RUNS[0]]
    means = {(m, r): (np.mean([x[default] for x in grid if x["method"] == m and x["ratio"] == r] or [np.nan]),
                      np.mean([x["top1"] for x in grid if x["method"] == m and x["ratio"] == r] or [np.nan]))
             for m in {x["method"] for x in grid} for r in ratios}
    for method in sorted({x["method"] for x in grid}, key=lambda m: (m != "random", m)):
        lines.append(f"| {method} | " + " | ".join(
            f"{1e4 * (means[method, r][0] - means['random', r][0]):+.1f} / {means[method, r][1] - means['random', r][1]:+.2f}"
            for r in ratios) + " |")
    if KNN in columns:
        lines += knn_section(rows, grid, ratios)
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def knn_section(rows: list[dict], grid: list[dict], ratios: list[float]) -> list[str]:
    """The k-NN proxy and coverage per method (means over the main grid's seeds, minus random), and what the
    correlations above say about them."""
    columns = (KNN, KNN_SOFT, COVERAGE) if KNN_SOFT in rows[0] else (KNN, COVERAGE)
    lines = ["", f"## k-NN J and coverage per method (`{RUNS[0]}`, means over its seeds; Δ = method - random)", "",
             "| method | " + " | ".join(f"r={r}: ΔJ_knn x 1e3 / Δ coverage x 1e3 / Δ top-1" for r in ratios) + " |",
             "|---|" + "---|" * len(ratios)]

    def mean(method, ratio, column):
        return np.mean([x[column] for x in grid if x["method"] == method and x["ratio"] == ratio] or [np.nan])

    for method in sorted({x["method"] for x in grid}, key=lambda m: (m != "random", m)):
        lines.append(f"| {method} | " + " | ".join(
            f"{1e3 * (mean(method, r, KNN) - mean('random', r, KNN)):+.1f} / "
            f"{1e3 * (mean(method, r, COVERAGE) - mean('random', r, COVERAGE)):+.1f} / "
            f"{mean(method, r, 'top1') - mean('random', r, 'top1'):+.2f}" for r in ratios) + " |")
    default = [c for c in rows[0] if c.startswith("teacher penultimate (default) | fit KD, J = KD loss")][0]
    means = {c: correlations(rows, c) for c in (default, *columns)}
    near = [r for r in rows if r["method"] in NEAR_UNIFORM]
    close = {c: correlations(near, c) for c in (default, *columns)}

    def per_ratio(table, column, index):
        return " / ".join(f"{table[column][r][index]:+.2f}" for r in ratios)

    ratio_names = " / ".join(f"{r:g}" for r in ratios)
    lines += ["", "## What the k-NN proxy shows", "",
              f"Across the ten rules (Spearman over the method means at r = {ratio_names}) the k-NN J ranks the "
              f"rules at {per_ratio(means, KNN, 1)} and plain coverage at {per_ratio(means, COVERAGE, 1)}, against "
              f"{per_ratio(means, default, 1)} for the linear default: the k-NN J is the better veto where the "
              "linear J is weakest (r = 0.5) and no better elsewhere, and a statistic with no teacher output at "
              "all, coverage, does as well as either. Near uniform (random and the learned policies only) the "
              f"k-NN J correlates at {per_ratio(close, KNN, 0)}, coverage at {per_ratio(close, COVERAGE, 0)} and the "
              f"linear J at {per_ratio(close, default, 0)}: no proxy tells the near-uniform subsets apart with a "
              "consistent sign, so the k-NN J does not give the bilevel loop a direction to follow near uniform "
              "either. It separates the rules mostly by how well they cover the feature space (its per-method "
              "ΔJ tracks Δ coverage above), which is what the rules that keep only hard or only easy samples "
              "lose."]
    better = [(r, m) for r in ratios for m in sorted({x["method"] for x in grid})
              if mean(m, r, "top1") > mean("random", r, "top1")]
    if better:
        lines += ["", "The rules whose students beat random, with their k-NN ΔJ (x 1e3; > 0 = J prefers random): "
                  + ", ".join(f"{m} at r = {r:g} ({mean(m, r, 'top1') - mean('random', r, 'top1'):+.2f} points, "
                              f"ΔJ {1e3 * (mean(m, r, KNN) - mean('random', r, KNN)):+.1f})" for r, m in better)
                  + (". Where a rule does beat random, the k-NN J does not see it."
                     if all(mean(m, r, KNN) > mean("random", r, KNN) for r, m in better) else ".")]
    if KNN_SOFT in columns:
        lines += ["", f"Without the hard-label term (lam = 1) the k-NN J ranks the rules at {per_ratio(means, KNN_SOFT, 1)} "
                  f"and the near-uniform subsets at {per_ratio(close, KNN_SOFT, 0)}."]
    return lines


if __name__ == "__main__":
    main()

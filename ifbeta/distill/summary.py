"""Summaries of distillation runs: short labels, per-arm statistics over seeds, paired differences.

A run record is a dict as ``student.list_runs`` gives it (``metrics.json``, or ``config.json`` of an
unfinished run): ``method`` ('full', 'random', 'ifbeta', ...), ``ratio`` (fraction removed), ``seed``
(the student's seed; the random arm's subset is drawn with it too), ``test_top1`` (last-epoch test
accuracy in [0, 1]; higher is better) and ``status``. An *arm* is what was trained on: the full pool,
or one method at one ratio ("ifbeta r0.5", "random r0.5", "full"). Seed s of a subset arm pairs with
seed s of the random arm at the same ratio (same student initialisation), so their difference per
seed is a paired comparison. Pure functions: no files, no processes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

FULL, BASELINE = "full", "random"
CONTEXT_FIELDS = ("dataset", "student", "epochs", "budget")
"""Runs compare only within one context: same dataset, student, epochs and budget."""


def arm(record: dict) -> str | None:
    """The arm of a run: 'full', or '<method> r<ratio>' (e.g. 'ifbeta r0.5'); None when unknown
    (a run that has not written its config yet)."""
    method = record.get("method")
    if method is None:
        return None
    if method == FULL:
        return FULL
    return f"{method} r{float(record.get('ratio') or 0.0):g}"


def label(record: dict) -> str:
    """A short label: '<arm> s<seed>' ('ifbeta r0.5 s0', 'full s2'); the run's name when its arm is unknown."""
    name = arm(record)
    if name is None or record.get("seed") is None:
        return str(record.get("name", "?"))
    return f"{name} s{int(record['seed'])}"


def context(record: dict) -> tuple:
    """(dataset, student, epochs, budget) of a run: runs summarise together only within one context."""
    return tuple(record.get(field) for field in CONTEXT_FIELDS)


@dataclass(frozen=True)
class ArmStats:
    """Last-epoch test top-1 of one arm over its seeds (fractions in [0, 1]; higher is better).
    std is the sample standard deviation (ddof=1), 0.0 for one seed."""

    arm: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    n: int
    mean: float
    std: float


@dataclass(frozen=True)
class PairedDifference:
    """subset arm - random arm at the same ratio, per shared seed (fractions; > 0 means the subset
    beat random). std: ddof=1 (0.0 for one pair); low/high: the 95% t-interval of the mean (None
    for fewer than two pairs)."""

    arm: str
    baseline: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    n: int
    mean: float
    std: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Summary:
    arms: tuple[ArmStats, ...]  # subset arms by ratio then name, then random arms, then full
    pairs: tuple[PairedDifference, ...]  # one per subset arm that shares seeds with its random arm


def finished_by_arm(records: list[dict]) -> dict[str, dict[int, float]]:
    """{arm: {seed: test_top1}} of the finished runs with a finite test_top1. When a (arm, seed)
    occurs twice, the first record wins (``list_runs`` lists newest first)."""
    table: dict[str, dict[int, float]] = {}
    for record in records:
        name, value = arm(record), record.get("test_top1")
        if record.get("status") != "finished" or name is None or record.get("seed") is None or value is None:
            continue
        if not math.isfinite(float(value)):
            continue
        table.setdefault(name, {}).setdefault(int(record["seed"]), float(value))
    return table


def _order(name: str) -> tuple:
    if name == FULL:
        return (2, 0.0, name)
    method, _, ratio = name.rpartition(" r")
    return (1 if method == BASELINE else 0, float(ratio), name)


def _spread(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(records: list[dict], *, confidence: float = 0.95) -> Summary:
    """Per-arm mean / std / n of last-epoch test top-1 over seeds, and for each subset arm the paired
    differences subset - random (same ratio, same seed) with their mean, std and t-interval.

    records: run dicts of one context (see ``context``); unfinished ones are ignored."""
    table = finished_by_arm(records)
    arms = []
    for name in sorted(table, key=_order):
        seeds = tuple(sorted(table[name]))
        values = np.array([table[name][s] for s in seeds])
        arms.append(ArmStats(name, seeds, tuple(values.tolist()), len(seeds), float(values.mean()), _spread(values)))
    pairs = []
    for name in sorted(table, key=_order):
        if name == FULL or name.startswith(f"{BASELINE} r"):
            continue
        baseline = f"{BASELINE} r{name.rpartition(' r')[2]}"
        seeds = tuple(sorted(set(table[name]) & set(table.get(baseline, {}))))
        if not seeds:
            continue
        differences = np.array([table[name][s] - table[baseline][s] for s in seeds])
        mean, std, n = float(differences.mean()), _spread(differences), len(seeds)
        low = high = None
        if n >= 2:
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
            low, high = mean - half, mean + half
        pairs.append(PairedDifference(name, baseline, seeds, tuple(differences.tolist()), n, mean, std, low, high))
    return Summary(tuple(arms), tuple(pairs))

"""Paired 95% t-intervals of the bench report, checked against a hand computation with scipy."""
import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from ifbeta.evaluation import bench_report, grid


def _row(method, ratio, seed, accuracy, budget="epochs"):
    return {"method": method, "ratio": ratio, "seed": seed, "budget": budget, "test_top1": accuracy,
            "selection_seconds": 0.1, "distill_seconds": 1.0, "alpha": None, "beta": None}


RANDOM = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.58}
GOOD = {0: 0.56, 1: 0.64, 2: 0.60, 3: 0.61}  # beats random on every seed
NOISY = {0: 0.52, 2: 0.50, 3: 0.62, 5: 0.9}  # seed 1 missing; seed 5 has no random partner
SINGLE = {2: 0.57}


def _rows():
    rows = [_row("random", 0.5, s, a) for s, a in RANDOM.items()]
    rows += [_row("good", 0.5, s, a) for s, a in GOOD.items()]
    rows += [_row("noisy", 0.5, s, a) for s, a in NOISY.items()]
    rows += [_row("single", 0.5, s, a) for s, a in SINGLE.items()]
    rows += [_row("good", 0.5, s, a - 0.3, budget="steps") for s, a in GOOD.items()]  # another budget: never mixed
    return rows + [_row("full", 0.0, s, 0.7) for s in range(3)]


def _by_hand(method_accuracies):
    seeds = sorted(set(method_accuracies) & set(RANDOM))
    d = np.array([method_accuracies[s] - RANDOM[s] for s in seeds])
    n, mean = len(d), d.mean()
    if n < 2:
        return n, mean, None, None
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    return n, mean, mean - half, mean + half


@pytest.mark.parametrize("method, accuracies", [("good", GOOD), ("noisy", NOISY), ("single", SINGLE)])
def test_intervals_match_a_hand_computation(method, accuracies):
    n, mean, low, high = _by_hand(accuracies)
    pair = bench_report.paired_intervals(_rows(), "epochs")[(method, 0.5)]
    assert pair.n == n and pair.mean == pytest.approx(mean)
    if low is None:
        assert pair.low is None and pair.high is None
    else:
        assert (pair.low, pair.high) == (pytest.approx(low), pytest.approx(high))


def test_only_shared_seeds_are_paired_and_random_is_the_reference():
    intervals = bench_report.paired_intervals(_rows(), "epochs")
    assert intervals[("noisy", 0.5)].seeds == (0, 2, 3)
    assert ("random", 0.5) not in intervals and all(m != "full" for m, _ in intervals)
    steps = bench_report.paired_intervals(_rows(), "steps")
    assert steps == {}  # no random run under that budget: nothing to pair with


def test_formatting_and_the_line_of_intervals_excluding_zero():
    intervals = bench_report.paired_intervals(_rows(), "epochs")
    n, mean, low, high = _by_hand(GOOD)
    assert bench_report.format_interval(intervals[("good", 0.5)]) == \
        f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] (n=4)"
    assert bench_report.format_interval(intervals[("single", 0.5)]) == f"{100 * (0.57 - 0.55):+.2f} (n=1)"
    assert bench_report.format_interval(None) == "-"
    assert low > 0  # the hand computation says good's interval lies above zero
    line = bench_report.excluding_zero(intervals, [0.5])
    assert "r=0.5: above good." in line and "noisy" not in line and "single" not in line
    below = {("bad", 0.5): dataclasses.replace(intervals[("good", 0.5)], arm="bad", mean=-mean, low=-high, high=-low)}
    assert bench_report.excluding_zero(below, [0.5, 0.7]) == \
        "95% intervals of Δ excluding zero: r=0.5: below bad · r=0.7: none."


def test_table_reports_mean_std_and_intervals(tmp_path):
    rows = _rows()
    lines = bench_report.table(rows, "epochs")
    good = next(line for line in lines if line.startswith("| good |"))
    accuracies = np.array(list(GOOD.values()))
    assert f"{100 * accuracies.mean():.2f} ± {100 * accuracies.std(ddof=1):.2f}" in good
    assert bench_report.format_interval(bench_report.paired_intervals(rows, "epochs")[("good", 0.5)]) in good
    assert lines[-1].startswith("95% intervals of Δ excluding zero:")
    spec = grid.BenchSpec(dataset="digits", ratios=(0.5,), budgets=("epochs", "steps"))
    bench_report.write(rows, spec, tmp_path)
    assert (tmp_path / "results.png").stat().st_size > 0
    assert "[95% CI]" in (tmp_path / "results.md").read_text()

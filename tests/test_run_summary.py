"""distill.summary: labels, per-arm statistics over seeds and paired subset - random differences,
against values computed by hand."""
from __future__ import annotations

import math

import pytest

from ifbeta.distill import summary


def run(method, seed, top1, *, ratio=0.5, status="finished", **extra):
    return {"method": method, "ratio": 0.0 if method == "full" else ratio, "seed": seed, "test_top1": top1,
            "status": status, "name": f"long-run-name-{method}-{seed}", **extra}


def test_labels_are_short_and_fall_back_to_the_name():
    assert summary.label(run("ifbeta", 0, 0.9)) == "ifbeta r0.5 s0"
    assert summary.label(run("random", 2, 0.9, ratio=0.3)) == "random r0.3 s2"
    assert summary.label(run("full", 1, 0.9)) == "full s1"
    assert summary.arm(run("full", 1, 0.9)) == "full"
    assert summary.label({"name": "20260101-starting"}) == "20260101-starting"  # no config written yet
    assert summary.arm({"name": "x"}) is None


def test_arm_statistics_and_paired_differences_by_hand():
    records = [run("ifbeta", 0, 0.80), run("ifbeta", 1, 0.84), run("ifbeta", 2, 0.82),
               run("random", 0, 0.78), run("random", 1, 0.80), run("random", 2, 0.79),
               run("full", 0, 0.90), run("full", 1, 0.92)]
    result = summary.summarise(records)
    assert [a.arm for a in result.arms] == ["ifbeta r0.5", "random r0.5", "full"]
    ifbeta, random, full = result.arms
    assert ifbeta.n == 3 and ifbeta.seeds == (0, 1, 2)
    assert ifbeta.mean == pytest.approx(0.82) and ifbeta.std == pytest.approx(0.02)  # deviations -2, +2, 0 (x0.01)
    assert random.mean == pytest.approx(0.79) and random.std == pytest.approx(0.01)  # -1, +1, 0
    assert full.mean == pytest.approx(0.91) and full.std == pytest.approx(math.sqrt(2) * 0.01)  # +-1: sqrt(2/1)
    (pair,) = result.pairs
    assert (pair.arm, pair.baseline, pair.seeds) == ("ifbeta r0.5", "random r0.5", (0, 1, 2))
    assert pair.differences == pytest.approx((0.02, 0.04, 0.03))
    assert pair.mean == pytest.approx(0.03) and pair.std == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2 df) * s / sqrt(n)
    assert pair.low == pytest.approx(0.03 - half) and pair.high == pytest.approx(0.03 + half)


def test_pairs_use_shared_seeds_only_and_one_pair_has_no_interval():
    records = [run("ifbeta", 0, 0.70), run("ifbeta", 1, 0.75), run("random", 1, 0.72), run("random", 5, 0.60)]
    (pair,) = summary.summarise(records).pairs
    assert pair.seeds == (1,) and pair.differences == pytest.approx((0.03,))
    assert pair.std == 0.0 and pair.low is None and pair.high is None


def test_unfinished_duplicates_and_other_ratios():
    records = [run("ifbeta", 0, 0.9), run("ifbeta", 0, 0.1),  # newest first: the first of a (arm, seed) wins
               run("ifbeta", 1, None, status="running"), run("random", 0, float("nan")),
               run("ifbeta", 0, 0.5, ratio=0.3), run("random", 0, 0.4, ratio=0.3)]
    result = summary.summarise(records)
    arms = {a.arm: a for a in result.arms}
    assert [a.arm for a in result.arms] == ["ifbeta r0.3", "ifbeta r0.5", "random r0.3"]
    assert arms["ifbeta r0.5"].values == (0.9,) and arms["ifbeta r0.5"].std == 0.0
    assert [(p.arm, p.baseline) for p in result.pairs] == [("ifbeta r0.3", "random r0.3")]
    assert result.pairs[0].mean == pytest.approx(0.1)
    assert summary.summarise([]).arms == () and summary.summarise([]).pairs == ()


def test_context_separates_students_and_epochs():
    a = run("ifbeta", 0, 0.9, dataset="digits", student="mlp", epochs=1, budget="epochs")
    b = {**a, "epochs": 2}
    assert summary.context(a) == ("digits", "mlp", 1, "epochs") and summary.context(a) != summary.context(b)


def test_summary_figure_shows_arms_and_paired_differences():
    from ifbeta import plots

    records = [run("ifbeta", 0, 0.80), run("ifbeta", 1, 0.84), run("random", 0, 0.78), run("random", 1, 0.80),
               run("full", 0, 0.90)]
    result = summary.summarise(records)
    figure = plots.arm_summary(result.arms, result.pairs)
    bars = next(t for t in figure.data if t.name == "mean ± std")
    assert list(bars.x) == ["ifbeta r0.5 (n=2)", "random r0.5 (n=2)", "full (n=1)"] and bars.mode == "markers"
    assert list(bars.y) == pytest.approx([82.0, 79.0, 90.0])
    mean = next(t for t in figure.data if t.name == "mean, 95% t-interval")
    assert list(mean.y) == pytest.approx([3.0]) and mean.error_y.arrayminus is not None
    assert figure.layout.legend.orientation == "h" and figure.layout.legend.y < 0  # legend under the plots

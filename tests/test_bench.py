"""A tiny benchmark grid on digits: paired seeds, resumable, reports written."""
import json

import pytest

from ifbeta.config import PolicyConfig
from ifbeta.evaluation import bench, bench_report, grid


@pytest.mark.slow
def test_tiny_grid_writes_reports_and_resumes(tmp_path, session_store):
    spec = grid.BenchSpec(dataset="digits", methods=("random", "moderate"), ratios=(0.5,), seeds=(0, 1), epochs=1)
    out = tmp_path / "grid"
    rows = bench.run(spec, out, store=session_store, workers=2)
    assert len(rows) == 2 + 2 * 2  # full x seeds + methods x seeds
    assert {(r["method"], r["seed"]) for r in rows} >= {("random", 0), ("moderate", 1), ("full", 0)}
    for name in ("results.csv", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    markdown = (out / "results.md").read_text()
    assert "| random |" in markdown and "| moderate |" in markdown and "Δ vs random" in markdown

    victim = out / "runs" / "moderate-r0.5-s1-epochs" / "metrics.json"
    kept = out / "runs" / "random-r0.5-s0-epochs" / "metrics.json"
    before = kept.stat().st_mtime_ns
    victim.unlink()  # as if the grid had been killed during this run
    rows_again = bench.run(spec, out, store=session_store, workers=1)
    assert victim.is_file() and kept.stat().st_mtime_ns == before and len(rows_again) == len(rows)
    redone = json.loads(victim.read_text())
    original = [r for r in rows if r["method"] == "moderate" and r["seed"] == 1][0]
    assert redone["test_top1"] == pytest.approx(original["test_top1"], abs=1e-9)


def test_paired_difference_pairs_by_seed():
    rows = [{"method": "random", "ratio": 0.5, "seed": s, "budget": "epochs", "test_top1": a}
            for s, a in ((0, 0.5), (1, 0.7))]
    rows += [{"method": "x", "ratio": 0.5, "seed": s, "budget": "epochs", "test_top1": a} for s, a in ((0, 0.6), (1, 0.7))]
    mean, std, n = bench_report.paired_difference(rows, "x", 0.5, "epochs")
    assert n == 2 and mean == pytest.approx(0.05) and std == pytest.approx(0.0707107, rel=1e-4)


def test_cells_cover_the_grid_once():
    spec = grid.PRESETS["cifar10-cpu"]
    names = [grid.cell_name(c) for c in grid.cells(spec)]
    assert len(names) == len(set(names))
    expected = len(spec.seeds) * (1 + len(spec.methods) * (len(spec.ratios) + len(spec.steps_ratios)))
    assert len(names) == expected


def test_pending_cells_run_seed_major_and_skip_finished(tmp_path):
    """A grid stopped part way holds whole paired seeds: every cell of seed s runs before any of s + 1."""
    spec = grid.BenchSpec(dataset="digits", methods=("random", "ifbeta"), ratios=(0.5, 0.9), seeds=(0, 1, 2))
    finished = grid.cells(spec)[3]
    (tmp_path / "runs" / grid.cell_name(finished)).mkdir(parents=True)
    (tmp_path / "runs" / grid.cell_name(finished) / "metrics.json").write_text("{}")
    todo = bench.pending_cells(spec, tmp_path)
    assert [c["seed"] for c in todo] == sorted(c["seed"] for c in todo)
    assert finished not in todo and len(todo) == len(grid.cells(spec)) - 1
    assert {grid.cell_name(c) for c in todo} | {grid.cell_name(finished)} == {grid.cell_name(c) for c in grid.cells(spec)}


def test_grid_without_the_ceiling_and_with_policy_settings(tmp_path, session_store, digits_features):
    """--no-full drops the ceiling cells; --policy reaches the learned policy of ifbeta rows."""
    spec = grid.BenchSpec(dataset="digits", methods=("ifbeta",), ratios=(0.7,), seeds=(0,), full=False,
                           policy={"shrinkage": 0.0, "steps": 3})
    assert [c["method"] for c in grid.cells(spec)] == ["ifbeta"]
    from ifbeta import pipeline

    workspace = pipeline.open_workspace("digits", store=session_store)
    infos = bench.select_all(workspace, spec, tmp_path)
    (learned,) = pipeline.policies(workspace, [0.7], PolicyConfig(shrinkage=0.0, steps=3), compute=False)
    assert learned.c == 0.0 and len(learned.trace) <= 3
    assert infos[("ifbeta", 0.7, 0)]["alpha"] == pytest.approx(learned.alpha)


def test_bench_policy_settings_are_checked(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ifbeta.cli", "bench", "--preset", "digits", "--policy", "axis=x",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown --policy setting axis" in result.stderr
    assert "Traceback" not in result.stderr

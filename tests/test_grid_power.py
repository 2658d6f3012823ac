"""The cifar10-power preset: cifar10-cpu's setting with 8 paired seeds and the coverage methods."""
from ifbeta.evaluation import grid
from ifbeta.selection.registry import METHODS


def test_power_preset_matches_cifar10_cpu_and_covers_its_grid():
    power, cpu = grid.PRESETS["cifar10-power"], grid.PRESETS["cifar10-cpu"]
    for name in ("dataset", "pool", "teacher", "student", "epochs", "batch_size", "learning_rate", "proxy"):
        assert getattr(power, name) == getattr(cpu, name), name
    assert power.seeds == tuple(range(8)) and power.ratios == (0.5, 0.7, 0.9) and power.budgets == ("epochs",)
    assert power.methods == ("random", "ifbeta", "ifbeta-knn", "kcenter", "facility-location", "ccs")
    assert set(power.methods) <= set(METHODS) and power.full and any("pool" in note for note in power.notes)
    names = [grid.cell_name(c) for c in grid.cells(power)]
    assert len(names) == len(set(names)) == 8 + 6 * 3 * 8

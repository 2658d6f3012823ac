"""What a map selection shows (plots.selection, plots.maps): percentiles, the per-class table, the
histogram over the pool and quantile colour ranges, against brute force."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from ifbeta import plots
from ifbeta.subsets import query

RNG = np.random.default_rng(1)


def test_within_class_percentile_ranks_inside_each_class():
    values = np.array([3.0, 1.0, 2.0, 10.0, -5.0, 7.0, 7.0, 0.0])
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    percentile = query.within_class_percentile(values, labels)
    # class 0: 1 < 2 < 3; class 1: -5 < 10; class 2: a tie keeps pool order; class 3: alone -> 50
    np.testing.assert_allclose(percentile, [100, 0, 50, 100, 0, 0, 100, 50])
    big = RNG.normal(size=500)
    groups = RNG.integers(0, 4, 500)
    got = query.within_class_percentile(big, groups)
    for i in range(0, 500, 37):  # brute force: share of the class strictly below
        mates = big[groups == groups[i]]
        assert got[i] == pytest.approx(100 * (mates < big[i]).sum() / (len(mates) - 1))
    with pytest.raises(ValueError):
        query.within_class_percentile(values, labels[:-1])


def test_selection_table_counts_shares_and_kept():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    percentile = np.arange(10, dtype=float) * 10
    kept = np.array([1, 0, 1, 0, 1, 1, 0, 0, 0, 1], dtype=bool)
    selected = np.array([0, 1, 2, 8, 9])
    table = plots.selection_table(labels, selected, ["a", "b", "c"], percentile=percentile, kept=kept)
    assert list(table.index) == [0, 2] and list(table["class"]) == ["a", "c"]  # class b has none selected
    assert list(table["selected"]) == [3, 2]
    np.testing.assert_allclose(table["share of class"], [3 / 4, 2 / 4])
    np.testing.assert_allclose(table["mean percentile"], [10.0, 85.0])
    np.testing.assert_allclose(table["kept share"], [2 / 3, 1 / 2])
    assert "kept share" not in plots.selection_table(labels, selected, ["a", "b", "c"], percentile=percentile)


def test_selection_histogram_counts_every_sample_once_in_the_clipped_range():
    values = np.concatenate([RNG.normal(size=300), [50.0, -40.0]])  # two outliers fall into the end bins
    selected = np.array([0, 5, 17, 300, 301])
    figure = plots.selection_histogram(values, selected, value_range=(-2.0, 2.0), bins=8)
    pool, chosen = figure.data
    assert isinstance(pool, go.Bar) and pool.name == "pool (302)" and chosen.name == "selection (5)"
    edges = np.linspace(-2, 2, 9)
    np.testing.assert_array_equal(pool.customdata, np.histogram(np.clip(values, -2, 2), bins=edges)[0])
    np.testing.assert_array_equal(chosen.customdata, np.histogram(np.clip(values[selected], -2, 2), bins=edges)[0])
    assert chosen.customdata[0] >= 1 and chosen.customdata[-1] >= 1  # -40 and 50
    np.testing.assert_allclose(np.sum(chosen.y), 100.0)  # each group as a share of itself
    np.testing.assert_allclose(pool.x, (edges[:-1] + edges[1:]) / 2)


def test_quantile_range_ignores_outliers_and_can_centre():
    values = np.concatenate([np.linspace(-1, 1, 99), [1000.0]])
    low, high = plots.quantile_range(values, low=2, high=98)
    assert (low, high) == tuple(np.percentile(values, [2, 98], method="nearest"))
    assert high < 2
    low, high = plots.quantile_range(np.linspace(0, 3, 50), symmetric_about=0.0)
    assert low == pytest.approx(-high)
    assert plots.quantile_range(np.full(5, 2.0))[1] > 2.0  # never an empty range
    assert plots.quantile_range(np.array([np.nan])) == (0.0, 1.0)


def test_sample_map_value_range_and_kept_drawing():
    coords = RNG.normal(size=(20, 2))
    ids = [f"s/{i}" for i in range(20)]
    figure = plots.sample_map(coords, ids, values=RNG.random(20), value_name=plots.PERCENTILE_TITLE,
                              value_range=(0.0, 100.0))
    marker = figure.data[0].marker
    assert (marker.cmin, marker.cmax) == (0.0, 100.0) and figure.layout.showlegend is False
    assert marker.colorbar.title.text == plots.PERCENTILE_TITLE
    kept = np.arange(20) % 2 == 0
    figure = plots.sample_map(coords, ids, kept=kept, size=4, opacity=0.5)
    pruned, shown = figure.data
    assert (pruned.name, shown.name) == ("pruned", "kept")
    assert pruned.marker.size == 4 + plots.maps.PRUNED_GROWTH and pruned.marker.opacity == 1.0
    assert shown.marker.size == 4 and shown.marker.opacity == 0.5

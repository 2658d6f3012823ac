"""selection.coverage: D2-Pruning, herding and k-center greedy cover the feature space."""
from __future__ import annotations

import numpy as np
import pytest

from ifbeta.data.streaming import feature_statistics
from ifbeta.selection.grouping import standardised
from ifbeta.selection.registry import select
from tests.selection_problems import blobs_problem, make_problem


@pytest.mark.parametrize("method", ["d2", "kcenter"])
def test_graph_and_kcenter_cover_every_blob(method):
    inputs, blob, ratio = blobs_problem()
    for seed in range(3):
        chosen = select(method, inputs, ratio, seed=seed)
        assert sorted(blob[chosen.indices]) == [0, 1, 2, 3, 4]
    assert set(blob[select("el2n-teacher", inputs, ratio).indices]) == {0}  # top-k does not


def test_d2_forward_scores_add_neighbour_difficulty():
    inputs, blob, ratio = blobs_problem()
    chosen = select("d2", inputs, ratio)
    el2n = inputs.teacher_scores["el2n"]
    # neighbours are the 10 others in the blob at distance ~0, so s' ~ s + sum of the blob's others
    expected = np.array([el2n[blob == blob[i]].sum() for i in range(len(blob))])
    np.testing.assert_allclose(chosen.scores, expected, rtol=0.01)


def test_herding_tracks_the_class_mean():
    inputs = make_problem(n=400, d=8, images=False)
    statistics = feature_statistics(inputs.features)
    points = standardised(inputs.features, np.arange(400), statistics)

    def gap(selection):
        return np.mean([np.linalg.norm(points[np.intersect1d(selection.indices, np.flatnonzero(inputs.labels == c))].mean(0)
                                       - points[inputs.labels == c].mean(0)) for c in range(4)])
    herded = gap(select("herding", inputs, 0.9))
    randoms = [gap(select("random-balanced", inputs, 0.9, seed=s)) for s in range(10)]
    assert herded < 0.2 * np.mean(randoms)


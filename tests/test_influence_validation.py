"""validation.loo_check: predicted influence against true leave-one-out refits of the proxy."""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ifbeta.config import InfluenceConfig
from ifbeta.influence import validation
from tests.influence_problems import mixture


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):  # shared 2-core machine: oversubscribed BLAS threads are 10x slower
        yield


def test_loo_check_passes_on_gaussian_mixture_teacher_features():
    features, teacher, labels = mixture(1000, 6, 3, seed=7)
    steps = []
    report = validation.loo_check(features, teacher, labels, config=InfluenceConfig(), samples=60, seed=0,
                                  on_step=lambda step, info: steps.append(step))
    assert report["n"] == 60 == len(report["predicted"]) == len(report["actual"]) and len(steps) == 60
    assert report["estimator"] == "first_order" and report["solver"] == "direct"
    assert report["spearman"] >= 0.9
    assert 0.8 <= report["slope"] <= 1.25
    assert report["sign_agreement"] >= 0.9
    assert report["group_harmful_delta"] < 0
    assert report["group_helpful_delta"] > report["group_random_delta"]


def test_newton_estimator_passes_loo_check_where_first_order_values_drift():
    """1% mislabelled outliers the teacher agrees with: first-order ranks them right but overstates
    their removal effect (slope < 0.8); the Newton estimator matches the refits."""
    features, teacher, labels = mixture(1000, 8, 4, seed=7, corrupted=10)
    first = validation.loo_check(features, teacher, labels, config=InfluenceConfig(solver="cg", estimator="first_order"),
                                 samples=60)
    assert first["spearman"] >= 0.9 and first["sign_agreement"] >= 0.9 and first["slope"] < 0.8
    newton = validation.loo_check(features, teacher, labels, config=InfluenceConfig(estimator="newton"), samples=60)
    assert newton["estimator"] == "newton"
    np.testing.assert_allclose(newton["actual"], first["actual"], rtol=1e-6, atol=1e-12)  # the same refits
    assert newton["spearman"] >= 0.99 and 0.95 <= newton["slope"] <= 1.05 and newton["sign_agreement"] >= 0.95
    assert newton["group_harmful_delta"] < 0 < newton["group_helpful_delta"]

"""Degenerate input to influence scoring: a clear ValueError, or a documented behaviour asserted here.

Documented in the module docstring of ifbeta/influence/scores.py:
- NaN/Inf in features or teacher logits, labels outside [0, C) or of the wrong shape, an empty
  cross-fitting fold: ValueError naming the problem (and where) before any fit.
- constant feature columns: standardised to exactly 0, so the scores equal those with the columns deleted.
- a class with a single sample: scored like any other sample, never in its own validation set.
"""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
from ifbeta.data.streaming import feature_statistics
from ifbeta.influence import objective, proxy, validation
from ifbeta.influence import scores as influence

SOLVERS = ("direct", "cg", "ekfac")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def pool(n=120, d=6, classes=3, seed=0):
    """Clustered teacher-like features (n, d), a linear teacher's logits (n, C), labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(classes, d))[labels] * 2 + rng.normal(size=(n, d))
    logits = features @ rng.normal(size=(d, classes)) / np.sqrt(d) * 4
    logits[np.arange(n), labels] += 3
    return features, logits, labels


def config(solver="cg", estimator="first_order", mu=0.5):
    return InfluenceConfig(solver=solver, estimator=estimator, proxy=ProxyConfig(mu=mu))


# ----------------------------------------------------------------------------- refused with a clear error


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_naming_row_and_column(value):
    features, logits, labels = pool()
    features[7, 2] = value
    with pytest.raises(ValueError, match=r"features contain NaN or Inf \(first at row 7, column 2\); remove or impute"):
        influence.score(features, logits, labels, config=config())
    with pytest.raises(ValueError, match=r"first at row 7, column 2"):
        validation.loo_check(features, logits, labels, config=config(), samples=3)


def test_float16_overflow_in_a_memmap_is_refused(tmp_path):
    features, logits, labels = pool()
    stored = np.lib.format.open_memmap(tmp_path / "phi.npy", mode="w+", dtype=np.float16, shape=features.shape)
    stored[:] = features.astype(np.float16)
    stored[50, 1] = np.float16(np.inf)  # what a cast of a value > 65504 to float16 leaves behind
    stored.flush()
    with pytest.raises(ValueError, match=r"features contain NaN or Inf \(first at row 50, column 1\)"):
        influence.score(np.load(tmp_path / "phi.npy", mmap_mode="r"), logits, labels, config=config())


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_teacher_logits_are_refused(value):
    features, logits, labels = pool()
    logits[11, 0] = value
    with pytest.raises(ValueError, match=r"teacher logits contain NaN or Inf \(first at row 11, column 0\)"):
        influence.score(features, logits, labels, config=config())


@pytest.mark.parametrize("change, message", [
    (lambda y: np.where(np.arange(len(y)) == 4, -1, y), r"labels must lie in \[0, 3\).*got -1\.\.2"),
    (lambda y: np.where(np.arange(len(y)) == 4, 3, y), r"labels must lie in \[0, 3\).*got 0\.\.3"),
    (lambda y: y + 0.5, r"labels must be integer class ids"),
    (lambda y: y[:-1], r"must describe the same N samples"),
    (lambda y: y[:, None], r"must describe the same N samples"),
])
def test_bad_labels_are_refused(change, message):
    features, logits, labels = pool()
    with pytest.raises(ValueError, match=message):
        influence.score(features, logits, change(labels), config=config())


def test_integer_valued_float_labels_are_accepted():
    features, logits, labels = pool()
    expected = influence.score(features, logits, labels, config=config()).scores
    np.testing.assert_array_equal(influence.score(features, logits, labels.astype(float), config=config()).scores,
                                  expected)


def test_logits_with_other_rows_than_features_are_refused():
    features, logits, labels = pool()
    with pytest.raises(ValueError, match=r"features \(120 rows\), teacher_logits \(119 rows\)"):
        influence.score(features, logits[:-1], labels, config=config())


@pytest.mark.parametrize("n", [1, 3])
def test_an_empty_cross_fitting_fold_is_refused(n):
    """Every class has fewer samples than folds: stratified folds can leave a fold with nothing to fit."""
    features, logits, _ = pool(n=n)
    labels = np.arange(n)  # n classes of one sample each; with seed 0 all land in fold 1
    with pytest.raises(ValueError, match=r"left a fold empty \(fold sizes \[0, \d\].*fewer than folds=2 samples"):
        influence.score(features, np.pad(logits, ((0, 0), (0, max(0, n - 3)))), labels, config=config())


# ----------------------------------------------------------------------------- documented behaviour


@pytest.mark.parametrize("solver", SOLVERS)
def test_constant_columns_standardise_to_zero_as_if_deleted(solver):
    """0.1 is not representable: the column's float64 std is ~1e-17 (not 0), which would standardise
    it to a constant +-1 column, a second ridge-penalised bias (ekfac scores then moved by ~9% here).
    Constant columns must instead behave exactly as if they were not there."""
    features, logits, labels = pool()
    padded = np.insert(features, [2, 4], 0.0, axis=1)
    padded[:, 2], padded[:, 5] = 0.1, 5.0
    assert 0 < padded[:, 2].std() < 1e-12  # the round-off case the rule is about
    assert feature_statistics(padded)[1][2] == 1.0 and feature_statistics(padded)[0][2] == 0.1
    expected = influence.score(features, logits, labels, config=config(solver)).scores
    got = influence.score(padded, logits, labels, config=config(solver)).scores
    # float32 curvature products: equal to their round-off (the deleted column changes the summation)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_constant_columns_do_not_change_the_chosen_mu():
    features, logits, labels = pool()
    padded = np.insert(features, 3, 0.1, axis=1)
    expected, got = (influence.score(f, logits, labels, config=config(mu=None)) for f in (features, padded))
    assert got.mu == expected.mu
    np.testing.assert_allclose(got.scores, expected.scores, rtol=0, atol=1e-5 * np.abs(expected.scores).max())


def test_all_constant_features_leave_a_bias_only_proxy_with_finite_scores():
    """No feature varies: the proxy is its bias alone, the same as with no feature columns at all."""
    _, logits, labels = pool()
    for solver in SOLVERS:
        constant = influence.score(np.full((len(labels), 4), 3.7), logits, labels, config=config(solver))
        assert np.isfinite(constant.scores).all() and np.all(np.asarray(constant.grad_norms) < 1e-6)
        empty = influence.score(np.zeros((len(labels), 0)), logits, labels, config=config(solver))
        np.testing.assert_allclose(constant.scores, empty.scores, rtol=0, atol=1e-5 * np.abs(empty.scores).max())


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_class_with_one_sample_is_scored_and_never_validates_itself(solver):
    features, logits, labels = pool()
    logits = np.pad(logits, ((0, 0), (0, 2)))  # C = 5: class 3 gets one sample, class 4 none at all
    labels[7], logits[7, 3] = 3, 8.0
    result = influence.score(features, logits, labels, config=config(solver))
    assert np.isfinite(result.scores).all() and result.scores[7] != 0
    assert np.all(np.asarray(result.grad_norms) < 1e-6)  # both folds' fits converged
    k = result.fold[7]
    assert np.count_nonzero(labels[result.fold != k] == 3) == 0  # its validation set never holds its class


def test_a_single_sample_class_score_matches_its_true_removal():
    """The singleton is the highest-leverage sample of its fold; the Newton estimator still gets its removal right."""
    features, logits, labels = pool()
    logits = np.pad(logits, ((0, 0), (0, 1)))
    labels[7], logits[7, 3] = 3, 8.0
    result = influence.score(features, logits, labels, config=config("direct", "newton"))
    k, kd = result.fold[7], KDConfig()
    mean, std = feature_statistics(features)
    z = (features - mean) / std
    train, held_out = np.flatnonzero(result.fold == k), np.flatnonzero(result.fold != k)
    problem = dict(kd=kd, mu=0.5, tolerance=1e-13)
    full = proxy.fit(z[train], logits[train], labels[train], **problem)
    weights = (train != 7).astype(float)
    removed = proxy.fit(z[train], logits[train], labels[train], weights=weights, init=full.theta, **problem)
    loss = lambda theta: objective.validation_loss(theta, z[held_out], logits[held_out], labels[held_out], kd=kd)  # noqa: E731
    true_change = loss(removed.theta) - loss(full.theta)
    assert result.scores[7] == pytest.approx(true_change, rel=0.05)


def test_standardise_maps_a_round_off_constant_column_to_exact_zeros():
    """objective.standardise (used by the bilevel loop) shares the rule: a column of 0.1 has a float64
    std of ~1e-17, and must standardise to 0, not to a constant +-1."""
    from ifbeta.influence import objective

    rng = np.random.default_rng(0)
    features = np.column_stack([rng.normal(size=301), np.full(301, 0.1), np.full(301, -3.7e5)])
    z, mean, std = objective.standardise(features)
    assert np.array_equal(z[:, 1:], np.zeros((301, 2)))
    assert np.allclose(z[:, 0].mean(), 0.0, atol=1e-12) and np.isclose(z[:, 0].std(), 1.0)

"""The policy preview (policy.preview): one computation behind the Feature map and the Policy page,
equal to what the ``ifbeta-fixed`` selection method keeps."""
from __future__ import annotations

import numpy as np
import pytest

from ifbeta.policy import beta as policy
from ifbeta.policy.preview import preview, ranks


def _pool(n=300, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.integers(0, classes, size=n)


@pytest.mark.parametrize("stratify", [True, False])
def test_preview_keeps_k_with_probabilities_that_sum_to_k(stratify):
    values, labels = _pool()
    shown = preview(values, labels, ratio=0.7, alpha=3.0, beta=1.0, stratify=stratify, seed=4)
    assert shown.k == policy.k_for_ratio(len(values), 0.7) == shown.kept.sum() == len(shown.kept_indices)
    assert shown.probabilities.sum() == pytest.approx(shown.k, rel=1e-9)
    assert np.all((shown.probabilities >= 0) & (shown.probabilities <= 1 + 1e-12))
    if stratify:  # per-class quotas: each class keeps its share
        for c in np.unique(labels):
            members = labels == c
            assert shown.probabilities[members].sum() == pytest.approx(shown.kept[members].sum(), abs=1.0)


def test_ranks_are_within_class_only_when_stratified():
    values = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    within = ranks(values, labels, stratify=True)
    pooled = ranks(values, labels, stratify=False)
    np.testing.assert_allclose(within, [1 / 6, 3 / 6, 5 / 6] * 2)  # (rank + 0.5) / class size
    np.testing.assert_allclose(pooled, (np.arange(6) + 0.5) / 6)


def test_alpha_above_beta_prefers_high_values():
    values, labels = _pool(n=2000)
    shown = preview(values, labels, ratio=0.5, alpha=5.0, beta=1.0, seed=0)
    assert values[shown.kept].mean() > values[~shown.kept].mean() + 0.5
    order = np.argsort(shown.u)
    assert shown.probabilities[order[-50:]].mean() > shown.probabilities[order[:50]].mean()


def test_uniform_policy_gives_every_sample_the_same_probability():
    values, labels = _pool(n=400)
    shown = preview(values, labels, ratio=0.75, alpha=1.0, beta=1.0, stratify=False)
    np.testing.assert_allclose(shown.probabilities, shown.k / len(values), rtol=1e-9)


def test_preview_equals_the_fixed_policy_selection():
    from ifbeta.selection.beta_policy import ifbeta_fixed
    from ifbeta.selection.registry import SelectionInputs

    values, labels = _pool(n=240)
    features = np.random.default_rng(1).normal(size=(240, 4)).astype(np.float32)
    logits = np.random.default_rng(2).normal(size=(240, 3)).astype(np.float32)
    inputs = SelectionInputs(features=features, teacher_logits=logits, labels=labels)
    k = policy.k_for_ratio(240, 0.6)
    for stratify in (True, False):
        entropy = -np.sum(np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
                          * np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True)), axis=1)
        chosen, axis_values, _ = ifbeta_fixed(inputs, k, ratio=0.6, seed=3, alpha=2.0, beta=0.5, axis="entropy",
                                              stratify=stratify)
        np.testing.assert_allclose(axis_values, -entropy, rtol=1e-5)
        shown = preview(axis_values, labels, ratio=0.6, alpha=2.0, beta=0.5, stratify=stratify, seed=3)
        np.testing.assert_array_equal(np.sort(chosen), shown.kept_indices)


def test_bad_settings_raise_value_errors():
    values, labels = _pool()
    with pytest.raises(ValueError):
        preview(values, labels, ratio=1.0, alpha=1.0, beta=1.0)
    with pytest.raises(ValueError):
        preview(values, labels, ratio=0.5, alpha=0.0, beta=1.0)

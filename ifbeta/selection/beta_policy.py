"""IF-Beta as selection methods: the Beta policy over per-class ranks, learned (bilevel) or fixed.

Signature and return value as in ``selection.score_based``. The axis values are oriented so that
u near 1 is helpful / easy; ``Selection.scores`` holds them (higher = u nearer 1).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ifbeta.policy import axes, preview
from ifbeta.policy import beta as policy
from ifbeta.selection.signals import influence_on_demand, teacher_score


def _axis_values(inputs, axis: str, seed: int, config) -> np.ndarray:
    """The values the Beta acts on, oriented so that u near 1 is helpful / easy:
    "influence" = s (> 0 helpful); "entropy" = minus the teacher entropy (low entropy = easy)."""
    if axis == "influence":
        return influence_on_demand(inputs, seed=seed, config=config)
    if axis == "entropy":
        return axes.easier_first(teacher_score(inputs, "entropy", seed=seed, config=config))
    raise ValueError(f"unknown policy axis {axis!r}; choose 'influence' or 'entropy'")


def _sample_policy(inputs, k, values, alpha, beta, seed, stratify):
    u = preview.ranks(values, inputs.labels, stratify=stratify)
    return policy.sample_subset(u, inputs.labels, k, alpha, beta, seed=seed, stratify=stratify)


def ifbeta_learned(inputs, k, *, ratio, seed, axis="influence", stratify=True, kd=None, config=None, on_step=None,
                   **policy_options):
    """IF-Beta: (alpha, beta) learned by ``bilevel.optimise_policy`` on the ranks of ``axis`` (other
    options, e.g. estimator, steps, shrinkage, go to it), then ``policy.sample_subset`` with ``seed``.
    ``kd`` defaults to ``config.proxy.kd`` (config: the InfluenceConfig used when s is computed here).
    Scores: the axis values (higher = u nearer 1)."""
    from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
    from ifbeta.policy import bilevel
    kd = kd if kd is not None else (config.proxy.kd if config is not None else KDConfig())
    config = config if config is not None else InfluenceConfig(proxy=ProxyConfig(kd=kd), seed=seed)
    values = _axis_values(inputs, axis, seed, config)
    start = time.perf_counter()
    result = bilevel.optimise_policy(inputs.features, inputs.teacher_logits, inputs.labels, ratios=[ratio],
                                     axis_values=values, axis=axis, kd=kd, stratify=stratify, seed=seed,
                                     proxy=dataclasses.replace(config.proxy, kd=kd), on_step=on_step,
                                     **policy_options)[0]
    alpha, beta = float(result.alpha), float(result.beta)
    indices = _sample_policy(inputs, k, values, alpha, beta, seed, stratify)
    info = {"alpha": alpha, "beta": beta, "axis": axis, "estimator": result.estimator, "stratified": stratify,
            "converged": bool(result.converged), "shrinkage_c": float(result.c), "mu": float(result.mu),
            "trace": result.trace, "optimise_seconds": time.perf_counter() - start}
    return indices, values, info


def ifbeta_entropy(inputs, k, *, ratio, seed, **options):
    """IF-Beta with the Beta over per-class teacher-entropy ranks (low entropy = easy = u near 1)."""
    return ifbeta_learned(inputs, k, ratio=ratio, seed=seed, axis="entropy", **options)


def ifbeta_fixed(inputs, k, *, ratio, seed, alpha=None, beta=None, axis="influence", stratify=True, config=None):
    """The Beta policy with given ``alpha`` and ``beta`` (both required), no optimisation.
    Scores: the axis values."""
    if alpha is None or beta is None:
        raise ValueError("ifbeta-fixed needs the options alpha and beta, e.g. alpha=2.0, beta=1.0")
    values = _axis_values(inputs, axis, seed, config)
    indices = _sample_policy(inputs, k, values, float(alpha), float(beta), seed, stratify)
    return indices, values, {"alpha": float(alpha), "beta": float(beta), "axis": axis, "stratified": stratify}

"""IF-Beta as selection methods: the Beta policy over per-class ranks, learned (bilevel) or fixed.

Signature and return value as in ``selection.score_based``. The axis values are oriented so that
u near 1 is helpful / easy; ``Selection.scores`` holds them (higher = u nearer 1).

``POLICY_METHODS`` says what each learned IF-Beta method fixes of the settings it is run with: its
axis, for ``ifbeta-knn`` the proxy family (k-NN, for both the influence ranks and J, whatever family
the caller's InfluenceConfig names), for ``ifbeta-adaptive`` the ratio-adaptive start and prior
(``PolicyConfig.start``), so one grid can hold them beside ``ifbeta``.
``method_policy_config`` and ``method_influence_config`` apply it (``pipeline.choose`` does).
"""
from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import numpy as np

from ifbeta.policy import axes, preview
from ifbeta.policy import beta as policy
from ifbeta.selection.signals import influence_on_demand, teacher_score


class PolicyMethod(NamedTuple):
    axis: str  # what the Beta ranks (policy.axes.AXES)
    family: str | None = None  # proxy family of the influence scores and of J; None = the caller's
    start: str | None = None  # PolicyConfig.start; None = the caller's


POLICY_METHODS: dict[str, PolicyMethod] = {
    "ifbeta": PolicyMethod("influence"),
    "ifbeta-entropy": PolicyMethod("entropy"),
    "ifbeta-knn": PolicyMethod("influence", family="knn"),
    "ifbeta-adaptive": PolicyMethod("influence", start="ratio-adaptive"),
}


def method_policy_config(method: str, policy_config=None):
    """The PolicyConfig a learned IF-Beta ``method`` uses: ``policy_config`` on the method's axis (and
    with its start, for ``ifbeta-adaptive``)."""
    from ifbeta.config import PolicyConfig

    fixed = POLICY_METHODS[method]
    config = dataclasses.replace(policy_config or PolicyConfig(), axis=fixed.axis)
    return config if fixed.start is None else dataclasses.replace(config, start=fixed.start)


def method_influence_config(method: str, influence_config=None):
    """The InfluenceConfig ``method`` scores and learns with: ``influence_config`` (default
    ``InfluenceConfig()``), with the proxy family the method fixes, if any; unchanged otherwise."""
    from ifbeta.config import InfluenceConfig

    config = influence_config if influence_config is not None else InfluenceConfig()
    family = POLICY_METHODS[method].family if method in POLICY_METHODS else None
    if family is None or config.proxy.family == family:
        return config
    return dataclasses.replace(config, proxy=dataclasses.replace(config.proxy, family=family))


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
                                     **{"device": config.device, **policy_options})[0]
    alpha, beta = float(result.alpha), float(result.beta)
    indices = _sample_policy(inputs, k, values, alpha, beta, seed, stratify)
    info = {"alpha": alpha, "beta": beta, "axis": axis, "estimator": result.estimator, "stratified": stratify,
            "converged": bool(result.converged), "shrinkage_c": float(result.c), "mu": float(result.mu),
            "trace": result.trace, "optimise_seconds": time.perf_counter() - start}
    return indices, values, info


def ifbeta_entropy(inputs, k, *, ratio, seed, **options):
    """IF-Beta with the Beta over per-class teacher-entropy ranks (low entropy = easy = u near 1)."""
    return ifbeta_learned(inputs, k, ratio=ratio, seed=seed, axis="entropy", **options)


def ifbeta_knn(inputs, k, *, ratio, seed, config=None, **options):
    """IF-Beta with the k-NN proxy for the influence ranks and for J (``method_influence_config``;
    ``config``: the InfluenceConfig whose other settings are kept). ``inputs.influence`` is never
    read (it may be another family's): the k-NN scores are computed here. Scores: those (> 0 helpful)."""
    config = method_influence_config("ifbeta-knn", config)
    return ifbeta_learned(dataclasses.replace(inputs, influence=None), k, ratio=ratio, seed=seed, config=config,
                          **options)


def ifbeta_adaptive(inputs, k, *, ratio, seed, **options):
    """IF-Beta started at and shrunk towards the ratio-adaptive Beta prior (``policy.ratio_adaptive_prior``)."""
    return ifbeta_learned(inputs, k, ratio=ratio, seed=seed, **{**options, "start": "ratio-adaptive"})


def ifbeta_fixed(inputs, k, *, ratio, seed, alpha=None, beta=None, axis="influence", stratify=True, config=None):
    """The Beta policy with given ``alpha`` and ``beta`` (both required), no optimisation.
    Scores: the axis values."""
    if alpha is None or beta is None:
        raise ValueError("ifbeta-fixed needs the options alpha and beta, e.g. alpha=2.0, beta=1.0")
    values = _axis_values(inputs, axis, seed, config)
    indices = _sample_policy(inputs, k, values, float(alpha), float(beta), seed, stratify)
    return indices, values, {"alpha": float(alpha), "beta": float(beta), "axis": axis, "stratified": stratify}

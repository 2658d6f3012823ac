"""Proxy families (docs/METHOD.md sections 2 and 9): the one place that maps ``ProxyConfig.family`` to code.

Each family gives the cross-fitted influence scores of section 3 (``score``, scores > 0 helpful), their
check against true leave-one-out refits (``loo_check``), and the weighted fold the bilevel loop of
section 5 evaluates J and dJ/dw on (``fold``, an ``influence.weighted.WeightedFold``). ``uses_mu``: the
bilevel loop chooses the ridge mu once for the family (``proxy.choose_mu``) and rescales it to each fold.

- ``linear``: the KD-aligned linear softmax head of section 2 (default).
- ``knn``: the soft k-nearest-neighbour kernel smoother of the teacher's tempered soft labels of
  section 9, which cannot copy the teacher's linear head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ifbeta.config import InfluenceConfig
from ifbeta.influence import knn_scores, knn_validation, validation, weighted
from ifbeta.influence import scores as linear_scores

__all__ = ["FAMILIES", "ProxyFamily", "family", "score"]


@dataclass(frozen=True)
class ProxyFamily:
    description: str
    score: Callable  # (features, teacher_logits, labels, *, config, on_step) -> scores.InfluenceResult
    # (train (z, t, y), validation (z, t, y), *, settings: ProxyConfig, mu, device) -> WeightedFold; device: where
    # the fold's fits and hypergradients run (InfluenceConfig.device)
    fold: Callable
    uses_mu: bool
    loo_check: Callable  # (features, teacher_logits, labels, *, config, samples, seed, on_step) -> dict


FAMILIES: dict[str, ProxyFamily] = {
    "linear": ProxyFamily("KD-aligned linear softmax head on the teacher's features (Newton fit, implicit "
                          "influence)", linear_scores.score, weighted.LinearFold.build, True, validation.loo_check),
    "knn": ProxyFamily("soft k-nearest-neighbour smoother of the teacher's tempered soft labels (exact "
                       "leave-one-out influence)", knn_scores.score, knn_scores.KnnFold.build, False,
                       knn_validation.loo_check),
}


def family(name: str) -> ProxyFamily:
    """FAMILIES[name], or a ValueError naming the families."""
    if name not in FAMILIES:
        raise ValueError(f"unknown proxy family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def score(features, teacher_logits, labels, *, config: InfluenceConfig = InfluenceConfig(), on_step=None):
    """Cross-fitted influence scores of ``config.proxy.family`` for every sample of the pool.

    features (N, d), teacher_logits (N, C), labels (N,) int in [0, C) -> scores.InfluenceResult
    (scores (N,) float64, > 0 helpful: removing the sample raises the proxy's validation KD loss)."""
    return family(config.proxy.family).score(features, teacher_logits, labels, config=config, on_step=on_step)

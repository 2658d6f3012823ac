"""What the Beta policy ranks (docs/METHOD.md section 5, safeguard 2): the axis values, larger = keep first.

Every axis is oriented the same way: larger = more helpful / easier, so after ranking u near 1 is
the sample the policy keeps first when alpha > beta.

- ``influence``: the cross-fitted influence scores s (docs/METHOD.md section 3), > 0 helpful.
- ``entropy``: minus the teacher's predictive entropy at tau = 1, so the most confident (easiest)
  sample gets the largest value. ``easier_first`` is the one place that sign is written.

``AXES`` computes an axis from the raw arrays; ``axis_values`` reads it from an influence-scores
result that is already computed (``scores.InfluenceResult``), as the cached pipeline steps do.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig

__all__ = ["AXES", "axis_values", "easier_first", "entropy_axis", "influence_axis"]


def easier_first(entropy) -> np.ndarray:
    """(N,) float64 axis values from the teacher entropy (N,) (higher = less certain): minus it, so
    larger = more confident = easier = u nearer 1."""
    return -np.asarray(entropy, dtype=np.float64)


def influence_axis(features, teacher_logits, labels, *, kd: KDConfig = KDConfig(), seed: int = 0,
                   device: str = "cpu") -> np.ndarray:
    """(N,) float64: cross-fitted influence scores, > 0 helpful (u near 1 = most helpful), computed on device."""
    from ifbeta.influence import families

    config = InfluenceConfig(proxy=ProxyConfig(kd=kd), seed=seed, device=device)
    return np.asarray(families.score(features, teacher_logits, labels, config=config).scores, dtype=np.float64)


def entropy_axis(features, teacher_logits, labels, *, kd: KDConfig = KDConfig(), seed: int = 0,
                 device: str = "cpu") -> np.ndarray:
    """(N,) float64: minus the teacher's predictive entropy (tau = 1), so u near 1 = easiest sample.
    Needs only teacher_logits (N, C) and labels (N,); the features, kd, seed and device are not read."""
    from ifbeta.influence.statistics import teacher_statistics

    return easier_first(teacher_statistics(teacher_logits, labels)["entropy"])


AXES: dict[str, Callable] = {"influence": influence_axis, "entropy": entropy_axis}
"""Axis name -> ``axis(features, teacher_logits, labels, *, kd, seed, device) -> (N,) float64``, larger = keep first."""


def axis_values(result, axis: str) -> np.ndarray:
    """(N,) float64 values of ``axis`` read from an influence-scores result (``scores.InfluenceResult``:
    ``scores`` and ``teacher_scores["entropy"]``, each (N,)); larger = more helpful / easier = u nearer 1.
    Equal to ``AXES[axis]`` on the same pool and settings, without computing anything."""
    if axis == "influence":
        return np.asarray(result.scores, dtype=np.float64)
    if axis == "entropy":
        return easier_first(result.teacher_scores["entropy"])
    raise ValueError(f"unknown axis {axis!r}; choose one of {sorted(AXES)}")

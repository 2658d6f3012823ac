"""The per-sample signals the selection methods rank by, read from ``SelectionInputs`` or computed on demand.

Directions (what ``Selection.scores`` holds when a method ranks by one of them):
- ``el2n`` = ||softmax(t) - onehot(y)||_2 in [0, sqrt 2]: higher = harder.
- ``entropy`` = -sum p log p of the teacher (nats): higher = more uncertain = harder.
- ``margin`` = t_y - max_{c != y} t_c (logits): lower = harder.
- ``kd_loss`` = KD loss of the linear proxy (influence.score): higher = harder.
- ``difficulty`` (CCS, D2, DUAL) maps each onto >= 0, higher = harder; margin becomes sigmoid(-m).
- influence s_i (``influence_on_demand``): > 0 helpful.

The cheap teacher scores come from ``influence.statistics.teacher_statistics`` (temperature 1), so scores passed
in from an influence artefact and scores computed here on demand select the same subset.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

TEACHER_SCORES = ("el2n", "entropy", "margin", "kd_loss")
HARDER_IS_HIGHER = {"el2n": True, "entropy": True, "margin": False, "kd_loss": True}
CHUNK = 65536  # rows per chunk for (N, C) float64 temporaries


# ---------------------------------------------------------------------------------------------
# Teacher scores


def teacher_confidence(logits: np.ndarray, labels: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """p_y: (N,) float64 in [0, 1], the teacher's probability of the true label (chunked)."""
    out = np.empty(len(labels), dtype=np.float64)
    for start in range(0, len(labels), CHUNK):
        block = np.asarray(logits[start:start + CHUNK], dtype=np.float64) / temperature  # (n, C)
        rows = np.arange(len(block))
        out[start:start + CHUNK] = np.exp(log_softmax(block, axis=1)[rows, labels[start:start + CHUNK]])
    return out


def cheap_teacher_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """{"el2n", "entropy", "margin"}: the teacher scores that need no proxy fit, exactly as in the
    influence artefact (``influence.statistics.teacher_statistics``, temperature 1), (N,) float64 each."""
    from ifbeta.influence.statistics import teacher_statistics
    return teacher_statistics(logits, np.asarray(labels))


def to_difficulty(name: str, values: np.ndarray) -> np.ndarray:
    """Map a teacher score onto a difficulty >= 0 (higher = harder) for CCS, D2 and DUAL."""
    if name == "margin":
        return 0.5 * (1.0 - np.tanh(values / 2.0))  # = sigmoid(-margin), in (0, 1)
    if name not in HARDER_IS_HIGHER:
        raise ValueError(f"unknown difficulty score {name!r}; choose one of {', '.join(TEACHER_SCORES)}")
    return np.maximum(values, 0.0)


# ---------------------------------------------------------------------------------------------
# Inputs on demand


def influence_on_demand(inputs, *, seed: int = 0, config=None) -> np.ndarray:
    """s: (N,) float64, > 0 helpful: ``inputs.influence`` or, when absent, ``influence.score``."""
    if inputs.influence is not None:
        return np.asarray(inputs.influence, dtype=np.float64)
    return _influence_result(inputs, seed, config).scores


def teacher_score(inputs, name: str, *, seed: int = 0, config=None) -> np.ndarray:
    """(N,) float64 teacher score ``name`` from ``inputs.teacher_scores`` or computed on demand
    (el2n / entropy / margin here, kd_loss through ``influence.score``'s proxy fit)."""
    if inputs.teacher_scores is not None and name in inputs.teacher_scores:
        return np.asarray(inputs.teacher_scores[name], dtype=np.float64)
    if name == "kd_loss":
        return np.asarray(_influence_result(inputs, seed, config).teacher_scores["kd_loss"], dtype=np.float64)
    if name not in TEACHER_SCORES:
        raise ValueError(f"unknown teacher score {name!r}; choose one of {', '.join(TEACHER_SCORES)}")
    return cheap_teacher_scores(inputs.teacher_logits, inputs.labels)[name]


def _influence_result(inputs, seed, config):
    from ifbeta.config import InfluenceConfig
    from ifbeta.influence import families  # heavy: imported only when a score must be computed
    config = config if config is not None else InfluenceConfig(seed=seed)
    return families.score(inputs.features, inputs.teacher_logits, inputs.labels, config=config)

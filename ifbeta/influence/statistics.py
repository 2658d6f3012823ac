"""Teacher-only statistics of every pool sample: el2n, entropy and margin of the teacher's logits.

No proxy fit and no labels beyond the given ones: one chunked pass over the logits (temperature 1).
:func:`ifbeta.influence.scores.score` stores them next to the influence scores (plus the proxy's
kd_loss), and the selection baselines (selection.signals) compute them on demand from the logits, so
both routes give the same numbers.
"""
from __future__ import annotations

import numpy as np
import scipy.special

from ifbeta.influence.tensors import CHUNK_SIZE

__all__ = ["teacher_statistics"]


def teacher_statistics(teacher_logits, labels, *, chunk_size: int = CHUNK_SIZE) -> dict:
    """Teacher-only scores (temperature 1), each (N,) float64: el2n = ||softmax(t) - onehot(y)||_2
    (higher = harder), entropy of softmax(t) (higher = less certain), margin = t_y - max_{c != y} t_c
    (higher = easier)."""
    labels = np.asarray(labels).astype(np.int64)
    parts = {"el2n": [], "entropy": [], "margin": []}
    for start in range(0, len(labels), chunk_size):
        logits = np.asarray(teacher_logits[start:start + chunk_size], dtype=np.float64)  # (m, C)
        y, rows = labels[start:start + chunk_size], np.arange(len(logits))
        log_p = scipy.special.log_softmax(logits, axis=1)
        probs = np.exp(log_p)
        probs_minus = probs.copy()
        probs_minus[rows, y] -= 1.0
        parts["el2n"].append(np.linalg.norm(probs_minus, axis=1))
        parts["entropy"].append(-(probs * log_p).sum(axis=1))
        others = logits.copy()
        others[rows, y] = -np.inf
        parts["margin"].append(logits[rows, y] - others.max(axis=1))
    return {key: np.concatenate(value) if value else np.zeros(0) for key, value in parts.items()}

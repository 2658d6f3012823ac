"""statistics.teacher_statistics: el2n, entropy and margin of the teacher's logits, by hand and chunked."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ifbeta.influence.statistics import teacher_statistics


def test_teacher_statistics_by_hand():
    hand = teacher_statistics(np.array([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), [0, 1])
    p = math.exp(2) / (math.exp(2) + 2)
    q = 1 / (math.exp(2) + 2)
    assert hand["el2n"] == pytest.approx([math.sqrt((1 - p) ** 2 + 2 * q * q), math.sqrt(p * p + (1 - q) ** 2 + q * q)])
    assert hand["entropy"] == pytest.approx([-(p * math.log(p) + 2 * q * math.log(q))] * 2)
    assert hand["margin"] == pytest.approx([2.0, -2.0])


def test_teacher_statistics_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 4)) * 3, rng.integers(0, 4, 50)
    whole = teacher_statistics(logits, labels, chunk_size=4096)
    chunked = teacher_statistics(logits.astype(np.float32), labels, chunk_size=7)
    assert set(whole) == {"el2n", "entropy", "margin"} and all(v.shape == (50,) for v in whole.values())
    for key in whole:
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-6)
    assert all(v.shape == (0,) for v in teacher_statistics(np.zeros((0, 4)), []).values())

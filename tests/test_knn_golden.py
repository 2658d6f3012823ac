"""The torch k-NN proxy against golden outputs of the previous numpy implementation (tests/data/knn_golden.npz,
recorded by benchmarks/knn_golden.py before the port), and the device argument.

The math is float64 on every device, so the tolerances are float64 round-off: the neighbour lists and the chosen
(k, h) equal, distances, q, L_V, dJ/dw and the scores within 1e-10 relative to their largest magnitude.
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import torch

from ifbeta.config import InfluenceConfig, ProxyConfig
from ifbeta.influence import knn, knn_scores

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "knn_golden.npz"
TOLERANCE = 1e-10


def relative(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300))


@pytest.fixture(scope="module")
def outputs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import knn_golden

    golden = np.load(GOLDEN)
    return {name: (knn_golden.problem_outputs(**settings), golden, name)
            for name, settings in knn_golden.PROBLEMS.items()}


@pytest.mark.parametrize("problem", ["small", "large"])
def test_golden_fixture_is_reproduced(outputs, problem):
    current, golden, name = outputs[problem]

    def expected(key):
        return golden[f"{name}/{key}"]

    np.testing.assert_array_equal(current["weights"], expected("weights"))  # same problem, same seeds
    np.testing.assert_array_equal(current["fold"], expected("fold"))
    np.testing.assert_array_equal(current["nearest_indices"], expected("nearest_indices"))
    np.testing.assert_array_equal(current["fold_settings"][0], expected("fold_settings")[0])
    np.testing.assert_array_equal(current["chosen"][:, 0], expected("chosen")[:, 0])
    for key in ("chosen", "fold_settings", "nearest_sq", "predict_q", "weighted_loss", "weight_gradient",
                "removal_scores", "scores", "kd_loss"):
        assert relative(current[key], expected(key)) < TOLERANCE, key
    assert float(current["weighted_accuracy"]) == float(expected("weighted_accuracy"))


def test_scores_on_an_explicit_cpu_device_equal_the_default():
    rng = np.random.default_rng(5)
    features, teacher, labels = rng.normal(size=(120, 4)), rng.normal(size=(120, 3)), np.arange(120) % 3
    settings = ProxyConfig(family="knn", neighbour_grid=(3, 6))
    default = knn_scores.score(features, teacher, labels, config=InfluenceConfig(proxy=settings))
    explicit = knn_scores.score(features, teacher, labels, config=InfluenceConfig(proxy=settings, device="cpu"))
    np.testing.assert_array_equal(explicit.scores, default.scores)
    np.testing.assert_array_equal(explicit.teacher_scores["kd_loss"], default.teacher_scores["kd_loss"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_cuda_without_cuda_is_refused():
    features, teacher, labels = np.zeros((8, 2)), np.zeros((8, 2)), np.arange(8) % 2
    config = InfluenceConfig(proxy=ProxyConfig(family="knn"), device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        knn_scores.score(features, teacher, labels, config=config)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu_to_float64_round_off():
    rng = np.random.default_rng(6)
    features, teacher, labels = rng.normal(size=(300, 6)), rng.normal(size=(300, 4)), np.arange(300) % 4
    settings = ProxyConfig(family="knn", neighbour_grid=(4, 8))
    cpu = knn_scores.score(features, teacher, labels, config=InfluenceConfig(proxy=settings))
    cuda = knn_scores.score(features, teacher, labels, config=InfluenceConfig(proxy=settings, device="cuda"))
    assert relative(cuda.scores, cpu.scores) < TOLERANCE
    neighbours = knn.Neighbours(features[:50], features[50:], device="cuda")
    indices, _ = neighbours.cover(np.ones(250), 5.0)
    assert indices.device.type == "cuda"

"""The torch implementation of the linear proxy against golden float64 outputs of the previous numpy one
(tests/data/proxy_golden.npz, recorded by benchmarks/proxy_golden.py before the port), float16 memmap
input, the device argument, and CPU/CUDA equality where a GPU is present.

Tolerances, with the values measured at the port: theta and the gradient (float64 math) 1e-6 max relative
difference (measured 6e-9); HVP (float32 products) 1e-5 (4e-7); the direct and cg solves 1e-5 (7e-7),
ekfac 1e-4 (6e-6); scores and the hypergradient 1e-5 (2.5e-7), Spearman >= 0.999 and slope within 1% of 1.
(The solves need objective.centred: without it float32 round-off of H leaks into the class-constant
directions, curvature mu * eps, and the raw solves differed by up to 4e-3 while the scores did not.)
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
from ifbeta.influence import proxy, tensors
from ifbeta.influence import scores as influence
from tests.influence_problems import mixture

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "proxy_golden.npz"
KD = KDConfig(tau=4.0, lam=0.9)


def relative(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def outputs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import proxy_golden

    golden = np.load(GOLDEN)
    return {name: (proxy_golden.problem_outputs(**settings), golden, name)
            for name, settings in proxy_golden.PROBLEMS.items()}


@pytest.mark.parametrize("problem", ["small", "large"])
def test_golden_fixture_is_reproduced(outputs, problem):
    current, golden, name = outputs[problem]

    def expected(key):
        return golden[f"{name}/{key}"]

    np.testing.assert_array_equal(current["point"], expected("point"))  # same problem, same seeds
    assert relative(current["theta"], expected("theta")) < 1e-6
    assert current["grad_norm"] < 1e-8
    assert relative(current["gradient"], expected("gradient")) < 1e-6
    assert float(current["objective"]) == pytest.approx(float(expected("objective")), rel=1e-9)
    assert relative(current["hvp"], expected("hvp")) < 1e-5
    for solver, tolerance in (("direct", 1e-5), ("cg", 1e-5), ("ekfac", 1e-4)):
        assert relative(current[f"solve_{solver}"], expected(f"solve_{solver}")) < tolerance, solver
    for key in ("influence_scores", "score", "hypergradient"):
        values, reference = current[key], expected(key)
        assert scipy.stats.spearmanr(values, reference)[0] >= 0.999, key
        assert values @ reference / (reference @ reference) == pytest.approx(1.0, abs=0.01), key
        assert relative(values, reference) < 1e-5, key
    np.testing.assert_array_equal(current["fold"], expected("fold"))
    assert relative(current["weighted_theta"], expected("weighted_theta")) < 1e-6


def test_float16_memmap_gives_the_scores_of_the_float32_array(tmp_path):
    features, teacher, labels = mixture(300, 6, 3, 4, corrupted=15)
    half = features.astype(np.float16)
    memmap = np.lib.format.open_memmap(tmp_path / "features.npy", mode="w+", dtype=np.float16, shape=half.shape)
    memmap[:] = half
    config = InfluenceConfig(proxy=ProxyConfig(kd=KD, mu=1.0), estimator="first_order")
    from_array = influence.score(half.astype(np.float32), teacher, labels, config=config)
    from_memmap = influence.score(memmap, teacher, labels, config=config)
    np.testing.assert_allclose(from_memmap.scores, from_array.scores, rtol=0,
                               atol=1e-6 * np.abs(from_array.scores).max())


def test_unavailable_cuda_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available") as raised:
        tensors.resolve_device("cuda")
    assert "\n" not in str(raised.value)
    features, teacher, labels = mixture(60, 4, 3, 0)
    config = InfluenceConfig(proxy=ProxyConfig(kd=KD, mu=1.0), device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        influence.score(features, teacher, labels, config=config)


def test_results_are_float64_tensors_on_the_device_and_numpy_at_the_boundary():
    features, teacher, labels = mixture(120, 4, 3, 1)
    fitted = proxy.fit(features, teacher, labels, mu=1.0, kd=KD, device="cpu")
    assert isinstance(fitted.theta, torch.Tensor) and fitted.theta.dtype == torch.float64
    assert fitted.theta.shape == (3, 5)
    result = influence.score(features, teacher, labels, config=InfluenceConfig(proxy=ProxyConfig(kd=KD, mu=1.0)))
    assert isinstance(result.scores, np.ndarray) and result.scores.dtype == np.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("solver", ["direct", "cg", "ekfac"])
def test_cpu_and_cuda_agree(solver):
    features, teacher, labels = mixture(2000, 32, 10, 12, corrupted=100)
    results = {device: influence.score(features, teacher, labels, config=InfluenceConfig(
        proxy=ProxyConfig(kd=KD, mu=2.0), solver=solver, estimator="first_order", device=device))
        for device in ("cpu", "cuda")}
    cpu, cuda = results["cpu"].scores, results["cuda"].scores
    assert scipy.stats.spearmanr(cpu, cuda)[0] >= 0.9999
    np.testing.assert_allclose(cuda, cpu, rtol=0, atol=1e-5 * np.abs(cpu).max())
    np.testing.assert_array_equal(results["cpu"].fold, results["cuda"].fold)

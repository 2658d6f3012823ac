"""The device of InfluenceConfig reaches the bilevel loop: the choice of mu, every inner fit and hypergradient."""
import numpy as np
import pytest
import torch
from policy_problems import flipped_problem

from ifbeta import pipeline
from ifbeta.config import InfluenceConfig, KDConfig, PolicyConfig
from ifbeta.influence import proxy
from ifbeta.policy import bilevel, inner

OPTIONS = dict(ratios=[0.5], steps=4, seed=0)


def _problem():
    features, teacher, labels, _ = flipped_problem(n=240, seed=3)
    axis = np.random.default_rng(0).normal(size=len(labels))
    return features, teacher, labels, axis


def _comparable(trace):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in trace]


def test_explicit_cpu_equals_the_default_exactly():
    features, teacher, labels, axis = _problem()
    default = bilevel.optimise_policy(features, teacher, labels, axis_values=axis, **OPTIONS)[0]
    explicit = bilevel.optimise_policy(features, teacher, labels, axis_values=axis, device="cpu", **OPTIONS)[0]
    assert _comparable(explicit.trace) == _comparable(default.trace)
    assert (explicit.alpha, explicit.beta, explicit.mu) == (default.alpha, default.beta, default.mu)
    np.testing.assert_array_equal(explicit.indices, default.indices)


def test_every_fit_of_the_loop_runs_on_the_given_device(monkeypatch):
    features, teacher, labels, axis = _problem()
    seen, original = [], proxy.fit

    def recording(*args, device=None, **kwargs):
        seen.append(device)
        return original(*args, device=device, **kwargs)

    monkeypatch.setattr(proxy, "fit", recording)
    bilevel.optimise_policy(features, teacher, labels, axis_values=axis, device="cpu", **OPTIONS)
    assert len(seen) > 10  # choose_mu's fits, the full fits and one refit per fold and outer step
    assert {str(device) for device in seen} == {"cpu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_cuda_without_cuda_is_refused_before_any_work(monkeypatch):
    features, teacher, labels, axis = _problem()
    monkeypatch.setattr(proxy, "choose_mu", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match="CUDA is not available"):
        bilevel.optimise_policy(features, teacher, labels, axis_values=axis, device="cuda", **OPTIONS)


def test_the_pipeline_passes_the_influence_device_to_the_loop(monkeypatch, session_store, digits_features):
    ws = pipeline.open_workspace("digits", store=session_store)
    seen, original = [], bilevel.optimise_policy

    def recording(*args, **kwargs):
        seen.append(kwargs.get("device"))
        return original(*args, **kwargs)

    monkeypatch.setattr(bilevel, "optimise_policy", recording)
    config = PolicyConfig(steps=1, seed=97)  # a seed no other test learns, so the policy is computed here
    learned = pipeline.policies(ws, [0.5], config, influence_config=InfluenceConfig(device="cpu"))
    assert seen == ["cpu"] and len(learned) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_to_float32_round_off():
    features, teacher, labels, axis = _problem()
    cpu = bilevel.optimise_policy(features, teacher, labels, axis_values=axis, device="cpu", **OPTIONS)[0]
    cuda = bilevel.optimise_policy(features, teacher, labels, axis_values=axis, device="cuda", **OPTIONS)[0]
    # the curvature products are float32 on either device, summed in different orders: J agrees to ~1e-6
    np.testing.assert_allclose([r["J"] for r in cuda.trace], [r["J"] for r in cpu.trace], rtol=1e-5)
    assert (cuda.alpha, cuda.beta) == pytest.approx((cpu.alpha, cpu.beta), rel=1e-4)
    assert cuda.mu == pytest.approx(cpu.mu, rel=1e-12)  # chosen on the same grid
    problem = inner.prepare(features, teacher, labels, axis, kd=KDConfig(), mu=cpu.mu, bias_damping=1e-3,
                            config=PolicyConfig(), device="cuda")
    assert all(fold.theta.device.type == "cuda" for fold in problem.folds)


"""The proxy fit's tolerance: a looser tolerance stops at an earlier iterate of the same Newton-CG
sequence (what benchmarks/fit_tolerance.py relies on), the EKFAC preconditioner is reused across Newton
steps without changing the optimum, and ``--fit-tolerance`` reaches the stored config."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ifbeta.config import KDConfig
from ifbeta.data.streaming import standardise
from ifbeta.influence import objective, proxy
from tests.influence_problems import mixture
from tests.legacy_store import TEACHER, ifbeta, legacy_cache

KD = KDConfig(tau=4.0, lam=0.9)


def problem():
    features, teacher, labels = mixture(400, 12, 5, 7, corrupted=20)
    return standardise(features)[0], teacher, labels


def tight_fit_with_iterates(features, teacher, labels):
    iterates = []
    fitted = proxy.fit(features, teacher, labels, mu=0.5, kd=KD, method="newton-cg", tolerance=1e-12,
                       on_iteration=lambda i, theta, norm, products: iterates.append((i, theta.clone(), norm, products)))
    return fitted, iterates


def test_a_looser_tolerance_returns_an_earlier_iterate_of_the_same_sequence():
    features, teacher, labels = problem()
    tight, iterates = tight_fit_with_iterates(features, teacher, labels)
    assert [i for i, *_ in iterates] == list(range(tight.iterations + 1)) and tight.converged
    norms = [norm for _, _, norm, _ in iterates]
    assert norms[-1] < 1e-9 * norms[0]
    start = norms[0]
    for tolerance in (1e-2, 1e-4, 1e-6):
        loose = proxy.fit(features, teacher, labels, mu=0.5, kd=KD, method="newton-cg", tolerance=tolerance)
        expected = next(i for i, norm in enumerate(norms) if norm <= tolerance * (1.0 + start))
        assert loose.iterations == expected < tight.iterations
        torch.testing.assert_close(loose.theta, iterates[expected][1], rtol=0, atol=0)  # bit for bit
        assert loose.products == iterates[expected][3] and loose.converged


def test_the_reused_preconditioner_reaches_the_dense_newton_optimum():
    features, teacher, labels = problem()
    matrix_free, _ = tight_fit_with_iterates(features, teacher, labels)
    dense = proxy.fit(features, teacher, labels, mu=0.5, kd=KD, method="newton", tolerance=1e-12)
    # fewer EKFAC builds than Newton steps: the chord rule kept the preconditioner in the fast phase
    assert 1 <= matrix_free.curvature_builds < matrix_free.iterations
    difference = torch.linalg.vector_norm(matrix_free.theta - dense.theta) / torch.linalg.vector_norm(dense.theta)
    assert float(difference) < 1e-9
    gradient = objective.gradient(matrix_free.theta, features, teacher, labels, mu=0.5, kd=KD)
    assert float(torch.linalg.vector_norm(gradient)) == pytest.approx(matrix_free.grad_norm, rel=1e-9)
    assert matrix_free.grad_norm <= 1e-12 * (1.0 + float(torch.linalg.vector_norm(
        objective.gradient(torch.zeros_like(dense.theta), features, teacher, labels, mu=0.5, kd=KD))))


def test_cli_fit_tolerance_is_stored_and_bad_values_are_refused(tmp_path):
    cache = legacy_cache(tmp_path)
    teacher = ["--dataset", "digits", "--teacher", str(cache / TEACHER)]
    scored = ifbeta(cache, "score", *teacher, "--fit-tolerance", "1e-3", "--json")
    assert scored.returncode == 0, scored.stderr[-2000:]
    summary = json.loads(scored.stdout.strip().splitlines()[-1])
    stored = json.loads((cache / "scores" / summary["scores_key"] / "config.json").read_text())
    assert stored["config"]["influence"]["proxy"]["tolerance"] == 1e-3
    default = ifbeta(cache, "score", *teacher, "--json")
    assert default.returncode == 0, default.stderr[-2000:]
    default_key = json.loads(default.stdout.strip().splitlines()[-1])["scores_key"]
    assert default_key != summary["scores_key"]  # a looser fit is its own artefact
    for bad, words in (("0", "between 0 and 1"), ("nan", "between 0 and 1"), ("2", "between 0 and 1")):
        refused = ifbeta(cache, "score", *teacher, "--fit-tolerance", bad)
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    refused = ifbeta(cache, "score", *teacher, "--proxy", "knn", "--fit-tolerance", "1e-3")
    assert refused.returncode == 2 and "knn proxy has none" in refused.stderr
    scores = {path.name for path in (cache / "scores").iterdir() if path.is_dir()}
    assert {summary["scores_key"], default_key} <= scores
    assert np.isfinite(summary["harmful_fraction"])


def test_score_reports_every_newton_step_of_each_fold():
    from ifbeta.config import InfluenceConfig, ProxyConfig
    from ifbeta.influence import scores as influence
    from ifbeta.progress import describe

    features, teacher, labels = problem()
    events = []
    influence.score(features, teacher, labels, config=InfluenceConfig(proxy=ProxyConfig(kd=KD, mu=0.5)),
                    on_step=lambda step, info: events.append(info))
    fits = [info for info in events if info["stage"] == "fit"]
    for k in (0, 1):
        steps = [info for info in fits if info["fold"] == k]
        assert [info["iteration"] for info in steps] == list(range(len(steps))) and len(steps) >= 2
        assert steps[-1]["grad_norm"] <= steps[-1]["target"] < steps[0]["grad_norm"]  # it stopped at the target
    fraction, text = describe(0, fits[0])
    assert fraction == 0.0 and text.startswith("fold 1/2: proxy fit, Newton step 0, ||grad|| ")

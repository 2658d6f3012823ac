"""The outer loop (``policy.estimators``): Adam's stopping rule, the best iterate, and resuming from a
checkpoint document, with a stand-in estimate of J whose answer is known."""
import json

import numpy as np
import pytest

from ifbeta.policy import axes, estimators, hypergradient, inner, landscape
from tests.policy_problems import hard_problem, prepared

TARGET = np.array([1.0, -0.5])  # psi where the stand-in J is lowest: alpha = e, beta = e^-0.5


def bowl(problem, psi, ratio, rng):
    """J = |psi - TARGET|^2 + 1 with its exact gradient; refits nothing (the fold warm starts stay)."""
    return inner.Evaluation(float(((psi - TARGET) ** 2).sum() + 1.0), 0.5, 2.0 * (psi - TARGET))


def flat(problem, psi, ratio, rng):
    return inner.Evaluation(1.0, 0.5, np.zeros(2))


@pytest.fixture(scope="module")
def data():
    features, teacher, labels, _ = hard_problem(n=120, d=4, classes=3)
    return features, teacher, labels, axes.entropy_axis(features, teacher, labels)


def problem_of(data, **config):
    return prepared(*data, mu=1.0, **config)


def test_adam_descends_and_keeps_the_best_iterate(data):
    problem = problem_of(data, steps=30, learning_rate=0.2, tolerance=0.0)
    psi, trace, converged = estimators.adam(problem, 0.5, 0.0, None, estimate=bowl, keep_best=True)
    J = [record["J"] for record in trace]
    assert len(trace) == 30 and not converged and J[-1] < J[0] - 0.5
    best = trace[int(np.argmin([record["objective"] for record in trace]))]
    assert np.allclose(np.exp(psi), [best["alpha"], best["beta"]])
    assert np.linalg.norm(psi - TARGET) < np.linalg.norm(np.zeros(2) - TARGET) / 4


def test_keep_best_returns_the_best_visited_psi_and_otherwise_the_last_iterate(data):
    def misleading(problem, psi, ratio, rng):  # the gradient points away from the lowest J, at the start
        return inner.Evaluation(float(1.0 + (psi ** 2).sum()), 0.5, np.array([-1.0, 1.0]))

    best, trace, _ = estimators.adam(problem_of(data, steps=5, tolerance=0.0), 0.5, 0.0, None, estimate=misleading,
                                     keep_best=True)
    last, _, _ = estimators.adam(problem_of(data, steps=5, tolerance=0.0), 0.5, 0.0, None, estimate=misleading,
                                 keep_best=False)
    assert np.allclose(best, 0.0) and trace[0]["J"] == min(record["J"] for record in trace)
    assert last[0] > np.log(trace[-1]["alpha"]) > 0 and last[1] < np.log(trace[-1]["beta"]) < 0


def test_adam_stops_after_patience_calm_steps_and_clips_psi(data):
    problem = problem_of(data, steps=40, patience=3, tolerance=1e-4)
    psi, trace, converged = estimators.adam(problem, 0.5, 0.0, None, estimate=flat, keep_best=True)
    assert converged and len(trace) == 4  # step 0, then three steps whose objective did not change
    assert np.allclose(psi, 0.0)
    far = problem_of(data, steps=60, learning_rate=1.0, tolerance=0.0, init=(1.0, 1.0))
    psi, _, _ = estimators.adam(far, 0.5, 0.0, None, estimate=lambda p, s, r, g: inner.Evaluation(
        1.0, 0.5, np.array([-1.0, 1.0])), keep_best=False)
    assert np.allclose(psi, [estimators.LOG_BOUNDS[1], estimators.LOG_BOUNDS[0]])


@pytest.mark.parametrize("estimate", [bowl, hypergradient.implicit])
def test_a_checkpoint_document_resumes_to_the_uninterrupted_result(data, estimate):
    options = dict(steps=6, tolerance=0.0)
    reference = estimators.adam(problem_of(data, **options), 0.7, 0.01, None, estimate=estimate, keep_best=True)
    documents = []
    estimators.adam(problem_of(data, **{**options, "steps": 3}), 0.7, 0.01, None, estimate=estimate, keep_best=True,
                    checkpoint=documents.append)
    document = json.loads(json.dumps(documents[-1]))  # plain JSON, as it is written to disk
    assert document["step"] == 3 and len(document["trace"]) == 3
    resumed = estimators.adam(problem_of(data, **options), 0.7, 0.01, None, estimate=estimate, keep_best=True,
                              resume=document)
    assert resumed[1][:3] == document["trace"] and len(resumed[1]) == 6
    np.testing.assert_allclose(resumed[0], reference[0], rtol=1e-7)
    assert [r["J"] for r in resumed[1]] == pytest.approx([r["J"] for r in reference[1]], rel=1e-8)


def test_the_registry_names_every_estimator():
    assert set(estimators.ESTIMATORS) == {"implicit", "reinforce", "grid"}
    assert estimators.ESTIMATORS["grid"] is landscape.grid_search

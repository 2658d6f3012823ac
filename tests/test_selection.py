"""selection.select and every method of METHODS: exact k, determinism, errors, inputs, and the
signals computed on demand. Each family's behaviour is tested in test_selection_<family>.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifbeta.policy import beta as policy
from ifbeta.selection import signals
from ifbeta.selection.registry import METHODS, Selection, SelectionInputs, describe_methods, select
from tests.selection_problems import make_problem

# Options that make every method fast on the tiny problem (and give ifbeta-fixed its parameters).
OPTIONS = {
    "ifbeta": {"steps": 3},
    "ifbeta-entropy": {"steps": 3},
    "ifbeta-fixed": {"alpha": 2.0, "beta": 1.5},
    "el2n-train": {"epochs": 1, "arch": "cnn-tiny", "batch_size": 64},
    "forgetting": {"epochs": 2, "arch": "cnn-tiny", "batch_size": 64},
}
NEEDS_MODULE = {"ifbeta": "ifbeta.policy.bilevel", "ifbeta-entropy": "ifbeta.policy.bilevel"}


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny conv nets on a busy 2-core machine run ~100x faster with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(method, inputs, ratio, seed=0, **extra):
    if method in NEEDS_MODULE:
        pytest.importorskip(NEEDS_MODULE[method])
    return select(method, inputs, ratio, seed=seed, **{**OPTIONS.get(method, {}), **extra})


# ---------------------------------------------------------------------------------------------
# Every method


def test_options_name_real_methods():
    assert set(OPTIONS) <= set(METHODS)
    assert [name for name, _ in describe_methods()] == list(METHODS)
    for name, spec in METHODS.items():
        assert callable(spec.function) and spec.description and isinstance(spec.needs, frozenset), name
        assert spec.needs <= {"influence", "teacher_scores", "images"}, name


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_exact_k_sorted_unique_and_seeded(method, problem):
    n = len(problem.labels)
    for ratio in (0.3, 0.8):
        first = run(method, problem, ratio, seed=0)
        assert isinstance(first, Selection)
        k = policy.k_for_ratio(n, ratio)
        assert first.indices.dtype == np.int64 and first.indices.shape == (k,)
        assert np.all(np.diff(first.indices) > 0) and 0 <= first.indices[0] and first.indices[-1] < n
        assert first.scores is None or np.shape(first.scores) == (n,)
        assert first.info["method"] == method and first.info["seconds"] >= 0 and first.info["k"] == k
    again = run(method, problem, 0.8, seed=0)
    other = run(method, problem, 0.8, seed=1)
    np.testing.assert_array_equal(first.indices, again.indices)
    if METHODS[method].stochastic:
        assert not np.array_equal(first.indices, other.indices), "a different seed should change the subset"
    else:
        np.testing.assert_array_equal(first.indices, other.indices)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_unit_interval_is_refused(problem, ratio):
    with pytest.raises(ValueError, match="ratio"):
        select("random", problem, ratio)


def test_errors_are_clear(problem):
    with pytest.raises(ValueError, match="unknown selection method"):
        select("magic", problem, 0.5)
    with pytest.raises(TypeError):
        select("entropy", problem, 0.5, not_an_option=1)
    with pytest.raises(ValueError, match="alpha and beta"):
        select("ifbeta-fixed", problem, 0.5)
    with pytest.raises(ValueError, match="images"):
        select("forgetting", make_problem(images=False), 0.5)
    with pytest.raises(ValueError, match="keep"):
        select("kd-loss", problem, 0.5, keep="medium")
    with pytest.raises(ValueError, match="stratify=False"):  # k = 2 < 4 classes
        select("entropy", problem, 1 - 2 / len(problem.labels))
    assert len(select("entropy", problem, 1 - 2 / len(problem.labels), stratify=False).indices) == 2


def test_inputs_are_validated(problem):
    with pytest.raises(ValueError, match="features"):
        SelectionInputs(problem.features[:-1], problem.teacher_logits, problem.labels)
    with pytest.raises(ValueError, match="influence"):
        SelectionInputs(problem.features, problem.teacher_logits, problem.labels, influence=np.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        SelectionInputs(problem.features, problem.teacher_logits, problem.labels + 10)
    with pytest.raises(ValueError, match="el2n contains NaN"):
        SelectionInputs(problem.features, problem.teacher_logits, problem.labels,
                        teacher_scores={"el2n": np.full(len(problem.labels), np.nan)})
    assert SelectionInputs(problem.features, problem.teacher_logits, problem.labels.astype(np.int32)).labels.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# Teacher scores


def test_teacher_scores_golden_values():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    logits, labels = np.log(probabilities), np.array([0, 0])
    scores = signals.cheap_teacher_scores(logits, labels)
    np.testing.assert_allclose(scores["el2n"], [math.sqrt(0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2),
                                                math.sqrt(0.75 ** 2 + 0.25 ** 2 + 0.5 ** 2)])
    np.testing.assert_allclose(scores["entropy"], -(probabilities * np.log(probabilities)).sum(1))
    np.testing.assert_allclose(scores["margin"], [math.log(3.5), -math.log(2.0)])  # logit margin, low = hard
    np.testing.assert_allclose(signals.teacher_confidence(logits, labels), [0.7, 0.25])
    np.testing.assert_allclose(signals.to_difficulty("margin", np.array([0.0, 50.0, -50.0])), [0.5, 0.0, 1.0], atol=1e-12)


def test_teacher_scores_are_computed_on_demand(problem):
    bare = SelectionInputs(problem.features, problem.teacher_logits, problem.labels)
    for method in ("el2n-teacher", "entropy", "margin", "ccs", "d2", "dual-beta"):
        np.testing.assert_array_equal(select(method, bare, 0.6).indices, select(method, problem, 0.6).indices)


def test_influence_and_kd_loss_are_computed_on_demand(problem):
    influence = pytest.importorskip("ifbeta.influence.scores")
    from ifbeta.config import InfluenceConfig
    bare = SelectionInputs(problem.features, problem.teacher_logits, problem.labels)
    reference = influence.score(problem.features, problem.teacher_logits, problem.labels, config=InfluenceConfig(seed=3))
    chosen = select("influence-top", bare, 0.5, seed=3)
    np.testing.assert_allclose(chosen.scores, reference.scores)
    given = SelectionInputs(problem.features, problem.teacher_logits, problem.labels, influence=reference.scores)
    np.testing.assert_array_equal(chosen.indices, select("influence-top", given, 0.5).indices)
    kd = select("kd-loss", bare, 0.5, seed=3)
    np.testing.assert_allclose(kd.scores, reference.teacher_scores["kd_loss"])

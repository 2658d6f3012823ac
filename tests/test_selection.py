"""selection.select and every method of METHODS: exact k, determinism, and behaviour on problems
whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifbeta.policy import beta as policy
from ifbeta.selection import baselines
from ifbeta.selection.registry import METHODS, Selection, SelectionInputs, describe_methods, select

# Options that make every method fast on the tiny problem (and give ifbeta-fixed its parameters).
OPTIONS = {
    "ifbeta": {"steps": 3},
    "ifbeta-entropy": {"steps": 3},
    "ifbeta-fixed": {"alpha": 2.0, "beta": 1.5},
    "el2n-train": {"epochs": 1, "arch": "cnn-tiny", "batch_size": 64},
    "forgetting": {"epochs": 2, "arch": "cnn-tiny", "batch_size": 64},
}
NEEDS_MODULE = {"ifbeta": "ifbeta.policy.bilevel", "ifbeta-entropy": "ifbeta.policy.bilevel"}


def make_problem(n=240, d=8, classes=4, seed=0, images=True, scores=True) -> SelectionInputs:
    """Class blobs in feature space, logits from a noisy linear teacher, 8x8 one-channel images whose
    brightness pattern depends on the class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    labels = np.concatenate([labels, rng.integers(0, classes, n - len(labels))])
    centres = rng.normal(size=(classes, d)) * 2.0
    features = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)
    logits = features @ rng.normal(size=(d, classes)) * 0.3 + 2.0 * np.eye(classes)[labels]
    teacher_scores = None
    if scores:
        teacher_scores = baselines.cheap_teacher_scores(logits, labels)
        teacher_scores["kd_loss"] = teacher_scores["el2n"] ** 2 + 0.01 * rng.random(n)
    pictures = None
    if images:
        pattern = rng.integers(0, 256, size=(classes, 1, 8, 8))
        noisy = pattern[labels] * 0.7 + rng.integers(0, 77, size=(n, 1, 8, 8))
        pictures = torch.as_tensor(noisy.clip(0, 255).astype(np.uint8))
    return SelectionInputs(features, logits, labels, influence=rng.normal(size=n),
                           teacher_scores=teacher_scores, images=pictures)


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
    scores = baselines.cheap_teacher_scores(logits, labels)
    np.testing.assert_allclose(scores["el2n"], [math.sqrt(0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2),
                                                math.sqrt(0.75 ** 2 + 0.25 ** 2 + 0.5 ** 2)])
    np.testing.assert_allclose(scores["entropy"], -(probabilities * np.log(probabilities)).sum(1))
    np.testing.assert_allclose(scores["margin"], [math.log(3.5), -math.log(2.0)])  # logit margin, low = hard
    np.testing.assert_allclose(baselines.teacher_confidence(logits, labels), [0.7, 0.25])
    np.testing.assert_allclose(baselines.to_difficulty("margin", np.array([0.0, 50.0, -50.0])), [0.5, 0.0, 1.0], atol=1e-12)


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


def test_keep_easy_and_hard_are_the_two_ends(problem):
    hard = select("kd-loss", problem, 0.5, stratify=False)
    easy = select("kd-loss", problem, 0.5, keep="easy", stratify=False)
    loss = problem.teacher_scores["kd_loss"]
    assert loss[hard.indices].min() >= loss[easy.indices].max()
    margin = select("margin", problem, 0.5, stratify=False)  # hard = smallest margin
    assert problem.teacher_scores["margin"][margin.indices].max() <= np.median(problem.teacher_scores["margin"]) + 1e-12


# ---------------------------------------------------------------------------------------------
# Behaviour per method


def kept_and_dropped(selection, members):
    kept = np.isin(members, selection.indices)
    return members[kept], members[~kept]


def test_influence_top_keeps_the_highest_per_class(problem):
    chosen = select("influence-top", problem, 0.7)
    for label in range(4):
        kept, dropped = kept_and_dropped(chosen, np.flatnonzero(problem.labels == label))
        assert problem.influence[kept].min() > problem.influence[dropped].max()


def test_random_balanced_meets_the_class_quotas(problem):
    quotas = policy.class_quotas(problem.labels, policy.k_for_ratio(len(problem.labels), 0.85))
    for seed in range(3):
        chosen = select("random-balanced", problem, 0.85, seed=seed)
        np.testing.assert_array_equal(np.bincount(problem.labels[chosen.indices], minlength=4), quotas)


def test_moderate_keeps_the_middle_band_of_distances(problem):
    chosen = select("moderate", problem, 0.6)
    distance = chosen.scores
    np.testing.assert_allclose(distance, baselines.moderate_distances(problem.features, problem.labels))
    for label in range(4):
        members = np.flatnonzero(problem.labels == label)
        kept, dropped = kept_and_dropped(chosen, members)
        near, far = dropped[distance[dropped] < distance[kept].min()], dropped[distance[dropped] > distance[kept].max()]
        assert len(near) + len(far) == len(dropped) and abs(len(near) - len(far)) <= 1
        assert distance[kept].min() <= np.median(distance[members]) <= distance[kept].max()


def test_moderate_distance_is_to_the_class_median():
    features = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [100.0], [101.0]])
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    distance = baselines.moderate_distances(features, labels)
    scale = features.std()
    np.testing.assert_allclose(distance[:5], np.array([2.0, 1.0, 0.0, 1.0, 8.0]) / scale)
    np.testing.assert_allclose(distance[5:], np.array([0.5, 0.5]) / scale)


def ccs_problem():
    """One class; difficulties at the centres of 50 equal strata over [0, 1]: 3 samples in stratum 0,
    200 in stratum 10, 50 in stratum 20, 4 in stratum 49 (min exactly 0 and max exactly 1)."""
    centre = lambda b: (b + 0.5) / 50  # noqa: E731
    values = np.concatenate([[0.0, centre(0), centre(0)], np.full(200, centre(10)), np.full(50, centre(20)),
                             [centre(49), centre(49), centre(49), 1.0]])
    n = len(values)
    inputs = SelectionInputs(np.random.default_rng(0).normal(size=(n, 3)), np.zeros((n, 1)),
                             np.zeros(n, dtype=np.int64), teacher_scores={"el2n": values})
    return inputs, values


def test_ccs_budgets_fill_the_smallest_strata_first():
    np.testing.assert_array_equal(baselines.ccs_budgets(np.array([200, 3, 0, 50, 4]), 100), [47, 3, 0, 46, 4])
    np.testing.assert_array_equal(baselines.ccs_budgets(np.array([5, 5, 5]), 7), [2, 2, 3])
    counts = np.random.default_rng(1).integers(0, 40, size=50)
    for total in (1, 17, counts.sum() // 2, counts.sum()):
        assert baselines.ccs_budgets(counts, total).sum() == total


def test_ccs_counts_per_stratum():
    inputs, values = ccs_problem()
    ratio = 1 - 100 / len(values)
    for seed in range(2):
        chosen = select("ccs", inputs, ratio, seed=seed, hard_cut=0.0)
        strata = np.minimum((values[chosen.indices] * 50).astype(int), 49)
        counts = np.bincount(strata, minlength=50)
        assert (counts[0], counts[10], counts[20], counts[49]) == (3, 47, 46, 4)
        assert counts.sum() == 100


def test_ccs_hard_cut_removes_the_hardest_first():
    inputs, values = ccs_problem()
    chosen = select("ccs", inputs, 0.8, hard_cut=0.03)  # 8 hardest: the 4 top and 4 of stratum 20
    assert values[chosen.indices].max() < values.max() - 0.1
    assert np.sum(values[chosen.indices] >= 48 / 50) == 0
    assert baselines.ccs_hard_cut(0.5) == 0.0 and baselines.ccs_hard_cut(0.9) == pytest.approx(0.3)
    assert select("ccs", inputs, 0.6).info["hard_cut"] == pytest.approx(0.05)


def blobs_problem(per_blob=11, blobs=5):
    """Five tight, far-apart blobs in one class; blob 0 is the hardest."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(blobs, 6)) * 10
    blob = np.repeat(np.arange(blobs), per_blob)
    features = centres[blob] + 0.01 * rng.normal(size=(len(blob), 6))
    el2n = np.where(blob == 0, 1.0, 0.5) + 0.001 * rng.random(len(blob))
    n = len(blob)
    inputs = SelectionInputs(features, np.zeros((n, 1)), np.zeros(n, dtype=np.int64), teacher_scores={"el2n": el2n})
    return inputs, blob, 1 - blobs / n


@pytest.mark.parametrize("method", ["d2", "kcenter"])
def test_graph_and_kcenter_cover_every_blob(method):
    inputs, blob, ratio = blobs_problem()
    for seed in range(3):
        chosen = select(method, inputs, ratio, seed=seed)
        assert sorted(blob[chosen.indices]) == [0, 1, 2, 3, 4]
    assert set(blob[select("el2n-teacher", inputs, ratio).indices]) == {0}  # top-k does not


def test_d2_forward_scores_add_neighbour_difficulty():
    inputs, blob, ratio = blobs_problem()
    chosen = select("d2", inputs, ratio)
    el2n = inputs.teacher_scores["el2n"]
    # neighbours are the 10 others in the blob at distance ~0, so s' ~ s + sum of the blob's others
    expected = np.array([el2n[blob == blob[i]].sum() for i in range(len(blob))])
    np.testing.assert_allclose(chosen.scores, expected, rtol=0.01)


def test_herding_tracks_the_class_mean():
    inputs = make_problem(n=400, d=8, images=False)
    statistics = baselines.feature_statistics(inputs.features)
    points = baselines.standardised(inputs.features, np.arange(400), statistics)

    def gap(selection):
        return np.mean([np.linalg.norm(points[np.intersect1d(selection.indices, np.flatnonzero(inputs.labels == c))].mean(0)
                                       - points[inputs.labels == c].mean(0)) for c in range(4)])
    herded = gap(select("herding", inputs, 0.9))
    randoms = [gap(select("random-balanced", inputs, 0.9, seed=s)) for s in range(10)]
    assert herded < 0.2 * np.mean(randoms)


def test_dual_beta_weights_by_hand():
    confidence = np.array([0.9, 0.5, 0.2, 0.99])
    score = np.array([0.1, 0.4, 0.3, 0.01])
    alpha, beta, mu_top, weights = baselines.dual_beta_weights(confidence, score, 0.5, c_d=5.5, top_count=2)
    assert mu_top == pytest.approx(0.35)  # mean confidence of the two highest scores (0.5, 0.2)
    assert beta == pytest.approx(15 * 0.65 * (1 - 0.5 ** 5.5)) and alpha == pytest.approx(16 - beta)
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    expected = [math.exp((alpha - 1) * math.log(p) + (beta - 1) * math.log(1 - p) - log_norm) * s
                for p, s in zip(confidence, score)]
    np.testing.assert_allclose(weights, expected, rtol=1e-10)


def test_dual_beta_select_uses_teacher_confidence():
    confidence = np.array([0.9, 0.5, 0.2, 0.99, 0.6, 0.7, 1.0, 1.0])
    with np.errstate(divide="ignore"):
        logits = np.log(np.stack([confidence, 1 - confidence], axis=1))  # softmax gives back p
    labels = np.zeros(8, dtype=np.int64)
    inputs = SelectionInputs(np.random.default_rng(0).normal(size=(8, 2)), logits, labels)
    score = (1 - confidence) * np.sqrt(confidence * (1 - confidence))
    chosen = select("dual-beta", inputs, 0.5, top_count=3)
    _, beta, mu_top, expected = baselines.dual_beta_weights(confidence, score, 0.5, top_count=3)
    np.testing.assert_allclose(chosen.scores, expected, rtol=1e-9, atol=1e-300)
    assert chosen.info["beta"] == pytest.approx(beta) and chosen.info["mu_top"] == pytest.approx(mu_top)
    for seed in range(5):  # the two zero-weight samples (p = 1) are never needed for k = 4
        assert not np.isin([6, 7], select("dual-beta", inputs, 0.5, seed=seed, top_count=3).indices).any()


def test_ifbeta_fixed_follows_the_beta(problem):
    high = select("ifbeta-fixed", problem, 0.7, alpha=20.0, beta=1.0)
    low = select("ifbeta-fixed", problem, 0.7, alpha=1.0, beta=20.0)
    u = policy.rank_normalise(problem.influence, groups=problem.labels)
    assert u[high.indices].mean() > 0.8 and u[low.indices].mean() < 0.2
    np.testing.assert_array_equal(high.scores, problem.influence)
    entropy = select("ifbeta-fixed", problem, 0.7, alpha=20.0, beta=1.0, axis="entropy")
    assert np.mean(problem.teacher_scores["entropy"][entropy.indices]) < np.mean(problem.teacher_scores["entropy"])


def test_ifbeta_learned_reports_its_policy(problem):
    pytest.importorskip("ifbeta.policy.bilevel")
    steps = []
    chosen = run("ifbeta", problem, 0.5, on_step=lambda step, info: steps.append(step))
    assert steps and chosen.info["alpha"] > 0 and chosen.info["beta"] > 0 and len(chosen.info["trace"]) >= 1
    entropy = run("ifbeta-entropy", problem, 0.5)
    np.testing.assert_allclose(entropy.scores, -problem.teacher_scores["entropy"])  # low entropy -> u near 1


def test_training_methods_report_their_cost(problem):
    forgotten = run("forgetting", problem, 0.5)
    assert forgotten.info["epochs"] == 2 and forgotten.info["training_seconds"] > 0
    assert forgotten.info["arch"] == "cnn-tiny"
    counts = forgotten.scores
    for label in range(4):  # keeps the most forgotten (never learnt = inf) per class
        kept, dropped = kept_and_dropped(forgotten, np.flatnonzero(problem.labels == label))
        assert counts[kept].min() >= counts[dropped].max()
    steps = []
    el2n = run("el2n-train", problem, 0.5, on_step=lambda step, info: steps.append((step, info["epoch"])))
    assert el2n.info["epochs"] == 1 and np.all((el2n.scores >= 0) & (el2n.scores <= math.sqrt(2)))
    assert steps == [(0, 1)]

"""The soft k-NN proxy (docs/METHOD.md section 9): exact leave-one-out against brute-force refits,
dJ/dw against finite differences, (k, h) by fitting-side validation, scoring, the policy loop, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ifbeta.config import InfluenceConfig, KDConfig, PolicyConfig, ProxyConfig
from ifbeta.data.streaming import standardise
from ifbeta.influence import families, knn
from ifbeta.influence import scores as linear_scores
from ifbeta.influence.tensors import to_numpy
from ifbeta.policy import bilevel, hypergradient, inner
from tests.legacy_store import TEACHER, ifbeta, legacy_cache
from tests.policy_problems import gaussian_classes

KD = KDConfig(tau=2.0, lam=0.7)


def brute_loss_mean(val_z, val_t, val_y, train_z, train_t, weights, *, k, h, kd=KD) -> float:
    """L_V from scratch: every validation row sorts the candidates, walks k units of weight mass,
    averages the tempered teacher distributions with exp(-d^2/h^2) w, and scores tau log q by the KD loss."""
    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    total = 0.0
    for z, t, y in zip(val_z, val_t, val_y):
        d2 = ((train_z - z) ** 2).sum(axis=1)
        order = np.lexsort((np.arange(len(d2)), d2))
        free, numerator, denominator = float(k), np.zeros(val_t.shape[1]), 0.0
        for i in order:
            take = min(weights[i], max(0.0, free))
            free -= weights[i]
            if take > 0:
                a = take * np.exp(-(d2[i] - d2[order[0]]) / h**2)
                numerator += a * softmax(train_t[i] / kd.tau)
                denominator += a
        q = numerator / denominator if denominator > 0 else np.full(len(t), 1.0 / len(t))
        teacher = softmax(t / kd.tau)
        p = softmax(kd.tau * np.log(q))
        total += (1 - kd.lam) * -np.log(p[y]) + kd.lam * kd.tau**2 * float((teacher * np.log(teacher / q)).sum())
    return total / len(val_y)


def problem(seed=0, n=40, m=25, d=3, classes=3):
    rng = np.random.default_rng(seed)
    train_z, val_z = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    train_t, val_t = 2 * rng.normal(size=(n, classes)), 2 * rng.normal(size=(m, classes))
    return train_z, train_t, val_z, val_t, rng.integers(classes, size=m)


def pieces(train_z, train_t, val_z, val_t, val_y):
    return knn.Neighbours(val_z, train_z), knn.tempered(train_t, KD.tau), knn.tempered(val_t, KD.tau), val_y


@pytest.mark.parametrize("weights_kind", ["ones", "subset", "fractional"])
def test_leave_one_out_scores_equal_brute_force_refits(weights_kind):
    train_z, train_t, val_z, val_t, val_y = problem()
    rng = np.random.default_rng(1)
    weights = {"ones": np.ones(40), "subset": (rng.random(40) < 0.4).astype(float),
               "fractional": rng.uniform(0.05, 1.0, 40)}[weights_kind]
    k, h = 4, 1.3
    table, targets, teacher, y = pieces(train_z, train_t, val_z, val_t, val_y)
    scores = to_numpy(knn.removal_scores(table, weights, targets, teacher, y, kd=KD, mass=k, bandwidth=h))
    base = brute_loss_mean(val_z, val_t, val_y, train_z, train_t, weights, k=k, h=h)
    value, _ = knn.validation_loss(knn.Neighbours(val_z, train_z), weights, targets, teacher, y, kd=KD, mass=k,
                                   bandwidth=h)
    assert value == pytest.approx(base, abs=1e-12)
    for i in range(40):
        removed = weights.copy()
        removed[i] = 0.0
        truth = brute_loss_mean(val_z, val_t, val_y, train_z, train_t, removed, k=k, h=h) - base
        assert scores[i] == pytest.approx(truth, abs=1e-10), i
    if weights_kind == "subset":
        assert np.all(scores[weights == 0] == 0.0)  # a sample not kept changes nothing when removed
    assert (scores > 0).any() and (scores < 0).any()


def test_removing_the_only_kept_sample_falls_back_to_uniform():
    train_z, train_t, val_z, val_t, val_y = problem(n=6, m=4)
    weights = np.zeros(6)
    weights[2] = 1.0
    table, targets, teacher, y = pieces(train_z, train_t, val_z, val_t, val_y)
    scores = to_numpy(knn.removal_scores(table, weights, targets, teacher, y, kd=KD, mass=3, bandwidth=0.7))
    truth = (brute_loss_mean(val_z, val_t, val_y, train_z, train_t, np.zeros(6), k=3, h=0.7)
             - brute_loss_mean(val_z, val_t, val_y, train_z, train_t, weights, k=3, h=0.7))
    assert scores[2] == pytest.approx(truth, abs=1e-10)


@pytest.mark.parametrize("h", [0.8, np.inf])
def test_weight_gradient_matches_finite_differences(h):
    train_z, train_t, val_z, val_t, val_y = problem(seed=3)
    weights = np.random.default_rng(4).uniform(0.1, 0.9, 40)
    table, targets, teacher, y = pieces(train_z, train_t, val_z, val_t, val_y)
    options = dict(kd=KD, mass=5.5, bandwidth=h)
    gradient = to_numpy(knn.weight_gradient(table, weights, targets, teacher, y, **options))
    step = 1e-6
    for i in range(40):
        up, down = weights.copy(), weights.copy()
        up[i] += step
        down[i] -= step
        numeric = (knn.validation_loss(table, up, targets, teacher, y, **options)[0]
                   - knn.validation_loss(table, down, targets, teacher, y, **options)[0]) / (2 * step)
        assert gradient[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9), i
    assert np.abs(gradient).max() > 1e-4


def test_settings_by_validation_pick_the_leave_one_out_optimum():
    # three tight clusters of four samples, each cluster with its own teacher distribution: the three other
    # members of a sample's cluster predict it perfectly, so k = 3 beats k = 8 (which reaches other clusters)
    rng = np.random.default_rng(0)
    centres, logits = 10 * np.eye(3), 6 * np.eye(3)
    z = np.repeat(centres, 4, axis=0) + 0.01 * rng.normal(size=(12, 3))
    t = np.repeat(logits, 4, axis=0)
    y = np.repeat(np.arange(3), 4)
    k, h, table = knn.choose_settings(z, knn.tempered(t, KD.tau), y, kd=KD, neighbour_grid=(3, 8),
                                      bandwidth_grid=(0.5, 1.0))
    assert k == 3
    best = min(table, key=lambda row: row["loo_loss"])
    assert (best["neighbours"], best["bandwidth"]) == (k, h) and len(table) == 4
    # the table's losses are the brute-force leave-one-out losses of each setting
    for row in table:
        losses = [brute_loss_mean(z[i:i + 1], t[i:i + 1], y[i:i + 1], np.delete(z, i, 0), np.delete(t, i, 0),
                                  np.ones(11), k=row["neighbours"], h=row["bandwidth"]) for i in range(12)]
        assert row["loo_loss"] == pytest.approx(np.mean(losses), abs=1e-10)


@pytest.mark.slow  # pynndescent compiles its numba kernels on first use (minutes)
def test_approximate_search_finds_the_exact_neighbours_on_a_small_problem():
    rng = np.random.default_rng(0)
    reference, query = rng.normal(size=(600, 5)), rng.normal(size=(50, 5))
    exact_indices, exact_sq = (t.numpy() for t in knn.nearest(query, reference, 10))
    approximate_indices, approximate_sq = (t.numpy() for t in knn.nearest(query, reference, 10, exact_limit=100))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_indices, approximate_indices)])
    assert recall >= 0.95
    brute = ((query[:, None, :] - reference[None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(exact_sq, np.sort(brute, axis=1)[:, :10], atol=1e-10)
    np.testing.assert_allclose(approximate_sq, np.take_along_axis(brute, approximate_indices, axis=1), atol=1e-10)


def small_pool(n=90, d=4, classes=3, seed=0):
    features, teacher, labels = gaussian_classes(np.random.default_rng(seed), n, d, classes, 1.0)
    return features, teacher, labels


def test_knn_scores_through_the_public_scoring_function_are_cross_fitted_leave_one_out_changes():
    features, teacher, labels = small_pool()
    config = InfluenceConfig(proxy=ProxyConfig(kd=KD, family="knn", neighbour_grid=(3, 6)))
    result = families.score(features, teacher, labels, config=config)
    assert result.solver == "knn" and result.estimator == "exact_loo" and result.scores.shape == (90,)
    z, _, _ = standardise(features)
    for fold in range(2):
        chosen = [row for row in result.mu_table if row["fold"] == fold and row["chosen"]]
        assert len(chosen) == 1
        k, h = chosen[0]["neighbours"], chosen[0]["bandwidth"]
        train, val = np.flatnonzero(result.fold == fold), np.flatnonzero(result.fold != fold)
        base = brute_loss_mean(z[val], teacher[val], labels[val], z[train], teacher[train], np.ones(len(train)),
                               k=k, h=h)
        for position in range(0, len(train), 9):
            weights = np.ones(len(train))
            weights[position] = 0.0
            truth = brute_loss_mean(z[val], teacher[val], labels[val], z[train], teacher[train], weights, k=k, h=h)
            assert result.scores[train[position]] == pytest.approx(truth - base, abs=1e-10)
    assert (result.scores > 0).any() and (result.scores < 0).any()
    assert set(result.teacher_scores) == {"el2n", "entropy", "margin", "kd_loss"}
    with pytest.raises(ValueError, match="families.score"):
        linear_scores.score(features, teacher, labels, config=config)


def test_the_linear_family_keeps_its_artefact_keys():
    assert InfluenceConfig().to_dict()["proxy"] == {"kd": {"tau": 4.0, "lam": 0.9}, "mu": None,
                                                     "mu_grid": (1e-3, 1e-2, 1e-1, 1.0, 10.0), "bias_damping": 1e-3,
                                                     "tolerance": 1e-8, "max_iterations": 100}
    knn_settings = InfluenceConfig(proxy=ProxyConfig(family="knn")).to_dict()["proxy"]
    assert knn_settings["family"] == "knn" and knn_settings["neighbour_grid"] == (5, 10, 20, 50)
    with pytest.raises(ValueError, match="unknown proxy family"):
        families.family("forest")


def test_the_policy_loop_runs_on_the_knn_proxy_with_an_exact_hypergradient():
    features, teacher, labels = small_pool(n=120)
    axis = np.random.default_rng(1).normal(size=120)
    proxy = ProxyConfig(kd=KD, family="knn", neighbours=6)
    problem = inner.prepare(features, teacher, labels, axis, kd=KD, mu=None, bias_damping=1e-3,
                            config=PolicyConfig(), proxy=proxy)
    assert all(fold.k == 6 for fold in problem.folds)
    step = 1e-5
    for psi in (np.array([0.4, -0.3]), np.array([-0.5, 0.8])):
        gradient = hypergradient.relaxed(problem, psi, 0.6).gradient
        numeric = [(hypergradient.relaxed(problem, psi + step * e, 0.6, False).J
                    - hypergradient.relaxed(problem, psi - step * e, 0.6, False).J) / (2 * step) for e in np.eye(2)]
        assert np.allclose(gradient, numeric, rtol=1e-4, atol=1e-8), psi
    results = bilevel.optimise_policy(features, teacher, labels, ratios=[0.6], axis_values=axis, kd=KD, steps=4,
                                      shrinkage=0.0, proxy=proxy)
    learned = results[0]
    assert learned.k == 48 and len(np.unique(learned.indices)) == 48 and len(learned.trace) == 4
    first = learned.trace[0]
    assert first["alpha"] == 1.0 and np.isfinite([step["J"] for step in learned.trace]).all()
    assert min(step["objective"] for step in learned.trace) <= first["objective"]


def test_cli_score_with_the_knn_proxy_on_digits(tmp_path):
    cache = legacy_cache(tmp_path)
    before = {path.name for path in (cache / "scores").iterdir() if path.is_dir()}
    scored = ifbeta(cache, "score", "--dataset", "digits", "--teacher", str(cache / TEACHER), "--proxy", "knn",
                    "--neighbours", "10", "--json")
    assert scored.returncode == 0, scored.stderr[-2000:]
    summary = json.loads(scored.stdout.strip().splitlines()[-1])
    assert summary["solver"] == "knn" and summary["n"] == 1347 and 0 < summary["harmful_fraction"] < 1
    added = {path.name for path in (cache / "scores").iterdir() if path.is_dir()} - before
    assert added == {summary["scores_key"]}  # a new artefact beside the linear one, never the linear key
    stored = json.loads((cache / "scores" / summary["scores_key"] / "config.json").read_text())
    assert stored["config"]["influence"]["proxy"]["family"] == "knn"
    assert stored["config"]["influence"]["proxy"]["neighbours"] == 10
    refused = ifbeta(cache, "score", "--dataset", "digits", "--teacher", str(cache / TEACHER), "--neighbours", "5")
    assert refused.returncode == 2 and "--proxy knn" in refused.stderr and "Traceback" not in refused.stderr


def test_knn_loo_check_equals_brute_force_deletions():
    """The closed-form scores against deleting each sample and searching every neighbour again; the
    deletions themselves against the from-scratch L_V above."""
    from ifbeta.influence import knn_validation

    features, teacher, labels = small_pool()
    config = InfluenceConfig(proxy=ProxyConfig(kd=KD, family="knn", neighbour_grid=(3, 6)))
    report = knn_validation.loo_check(features, teacher, labels, config=config, samples=25, seed=3)
    predicted, actual = np.array(report["predicted"]), np.array(report["actual"])
    assert report["solver"] == "knn" and report["n"] == 25 and report["estimator"] == "exact_loo"
    np.testing.assert_allclose(predicted, actual, rtol=0, atol=1e-12)
    assert (actual != 0).sum() >= 10 and report["sign_agreement"] == 1.0
    assert report["slope"] == pytest.approx(1.0, abs=1e-9) and report["spearman"] == pytest.approx(1.0)
    z, _, _ = standardise(features)
    fold = linear_scores.cross_fitting_folds(labels, config.folds, config.seed)
    train, val = np.flatnonzero(fold == 0), np.flatnonzero(fold != 0)
    k, h = report["neighbours"], report["bandwidth"]
    base = brute_loss_mean(z[val], teacher[val], labels[val], z[train], teacher[train], np.ones(len(train)), k=k, h=h)
    assert report["base_val_loss"] == pytest.approx(base, abs=1e-12)
    for row, change in list(zip(report["indices"], actual))[::6]:
        weights = np.ones(len(train))
        weights[np.flatnonzero(train == row)] = 0.0
        truth = brute_loss_mean(z[val], teacher[val], labels[val], z[train], teacher[train], weights, k=k, h=h)
        assert change == pytest.approx(truth - base, abs=1e-11)
    assert report["group_harmful_delta"] < 0 < report["group_helpful_delta"]


def test_cli_validate_influence_checks_the_proxy_it_is_given(tmp_path):
    cache = legacy_cache(tmp_path)
    common = ["validate-influence", "--dataset", "digits", "--teacher", str(cache / TEACHER), "--samples", "30",
              "--json"]
    checked = ifbeta(cache, *common, "--proxy", "knn")
    assert checked.returncode == 0, checked.stderr[-2000:]
    report = json.loads(checked.stdout.strip().splitlines()[-1])
    assert report["solver"] == "knn" and report["passed"] and report["n"] == 30
    assert report["slope"] == pytest.approx(1.0, abs=1e-9) and report["neighbours"] >= 1
    linear = ifbeta(cache, *common)
    assert linear.returncode in (0, 1), linear.stderr[-2000:]
    assert json.loads(linear.stdout.strip().splitlines()[-1])["solver"] == "direct"

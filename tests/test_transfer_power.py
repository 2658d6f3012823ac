"""The transfer check's pairing and statistics: same seed, same start and batch order; seed-bootstrap
Spearman and paired t-intervals against brute-force references; inconclusive verdicts."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from ifbeta.evaluation import transfer
from ifbeta.evaluation import transfer_statistics as stats

POOL = 400


# ----------------------------------------------------------------------------- statistics
def test_spearman_rows_is_scipys_spearman_for_every_row_ties_included():
    rng = np.random.default_rng(0)
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 0.5])
    rows = np.round(rng.random((40, 6)), 1)  # rounding makes ties
    rows[0] = [1, 1, 2, 2, 3, 3]
    expected = [scipy.stats.spearmanr(x, r)[0] for r in rows]
    np.testing.assert_allclose(stats.spearman_rows(x, rows), expected, atol=1e-12)
    assert stats.spearman_rows(x, np.ones((2, 6))).tolist() == [0.0, 0.0]  # no ranking: no relation


def reference_interval(J, table, resamples, seed):
    """The bootstrap written out: the same draws, one scipy.stats.spearmanr per resample."""
    picks = np.random.default_rng(seed).integers(0, table.shape[1], size=(resamples, table.shape[1]))
    values = []
    for columns in picks:
        means = table[:, columns].mean(axis=1)
        values.append(0.0 if np.ptp(means) == 0 else scipy.stats.spearmanr(J, means)[0])
    return tuple(np.quantile(values, [0.025, 0.975]))


def test_bootstrap_spearman_matches_the_loop_and_is_reproducible():
    rng = np.random.default_rng(1)
    J = np.array([0.5, 0.4, 0.45, 0.3, 0.35])
    table = 0.8 - 0.2 * J[:, None] + 0.03 * rng.standard_normal((5, 6))  # (P, S)
    interval = stats.bootstrap_spearman(J, table, resamples=500, seed=7)
    assert interval == pytest.approx(reference_interval(J, table, 500, 7), abs=1e-12)
    assert stats.bootstrap_spearman(J, table, resamples=500, seed=7) == interval
    assert -1.0 <= interval[0] <= interval[1] <= 1.0


def test_a_seed_effect_shared_by_every_policy_leaves_no_interval_width():
    """Paired seeds: a seed that lifts every policy alike cannot move the ranking of their means."""
    J = np.array([0.5, 0.4, 0.3, 0.2])
    base = np.array([0.70, 0.72, 0.75, 0.80])  # lower J, higher accuracy: Spearman -1
    table = base[:, None] + np.array([[-0.08, 0.05, 0.0, 0.09, -0.03, 0.02]])  # (4, 6): large seed effects
    assert stats.bootstrap_spearman(J, table) == (-1.0, -1.0)
    assert transfer.summarise(entries(J, table), list(range(6)))["trust"] == "yes"
    fewer = transfer.summarise(entries(J, table[:, :transfer.MIN_SEEDS - 1]), list(range(transfer.MIN_SEEDS - 1)))
    assert fewer["spearman_interval"] == [-1.0, -1.0] and fewer["trust"] == "inconclusive"  # too few seeds


def test_no_interval_with_one_seed_or_a_constant_J():
    assert stats.bootstrap_spearman([0.1, 0.2], [[0.5], [0.6]]) is None
    assert stats.bootstrap_spearman([0.1, 0.1], [[0.5, 0.6], [0.6, 0.7]]) is None
    with pytest.raises(ValueError, match="policies, seeds"):
        stats.bootstrap_spearman([0.1, 0.2, 0.3], [[0.5, 0.6], [0.6, 0.7]])


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences():
    learned, uniform = np.array([0.90, 0.85, 0.88, 0.91]), np.array([0.87, 0.86, 0.84, 0.90])
    paired = stats.paired_difference(learned, uniform)
    differences = learned - uniform
    half = scipy.stats.t.ppf(0.975, 3) * differences.std(ddof=1) / math.sqrt(4)
    assert paired.mean == pytest.approx(differences.mean())
    assert (paired.low, paired.high) == pytest.approx((differences.mean() - half, differences.mean() + half))
    assert list(paired.differences) == pytest.approx(differences.tolist())
    assert stats.paired_difference([0.9], [0.8]).low is None


@pytest.mark.parametrize("interval, side", [((0.1, 0.3), "above"), ((-0.3, -0.1), "below"),
                                            ((-0.1, 0.2), "inconclusive"), ((0.0, 0.2), "inconclusive"),
                                            (None, "inconclusive")])
def test_an_interval_touching_zero_is_inconclusive(interval, side):
    assert stats.direction(interval) == side and stats.excludes_zero(interval) == (side != "inconclusive")


# ----------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("agreement, interval, trust", [
    (0.9, (0.5, 1.0), "yes"), (0.4, (0.1, 0.7), "weak"), (-0.8, (-1.0, -0.4), "no"),
    (0.9, (-0.2, 1.0), "inconclusive"), (0.9, (0.0, 1.0), "inconclusive"), (0.9, None, "inconclusive"),
    (None, None, "inconclusive")])
def test_verdict_is_inconclusive_whenever_the_agreement_interval_holds_zero(agreement, interval, trust):
    level, line = transfer.verdict(agreement, interval, 0.01, (0.002, 0.018), policies=6, seeds=8,
                                   policy_effect_p=0.01)
    assert level == trust and "\n" not in line and "uniform" in line
    assert line.startswith("Inconclusive:") == (trust == "inconclusive")
    if interval is not None and agreement is not None:
        assert f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" in line


@pytest.mark.parametrize("difference_interval, words", [
    ((0.002, 0.018), "the learned policy beat uniform"), ((-0.018, -0.002), "lost to uniform"),
    ((-0.01, 0.03), "within seed noise"), (None, "no interval")])
def test_learned_versus_uniform_follows_its_interval(difference_interval, words):
    _, line = transfer.verdict(0.4, (0.1, 0.7), 0.01, difference_interval, policies=6, seeds=8)
    assert words in line
    if difference_interval is not None and difference_interval[0] < 0 < difference_interval[1]:
        assert "safe choice" in line  # no recommendation of the learned policy on noise


def test_verdict_needs_min_seeds_whatever_the_interval():
    level, line = transfer.verdict(0.9, (0.5, 1.0), 0.01, (0.002, 0.018), policies=6, seeds=transfer.MIN_SEEDS - 1)
    assert level == "inconclusive" and f"{transfer.MIN_SEEDS} seeds at least" in line
    assert transfer.verdict(0.9, (0.5, 1.0), 0.01, (0.002, 0.018), policies=6, seeds=transfer.MIN_SEEDS)[0] == "yes"


def test_verdict_is_inconclusive_when_policies_differ_like_seeds():
    level, line = transfer.verdict(1.0, (0.5, 1.0), 0.01, (-0.01, 0.03), policies=4, seeds=8, policy_effect_p=0.8)
    assert level == "inconclusive" and "p = 0.80" in line


def entries(J, table):
    labels = ["uniform"] + [f"step-{i}" for i in range(1, len(J) - 1)] + ["learned"]
    return [{"label": label, "alpha": 1.0, "beta": 1.0, "J": float(j), "accuracies": list(map(float, row))}
            for label, j, row in zip(labels, J, table)]


def test_summarise_reports_intervals_and_keeps_the_keys_the_app_reads():
    rng = np.random.default_rng(3)
    J = np.array([0.5, 0.45, 0.4, 0.35, 0.3, 0.32])
    table = 0.85 + 0.06 * rng.standard_normal((6, 2))  # two noisy seeds, no effect
    report = transfer.summarise(entries(J, table), [0, 1])
    assert {"trust", "verdict", "agreement", "learned_minus_uniform", "policies"} <= set(report)
    assert report["spearman"] == pytest.approx(scipy.stats.spearmanr(J, table.mean(axis=1))[0])
    low, high = report["spearman_interval"]
    assert report["agreement_interval"] == [-high, -low]
    paired = table[-1] - table[0]
    assert report["learned_minus_uniform"] == pytest.approx(paired.mean())
    assert report["bootstrap"] == {"resamples": stats.RESAMPLES, "seed": stats.BOOTSTRAP_SEED, "confidence": 0.95}
    if report["trust"] == "inconclusive":
        assert report["verdict"].startswith("Inconclusive:")
    one = transfer.summarise(entries(J, table[:, :1]), [0])
    assert one["trust"] == "inconclusive" and one["spearman_interval"] is None
    assert one["learned_minus_uniform_interval"] is None and one["learned_vs_uniform"] == "inconclusive"


# ----------------------------------------------------------------------------- pairing of real students
@pytest.fixture(scope="module")
def workspace(session_store, digits_teacher):
    from ifbeta import pipeline

    return pipeline.open_workspace("digits", store=session_store, pool=POOL)


def subset(workspace, alpha, beta, seed, directory):
    from ifbeta import pipeline

    chosen = pipeline.choose(workspace, "ifbeta-fixed", 0.5, seed=seed,
                             options={"alpha": alpha, "beta": beta, "axis": "influence", "stratify": True})
    return chosen.indices, pipeline.write_subset(workspace, chosen, directory, ratio=0.5, seed=seed)


def parameters(path, names):
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return {name: tensors[name] for name in names}


def test_same_seed_on_two_subsets_starts_from_bitwise_identical_weights(workspace, tmp_path):
    """learning rate 0: the saved parameters are the ones the student started from."""
    from ifbeta.distill import student as distill
    from ifbeta.models import zoo as models

    runs = {}
    for name, (alpha, beta, seed) in {"uniform": (1.0, 1.0, 0), "skewed": (4.0, 0.5, 0),
                                      "other-seed": (1.0, 1.0, 1)}.items():
        indices, path = subset(workspace, alpha, beta, seed, tmp_path / name / "subset")
        metrics = distill.run(workspace, subset=path, out=tmp_path / name / "run", epochs=1, seed=seed,
                              learning_rate=0.0, order=transfer.ORDER)
        runs[name] = (set(indices.tolist()), metrics)
    assert runs["uniform"][0] != runs["skewed"][0]  # two different subsets ...
    student = runs["uniform"][1]["student"]
    torch.manual_seed(0)
    fresh = models.build(student, num_classes=workspace.train.num_classes, in_channels=workspace.train.channels)
    names = [name for name, _ in fresh.named_parameters()]
    weights = {key: parameters(f"{metrics['out']}/student.safetensors", names) for key, (_, metrics) in runs.items()}
    for name, tensor in fresh.state_dict().items():
        if name in names:  # ... the same seed-0 start, bit for bit, for both
            assert torch.equal(weights["uniform"][name], tensor) and torch.equal(weights["skewed"][name], tensor)
    assert any(not torch.equal(weights["other-seed"][n], weights["uniform"][n]) for n in names)
    assert runs["uniform"][1]["order"] == "pool"


def visits(data, indices, order, epochs=2):
    """The sample indices a seed-0 fit visits, per epoch (batch size 16, learning rate 0)."""
    from ifbeta.models import zoo as models
    from ifbeta.models.training import TrainConfig, fit

    seen = []
    torch.manual_seed(0)
    model = models.build("cnn-tiny", num_classes=data.num_classes, in_channels=data.channels)
    fit(model, data, config=TrainConfig(epochs=epochs, batch_size=16, learning_rate=0.0, seed=0, order=order),
        indices=indices, on_batch=lambda batch, logits: seen.append(batch.copy()))
    per_epoch = len(indices) // 16
    return [np.concatenate(seen[e * per_epoch:(e + 1) * per_epoch]) for e in range(epochs)]


def test_pool_order_visits_the_common_samples_of_two_subsets_in_the_same_order(digits):
    train, _ = digits
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(train))
    common, first, second = shuffled[:64], shuffled[64:128], shuffled[128:192]
    a, b = np.sort(np.r_[common, first]), np.sort(np.r_[common, second])  # 128 each: whole batches only

    def common_sequence(order):
        return [[[i for i in epoch if i in set(common)] for epoch in visits(train, s, order)] for s in (a, b)]

    pool_a, pool_b = common_sequence("pool")
    assert pool_a == pool_b and all(len(epoch) == 64 for epoch in pool_a)
    assert pool_a[0] != pool_a[1]  # a new shuffle every epoch
    subset_a, subset_b = common_sequence("subset")
    assert subset_a != subset_b  # shuffling positions of the subset does not pair the common samples
    assert sorted(visits(train, a, "pool")[0].tolist()) == a.tolist()  # every sample once per epoch


def test_the_default_order_keeps_training_settings_and_their_keys():
    from ifbeta.models.training import TrainConfig

    assert "order" not in TrainConfig().to_dict()  # teacher and resume keys of earlier runs stay
    assert TrainConfig(order="pool").to_dict()["order"] == "pool"


def test_an_unknown_order_is_refused(workspace, tmp_path):
    from ifbeta.distill import student as distill
    from ifbeta.errors import RunError

    with pytest.raises(RunError, match="order"):
        distill.run(workspace, subset=None, out=tmp_path / "run", order="sorted")

"""The k-NN proxy family (docs/METHOD.md section 9): its cross-fitted influence scores and its weighted
fold of the bilevel loop. The math is in ``knn.py``.

Cross-fitting as in section 3: the pool is standardised with its own statistics and dealt into K
stratified folds; for fold f the proxy's training set is fold f (the samples being scored), (k, h)
are chosen on fold f alone (leave-one-out inside it, ``knn.choose_settings``) and L_V is the mean
KD loss on all other folds. s_i = L_V without i - L_V (exact leave-one-out, > 0 helpful), the same
sign convention as the linear proxy. ``teacher_scores["kd_loss"]`` is the proxy's leave-one-out KD
loss of each sample within its fold (higher = harder). The standardised pool is held in memory as
float64 (N x d).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ifbeta.config import InfluenceConfig, ProxyConfig
from ifbeta.data.streaming import FeatureView
from ifbeta.influence import knn
from ifbeta.influence import scores as influence
from ifbeta.influence.statistics import teacher_statistics
from ifbeta.influence.weighted import WeightedFold

logger = logging.getLogger(__name__)

__all__ = ["KnnFold", "fit_settings", "score"]


def fit_settings(features, targets, labels, settings: ProxyConfig) -> tuple[int, float, list[dict]]:
    """(k, h, table) for a training set: ``knn.choose_settings`` over the config's grids (fixed values win)."""
    return knn.choose_settings(features, targets, labels, kd=settings.kd, neighbour_grid=settings.neighbour_grid,
                               bandwidth_grid=settings.bandwidth_grid, neighbours=settings.neighbours,
                               bandwidth=settings.bandwidth)


def _score_fold(z, logits, labels, train, held_out, settings: ProxyConfig):
    """(scores, leave-one-out KD loss) of fold ``train`` (indices) validated on ``held_out``, and its table."""
    kd = settings.kd
    targets = knn.tempered(logits[train], kd.tau)  # (n_f, C)
    k, h, table = fit_settings(z[train], targets, labels[train], settings)
    neighbours = knn.Neighbours(z[held_out], z[train])
    scores = knn.removal_scores(neighbours, np.ones(len(train)), targets, knn.tempered(logits[held_out], kd.tau),
                                labels[held_out], kd=kd, mass=float(k), bandwidth=h)
    own = knn.Neighbours(z[train], z[train], exclude_self=True)
    indices, sq = own.cover(np.ones(len(train)), float(k))
    q = knn.predict(sq, np.ones(indices.shape), targets[indices], mass=float(k), bandwidth=h)
    return scores, knn.loss(q, targets, labels[train], kd), table, (k, h)


def score(features, teacher_logits, labels, *, config: InfluenceConfig = InfluenceConfig(),
          on_step=None) -> influence.InfluenceResult:
    """Cross-fitted exact leave-one-out scores of the k-NN proxy for every sample of the pool.

    features (N, d) any float dtype (memmap OK), teacher_logits (N, C), labels (N,) int in [0, C).
    Returns an InfluenceResult (scores > 0 helpful; solver "knn", estimator "exact_loo", mu 0: no
    ridge; mu_table: the (k, h) validation rows of every fold with their fold and whether chosen).
    Refuses the degenerate input ``scores.score`` refuses (NaN/Inf, bad labels, an empty fold)."""
    clock, labels = influence.Clock(), influence.validated_labels(labels, features, teacher_logits)
    notify = on_step or (lambda step, info: None)
    mean, std = influence.pool_statistics(features, teacher_logits, config.chunk_size)
    z = FeatureView(features, mean=mean, std=std).materialise(config.chunk_size)  # (N, d) float64
    logits = np.asarray(teacher_logits, dtype=np.float64)
    fold = influence.cross_fitting_folds(labels, config.folds, config.seed)
    clock.lap("standardise")
    notify(0, {"stage": "prepare", "folds": config.folds})
    scores, kd_loss, rows = np.zeros(len(labels)), np.zeros(len(labels)), []
    for f in range(config.folds):
        train, held_out = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        scores[train], kd_loss[train], table, chosen = _score_fold(z, logits, labels, train, held_out, config.proxy)
        rows += [{**row, "fold": f, "chosen": (row["neighbours"], row["bandwidth"]) == chosen} for row in table]
        clock.lap("fold")
        notify(f + 1, {"stage": "fold", "fold": f, "folds": config.folds, "neighbours": chosen[0],
                       "bandwidth": chosen[1], "seconds": dict(clock.seconds)})
    teacher = teacher_statistics(teacher_logits, labels, chunk_size=config.chunk_size)
    teacher["kd_loss"] = kd_loss
    clock.lap("teacher_scores")
    seconds = {**clock.seconds, "total": float(sum(clock.seconds.values()))}
    logger.info("knn influence: N=%d %.2fs, %.1f%% harmful", len(labels), seconds["total"],
                100.0 * float((scores < 0).mean()) if len(scores) else 0.0)
    return influence.InfluenceResult(scores=scores, fold=fold, mu=0.0, solver="knn", teacher_scores=teacher,
                                     seconds=seconds, grad_norms=[], mu_table=rows, estimator="exact_loo")


@dataclass
class KnnFold(WeightedFold):
    """The k-NN proxy on one fold of the bilevel split; (k, h) chosen once on the candidates (w = 1)."""

    neighbours: knn.Neighbours | None = None
    targets: np.ndarray | None = None  # (n_f, C) tempered teacher distributions of the candidates
    val_targets: np.ndarray | None = None  # (m, C) of V
    k: int = 0
    bandwidth: float = 1.0

    @classmethod
    def build(cls, train: tuple, validation: tuple, *, settings: ProxyConfig, mu: float | None = None,
              device: str = "cpu") -> "KnnFold":
        """The fold's proxy; mu is not used (no ridge), nor device (the k-NN math runs in numpy)."""
        targets = knn.tempered(train[1], settings.kd.tau)
        k, h, _ = fit_settings(train[0], targets, train[2], settings)
        return cls(*train, *validation, kd=settings.kd, neighbours=knn.Neighbours(validation[0], train[0]),
                   targets=targets, val_targets=knn.tempered(validation[1], settings.kd.tau), k=k, bandwidth=h)

    def reset(self) -> None:
        """Nothing to reset: a k-NN fit has no warm start."""

    def warm_state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        """Nothing to restore (``warm_state`` is empty)."""

    def evaluate(self, weights: np.ndarray, with_gradient: bool = True):
        """(J, accuracy on V, dJ/dw (n_f,) or None) of the k-NN proxy with sample weights (n_f,)."""
        options = dict(kd=self.kd, mass=float(self.k), bandwidth=self.bandwidth)
        data = (self.neighbours, weights, self.targets, self.val_targets, self.val_labels)
        loss, accuracy = knn.validation_loss(*data, **options)
        return loss, accuracy, knn.weight_gradient(*data, **options) if with_gradient else None

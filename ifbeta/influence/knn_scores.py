"""The k-NN proxy family (docs/METHOD.md section 9): its cross-fitted influence scores and its weighted
fold of the bilevel loop. The math is in ``knn.py``.

Cross-fitting as in section 3: the pool is standardised with its own statistics and dealt into K
stratified folds; for fold f the proxy's training set is fold f (the samples being scored), (k, h)
are chosen on fold f alone (leave-one-out inside it, ``knn.choose_settings``) and L_V is the mean
KD loss on all other folds. s_i = L_V without i - L_V (exact leave-one-out, > 0 helpful), the same
sign convention as the linear proxy. ``teacher_scores["kd_loss"]`` is the proxy's leave-one-out KD
loss of each sample within its fold (higher = harder). The standardised pool is held in memory as
float64 (N x d); each fold's math runs in torch on ``InfluenceConfig.device`` (``KnnFold``: its ``device``),
float64 throughout (knn.py), and leaves it as numpy (scores, kd_loss, dJ/dw) and floats (J, accuracy).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ifbeta.config import InfluenceConfig, ProxyConfig
from ifbeta.data.streaming import FeatureView
from ifbeta.influence import knn
from ifbeta.influence import scores as influence
from ifbeta.influence.statistics import teacher_statistics
from ifbeta.influence.tensors import as_tensor, resolve_device, to_numpy
from ifbeta.influence.weighted import WeightedFold

logger = logging.getLogger(__name__)

__all__ = ["KnnFold", "fit_settings", "score"]


def fit_settings(features, targets, labels, settings: ProxyConfig, device=None) -> tuple[int, float, list[dict]]:
    """(k, h, table) for a training set: ``knn.choose_settings`` over the config's grids (fixed values win)."""
    return knn.choose_settings(features, targets, labels, kd=settings.kd, neighbour_grid=settings.neighbour_grid,
                               bandwidth_grid=settings.bandwidth_grid, neighbours=settings.neighbours,
                               bandwidth=settings.bandwidth, device=device)


def _score_fold(z, logits, labels, train, held_out, settings: ProxyConfig, device):
    """(scores, leave-one-out KD loss) (n_f,) numpy of fold ``train`` (indices) validated on ``held_out``, its
    table and the chosen (k, h); the math on ``device``."""
    kd = settings.kd
    targets = knn.tempered(logits[train], kd.tau, device)  # (n_f, C)
    own_labels = as_tensor(labels[train], device, torch.int64)
    k, h, table = fit_settings(z[train], targets, own_labels, settings, device)
    neighbours = knn.Neighbours(z[held_out], z[train], device=device)
    ones = torch.ones(len(train), dtype=torch.float64, device=device)
    scores = knn.removal_scores(neighbours, ones, targets, knn.tempered(logits[held_out], kd.tau, device),
                                labels[held_out], kd=kd, mass=float(k), bandwidth=h)
    own = knn.Neighbours(z[train], z[train], exclude_self=True, device=device)
    indices, sq = own.cover(ones, float(k))
    q = knn.predict(sq, torch.ones(indices.shape, dtype=torch.float64, device=device), targets[indices],
                    mass=float(k), bandwidth=h)
    return to_numpy(scores), to_numpy(knn.loss(q, targets, own_labels, kd)), table, (k, h)


def score(features, teacher_logits, labels, *, config: InfluenceConfig = InfluenceConfig(),
          on_step=None) -> influence.InfluenceResult:
    """Cross-fitted exact leave-one-out scores of the k-NN proxy for every sample of the pool.

    features (N, d) any float dtype (memmap OK), teacher_logits (N, C), labels (N,) int in [0, C).
    Returns an InfluenceResult (scores > 0 helpful; solver "knn", estimator "exact_loo", mu 0: no
    ridge; mu_table: the (k, h) validation rows of every fold with their fold and whether chosen).
    Refuses the degenerate input ``scores.score`` refuses (NaN/Inf, bad labels, an empty fold). The math runs on
    ``config.device`` ("cpu" or "cuda"; a ValueError before any work when CUDA is not available)."""
    device = resolve_device(config.device)
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
        scores[train], kd_loss[train], table, chosen = _score_fold(z, logits, labels, train, held_out, config.proxy,
                                                                         device)
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
    """The k-NN proxy on one fold of the bilevel split; (k, h) chosen once on the candidates (w = 1). Its math
    runs on ``device``: the neighbour lists and the tempered distributions stay there as float64 tensors."""

    neighbours: knn.Neighbours | None = None
    targets: torch.Tensor | None = None  # (n_f, C) tempered teacher distributions of the candidates
    val_targets: torch.Tensor | None = None  # (m, C) of V
    k: int = 0
    bandwidth: float = 1.0
    device: str = "cpu"

    @classmethod
    def build(cls, train: tuple, validation: tuple, *, settings: ProxyConfig, mu: float | None = None,
              device: str = "cpu") -> "KnnFold":
        """The fold's proxy on ``device``; mu is not used (no ridge)."""
        targets = knn.tempered(train[1], settings.kd.tau, device)
        k, h, _ = fit_settings(train[0], targets, train[2], settings, device)
        return cls(*train, *validation, kd=settings.kd,
                   neighbours=knn.Neighbours(validation[0], train[0], device=device), targets=targets,
                   val_targets=knn.tempered(validation[1], settings.kd.tau, device), k=k, bandwidth=h, device=device)

    def reset(self) -> None:
        """Nothing to reset: a k-NN fit has no warm start."""

    def warm_state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        """Nothing to restore (``warm_state`` is empty)."""

    def evaluate(self, weights: np.ndarray, with_gradient: bool = True):
        """(J, accuracy on V, dJ/dw (n_f,) float64 numpy or None) of the k-NN proxy with sample weights (n_f,)."""
        options = dict(kd=self.kd, mass=float(self.k), bandwidth=self.bandwidth)
        data = (self.neighbours, as_tensor(weights, self.device), self.targets, self.val_targets,
                as_tensor(self.val_labels, self.device, torch.int64))
        loss, accuracy = knn.validation_loss(*data, **options)
        return loss, accuracy, to_numpy(knn.weight_gradient(*data, **options)) if with_gradient else None

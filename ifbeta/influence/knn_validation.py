"""Leave-one-out ground truth for the k-NN proxy's influence scores (docs/METHOD.md sections 3 and 9).

The k-NN proxy's score is already the exact leave-one-out change of L_V (``knn.removal_scores``,
computed in closed form: only the validation rows that hold sample i in their k units of mass are
predicted again, the next listed candidates filling its mass). :func:`loo_check` checks that claim
by brute force on one cross-fitting split (train = fold 0, V = the other folds, as
``knn_scores.score`` does): for each chosen training sample it deletes the row from the candidate
set, searches every validation row's neighbours again from scratch among the rest, predicts V and
takes the change of L_V. k and the bandwidth h stay at the values validation chose on the full
fold, as the linear check keeps mu. The report has the keys of ``validation.loo_check``; expected:
Spearman 1, slope 1, every sign right. A change below round-off (1e-12 of L_V: the two computations
list the same neighbours but may add distances in another order) counts as zero.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ifbeta.config import InfluenceConfig
from ifbeta.data.streaming import FeatureView
from ifbeta.influence import knn, knn_scores
from ifbeta.influence.scores import Clock, cross_fitting_folds, pool_statistics, validated_labels
from ifbeta.influence.tensors import as_tensor, resolve_device, to_numpy
from ifbeta.influence.validation import compare

logger = logging.getLogger(__name__)

__all__ = ["loo_check"]

ROUND_OFF = 1e-12  # relative to L_V: true changes below this are zero


class _Deletions:
    """L_V of the k-NN proxy fitted on fold 0 without given training rows, by a fresh neighbour search.
    Features and targets are float64 tensors on ``config.device``."""

    def __init__(self, z, logits, labels, train, held_out, config: InfluenceConfig):
        kd, device = config.proxy.kd, resolve_device(config.device)
        self.device = device
        self.train_z, self.val_z = as_tensor(z[train], device), as_tensor(z[held_out], device)
        self.targets, self.val_targets = knn.tempered(logits[train], kd.tau, device), \
            knn.tempered(logits[held_out], kd.tau, device)
        self.train_labels = as_tensor(labels[train], device, torch.int64)
        self.val_labels = as_tensor(labels[held_out], device, torch.int64)
        self.k, self.bandwidth, _ = knn_scores.fit_settings(self.train_z, self.targets, self.train_labels,
                                                            config.proxy, device)
        self.options = dict(kd=kd, mass=float(self.k), bandwidth=self.bandwidth)
        self.base = self.loss_without(np.zeros(0, dtype=np.int64))

    def predicted(self) -> np.ndarray:
        """The closed-form scores s (n,) float64 of the fold (> 0 helpful), as ``knn_scores.score`` computes them."""
        neighbours = knn.Neighbours(self.val_z, self.train_z, device=self.device)
        ones = torch.ones(len(self.train_z), dtype=torch.float64, device=self.device)
        return to_numpy(knn.removal_scores(neighbours, ones, self.targets, self.val_targets, self.val_labels,
                                           **self.options))

    def loss_without(self, removed) -> float:
        """L_V with the training rows ``removed`` deleted from the candidates (a new search, unit weights)."""
        keep = np.setdiff1d(np.arange(len(self.train_z)), np.asarray(removed, dtype=np.int64))
        keep = torch.as_tensor(keep, device=self.device)
        neighbours = knn.Neighbours(self.val_z, self.train_z[keep], device=self.device)
        ones = torch.ones(len(keep), dtype=torch.float64, device=self.device)
        loss, _ = knn.validation_loss(neighbours, ones, self.targets[keep], self.val_targets, self.val_labels,
                                      **self.options)
        return float(loss)

    def removal_delta(self, removed) -> float:
        """True change of L_V when ``removed`` are deleted (> 0: they helped); round-off counts as zero."""
        delta = self.loss_without(removed) - self.base
        return 0.0 if abs(delta) <= ROUND_OFF * max(1.0, abs(self.base)) else float(delta)


def loo_check(features, teacher_logits, labels, *, config: InfluenceConfig = InfluenceConfig(), samples: int = 200,
              seed: int = 0, on_step=None) -> dict:
    """The k-NN proxy's scores against brute-force deletions on one cross-fitting split.

    features (N, d) any float dtype, teacher_logits (N, C), labels (N,) int. For ``samples`` random
    training samples of fold 0, the true change of L_V when the sample is deleted and every neighbour
    search is redone, next to the predicted s_i. Keys as ``validation.loo_check``: spearman, pearson,
    slope (through the origin; 1 = values agree), sign_agreement, n, predicted, actual, indices (pool
    rows), group_harmful_delta / group_helpful_delta / group_random_delta (true change of L_V when the
    10% most harmful / most helpful / a random 10% are deleted together), group_*_predicted (sums of
    their scores), group_size, mu (0: no ridge), neighbours, bandwidth, base_val_loss, estimator
    ("exact_loo"), solver ("knn"), seconds. Each deletion costs one neighbour search of V."""
    if config.folds < 2:
        raise ValueError("cross-fitting needs folds >= 2 (each fold is validated on the others)")
    clock, notify = Clock(), on_step or (lambda step, info: None)
    labels = validated_labels(labels, features, teacher_logits)
    mean, std = pool_statistics(features, teacher_logits, config.chunk_size)
    z = FeatureView(features, mean=mean, std=std).materialise(config.chunk_size)  # (N, d) float64
    logits = np.asarray(teacher_logits, dtype=np.float64)
    fold = cross_fitting_folds(labels, config.folds, config.seed)
    train, held_out = np.flatnonzero(fold == 0), np.flatnonzero(fold != 0)
    deletions = _Deletions(z, logits, labels, train, held_out, config)
    predicted_all = deletions.predicted()
    clock.lap("fit")
    report, chosen = compare(predicted_all, deletions.removal_delta, len(train), samples=samples, seed=seed,
                             clock=clock, notify=notify)
    report.update(indices=train[chosen].tolist(), mu=0.0, neighbours=int(deletions.k),
                  bandwidth=float(deletions.bandwidth), base_val_loss=deletions.base, estimator="exact_loo",
                  solver="knn")
    report["seconds"] = dict(clock.seconds)
    logger.info("knn loo_check: spearman %.3f slope %.3f sign %.3f", report["spearman"], report["slope"],
                report["sign_agreement"])
    return report

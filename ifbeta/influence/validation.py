"""Leave-one-out ground truth for the influence scores of docs/METHOD.md section 3.

:func:`loo_check` fits the proxy on one cross-fitting split (train = fold 0, V = the other folds) as
:func:`ifbeta.influence.scores.score` does, then refits it without single training samples (and
without the 10% most harmful / most helpful / a random 10%) to round-off and compares the true
change of L_V with the predicted scores s_i (same sign convention: > 0 = helpful). The refits are
warm-started chord iterations on the Cholesky factor of the unweighted Hessian where it fits
(C(d+1) <= scores.NEWTON_LIMIT), else Newton(-CG). Inputs are checked like :func:`score`'s
(tests/test_degenerate.py); the training fold is always materialised in float64 on the host, and the
math runs on ``config.device`` like score()'s.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.stats
import torch

from ifbeta.config import InfluenceConfig
from ifbeta.influence import objective, proxy, tensors
from ifbeta.influence.scores import NEWTON_LIMIT, Clock, prepare, removal_scores, validated_labels
from ifbeta.influence.solvers import cholesky_apply, cholesky_factor

logger = logging.getLogger(__name__)

__all__ = ["agreement", "compare", "loo_check"]


def _refit(theta, factor, problem: dict, weights, scale: float):
    """Exact refit of the weighted problem from a warm start; returns (theta, ||grad||).

    With ``factor`` (Cholesky of the unweighted Hessian at theta*) it runs chord iterations
    theta <- theta - H0^{-1} grad(theta): each costs one gradient pass and contracts the error by about
    the relative change of H (1/n for one sample), so a few reach round-off. Otherwise Newton(-CG).
    The stopping point is ||grad|| <= 1e-11 * scale or the round-off floor.
    """
    previous = np.inf
    if factor is not None:
        for _ in range(100):
            grad = objective.gradient(theta, weights=weights, **problem)
            norm = float(torch.linalg.vector_norm(grad))
            if norm <= 1e-11 * scale or (norm > 0.5 * previous and norm <= 1e-8 * scale):
                return theta, norm
            theta, previous = theta - cholesky_apply(factor, grad.reshape(-1)).reshape(theta.shape), norm
    fitted = proxy.fit(init=theta, weights=weights, tolerance=1e-12, max_iterations=200, **problem)
    return fitted.theta, fitted.grad_norm


def agreement(predicted, actual) -> dict:
    """Predicted against true changes: rank and linear agreement, slope through the origin, signs."""
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    return {
        "spearman": float(scipy.stats.spearmanr(predicted, actual)[0]),
        "pearson": float(scipy.stats.pearsonr(predicted, actual)[0]),
        "slope": float(predicted @ actual / (predicted @ predicted)),  # least squares through the origin
        "sign_agreement": float(np.mean(np.sign(predicted) == np.sign(actual))),
        "n": int(len(predicted)),
        "predicted": predicted.tolist(),
        "actual": actual.tolist(),
    }


class _Refits:
    """theta* on the training fold (to round-off) and true refits without given training rows."""

    def __init__(self, pool, logits, labels, train, held_out, mu: float, config: InfluenceConfig):
        settings, chunk = config.proxy, config.chunk_size
        self.train = (pool.subset(train).materialise(chunk), logits.subset(train).materialise(chunk), labels[train])
        self.validation = (pool.subset(held_out), logits.subset(held_out), labels[held_out])
        self.problem = dict(features=self.train[0], teacher_logits=self.train[1], labels=self.train[2], mu=mu,
                            kd=settings.kd, bias_damping=settings.bias_damping, chunk_size=chunk,
                            device=tensors.resolve_device(config.device))
        theta = proxy.fit(tolerance=settings.tolerance, max_iterations=settings.max_iterations, **self.problem).theta
        self.factor = None
        if theta.numel() <= NEWTON_LIMIT:
            self.factor = cholesky_factor(objective.hessian(theta, **self.problem))
        self.scale = 1.0 + float(torch.linalg.vector_norm(objective.gradient(torch.zeros_like(theta), **self.problem)))
        self.theta, _ = _refit(theta, self.factor, self.problem, None, self.scale)
        self.base = self.validation_loss(self.theta)

    def validation_loss(self, theta) -> float:
        return objective.validation_loss(theta, *self.validation, kd=self.problem["kd"],
                                         chunk_size=self.problem["chunk_size"], device=self.problem["device"])

    def removal_delta(self, removed) -> float:
        """True change of L_V when training rows ``removed`` get weight 0 (refit to round-off)."""
        weights = np.ones(len(self.train[2]))
        weights[removed] = 0.0
        refitted, _ = _refit(self.theta, self.factor, self.problem, weights, self.scale)
        return self.validation_loss(refitted) - self.base


def compare(predicted_all: np.ndarray, removal_delta, count: int, *, samples: int, seed: int, clock: Clock,
            notify) -> tuple[dict, np.ndarray]:
    """Predicted scores (count,) of a training fold against true removals, for any proxy family.

    ``removal_delta(rows)`` is the true change of L_V when those fold rows are removed (> 0: they helped).
    Draws ``samples`` rows (seeded), compares one-sample removals with their scores (``agreement``), then
    the group check: the 10% most harmful / most helpful / a random 10% removed together (group_*_delta)
    against the sum of their scores (group_*_predicted), with group_size. Returns (report, chosen rows)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(count, size=min(samples, count), replace=False))
    actual = []
    for step, i in enumerate(chosen):
        actual.append(removal_delta([i]))
        notify(step, {"stage": "loo", "done": step + 1, "total": len(chosen)})
    clock.lap("loo")
    order, size = np.argsort(predicted_all, kind="stable"), max(1, int(round(0.1 * count)))
    report = agreement(predicted_all[chosen], actual)
    report["group_size"] = size
    for name, group in (("harmful", order[:size]), ("helpful", order[-size:]),
                        ("random", rng.choice(count, size=size, replace=False))):
        report[f"group_{name}_delta"] = removal_delta(group)
        report[f"group_{name}_predicted"] = float(predicted_all[group].sum())  # additive first guess
    clock.lap("groups")
    return report, chosen


def loo_check(features, teacher_logits, labels, *, config: InfluenceConfig = InfluenceConfig(), samples: int = 200,
              seed: int = 0, on_step=None) -> dict:
    """Influence against true refits on one cross-fitting split (train = fold 0, V = the other folds).

    For ``samples`` random training samples, refit the proxy without each (warm-started, to round-off)
    and record the true change of L_V next to the predicted s_i (config.solver). Keys: spearman, pearson,
    slope (least-squares slope of true on predicted THROUGH THE ORIGIN: s_i has no intercept by
    construction; 1 = values agree), sign_agreement, n, predicted, actual, indices (pool rows), and the
    group check: group_harmful_delta / group_helpful_delta / group_random_delta = true change of L_V when
    the 10% most harmful / most helpful / a random 10% of the training fold are removed (harmful < 0 and
    helpful > random expected), group_*_predicted (the sum of their scores: groups are not additive);
    plus group_size, mu, base_val_loss, estimator, solver, seconds. Each refit costs a few
    passes over the training fold and one over V.
    """
    clock, notify = Clock(), on_step or (lambda step, info: None)
    labels = validated_labels(labels, features, teacher_logits)
    config, pool, logits, fold, mu, _ = prepare(features, teacher_logits, labels, config, clock)
    train, held_out = np.flatnonzero(fold == 0), np.flatnonzero(fold != 0)
    refits = _Refits(pool, logits, labels, train, held_out, mu, config)
    predicted_all = removal_scores(refits.theta, refits.train, refits.validation, mu, config)
    clock.lap("fit")
    report, chosen = compare(predicted_all, refits.removal_delta, len(train), samples=samples, seed=seed,
                             clock=clock, notify=notify)
    report.update(indices=train[chosen].tolist(), mu=mu, base_val_loss=refits.base, estimator=config.estimator,
                  solver=config.solver)
    report["seconds"] = dict(clock.seconds)
    logger.info("loo_check: spearman %.3f slope %.3f sign %.3f", report["spearman"], report["slope"],
                report["sign_agreement"])
    return report

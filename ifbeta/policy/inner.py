"""The relaxed inner problem of the bilevel loop (docs/METHOD.md section 5): folds, weighted proxy fits, L_V.

``prepare`` standardises the pool, deals it into the split (``folds`` stratified folds, each in turn
the candidates with the others as V; or one held-out ``val_fraction``), chooses mu once and fits the
proxy on every fold's candidates with weights 1 (the warm start of every later fit). ``fit`` refits a
fold with sample weights w (N_f,) in [0, 1], warm-started, reusing a preconditioner across outer
steps on large folds; ``validate`` gives (L_V, accuracy on V), L_V lower is better. ``trace_record``
turns one evaluated psi = (log alpha, log beta) into the record of the loop's trace.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ifbeta.config import KDConfig, PolicyConfig
from ifbeta.influence import objective, proxy, solvers
from ifbeta.policy import beta as policy
from ifbeta.threads import thread_map

logger = logging.getLogger(__name__)

__all__ = ["Evaluation", "Fold", "Problem", "fit", "matrix_free", "prepare", "reusable_preconditioner", "trace_record",
           "validate"]


@dataclass
class Fold:
    """One direction of the split: candidates (standardised) and V. theta is the warm start."""

    features: np.ndarray  # (n_f, d)
    teacher_logits: np.ndarray  # (n_f, C)
    labels: np.ndarray  # (n_f,)
    u: np.ndarray  # (n_f,) ranks within the candidates
    val_features: np.ndarray
    val_teacher_logits: np.ndarray
    val_labels: np.ndarray
    mu: float
    theta_full: np.ndarray  # fit with all candidates (w = 1)
    theta: np.ndarray | None = None
    preconditioner: Callable | None = None  # flat v -> H^-1 v at a recent (theta, w); reused across steps
    adjoint: np.ndarray | None = None  # last H^-1 g_V, the warm start of the next hypergradient solve


@dataclass
class Problem:
    """Everything the outer loop evaluates J on: the folds, the pool's ranks u and the fixed settings."""

    folds: list[Fold]
    u: np.ndarray  # (N,) ranks over the pool
    labels: np.ndarray  # (N,)
    mu: float
    kd: KDConfig
    bias_damping: float
    config: PolicyConfig
    num_classes: int
    landscape: dict | None = None  # set by the grid estimator
    per_sample_mu: float | None = None  # fold mu = per_sample_mu * n_f when mu was chosen by validation

    def reset(self) -> None:
        for fold in self.folds:
            fold.theta, fold.adjoint = fold.theta_full, None


@dataclass
class Evaluation:
    """J (the proxy's validation KD loss, averaged over the folds) at one psi, and its gradient."""

    J: float  # lower is better
    accuracy: float
    gradient: np.ndarray | None  # dJ / dpsi (2,)


def _splits(labels: np.ndarray, folds: int, val_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(candidate indices, validation indices)], stratified and seeded."""
    if folds >= 2:
        assignment = proxy.stratified_folds(labels, folds, seed)
        return [(np.flatnonzero(assignment == f), np.flatnonzero(assignment != f)) for f in range(folds)]
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        is_val[members[:int(round(val_fraction * len(members)))]] = True
    return [(np.flatnonzero(~is_val), np.flatnonzero(is_val))]


def prepare(features, teacher_logits, labels, axis_values, *, kd, mu, bias_damping, config,
            per_sample_mu: float | None = None) -> Problem:
    """The split, mu and full fits for features (N, d), teacher_logits (N, C), labels (N,) int and
    axis_values (N,) (larger = keep first). mu None: ``proxy.choose_mu`` once (or ``per_sample_mu`` *
    N / 2 when resuming), rescaled to each fold's size."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    values = np.asarray(axis_values, dtype=np.float64).reshape(-1)
    if len(values) != len(labels) or len(features) != len(labels) or len(teacher_logits) != len(labels):
        raise ValueError(f"features, teacher_logits, labels and axis_values must all have N={len(labels)} rows")
    z, _, _ = objective.standardise(features)  # (N, d) float64, pool statistics
    t = np.asarray(teacher_logits, dtype=np.float64)
    groups = labels if config.stratify else None
    splits = _splits(labels, config.folds, config.val_fraction, config.seed)
    per_sample = per_sample_mu
    if mu is None and per_sample is None:
        mu, _ = proxy.choose_mu(z, t, labels, kd=kd, folds=2, seed=config.seed, bias_damping=bias_damping)
        per_sample = mu / (len(labels) / 2)  # choose_mu's mu is for n = N / 2; rescale to each fold
    elif mu is None:
        mu = per_sample * len(labels) / 2

    def make_fold(train: np.ndarray, val: np.ndarray) -> Fold:
        fold_mu = mu if per_sample is None else per_sample * len(train)
        full = proxy.fit(z[train], t[train], labels[train], mu=fold_mu, kd=kd, bias_damping=bias_damping)
        return Fold(z[train], t[train], labels[train],
                    policy.rank_normalise(values[train], groups=None if groups is None else labels[train]),
                    z[val], t[val], labels[val], fold_mu, full.theta, full.theta)

    folds = thread_map(make_fold, *zip(*splits))
    u = policy.rank_normalise(values, groups=groups)
    return Problem(folds, u, labels, float(mu), kd, bias_damping, config, t.shape[1], per_sample_mu=per_sample)


def matrix_free(fold: Fold) -> bool:
    """Large folds fit by Newton-CG; small ones by dense Newton (exact and cheaper there)."""
    return not proxy.use_dense(len(fold.labels), fold.theta_full.size)


def reusable_preconditioner(problem: Problem, fold: Fold, weights: np.ndarray) -> Callable:
    """The fold's reusable preconditioner, built at (warm start, weights) when missing.

    Outer steps move the weights a little, so the exact Hessian factor of a recent step leaves CG a
    handful of iterations: the Cholesky factor where C(d+1) <= proxy.DENSE_NEWTON_LIMIT, EKFAC above."""
    if fold.preconditioner is None:
        build = (solvers.cholesky_preconditioner if fold.theta_full.size <= proxy.DENSE_NEWTON_LIMIT
                 else solvers.ekfac_preconditioner)
        fold.preconditioner = build(fold.theta, fold.features, fold.teacher_logits, fold.labels, weights, mu=fold.mu,
                                    kd=problem.kd, bias_damping=problem.bias_damping)
    return fold.preconditioner


def fit(problem: Problem, fold: Fold, weights: np.ndarray) -> np.ndarray:
    """theta* (C, d+1) of the fold's candidates with sample weights (n_f,) in [0, 1], warm-started
    from the fold's last fit (which it replaces)."""
    preconditioner = reusable_preconditioner(problem, fold, weights) if matrix_free(fold) else None
    result = proxy.fit(fold.features, fold.teacher_logits, fold.labels, weights=weights, mu=fold.mu, kd=problem.kd,
                       bias_damping=problem.bias_damping, init=fold.theta, preconditioner=preconditioner)
    if not result.converged:
        logger.warning("inner proxy fit stopped at ||grad|| = %.3g after %d iterations", result.grad_norm,
                       result.iterations)
    if result.products > proxy.REFRESH_PRODUCTS * max(1, result.iterations):
        fold.preconditioner = None  # drifted: rebuild at the next fit
    fold.theta = result.theta
    return result.theta


def validate(problem: Problem, fold: Fold, theta: np.ndarray) -> tuple[float, float]:
    """(L_V, accuracy on V) of the proxy theta."""
    loss = objective.validation_loss(theta, fold.val_features, fold.val_teacher_logits, fold.val_labels, kd=problem.kd)
    accuracy = float((objective.predict_proba(theta, fold.val_features).argmax(axis=1) == fold.val_labels).mean())
    return loss, accuracy


def trace_record(problem: Problem, ratio: float, step: int, psi: np.ndarray, evaluation: Evaluation, rho: float,
                 seconds: float) -> dict:
    """One trace record at psi (2,): alpha, beta, J and objective = J + rho KL (lower is better), kl,
    proxy_val_accuracy, the class histogram and mean u of the subset drawn with the config's seed."""
    alpha, beta = float(np.exp(psi[0])), float(np.exp(psi[1]))
    k = policy.k_for_ratio(len(problem.labels), ratio)
    chosen = policy.sample_subset(problem.u, problem.labels, k, alpha, beta, seed=problem.config.seed,
                                  stratify=problem.config.stratify)
    kl = policy.kl_to_uniform(alpha, beta)
    return {"step": step, "alpha": alpha, "beta": beta, "J": float(evaluation.J),
            "objective": float(evaluation.J + rho * kl), "kl": kl, "proxy_val_accuracy": float(evaluation.accuracy),
            "class_histogram": np.bincount(problem.labels[chosen], minlength=problem.num_classes).tolist(),
            "mean_u": float(problem.u[chosen].mean()), "seconds": float(seconds),
            "gradient": None if evaluation.gradient is None else [float(g) for g in evaluation.gradient]}

"""The relaxed inner problem of the bilevel loop (docs/METHOD.md section 5): the split and its folds.

``prepare`` standardises the pool, deals it into the split (``folds`` stratified folds, each in turn
the candidates with the others as V; or one held-out ``val_fraction``), chooses mu once (for a family
that uses it) and builds every fold's proxy with weights 1 through ``influence.families``: a fold's
``evaluate(weights, with_gradient)`` gives (L_V, accuracy on V, dL_V/dw) for sample weights w (N_f,) in
[0, 1], L_V lower is better (``influence.weighted``). ``trace_record`` turns one evaluated
psi = (log alpha, log beta) into the record of the loop's trace.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ifbeta.config import KDConfig, PolicyConfig, ProxyConfig
from ifbeta.influence import families, objective, tensors
from ifbeta.influence import proxy as proxy_fit
from ifbeta.influence.weighted import WeightedFold
from ifbeta.policy import beta as policy
from ifbeta.threads import thread_map

logger = logging.getLogger(__name__)

__all__ = ["Evaluation", "Fold", "Problem", "kl", "kl_torch", "prepare", "trace_record"]


Fold = WeightedFold  # one direction of the split: a proxy family's weighted fold (influence.weighted)


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
    proxy: ProxyConfig | None = None  # the proxy family and its settings (None: linear with kd, bias_damping)
    prior: tuple[float, float] = (1.0, 1.0)  # (alpha0, beta0) the KL shrinks towards; set per ratio by bilevel

    def reset(self) -> None:
        for fold in self.folds:
            fold.reset()


@dataclass
class Evaluation:
    """J (the proxy's validation KD loss, averaged over the folds) at one psi, and its gradient."""

    J: float  # lower is better
    accuracy: float
    gradient: np.ndarray | None  # dJ / dpsi (2,)


def _splits(labels: np.ndarray, folds: int, val_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(candidate indices, validation indices)], stratified and seeded."""
    if folds >= 2:
        assignment = proxy_fit.stratified_folds(labels, folds, seed)
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
            per_sample_mu: float | None = None, proxy: ProxyConfig | None = None, device="cpu") -> Problem:
    """The split, mu and full fits for features (N, d), teacher_logits (N, C), labels (N,) int and
    axis_values (N,) (larger = keep first). proxy: the family and settings (None: the linear proxy with
    kd and bias_damping; else its kd wins). mu None, for a family that uses it: ``proxy.choose_mu`` once
    (or ``per_sample_mu`` * N / 2 when resuming), rescaled to each fold's size. device: where the choice of mu,
    the folds' fits and their hypergradients run ("cpu", "cuda"; InfluenceConfig.device); a ValueError
    before any work when CUDA is asked for and not available."""
    settings = proxy if proxy is not None else ProxyConfig(kd=kd, bias_damping=bias_damping)
    kd, bias_damping, family = settings.kd, settings.bias_damping, families.family(settings.family)
    tensors.resolve_device(device)  # refuse an unavailable device before any work
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    values = np.asarray(axis_values, dtype=np.float64).reshape(-1)
    if len(values) != len(labels) or len(features) != len(labels) or len(teacher_logits) != len(labels):
        raise ValueError(f"features, teacher_logits, labels and axis_values must all have N={len(labels)} rows")
    z, _, _ = objective.standardise(features)  # (N, d) float64, pool statistics
    t = np.asarray(teacher_logits, dtype=np.float64)
    groups = labels if config.stratify else None
    splits = _splits(labels, config.folds, config.val_fraction, config.seed)
    per_sample = per_sample_mu
    if family.uses_mu and mu is None and per_sample is None:
        mu, _ = proxy_fit.choose_mu(z, t, labels, kd=kd, folds=2, seed=config.seed, bias_damping=bias_damping,
                                    device=device)
        per_sample = mu / (len(labels) / 2)  # choose_mu's mu is for n = N / 2; rescale to each fold
    elif family.uses_mu and mu is None:
        mu = per_sample * len(labels) / 2

    def make_fold(train: np.ndarray, val: np.ndarray) -> Fold:
        fold_mu = mu if per_sample is None else per_sample * len(train)
        fold = family.fold((z[train], t[train], labels[train]), (z[val], t[val], labels[val]), settings=settings,
                           mu=fold_mu, device=device)
        fold.u = policy.rank_normalise(values[train], groups=None if groups is None else labels[train])
        return fold

    folds = thread_map(make_fold, *zip(*splits))
    u = policy.rank_normalise(values, groups=groups)
    return Problem(folds, u, labels, float(mu or 0.0), kd, bias_damping, config, t.shape[1], per_sample_mu=per_sample,
                   proxy=settings)


def kl(problem: Problem, alpha: float, beta: float) -> float:
    """KL(Beta(alpha, beta) || Beta(problem.prior)): the shrinkage term (KL to U(0, 1) at prior (1, 1))."""
    alpha0, beta0 = problem.prior
    if (alpha0, beta0) == (1.0, 1.0):
        return policy.kl_to_uniform(alpha, beta)
    return policy.kl_beta(alpha, beta, alpha0, beta0)


def kl_torch(problem: Problem, log_alpha, log_beta):
    """``kl`` as a differentiable function of (log alpha, log beta) (torch tensors)."""
    alpha0, beta0 = problem.prior
    if (alpha0, beta0) == (1.0, 1.0):
        return policy.kl_to_uniform_torch(log_alpha, log_beta)
    return policy.kl_beta_torch(log_alpha, log_beta, alpha0, beta0)


def trace_record(problem: Problem, ratio: float, step: int, psi: np.ndarray, evaluation: Evaluation, rho: float,
                 seconds: float) -> dict:
    """One trace record at psi (2,): alpha, beta, J and objective = J + rho KL (lower is better), kl (to
    the problem's prior, ``kl``),
    proxy_val_accuracy, the class histogram and mean u of the subset drawn with the config's seed."""
    alpha, beta = float(np.exp(psi[0])), float(np.exp(psi[1]))
    k = policy.k_for_ratio(len(problem.labels), ratio)
    chosen = policy.sample_subset(problem.u, problem.labels, k, alpha, beta, seed=problem.config.seed,
                                  stratify=problem.config.stratify)
    divergence = kl(problem, alpha, beta)
    return {"step": step, "alpha": alpha, "beta": beta, "J": float(evaluation.J),
            "objective": float(evaluation.J + rho * divergence), "kl": divergence,
            "proxy_val_accuracy": float(evaluation.accuracy),
            "class_histogram": np.bincount(problem.labels[chosen], minlength=problem.num_classes).tolist(),
            "mean_u": float(problem.u[chosen].mean()), "seconds": float(seconds),
            "gradient": None if evaluation.gradient is None else [float(g) for g in evaluation.gradient]}

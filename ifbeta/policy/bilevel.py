"""Bilevel optimisation of the Beta policy's (alpha, beta) (METHOD.md section 5) -> trace.

Outer variables psi = (log alpha, log beta). Outer objective

    objective(psi) = J(psi) + rho(r) * KL(Beta(alpha, beta) || U(0, 1)),   rho(r) = c * r / (1 - r)
    J(psi)         = L_V(theta*(pi(psi)))           (validation KD loss of the proxy, lower is better)

where pi(psi) are the policy's inclusion probabilities on the candidates (sum k, per class when
stratified) and theta*(w) the proxy fitted with sample weights w (SUM form, fixed mu).

Split, as in influence scoring (cross-fitting): the pool is dealt into ``folds`` stratified folds
(``proxy.stratified_folds``, seeded). With folds = 2 (default) each half in turn holds the
candidates and the other half is V; J and its gradient are averaged over both directions, so every
sample is a candidate once and no sample validates a fit that contains it. Ranks u are taken within
each fold's candidates (per class when stratified) and k_f = round((1 - r) n_f). With folds = 1,
one stratified split holds out ``val_fraction`` of the pool as V. The final subset is drawn from
the whole pool (ranks over the pool) with the learned (alpha, beta).

Scale of J: c = shrinkage * j_scale with j_scale = max - min of J over the 3 x 3 grid
(alpha, beta) in {1/4, 1, 4}^2 at the reference ratio 0.5 (a per-dataset constant, measured once
per call, recorded); shrinkage = 0 skips it.

Estimators (``ESTIMATORS``): ``implicit`` (exact hypergradient of the relaxed problem, Adam),
``reinforce`` (score function on sampled subsets, Adam), ``grid`` (argmin over a log grid).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ifbeta.config import InfluenceConfig, KDConfig, PolicyConfig, ProxyConfig
from ifbeta.influence import objective, proxy, solvers
from ifbeta.influence import scores as influence
from ifbeta.policy import beta as policy
from ifbeta.threads import thread_map

logger = logging.getLogger(__name__)

LOG_BOUNDS = (-3.0, 4.0)  # clip of log alpha, log beta: alpha, beta in [0.05, 54.6]
SCALE_GRID = (0.25, 1.0, 4.0)  # (alpha, beta) values of the 3 x 3 grid that measures the scale of J
SCALE_RATIO = 0.5  # pruning ratio at which the scale of J is measured
GRID_RANGE = (0.125, 8.0)  # geometric grid of the `grid` estimator (odd sizes contain 1 = uniform)
ADAM = (0.9, 0.999, 1e-8)  # beta1, beta2, eps

__all__ = ["PolicyResult", "ESTIMATORS", "AXES", "optimise_policy", "landscape", "influence_axis", "entropy_axis",
           "shrinkage_weight"]


@dataclass
class PolicyResult:
    """The learned policy for one pruning ratio.

    trace: one dict per outer step (step, alpha, beta, J, objective, kl, proxy_val_accuracy,
    class_histogram, mean_u, seconds, gradient), J / objective lower is better.
    indices: (k,) int64 sorted, the final subset of the pool drawn with (alpha, beta) and ``seed``.
    c: shrinkage constant in units of J (= shrinkage * j_scale); mu: proxy ridge (SUM units).
    """

    ratio: float
    k: int
    alpha: float
    beta: float
    trace: list[dict]
    estimator: str
    axis: str
    c: float
    mu: float
    indices: np.ndarray
    converged: bool
    j_scale: float | None = None
    landscape: dict | None = None
    folds: int = 2


# ----------------------------------------------------------------------------- axes


def influence_axis(features, teacher_logits, labels, *, kd: KDConfig = KDConfig(), seed: int = 0) -> np.ndarray:
    """(N,) float64: cross-fitted influence scores, > 0 helpful (u near 1 = most helpful)."""
    config = InfluenceConfig(proxy=ProxyConfig(kd=kd), seed=seed)
    return np.asarray(influence.score(features, teacher_logits, labels, config=config).scores, dtype=np.float64)


def entropy_axis(features, teacher_logits, labels, *, kd: KDConfig = KDConfig(), seed: int = 0) -> np.ndarray:
    """(N,) float64: minus the teacher's predictive entropy (tau = 1), so u near 1 = easiest sample."""
    logits = np.asarray(teacher_logits, dtype=np.float64)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return (np.exp(log_p) * log_p).sum(axis=1)  # = -entropy


AXES: dict[str, Callable] = {"influence": influence_axis, "entropy": entropy_axis}


def shrinkage_weight(ratio: float, c: float) -> float:
    """rho(r) = c * r / (1 - r): the KL penalty grows as data gets scarce."""
    return c * ratio / (1.0 - ratio)


# ----------------------------------------------------------------------------- the problem


@dataclass
class _Fold:
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
class _Problem:
    folds: list[_Fold]
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
class _Evaluation:
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


def _prepare(features, teacher_logits, labels, axis_values, *, kd, mu, bias_damping, config,
             per_sample_mu: float | None = None) -> _Problem:
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

    def make_fold(train: np.ndarray, val: np.ndarray) -> _Fold:
        fold_mu = mu if per_sample is None else per_sample * len(train)
        full = proxy.fit(z[train], t[train], labels[train], mu=fold_mu, kd=kd, bias_damping=bias_damping)
        return _Fold(z[train], t[train], labels[train],
                     policy.rank_normalise(values[train], groups=None if groups is None else labels[train]),
                     z[val], t[val], labels[val], fold_mu, full.theta, full.theta)

    folds = thread_map(make_fold, *zip(*splits))
    u = policy.rank_normalise(values, groups=groups)
    return _Problem(folds, u, labels, float(mu), kd, bias_damping, config, t.shape[1], per_sample_mu=per_sample)


def _matrix_free(fold: _Fold) -> bool:
    """Large folds fit by Newton-CG; small ones by dense Newton (exact and cheaper there)."""
    return not proxy.use_dense(len(fold.labels), fold.theta_full.size)


def _preconditioner(problem: _Problem, fold: _Fold, weights: np.ndarray) -> Callable:
    """The fold's reusable preconditioner, built at (warm start, weights) when missing.

    Outer steps move the weights a little, so the exact Hessian factor of a recent step leaves CG a
    handful of iterations: the Cholesky factor where C(d+1) <= proxy.DENSE_NEWTON_LIMIT, EKFAC above."""
    if fold.preconditioner is None:
        build = (solvers.cholesky_preconditioner if fold.theta_full.size <= proxy.DENSE_NEWTON_LIMIT
                 else solvers.ekfac_preconditioner)
        fold.preconditioner = build(fold.theta, fold.features, fold.teacher_logits, fold.labels, weights, mu=fold.mu,
                                    kd=problem.kd, bias_damping=problem.bias_damping)
    return fold.preconditioner


def _fit(problem: _Problem, fold: _Fold, weights: np.ndarray) -> np.ndarray:
    preconditioner = _preconditioner(problem, fold, weights) if _matrix_free(fold) else None
    result = proxy.fit(fold.features, fold.teacher_logits, fold.labels, weights=weights, mu=fold.mu, kd=problem.kd,
                       bias_damping=problem.bias_damping, init=fold.theta, preconditioner=preconditioner)
    if not result.converged:
        logger.warning("inner proxy fit stopped at ||grad|| = %.3g after %d iterations", result.grad_norm,
                       result.iterations)
    if result.products > proxy.REFRESH_PRODUCTS * max(1, result.iterations):
        fold.preconditioner = None  # drifted: rebuild at the next fit
    fold.theta = result.theta
    return result.theta


def _adjoint_solver(problem: _Problem, fold: _Fold, weights: np.ndarray):
    """The solve function of influence_on_weights: dense where small, else CG warm-started from the
    last step's solution with the fold's preconditioner."""
    if not _matrix_free(fold):
        return "direct"

    def solve(theta, features, teacher_logits, labels, weights_, rhs, **options):
        calls = []
        preconditioner = _preconditioner(problem, fold, weights)

        def counted(vector):
            calls.append(1)
            return preconditioner(vector)

        fold.adjoint = solvers.solve_cg(theta, features, teacher_logits, labels, weights_, rhs, **options,
                                        preconditioner=counted, initial=fold.adjoint)
        if len(calls) > proxy.REFRESH_PRODUCTS:
            fold.preconditioner = None
        return fold.adjoint

    return solve


def _validate(problem: _Problem, fold: _Fold, theta: np.ndarray) -> tuple[float, float]:
    """(L_V, accuracy on V) of the proxy theta."""
    loss = objective.validation_loss(theta, fold.val_features, fold.val_teacher_logits, fold.val_labels, kd=problem.kd)
    accuracy = float((objective.predict_proba(theta, fold.val_features).argmax(axis=1) == fold.val_labels).mean())
    return loss, accuracy


# ----------------------------------------------------------------------------- estimators


def _relaxed(problem: _Problem, psi: np.ndarray, ratio: float, with_gradient: bool = True) -> _Evaluation:
    """J at the relaxed weights pi(psi), and the implicit hypergradient dJ/dpsi.

    dJ/dw_i = influence.influence_on_weights at theta*(pi); chained through pi(psi) by autograd.
    """
    psi_t = torch.tensor(psi, dtype=torch.float64, requires_grad=with_gradient)
    probabilities = [policy.policy_probabilities_torch(fold.u, fold.labels, policy.k_for_ratio(len(fold.labels), ratio),
                                                       psi_t[0], psi_t[1], stratify=problem.config.stratify)
                     for fold in problem.folds]  # (n_f,) each

    def work(fold: _Fold, weights: np.ndarray):
        theta = _fit(problem, fold, weights)
        loss, accuracy = _validate(problem, fold, theta)
        if not with_gradient:
            return loss, accuracy, None
        d_weights = influence.influence_on_weights(
            theta, fold.features, fold.teacher_logits, fold.labels, weights, fold.val_features,
            fold.val_teacher_logits, fold.val_labels, mu=fold.mu, kd=problem.kd, bias_damping=problem.bias_damping,
            solver=_adjoint_solver(problem, fold, weights))
        return loss, accuracy, np.asarray(d_weights, dtype=np.float64)

    outcomes = thread_map(work, problem.folds, [pi.detach().numpy() for pi in probabilities])
    count = len(problem.folds)
    total = _Evaluation(sum(o[0] for o in outcomes) / count, sum(o[1] for o in outcomes) / count, None)
    if with_gradient:
        chained = sum(pi @ torch.as_tensor(o[2]) for pi, o in zip(probabilities, outcomes)) / count
        total.gradient = torch.autograd.grad(chained, psi_t)[0].numpy()
    return total


def _implicit(problem: _Problem, psi: np.ndarray, ratio: float, rng: np.random.Generator) -> _Evaluation:
    return _relaxed(problem, psi, ratio, with_gradient=True)


def _reinforce(problem: _Problem, psi: np.ndarray, ratio: float, rng: np.random.Generator) -> _Evaluation:
    """Score-function gradient of E[J(subset)] over Gumbel-top-k subsets; J reported = mean sampled J.

    Gumbel-top-k draws an ordered sequence with the Plackett-Luce law (per class under
    stratification); J depends on the set only, so E[(J - b) grad log PL(sequence)] is an unbiased
    gradient of the expected J of the discrete policy. b = leave-one-out mean of the other draws.
    """
    samples = problem.config.reinforce_samples
    if samples < 2:
        raise ValueError("reinforce needs reinforce_samples >= 2 (leave-one-out baseline)")
    psi_t = torch.tensor(psi, dtype=torch.float64, requires_grad=True)
    total = _Evaluation(0.0, 0.0, np.zeros(2))
    for fold in problem.folds:
        k = policy.k_for_ratio(len(fold.labels), ratio)
        log_f = policy.beta_log_weights_torch(torch.as_tensor(fold.u), psi_t[0], psi_t[1])  # (n_f,)
        groups = policy.strata(fold.labels, k, problem.config.stratify)
        losses, log_probabilities = [], []
        for _ in range(samples):
            keys = log_f.detach().numpy() + rng.gumbel(size=len(fold.u))
            weights, log_probability = np.zeros(len(fold.u)), 0.0
            for members, quota in groups:
                local = np.argsort(-keys[members], kind="stable")[:quota]  # drawn order within the class
                weights[members[local]] = 1.0
                log_probability = log_probability + policy.plackett_luce_log_probability(
                    log_f[torch.as_tensor(members)], local)
            loss, accuracy = _validate(problem, fold, _fit(problem, fold, weights))
            losses.append(loss)
            log_probabilities.append(log_probability)
            total.accuracy += accuracy / (samples * len(problem.folds))
        losses = np.array(losses)
        baseline = (losses.sum() - losses) / (samples - 1)
        surrogate = sum(float(a) * lp for a, lp in zip(losses - baseline, log_probabilities)) / samples
        total.gradient += torch.autograd.grad(surrogate, psi_t)[0].numpy() / len(problem.folds)
        total.J += float(losses.mean()) / len(problem.folds)
    return total


def _record(problem: _Problem, ratio: float, step: int, psi: np.ndarray, evaluation: _Evaluation, rho: float,
            seconds: float) -> dict:
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


def _kl_gradient(psi: np.ndarray) -> np.ndarray:
    psi_t = torch.tensor(psi, dtype=torch.float64, requires_grad=True)
    return torch.autograd.grad(policy.kl_to_uniform_torch(psi_t[0], psi_t[1]), psi_t)[0].numpy()


def _adam_state(problem: _Problem, step: int, psi, first, second, trace, best, previous, calm, rng) -> dict:
    """Everything _adam needs to continue after ``step`` - 1, as plain JSON-able values."""
    return {"step": step, "psi": psi.tolist(), "first": first.tolist(), "second": second.tolist(), "trace": trace,
            "best": None if best is None else [best[0], best[1].tolist()], "previous": previous, "calm": calm,
            "rng": rng.bit_generator.state,
            "thetas": [fold.theta.tolist() for fold in problem.folds],
            "adjoints": [None if fold.adjoint is None else fold.adjoint.tolist() for fold in problem.folds]}


def _restore(problem: _Problem, state: dict, rng: np.random.Generator):
    rng.bit_generator.state = state["rng"]
    for fold, theta, adjoint in zip(problem.folds, state["thetas"], state["adjoints"]):
        fold.theta = np.asarray(theta, dtype=np.float64)
        fold.adjoint = None if adjoint is None else np.asarray(adjoint, dtype=np.float64)
    best = None if state["best"] is None else (state["best"][0], np.asarray(state["best"][1], dtype=np.float64))
    return (state["step"], np.asarray(state["psi"], dtype=np.float64), np.asarray(state["first"], dtype=np.float64),
            np.asarray(state["second"], dtype=np.float64), list(state["trace"]), best, state["previous"], state["calm"])


def _adam(problem: _Problem, ratio: float, rho: float, on_step, estimate, resume: dict | None = None,
          checkpoint=None) -> tuple[np.ndarray, list[dict], bool]:
    """Adam on psi with clipping; stops after ``patience`` steps of relative objective change < tolerance.

    Returns (psi, trace, converged): the best objective visited for the deterministic implicit
    estimator, the last iterate for the noisy reinforce one. ``checkpoint(state)`` receives the
    optimiser's state after every step; passing that state back as ``resume`` continues from it.
    """
    config = problem.config
    rng = np.random.default_rng([config.seed, 1])
    psi = np.clip(np.log(np.asarray(config.init, dtype=np.float64)), *LOG_BOUNDS)
    first, second = np.zeros(2), np.zeros(2)
    start_step, trace, best, previous, calm = 0, [], None, None, 0
    if resume is not None:
        start_step, psi, first, second, trace, best, previous, calm = _restore(problem, resume, rng)
    for step in range(start_step, config.steps):
        if calm >= config.patience:
            break
        start = time.perf_counter()
        evaluation = estimate(problem, psi, ratio, rng)
        gradient = evaluation.gradient + rho * _kl_gradient(psi)
        record = _record(problem, ratio, step, psi, evaluation, rho, time.perf_counter() - start)
        trace.append(record)
        if on_step is not None:
            on_step(step, {**record, "ratio": ratio})
        if best is None or record["objective"] < best[0]:
            best = (record["objective"], psi.copy())
        change = None if previous is None else abs(record["objective"] - previous) / max(abs(previous), 1e-12)
        calm = calm + 1 if change is not None and change < config.tolerance else 0
        previous = record["objective"]
        if calm < config.patience:
            first = ADAM[0] * first + (1 - ADAM[0]) * gradient
            second = ADAM[1] * second + (1 - ADAM[1]) * gradient**2
            corrected = first / (1 - ADAM[0] ** (step + 1)), second / (1 - ADAM[1] ** (step + 1))
            psi = np.clip(psi - config.learning_rate * corrected[0] / (np.sqrt(corrected[1]) + ADAM[2]), *LOG_BOUNDS)
        if checkpoint is not None:
            checkpoint(_adam_state(problem, step + 1, psi, first, second, trace, best, previous, calm, rng))
    final = best[1] if estimate is _implicit else psi
    return final, trace, calm >= config.patience


def _grid_values(size: int) -> np.ndarray:
    return np.geomspace(*GRID_RANGE, size)


def _evaluate_grid(problem: _Problem, ratio: float, alphas, betas, rho: float, on_step=None):
    """J (len(alphas), len(betas)) on the grid, snake order for warm starts; trace of every point."""
    values = np.full((len(alphas), len(betas)), np.nan)
    trace = []
    for i, alpha in enumerate(alphas):
        columns = range(len(betas)) if i % 2 == 0 else reversed(range(len(betas)))
        for j in columns:
            start = time.perf_counter()
            psi = np.log([alpha, betas[j]])
            evaluation = _relaxed(problem, psi, ratio, with_gradient=False)
            values[i, j] = evaluation.J
            record = _record(problem, ratio, len(trace), psi, evaluation, rho, time.perf_counter() - start)
            trace.append(record)
            if on_step is not None:
                on_step(record["step"], {**record, "ratio": ratio})
    return values, trace


def _grid(problem: _Problem, ratio: float, rho: float, on_step, resume=None, checkpoint=None
          ) -> tuple[np.ndarray, list[dict], bool]:
    """argmin of the objective over the log grid (one pass; a resumed run evaluates the grid again)."""
    alphas = betas = _grid_values(problem.config.grid_size)
    values, trace = _evaluate_grid(problem, ratio, alphas, betas, rho, on_step)
    kl = np.array([[policy.kl_to_uniform(a, b) for b in betas] for a in alphas])
    objective = values + rho * kl
    i, j = np.unravel_index(int(np.argmin(objective)), objective.shape)
    problem.landscape = {"alpha": alphas.tolist(), "beta": betas.tolist(), "J": values.tolist(),
                         "objective": objective.tolist()}
    return np.log([alphas[i], betas[j]]), trace, True


ESTIMATORS: dict[str, Callable] = {
    "implicit": lambda problem, ratio, rho, on_step, **state: _adam(problem, ratio, rho, on_step, _implicit, **state),
    "reinforce": lambda problem, ratio, rho, on_step, **state: _adam(problem, ratio, rho, on_step, _reinforce,
                                                                     **state),
    "grid": _grid,
}


# ----------------------------------------------------------------------------- public entry points


def _j_scale(problem: _Problem) -> float:
    """max - min of J over SCALE_GRID^2 at SCALE_RATIO: the dataset's unit of J."""
    values, _ = _evaluate_grid(problem, SCALE_RATIO, SCALE_GRID, SCALE_GRID, 0.0)
    problem.reset()
    return float(np.nanmax(values) - np.nanmin(values))


def optimise_policy(features, teacher_logits, labels, *, ratios, axis_values=None, kd: KDConfig = KDConfig(),
                    estimator: str = "implicit", axis: str = "influence", steps: int = 40,
                    learning_rate: float = 0.1, shrinkage: float = 1.0, stratify: bool = True, seed: int = 0,
                    folds: int = 2, val_fraction: float = 0.5, init=(1.0, 1.0), tolerance: float = 1e-4,
                    patience: int = 5, reinforce_samples: int = 4, grid_size: int = 7, mu: float | None = None,
                    bias_damping: float = 1e-3, on_step=None, checkpoint=None, resume: dict | None = None,
                    on_result=None) -> list[PolicyResult]:
    """Learn (alpha, beta) for each pruning ratio in ``ratios``; one PolicyResult per ratio.

    features (N, d), teacher_logits (N, C), labels (N,) int. axis_values (N,): what the Beta ranks,
    larger = more helpful / easier (u near 1); None computes ``AXES[axis]``. mu None: chosen by
    ``proxy.choose_mu``. All ratios share the standardised features, split, mu and full fits (warm
    start). ``on_step(step, info)`` gets each trace record plus ``ratio``; ``on_result(result)`` each
    finished ratio's PolicyResult at once.

    Survives a kill: ``checkpoint(state)`` receives a JSON-able dict after the setup and after every
    outer step (the chosen mu, the scale of J, the current ratio and its optimiser state); calling
    again with the same arguments and ``resume=state`` skips the setup and continues that ratio from
    its last step (ratios finished before are the caller's to skip). The result equals an
    uninterrupted run up to the inner solver's tolerance.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
    if axis_values is None:
        if axis not in AXES:
            raise ValueError(f"unknown axis {axis!r}; choose one of {sorted(AXES)}")
        axis_values = AXES[axis](features, teacher_logits, labels, kd=kd, seed=seed)
    config = PolicyConfig(estimator=estimator, axis=axis, steps=steps, learning_rate=learning_rate,
                          shrinkage=shrinkage, stratify=stratify, seed=seed, folds=folds, val_fraction=val_fraction,
                          init=tuple(init), tolerance=tolerance, patience=patience,
                          reinforce_samples=reinforce_samples, grid_size=grid_size)
    ratios = [float(r) for r in np.atleast_1d(ratios)]
    for ratio in ratios:
        policy.k_for_ratio(len(labels), ratio)  # validates the ratio before any work
    resume = resume or {}
    problem = _prepare(features, teacher_logits, labels, axis_values, kd=kd, mu=mu, bias_damping=bias_damping,
                       config=config, per_sample_mu=resume.get("per_sample_mu"))
    j_scale = resume["j_scale"] if "j_scale" in resume else (_j_scale(problem) if shrinkage > 0 else None)
    c = shrinkage * j_scale if j_scale is not None else 0.0
    setup = {"per_sample_mu": problem.per_sample_mu, "j_scale": j_scale}
    if checkpoint is not None:
        checkpoint(dict(setup))
    results = []
    for ratio in ratios:
        problem.reset()
        problem.landscape = None
        state = {}
        if checkpoint is not None:
            state["checkpoint"] = lambda adam, ratio=ratio: checkpoint({**setup, "ratio": ratio, "adam": adam})
        if resume.get("ratio") == ratio and "adam" in resume:
            state["resume"] = resume["adam"]
        psi, trace, converged = ESTIMATORS[estimator](problem, ratio, shrinkage_weight(ratio, c), on_step, **state)
        alpha, beta = float(np.exp(psi[0])), float(np.exp(psi[1]))
        k = policy.k_for_ratio(len(problem.labels), ratio)
        indices = policy.sample_subset(problem.u, problem.labels, k, alpha, beta, seed=seed, stratify=stratify)
        logger.info("policy r=%.2f: alpha %.3g beta %.3g after %d steps (J %.5g -> %.5g)", ratio, alpha, beta,
                    len(trace), trace[0]["J"], trace[-1]["J"])
        results.append(PolicyResult(ratio, k, alpha, beta, trace, estimator, axis, float(c), problem.mu, indices,
                                    converged, j_scale, problem.landscape, len(problem.folds)))
        if on_result is not None:
            on_result(results[-1])
    return results


def landscape(features, teacher_logits, labels, *, ratio: float, axis_values, alphas=None, betas=None,
              kd: KDConfig = KDConfig(), stratify: bool = True, seed: int = 0, folds: int = 2,
              val_fraction: float = 0.5, mu: float | None = None, bias_damping: float = 1e-3,
              on_step=None) -> dict:
    """J on an (alpha, beta) grid, for the app's heatmap.

    Returns {"alpha": [...], "beta": [...], "J": (len(alpha), len(beta)) nested list (rows = alpha),
    "kl": same shape, "mu": float}. Default grid: 7 geometric values in [1/8, 8] (contains 1).
    """
    config = PolicyConfig(stratify=stratify, seed=seed, folds=folds, val_fraction=val_fraction)
    problem = _prepare(features, teacher_logits, labels, axis_values, kd=kd, mu=mu, bias_damping=bias_damping,
                       config=config)
    alphas = _grid_values(7) if alphas is None else np.asarray(alphas, dtype=np.float64)
    betas = _grid_values(7) if betas is None else np.asarray(betas, dtype=np.float64)
    values, _ = _evaluate_grid(problem, ratio, alphas, betas, 0.0, on_step)
    kl = [[policy.kl_to_uniform(a, b) for b in betas] for a in alphas]
    return {"alpha": alphas.tolist(), "beta": betas.tolist(), "J": values.tolist(), "kl": kl, "mu": problem.mu}

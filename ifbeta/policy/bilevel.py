"""Bilevel optimisation of the Beta policy's (alpha, beta) (docs/METHOD.md section 5) -> trace.

Outer variables psi = (log alpha, log beta). Outer objective

    objective(psi) = J(psi) + rho(r) * KL(Beta(alpha, beta) || Beta(alpha0, beta0)),   rho(r) = c * r / (1 - r)
    J(psi)         = L_V(theta*(pi(psi)))           (validation KD loss of the proxy, lower is better)

``start`` (``PolicyConfig.start``) picks (alpha0, beta0) and where psi starts: "uniform" shrinks
towards U(0, 1) = Beta(1, 1) and starts at ``init``; "ratio-adaptive" starts at and shrinks towards
``policy.ratio_adaptive_prior(r)`` (harder samples favoured at low r, easier at high r, uniform at
``policy.CROSSOVER_RATIO``).

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

The parts, in the order they build on each other: ``axes`` (what the Beta ranks, ``AXES``),
``inner`` (the split, the weighted fits and L_V), ``hypergradient`` (J and dJ/dpsi at one psi),
``landscape`` (J over a grid, the scale of J), ``estimators`` (the outer loop, ``ESTIMATORS``:
``implicit``, ``reinforce``, ``grid``) and this module, which runs them for every ratio.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from ifbeta.config import KDConfig, PolicyConfig, ProxyConfig
from ifbeta.policy import axes, estimators, inner, landscape
from ifbeta.policy import beta as policy

logger = logging.getLogger(__name__)

__all__ = ["PolicyResult", "optimise_policy", "shrinkage_weight"]


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


def shrinkage_weight(ratio: float, c: float) -> float:
    """rho(r) = c * r / (1 - r): the KL penalty grows as data gets scarce."""
    return c * ratio / (1.0 - ratio)


def optimise_policy(features, teacher_logits, labels, *, ratios, axis_values=None, kd: KDConfig = KDConfig(),
                    estimator: str = "implicit", axis: str = "influence", steps: int = 40,
                    learning_rate: float = 0.1, shrinkage: float = 1.0, stratify: bool = True, seed: int = 0,
                    folds: int = 2, val_fraction: float = 0.5, init=(1.0, 1.0), tolerance: float = 1e-4,
                    patience: int = 5, reinforce_samples: int = 4, grid_size: int = 7, start: str = "uniform",
                    mu: float | None = None,
                    bias_damping: float = 1e-3, proxy: ProxyConfig | None = None, on_step=None, checkpoint=None,
                    resume: dict | None = None, on_result=None, device: str = "cpu") -> list[PolicyResult]:
    """Learn (alpha, beta) for each pruning ratio in ``ratios``; one PolicyResult per ratio.

    features (N, d), teacher_logits (N, C), labels (N,) int. axis_values (N,): what the Beta ranks,
    larger = more helpful / easier (u near 1); None computes ``axes.AXES[axis]``. mu None: chosen by
    ``proxy.choose_mu``. proxy: the proxy family J is measured with and its settings
    (``influence.families``; None = the linear proxy with kd and bias_damping). All ratios share the standardised features, split, mu and full fits (warm
    start). ``on_step(step, info)`` gets each trace record plus ``ratio``; ``on_result(result)`` each
    finished ratio's PolicyResult at once. device: where the proxy's math runs ("cpu" or "cuda",
    ``InfluenceConfig.device``): the choice of mu, every inner fit and hypergradient, and the axis values when
    they are computed here; the result is the same up to float32 round-off.

    Survives a kill: ``checkpoint(state)`` receives a JSON-able dict after the setup and after every
    outer step (the chosen mu, the scale of J, the current ratio and its optimiser state); calling
    again with the same arguments and ``resume=state`` skips the setup and continues that ratio from
    its last step (ratios finished before are the caller's to skip). The result equals an
    uninterrupted run up to the inner solver's tolerance.
    """
    axis_values = _axis_values(features, teacher_logits, labels, axis_values, estimator=estimator, axis=axis, kd=kd,
                               seed=seed, device=device)
    config = PolicyConfig(estimator=estimator, axis=axis, steps=steps, learning_rate=learning_rate,
                          shrinkage=shrinkage, stratify=stratify, seed=seed, folds=folds, val_fraction=val_fraction,
                          init=tuple(init), tolerance=tolerance, patience=patience,
                          reinforce_samples=reinforce_samples, grid_size=grid_size, start=start)
    ratios = [float(r) for r in np.atleast_1d(ratios)]
    for ratio in ratios:
        policy.k_for_ratio(len(labels), ratio)  # validates the ratio before any work
        policy.policy_prior(start, ratio)  # and the start
    resume = resume or {}
    problem = inner.prepare(features, teacher_logits, labels, axis_values, kd=kd, mu=mu, bias_damping=bias_damping,
                            config=config, per_sample_mu=resume.get("per_sample_mu"), proxy=proxy, device=device)
    setup = _setup(problem, resume, checkpoint)
    results = []
    for ratio in ratios:
        results.append(_learn_ratio(problem, ratio, setup, on_step=on_step, checkpoint=checkpoint, resume=resume))
        if on_result is not None:
            on_result(results[-1])
    return results


def _axis_values(features, teacher_logits, labels, axis_values, *, estimator: str, axis: str, kd: KDConfig,
                 seed: int, device: str = "cpu"):
    """The given axis values, or ``axes.AXES[axis]`` computed; refuses an unknown estimator or axis."""
    if estimator not in estimators.ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {sorted(estimators.ESTIMATORS)}")
    if axis_values is not None:
        return axis_values
    if axis not in axes.AXES:
        raise ValueError(f"unknown axis {axis!r}; choose one of {sorted(axes.AXES)}")
    return axes.AXES[axis](features, teacher_logits, labels, kd=kd, seed=seed, device=device)


def _setup(problem: inner.Problem, resume: dict, checkpoint) -> dict:
    """What every ratio shares and a resumed run reads back: {"per_sample_mu", "j_scale"} (j_scale None
    when shrinkage is 0); measured here unless ``resume`` holds it, then handed to ``checkpoint``."""
    shrinkage = problem.config.shrinkage
    j_scale = resume["j_scale"] if "j_scale" in resume else (landscape.j_scale(problem) if shrinkage > 0 else None)
    setup = {"per_sample_mu": problem.per_sample_mu, "j_scale": j_scale}
    if checkpoint is not None:
        checkpoint(dict(setup))
    return setup


def _learn_ratio(problem: inner.Problem, ratio: float, setup: dict, *, on_step, checkpoint, resume: dict
                 ) -> PolicyResult:
    """Run the configured estimator for one ratio from the full fits (or from ``resume``'s step); the
    problem's prior (and, ratio-adaptive, its config's ``init``) are this ratio's."""
    config = problem.config
    c = config.shrinkage * setup["j_scale"] if setup["j_scale"] is not None else 0.0
    problem.reset()
    problem.landscape = None
    problem.prior = policy.policy_prior(config.start, ratio)
    if config.start == "ratio-adaptive":
        problem.config = config = replace(config, init=problem.prior)
    state = {}
    if checkpoint is not None:
        state["checkpoint"] = lambda document: checkpoint({**setup, "ratio": ratio, "adam": document})
    if resume.get("ratio") == ratio and "adam" in resume:
        state["resume"] = resume["adam"]
    estimate = estimators.ESTIMATORS[config.estimator]
    psi, trace, converged = estimate(problem, ratio, shrinkage_weight(ratio, c), on_step, **state)
    return _result(problem, ratio, psi, trace, converged, c=c, j_scale=setup["j_scale"])


def _result(problem: inner.Problem, ratio: float, psi: np.ndarray, trace: list[dict], converged: bool, *, c: float,
            j_scale: float | None) -> PolicyResult:
    """The PolicyResult at psi, with the final subset drawn from the whole pool with the config's seed."""
    config = problem.config
    alpha, beta = float(np.exp(psi[0])), float(np.exp(psi[1]))
    k = policy.k_for_ratio(len(problem.labels), ratio)
    indices = policy.sample_subset(problem.u, problem.labels, k, alpha, beta, seed=config.seed,
                                   stratify=config.stratify)
    logger.info("policy r=%.2f: alpha %.3g beta %.3g after %d steps (J %.5g -> %.5g)", ratio, alpha, beta,
                len(trace), trace[0]["J"], trace[-1]["J"])
    return PolicyResult(ratio, k, alpha, beta, trace, config.estimator, config.axis, float(c), problem.mu, indices,
                        converged, j_scale, problem.landscape, len(problem.folds))

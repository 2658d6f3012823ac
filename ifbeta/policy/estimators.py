"""The outer loop over psi = (log alpha, log beta) (docs/METHOD.md section 5): Adam, its checkpoints, ``ESTIMATORS``.

Every estimator is ``estimator(problem, ratio, rho, on_step, *, resume=None, checkpoint=None) ->
(psi (2,), trace, converged)`` and minimises objective(psi) = J(psi) + rho KL(Beta(alpha, beta) ||
Beta(problem.prior)) (lower is better; the prior is U(0, 1) unless ratio-adaptive). ``implicit`` and
``reinforce`` run Adam on psi, clipped to
``LOG_BOUNDS``, for at most ``steps`` steps or until the relative objective change stays below
``tolerance`` for ``patience`` steps; ``grid`` takes the argmin over a log grid (``landscape``).

An Adam run survives a kill: ``checkpoint(document)`` receives a JSON-able document after every step
(the optimiser's state, the random generator's state and each fold's ``warm_state``); passing it back as
``resume`` continues from that step and ends where an uninterrupted run ends.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ifbeta.policy import hypergradient, inner, landscape

__all__ = ["ADAM", "ESTIMATORS", "LOG_BOUNDS", "adam"]

LOG_BOUNDS = (-3.0, 4.0)  # clip of log alpha, log beta: alpha, beta in [0.05, 54.6]
ADAM = (0.9, 0.999, 1e-8)  # beta1, beta2, eps


@dataclass
class _AdamState:
    """Adam between steps: the next ``step``, psi (2,), the moments (2,) each, the trace so far, the
    best (objective, psi) visited, the last objective and how many calm steps in a row."""

    step: int
    psi: np.ndarray
    first: np.ndarray = field(default_factory=lambda: np.zeros(2))
    second: np.ndarray = field(default_factory=lambda: np.zeros(2))
    trace: list = field(default_factory=list)
    best: tuple | None = None
    previous: float | None = None
    calm: int = 0


def _checkpoint_document(problem: inner.Problem, state: _AdamState, rng: np.random.Generator) -> dict:
    """Everything ``adam`` needs to continue from ``state.step``, as plain JSON-able values."""
    best = state.best
    return {"step": state.step, "psi": state.psi.tolist(), "first": state.first.tolist(),
            "second": state.second.tolist(), "trace": state.trace,
            "best": None if best is None else [best[0], best[1].tolist()], "previous": state.previous,
            "calm": state.calm, "rng": rng.bit_generator.state,
            "warm": [fold.warm_state() for fold in problem.folds]}


def _restore(problem: inner.Problem, document: dict, rng: np.random.Generator) -> _AdamState:
    """The state of a ``_checkpoint_document``; sets ``rng`` and the folds' warm starts as they were."""
    rng.bit_generator.state = document["rng"]
    warm = document.get("warm")
    if warm is None:  # a checkpoint written before proxy families: the linear folds' thetas and adjoints
        warm = [{"theta": theta, "adjoint": adjoint} for theta, adjoint in zip(document["thetas"], document["adjoints"])]
    for fold, state in zip(problem.folds, warm):
        fold.restore(state)
    best = document["best"]
    return _AdamState(document["step"], np.asarray(document["psi"], dtype=np.float64),
                      np.asarray(document["first"], dtype=np.float64), np.asarray(document["second"], dtype=np.float64),
                      list(document["trace"]),
                      None if best is None else (best[0], np.asarray(best[1], dtype=np.float64)),
                      document["previous"], document["calm"])


def _kl_gradient(problem: inner.Problem, psi: np.ndarray) -> np.ndarray:
    """d KL(Beta(alpha, beta) || Beta(problem.prior)) / d psi, (2,) (the prior is U(0, 1) unless ratio-adaptive)."""
    psi_t = torch.tensor(psi, dtype=torch.float64, requires_grad=True)
    return torch.autograd.grad(inner.kl_torch(problem, psi_t[0], psi_t[1]), psi_t)[0].numpy()


def _adam_update(state: _AdamState, gradient: np.ndarray, learning_rate: float) -> None:
    """One bias-corrected Adam step of psi against ``gradient`` (2,), clipped to LOG_BOUNDS."""
    beta1, beta2, eps = ADAM
    state.first = beta1 * state.first + (1 - beta1) * gradient
    state.second = beta2 * state.second + (1 - beta2) * gradient**2
    corrected = state.first / (1 - beta1 ** (state.step + 1)), state.second / (1 - beta2 ** (state.step + 1))
    state.psi = np.clip(state.psi - learning_rate * corrected[0] / (np.sqrt(corrected[1]) + eps), *LOG_BOUNDS)


def _outer_step(problem: inner.Problem, state: _AdamState, ratio: float, rho: float, estimate: Callable,
                rng: np.random.Generator, on_step) -> None:
    """Evaluate the objective at ``state.psi``, record it, update the best and calm counters, and move
    psi by one Adam step unless the run has just converged."""
    config = problem.config
    start = time.perf_counter()
    evaluation = estimate(problem, state.psi, ratio, rng)
    gradient = evaluation.gradient + rho * _kl_gradient(problem, state.psi)
    record = inner.trace_record(problem, ratio, state.step, state.psi, evaluation, rho, time.perf_counter() - start)
    state.trace.append(record)
    if on_step is not None:
        on_step(state.step, {**record, "ratio": ratio})
    objective = record["objective"]
    if state.best is None or objective < state.best[0]:
        state.best = (objective, state.psi.copy())
    previous = state.previous
    change = None if previous is None else abs(objective - previous) / max(abs(previous), 1e-12)
    state.calm = state.calm + 1 if change is not None and change < config.tolerance else 0
    state.previous = objective
    if state.calm < config.patience:
        _adam_update(state, gradient, config.learning_rate)
    state.step += 1


def adam(problem: inner.Problem, ratio: float, rho: float, on_step, *, estimate: Callable, keep_best: bool,
         resume: dict | None = None, checkpoint=None) -> tuple[np.ndarray, list[dict], bool]:
    """Adam on psi with ``estimate(problem, psi, ratio, rng) -> inner.Evaluation`` -> (psi, trace, converged).

    psi is the best objective visited with ``keep_best`` (the deterministic implicit estimator), else
    the last iterate (the noisy reinforce one). ``checkpoint(document)`` receives the state after every
    step; passing that document back as ``resume`` continues from it.
    """
    config = problem.config
    rng = np.random.default_rng([config.seed, 1])
    if resume is None:
        state = _AdamState(0, np.clip(np.log(np.asarray(config.init, dtype=np.float64)), *LOG_BOUNDS))
    else:
        state = _restore(problem, resume, rng)
    while state.step < config.steps and state.calm < config.patience:
        _outer_step(problem, state, ratio, rho, estimate, rng, on_step)
        if checkpoint is not None:
            checkpoint(_checkpoint_document(problem, state, rng))
    final = state.best[1] if keep_best else state.psi
    return final, state.trace, state.calm >= config.patience


ESTIMATORS: dict[str, Callable] = {
    "implicit": functools.partial(adam, estimate=hypergradient.implicit, keep_best=True),
    "reinforce": functools.partial(adam, estimate=hypergradient.reinforce, keep_best=False),
    "grid": landscape.grid_search,
}
"""Estimator name -> ``estimator(problem, ratio, rho, on_step, *, resume=None, checkpoint=None)``."""

"""J over an (alpha, beta) grid (docs/METHOD.md section 5): the app's heatmap, the scale of J, the ``grid`` estimator.

J (the proxy's validation KD loss at the relaxed weights pi(alpha, beta), lower is better) is
evaluated at every grid point without gradient, in snake order so each fit is warm-started from a
neighbour. ``j_scale`` = max - min of J over ``SCALE_GRID``^2 at ``SCALE_RATIO``: the dataset's own
unit of J, which makes one ``shrinkage`` mean the same on every dataset.
"""
from __future__ import annotations

import time

import numpy as np

from ifbeta.config import KDConfig, PolicyConfig, ProxyConfig
from ifbeta.policy import beta as policy
from ifbeta.policy import hypergradient, inner

__all__ = ["GRID_RANGE", "SCALE_GRID", "SCALE_RATIO", "evaluate_grid", "grid_search", "grid_values", "j_scale",
           "landscape"]

SCALE_GRID = (0.25, 1.0, 4.0)  # (alpha, beta) values of the 3 x 3 grid that measures the scale of J
SCALE_RATIO = 0.5  # pruning ratio at which the scale of J is measured
GRID_RANGE = (0.125, 8.0)  # geometric grid of the `grid` estimator (odd sizes contain 1 = uniform)


def grid_values(size: int) -> np.ndarray:
    """(size,) geometric values over ``GRID_RANGE``; odd sizes contain 1 (uniform)."""
    return np.geomspace(*GRID_RANGE, size)


def evaluate_grid(problem: inner.Problem, ratio: float, alphas, betas, rho: float, on_step=None
                  ) -> tuple[np.ndarray, list[dict]]:
    """J (len(alphas), len(betas)) on the grid, snake order for warm starts; trace of every point."""
    values = np.full((len(alphas), len(betas)), np.nan)
    trace = []
    for i, alpha in enumerate(alphas):
        columns = range(len(betas)) if i % 2 == 0 else reversed(range(len(betas)))
        for j in columns:
            start = time.perf_counter()
            psi = np.log([alpha, betas[j]])
            evaluation = hypergradient.relaxed(problem, psi, ratio, with_gradient=False)
            values[i, j] = evaluation.J
            record = inner.trace_record(problem, ratio, len(trace), psi, evaluation, rho, time.perf_counter() - start)
            trace.append(record)
            if on_step is not None:
                on_step(record["step"], {**record, "ratio": ratio})
    return values, trace


def j_scale(problem: inner.Problem) -> float:
    """max - min of J over SCALE_GRID^2 at SCALE_RATIO: the dataset's unit of J (> 0)."""
    values, _ = evaluate_grid(problem, SCALE_RATIO, SCALE_GRID, SCALE_GRID, 0.0)
    problem.reset()
    return float(np.nanmax(values) - np.nanmin(values))


def grid_search(problem: inner.Problem, ratio: float, rho: float, on_step, resume=None, checkpoint=None
                ) -> tuple[np.ndarray, list[dict], bool]:
    """The ``grid`` estimator: argmin of the objective J + rho KL over the log grid -> (psi, trace, True).
    One pass (a resumed run evaluates the grid again); the J landscape is left in ``problem.landscape``."""
    alphas = betas = grid_values(problem.config.grid_size)
    values, trace = evaluate_grid(problem, ratio, alphas, betas, rho, on_step)
    kl = np.array([[inner.kl(problem, a, b) for b in betas] for a in alphas])
    objective = values + rho * kl
    i, j = np.unravel_index(int(np.argmin(objective)), objective.shape)
    problem.landscape = {"alpha": alphas.tolist(), "beta": betas.tolist(), "J": values.tolist(),
                         "objective": objective.tolist()}
    return np.log([alphas[i], betas[j]]), trace, True


def landscape(features, teacher_logits, labels, *, ratio: float, axis_values, alphas=None, betas=None,
              kd: KDConfig = KDConfig(), stratify: bool = True, seed: int = 0, folds: int = 2,
              val_fraction: float = 0.5, mu: float | None = None, bias_damping: float = 1e-3,
              proxy: ProxyConfig | None = None, on_step=None, device: str = "cpu") -> dict:
    """J on an (alpha, beta) grid, for the app's heatmap.

    features (N, d), teacher_logits (N, C), labels (N,) int, axis_values (N,) (larger = keep first).
    Returns {"alpha": [...], "beta": [...], "J": (len(alpha), len(beta)) nested list (rows = alpha),
    "kl": same shape, "mu": float}. proxy: the family and settings (None: linear). Default grid: 7 geometric values in [1/8, 8] (contains 1).
    """
    config = PolicyConfig(stratify=stratify, seed=seed, folds=folds, val_fraction=val_fraction)
    problem = inner.prepare(features, teacher_logits, labels, axis_values, kd=kd, mu=mu, bias_damping=bias_damping,
                            config=config, proxy=proxy, device=device)
    alphas = grid_values(7) if alphas is None else np.asarray(alphas, dtype=np.float64)
    betas = grid_values(7) if betas is None else np.asarray(betas, dtype=np.float64)
    values, _ = evaluate_grid(problem, ratio, alphas, betas, 0.0, on_step)
    kl = [[policy.kl_to_uniform(a, b) for b in betas] for a in alphas]
    return {"alpha": alphas.tolist(), "beta": betas.tolist(), "J": values.tolist(), "kl": kl, "mu": problem.mu}

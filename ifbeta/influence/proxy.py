"""Fitting the KD-aligned linear proxy (docs/METHOD.md, section 2): Newton (dense or matrix-free CG),
the teacher-head start, stratified folds and the choice of mu by validation.

The objective itself (loss, gradient, Hessian, Hessian-vector products) lives in ``objective.py``;
the linear solvers and preconditioners in ``solvers.py``. theta is a (C, d+1) float64 tensor on the
fit's ``device`` (numpy inputs are converted once); lower objective is better.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ifbeta.config import KDConfig
from ifbeta.data.streaming import row_view, take_rows
from ifbeta.influence import sharding, solvers
from ifbeta.influence.objective import HessianOperator, Point, evaluate, hessian, regulariser, validation_loss
from ifbeta.influence.outputs import OutputStore, outputs_along, value_along
from ifbeta.influence.solvers import cholesky_apply, cholesky_factor
from ifbeta.influence.tensors import CHUNK_SIZE, SINGLE, Rows, as_tensor, chunks, resolve_device, single_matmul
from ifbeta.threads import thread_map

logger = logging.getLogger(__name__)

DENSE_NEWTON_LIMIT = 4000  # C (d+1) up to which fit() uses dense Newton, above: Newton-CG
DENSE_ROWS_PER_PARAMETER = 2  # dense Newton also needs N <= 2 C (d+1): building H costs O(N C^2 d^2)
REFRESH_PRODUCTS = 12  # CG products per Newton step (or solve) above which a reused Hessian factor is rebuilt


def use_dense(rows: int, size: int) -> bool:
    """Dense Newton/Cholesky when the Hessian is small and cheap to build, else matrix-free CG.

    Building H is O(N C^2 (d+1)^2) against ~70 preconditioned Hessian-vector products of O(N C d):
    measured on CIFAR-10 features (N=5000, C(d+1)=650) Newton-CG fits 3.3x faster than dense."""
    return size <= DENSE_NEWTON_LIMIT and rows <= DENSE_ROWS_PER_PARAMETER * size


@dataclass(frozen=True)
class ProxyFit:
    """Result of :func:`fit`. theta (C, d+1) float64 tensor; grad_norm = ||grad L_in|| at theta (lower is better)."""

    theta: torch.Tensor
    grad_norm: float
    iterations: int
    objective: float
    converged: bool
    products: int = 0  # Hessian-vector products spent (Newton-CG)
    curvature_builds: int = 0  # EKFAC preconditioners built (Newton-CG; two passes over the rows each)


# ----------------------------------------------------------------------------- fitting


def stratified_folds(labels, folds: int, seed: int) -> np.ndarray:
    """Fold id (N,) int64 in [0, folds): within each class a seeded permutation dealt round-robin
    (from a random offset), so every fold gets each class in proportion."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    return assignment


class _NewtonSystem:
    """Newton directions for fit(). Dense: the Cholesky factor of H is reused (a chord step) while the
    last step cut ||grad|| at least fivefold, and refreshed otherwise. Matrix-free: CG on
    HessianOperator products to the relative tolerance ``forcing``, preconditioned by the caller's
    ``preconditioner`` (flat v -> M^-1 v) or else by EKFAC, built at the first iterate and rebuilt by
    the same rule as the dense factor (two passes over the rows each time; CG stays exact to
    ``forcing`` with a stale preconditioner, it only needs more products). With stored outputs, EKFAC's
    input side (solvers.InputTerms: A, its eigenbasis and the rows' projections on it) is kept across
    the builds, so a rebuild after the first reads no rows at all."""

    def __init__(self, problem: dict, dense: bool, preconditioner=None):
        self.problem, self.dense, self.factor, self.preconditioner = problem, dense, None, preconditioner
        self.products, self.curvature_builds, self.ekfac, self.inputs = 0, 0, None, None

    def direction(self, point: Point, rows: Rows, ridge: torch.Tensor, *, forcing: float, refresh: bool):
        theta, flat = point.theta, point.grad.reshape(-1)
        if not self.dense:
            at_point = point.heads is not None or point.outputs is not None
            operator = (HessianOperator.at_point(point, rows, ridge) if at_point
                        else HessianOperator(theta, **self.problem))
            preconditioner = self.preconditioner
            if preconditioner is None:
                if self.ekfac is None or refresh:
                    stored = {}
                    if point.outputs is not None:  # the outputs are stored and A does not depend on theta
                        if self.inputs is None:
                            self.inputs = solvers.InputTerms(self.problem["features"], self.problem["weights"],
                                                             chunk_size=self.problem["chunk_size"],
                                                             device=self.problem["device"])
                        stored = dict(outputs=point.outputs, inputs=self.inputs)
                    self.ekfac = solvers.ekfac_preconditioner(theta, **self.problem, **stored)
                    self.curvature_builds += 1
                preconditioner = self.ekfac
            step, _, _ = solvers.conjugate_gradient(lambda v: operator(v).reshape(-1), flat, tolerance=forcing,
                                            max_iterations=max(50, flat.numel() // 10), preconditioner=preconditioner)
            self.products += operator.products
            return -step.reshape(theta.shape)
        if refresh or self.factor is None:
            self.factor = cholesky_factor(hessian(theta, **self.problem))  # lifted slightly when not PD (mu ~ 0)
        return -cholesky_apply(self.factor, flat).reshape(theta.shape)

    def close(self) -> None:
        """Drop the kept EKFAC input projections (a temporary file at scale)."""
        if self.inputs is not None:
            self.inputs.close()


def _norm(tensor: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor))


def _line_search(point: Point, direction, rows: Rows, ridge: torch.Tensor, change: OutputStore | None = None
                 ) -> Point | None:
    """Backtracking Armijo from ``point`` along ``direction``; full step when the predicted decrease is
    below round-off; None when no step down to 1e-12 decreases enough.

    change None: each trial is evaluated with its gradient (one pass), so the accepted point needs no
    second pass. change an OutputStore (rows re-read at every pass, the iterate's outputs f stored in
    point.outputs): one pass over the features stores df = x direction^T in ``change``, each trial reads
    only the teacher's logits (outputs f + step df), and the accepted step's gradient pass takes its
    outputs from them and stores them as the new iterate's. Both take the same trials."""
    grad, value = point.grad, point.value
    slope = float((grad * direction).sum())
    if slope >= 0:  # not a descent direction (inexact CG): fall back to steepest descent
        direction, slope = -grad, -float((grad * grad).sum())
    if change is None:
        trials = {}  # the latest trial only: a Point over cached rows holds its heads (N, C)

        def trial_value(step: float) -> float:
            trials.clear()
            trials[step] = evaluate(point.theta + step * direction, rows, ridge)
            return trials[step].value

        def accept(step: float) -> Point:
            return trials[step] if step in trials else evaluate(point.theta + step * direction, rows, ridge)
    else:
        outputs = point.outputs
        outputs_along(direction, rows, change)

        def trial_value(step: float) -> float:
            return value_along(point.theta, direction, step, rows, ridge, outputs, change)

        def accept(step: float) -> Point:
            return evaluate(point.theta + step * direction, rows, ridge, store=outputs,
                            known=lambda index: outputs[index] + step * change[index])
    if -slope <= 1e-13 * (1.0 + abs(value)):
        return accept(1.0)
    step = 1.0
    while step > 1e-12:
        if trial_value(step) <= value + 1e-4 * step * slope:
            return accept(step)
        step *= 0.5
    return None


def teacher_head(features, teacher_logits, *, ridge: float = 1e-6, chunk_size: int = CHUNK_SIZE,
                 device=None) -> torch.Tensor:
    """Least-squares head (C, d+1) float64 with [phi, 1] theta^T ~ teacher logits (relative ridge); fit()'s
    cold start. Gram and cross products in float32 matmuls accumulated in float64, the solve in float64.

    The teacher's logits are (nearly) a linear function of its own penultimate features, so this
    lands next to the KD optimum and Newton needs a few steps instead of a few dozen.
    """
    device = resolve_device(device)
    width = features.shape[1] + 1
    gram, cross = torch.zeros((width, width), dtype=torch.float64, device=device), None
    for x, t, _, _ in chunks(features, teacher_logits, np.zeros(len(features), np.int64), None, chunk_size, device):
        gram += single_matmul(x.T, x)
        product = single_matmul(x.T, t.to(SINGLE))  # (d+1, C)
        cross = product if cross is None else cross + product
    if cross is None:  # an empty shard of the rows
        cross = torch.zeros((width, teacher_logits.shape[1]), dtype=torch.float64, device=device)
    gram, cross = sharding.total(gram, cross)
    gram.diagonal().add_(ridge * (float(gram.trace()) / width + 1.0))
    return cholesky_apply(cholesky_factor(gram), cross).T.contiguous()


def fit(features, teacher_logits, labels, *, weights=None, mu: float, kd: KDConfig, bias_damping: float = 1e-3,
        init=None, tolerance: float = 1e-8, max_iterations: int = 100, chunk_size: int = CHUNK_SIZE,
        method: str = "auto", preconditioner=None, device=None, on_iteration=None) -> ProxyFit:
    """theta*(w) = argmin L_in by damped Newton (exact, to round-off).

    Stops when ||grad|| <= tolerance * (1 + ||grad at the start||) (ProxyConfig.tolerance), so a
    warm start is polished relative to how far it started. method: "newton" (dense Hessian +
    Cholesky), "newton-cg" (matrix-free, EKFAC-preconditioned CG on hvp, any size) or "auto" (dense
    when C(d+1) <= DENSE_NEWTON_LIMIT). init (C, d+1) warm-starts; weights (N,) in [0, 1] or None.
    preconditioner: flat v -> M^-1 v for Newton-CG (implies it), e.g. the Hessian factor of a nearby
    fit; ProxyFit.products counts the Hessian-vector products spent. device: where the math runs ("cpu",
    "cuda" or a torch.device; default cpu); features stream there in float32 chunks.
    on_iteration(iterations, theta, grad_norm, products) after the start and after each Newton step; the
    iterates do not depend on ``tolerance`` (the CG forcing is relative to the problem's scale), so a
    looser tolerance stops at an earlier iterate of the same sequence.
    """
    device = resolve_device(device)
    labels = np.asarray(labels)
    classes = np.asarray(teacher_logits[:1]).shape[1]
    width = features.shape[1] + 1
    dense = use_dense(len(labels), classes * width) if method == "auto" else method == "newton"
    dense = dense and preconditioner is None
    problem = dict(features=features, teacher_logits=teacher_logits, labels=labels, weights=weights, mu=mu,
                   bias_damping=bias_damping, kd=kd, chunk_size=chunk_size, device=device)
    rows = Rows(features, teacher_logits, labels, weights, kd=kd, chunk_size=chunk_size, device=device)
    ridge = regulariser((classes, width), mu=mu, bias_damping=bias_damping, device=device)
    # rows re-read at every pass: the iterate's outputs and their change along a direction are stored
    stored = not dense and rows.cached is None
    stores = [OutputStore(len(labels), classes, chunk_size, device) for _ in range(2)] if stored else [None, None]
    try:
        return _newton(problem, rows, ridge, stores, init=init, dense=dense, preconditioner=preconditioner,
                       tolerance=tolerance, max_iterations=max_iterations, on_iteration=on_iteration)
    finally:
        for store in stores:
            if store is not None:
                store.close()


def _newton(problem: dict, rows: Rows, ridge: torch.Tensor, stores, *, init, dense: bool, preconditioner,
            tolerance: float, max_iterations: int, on_iteration) -> ProxyFit:
    """fit()'s start and damped Newton loop. problem: fit's keyword arguments of the objective; stores:
    [outputs, change] OutputStores for rows re-read at every pass, else [None, None]; the rest as fit's."""
    outputs, change = stores
    device = problem["device"]
    origin = torch.zeros(ridge.shape, dtype=torch.float64, device=device)
    # L_in at zero: a cold start's candidate, and (matrix-free) its gradient scales the forcing term below
    zero = evaluate(origin, rows, ridge, with_gradient=not dense) if init is None or not dense else None
    if init is not None:
        point = evaluate(as_tensor(init, device).clone(), rows, ridge, store=outputs)
    else:  # cold start: the better of zero and the teacher's least-squares head
        head = teacher_head(problem["features"], problem["teacher_logits"], chunk_size=problem["chunk_size"],
                            device=device)
        start = evaluate(head, rows, ridge, store=outputs)
        point = start
        if zero.value <= start.value:  # zero wins; dense Newton evaluated it without its gradient
            point = zero if not dense and outputs is None else evaluate(origin, rows, ridge, store=outputs)
    threshold = tolerance * (1.0 + _norm(point.grad))
    # Newton-CG forcing term (Eisenstat-Walker), relative to the problem's scale, not the warm start's
    scale = 1.0 if dense else 1.0 + _norm(zero.grad)
    del zero
    system = _NewtonSystem(problem, dense, preconditioner)
    report = on_iteration or (lambda *args: None)
    report(0, point.theta, _norm(point.grad), 0)
    try:
        point, iterations = _iterate(point, rows, ridge, system, change, threshold=threshold, scale=scale,
                                     max_iterations=max_iterations, report=report)
    finally:
        system.close()
    theta, value, grad = point.theta, point.value, point.grad
    norm = _norm(grad)
    return ProxyFit(theta=theta, grad_norm=norm, iterations=iterations, objective=value, converged=norm <= threshold,
                    products=system.products, curvature_builds=system.curvature_builds)


def _iterate(point: Point, rows: Rows, ridge: torch.Tensor, system: _NewtonSystem, change, *, threshold: float,
             scale: float, max_iterations: int, report) -> tuple[Point, int]:
    """_newton's damped Newton steps from ``point`` until ||grad|| <= threshold: (last point, steps taken)."""
    iterations, previous_norm = 0, np.inf
    while _norm(point.grad) > threshold and iterations < max_iterations:
        norm = _norm(point.grad)
        direction = system.direction(point, rows, ridge, forcing=min(0.5, np.sqrt(norm / scale)),
                                     refresh=norm > 0.2 * previous_norm)
        trial = _line_search(point, direction, rows, ridge, change)
        previous_norm = norm
        if trial is None:
            logger.warning("proxy fit: line search stalled at ||grad|| = %.3g", norm)
            break
        point, iterations = trial, iterations + 1
        report(iterations, point.theta, _norm(point.grad), system.products)
        logger.debug("proxy fit: iteration %d objective %.12g ||grad|| %.3g", iterations, point.value,
                     _norm(point.grad))
    return point, iterations


class _DataCurvature:
    """Preconditioners for a sequence of fits on one training set that differ in mu (choose_mu).

    Where dense Newton is too costly per iteration (N > 2 C(d+1)) but C(d+1) <= DENSE_NEWTON_LIMIT,
    the unregularised Hessian is built once at a fitted theta and each fit gets the Cholesky factor
    of it plus its own ridge; rebuilt when a fit needed many products. Elsewhere: None (fit's default)."""

    def __init__(self, features, teacher_logits, labels, *, kd, bias_damping, chunk_size, device):
        classes = np.asarray(teacher_logits[:1]).shape[1]
        self.size = classes * (features.shape[1] + 1)
        self.enabled = self.size <= DENSE_NEWTON_LIMIT and not use_dense(len(labels), self.size)
        self.problem = dict(features=features, teacher_logits=teacher_logits, labels=labels, kd=kd,
                            chunk_size=chunk_size, device=device)
        self.bias_damping, self.matrix, self.shape = bias_damping, None, (classes, features.shape[1] + 1)

    def preconditioner(self, mu: float):
        if self.matrix is None:
            return None
        ridge = regulariser(self.shape, mu=mu, bias_damping=self.bias_damping, device=self.matrix.device).reshape(-1)
        factor = cholesky_factor(self.matrix + torch.diag(ridge))
        return lambda vector: cholesky_apply(factor, vector)

    def update(self, theta, result: ProxyFit) -> None:
        if self.enabled and (self.matrix is None or result.products > REFRESH_PRODUCTS * max(1, result.iterations)):
            self.matrix = hessian(theta, **self.problem, mu=0.0, bias_damping=0.0)


def choose_mu(features, teacher_logits, labels, *, kd: KDConfig, grid=(1e-3, 1e-2, 1e-1, 1.0, 10.0), folds: int = 2,
              seed: int = 0, bias_damping: float = 1e-3, tolerance: float = 1e-8, max_iterations: int = 100,
              chunk_size: int = CHUNK_SIZE, device=None):
    """Pick the ridge by held-out L_V (lower is better); the fits run on ``device`` (default cpu).

    Grid units: a grid value g is the ridge per 1000 training samples, i.e. a fit on n samples uses
    mu = g * n / 1000 (mean-form ridge g / 1000), so the grid means the same at every dataset size.
    Split as in influence.score: ``folds`` stratified folds (seeded); for each fold k, fit on fold k
    and measure L_V on the other folds; average over folds. Returns (mu, table): mu in SUM units for a
    training set of one fold, n = N / folds (what score() fits on); table rows {grid, mu, val_loss}.
    """
    labels = np.asarray(labels)
    assignment = stratified_folds(labels, folds, seed)
    order = np.argsort(grid)[::-1]  # strongest ridge first: each fit warm-starts the next

    def fold_losses(k: int) -> np.ndarray:
        """Held-out L_V of fold k's fits, one per grid value."""
        train, held_out = np.flatnonzero(assignment == k), np.flatnonzero(assignment != k)
        x_train, t_train = take_rows(features, train), take_rows(teacher_logits, train)
        problem = dict(kd=kd, bias_damping=bias_damping, tolerance=tolerance, max_iterations=max_iterations,
                       chunk_size=chunk_size, device=device)
        theta, curvature = None, _DataCurvature(x_train, t_train, labels[train], kd=kd, bias_damping=bias_damping,
                                                chunk_size=chunk_size, device=device)
        values = np.zeros(len(grid))
        for g_index in order:
            mu = grid[g_index] * len(train) / 1000.0
            result = fit(x_train, t_train, labels[train], mu=mu, init=theta, **problem,
                         preconditioner=curvature.preconditioner(mu))
            theta = result.theta
            curvature.update(theta, result)
            values[g_index] = validation_loss(theta, row_view(features, held_out), row_view(teacher_logits, held_out),
                                              labels[held_out], kd=kd, chunk_size=chunk_size, device=device)
        return values

    losses = sum(thread_map(fold_losses, range(folds))) / folds
    scale = len(labels) / folds / 1000.0
    table = [{"grid": float(g), "mu": float(g) * scale, "val_loss": float(v)} for g, v in zip(grid, losses)]
    best = int(np.argmin(losses))
    logger.info("choose_mu: grid value %g (mu %.4g) held-out L_V %.6g", grid[best], grid[best] * scale, losses[best])
    return float(grid[best]) * scale, table

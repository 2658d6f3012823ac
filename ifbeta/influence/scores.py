"""Cross-fitted influence scores of docs/METHOD.md section 3.

    s_i = g_V^T H^{-1} grad l_i(theta*)   (N,) float64
        = first-order change of the validation loss L_V when sample i is REMOVED from the SUM objective.
        s_i > 0: removing i raises L_V, i is HELPFUL.  s_i < 0: i is HARMFUL.

``config.estimator``: "first_order" (default) is the formula above, any solver. "newton" replaces it
by the exact removal step of the locally quadratic inner problem plus the curvature of L_V along it
(solvers.newton_removal_scores; dense, C(d+1) <= NEWTON_LIMIT); "auto" = "newton" with the ``direct``
solver where it fits, else "first_order". InfluenceResult.estimator records the choice.
Measured on digits teacher features (673 samples per fold, 650 parameters, 200 true refits, 6 splits):
first-order Spearman 0.95-0.98, slope 0.72-1.00 (outside 0.8..1.25 in 3 of 6), sign 0.97-0.99;
Newton Spearman 1.000, slope 1.000, sign 1.000. But Newton is truer to refits, not a better
detector: on 30% flipped labels (lam 0.5) AUC(flipped = harmful) was 0.735 first-order, 0.673 Newton.

K-fold cross-fitting (stratified, seeded): for fold k the proxy is fitted on fold k (the samples
being scored) and L_V is the mean loss on all the other folds, so no sample ever sits in the
validation set that scores it. v = H^{-1} g_V is solved once per fold; then s_i = <v, r_i x_i^T> for
every i in one O(N C d) pass.

Memory model: features (N, d) may be a float16 np.memmap larger than RAM. Pool statistics,
validation gradients, teacher statistics (statistics.py) and scores stream ``config.chunk_size`` rows at a time
(one float32 chunk on ``config.device``; the fit keeps its fold there in float32 up to
tensors.OPERATOR_CACHE_BYTES). The only full float64 host copy is the standardised training fold (N/K x d) and its
teacher logits (N/K x C) used by the fit, unless ``config.materialise_fold`` is False, in which case
the fit re-reads the fold from disk at every pass (choose_mu and validation.loo_check always copy one
fold).
Solver ``direct`` adds (C(d+1))^2 floats, the Newton estimator 4 (C(d+1))^2.

Degenerate input (tests/test_degenerate.py), checked by :func:`score` and validation.loo_check before any fit:
- NaN or Inf in features or teacher logits: ValueError naming the first bad row and column. Free for
  the features (a non-finite value makes its column's mean non-finite; the row is searched only to
  report it), one chunked pass over the logits.
- labels not (N,), not integer-valued, or outside [0, C) (C = teacher_logits columns): ValueError.
  (A label -1 would otherwise silently index the last class.)
- a fold left empty by stratified cross-fitting (only when every class has fewer than K samples):
  ValueError with the fold sizes.
- constant feature columns (all features constant included): standardised to exactly 0, so their
  weights only see the ridge and the scores equal those with the columns deleted. A column counts as
  constant when its std is 0 or within float64 round-off of its mean (streaming.feature_statistics:
  a column of 0.1 has a float64 std of ~1e-17 and would otherwise standardise to a constant +-1, a
  second, ridge-penalised bias). The bilevel loop standardises by the same rule.
- a class with a single sample (or fewer than K): allowed. Its sample lands in one fold, gets a
  finite score from that fold's fit like any other sample, and is never in its own validation set;
  the other folds' fits never see the class except through the teacher's logits.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ifbeta.config import InfluenceConfig, KDConfig
from ifbeta.data.streaming import FeatureView, feature_statistics
from ifbeta.influence import objective, proxy, sharding, solvers, tensors
from ifbeta.influence.solvers import SOLVERS
from ifbeta.influence.statistics import teacher_statistics

logger = logging.getLogger(__name__)

ESTIMATORS = ("auto", "first_order", "newton")
NEWTON_LIMIT = 2 * proxy.DENSE_NEWTON_LIMIT  # largest C(d+1) for the dense Newton estimator
AUTO_NEWTON_ROWS_PER_PARAMETER = 4  # auto: newton while a fold has fewer samples per parameter than this

__all__ = ["ESTIMATORS", "SOLVERS", "Clock", "InfluenceResult", "cross_fitting_folds", "influence_on_weights",
           "influence_scores", "pool_statistics", "prepare", "removal_scores", "resolve_estimator", "score",
           "validated_labels"]


@dataclass(frozen=True)
class InfluenceResult:
    """Output of :func:`score`; numpy only, picklable.

    scores (N,) float64: > 0 helpful (removing raises L_V), < 0 harmful. fold (N,) int64: the fold that
    scored (and trained on) each sample. teacher_scores: "el2n" (higher = harder), "entropy" (higher =
    less certain), "margin" (higher = easier), "kd_loss" (proxy loss at the fold's fit; higher = harder),
    each (N,) float64. seconds: per stage. grad_norms: final ||grad L_in|| per fold. mu_table: choose_mu
    rows (empty when mu was given). estimator: the resolved estimator ("first_order" or "newton").
    """

    scores: np.ndarray
    fold: np.ndarray
    mu: float
    solver: str
    teacher_scores: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    grad_norms: list = field(default_factory=list)
    mu_table: list = field(default_factory=list)
    estimator: str = "first_order"


def influence_scores(theta, direction, features, teacher_logits, labels, *, kd: KDConfig,
                     chunk_size: int = tensors.CHUNK_SIZE, device=None) -> torch.Tensor:
    """<direction, grad l_i(theta)> for every sample, (N,) float64 tensor; direction (C, d+1), O(N C d)."""
    device = tensors.device_of(theta, device)
    theta, direction = tensors.as_tensor(theta, device), tensors.as_tensor(direction, device)
    parts = []
    for x, t, y, _ in tensors.chunks(features, teacher_logits, labels, None, chunk_size, device):
        residual = objective.chunk_residual(objective.output_heads(theta, x, t, kd), y, kd)  # (m, C)
        parts.append((residual * tensors.single_matmul(x, direction.T)).sum(dim=1))
    local = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=device)
    return sharding.gather(local, len(labels))


def influence_on_weights(theta, features, teacher_logits, labels, weights, val_features, val_teacher_logits,
                         val_labels, *, mu: float, kd: KDConfig, bias_damping: float = 1e-3, solver="direct",
                         chunk_size: int = tensors.CHUNK_SIZE, device=None) -> torch.Tensor:
    """dL_V/dw_i at the weighted solution theta = theta*(w): (N,) float64 tensor.

    = -g_V^T H_w^{-1} grad l_i(theta). SIGN: this is the derivative for INCREASING w_i, so it is the
    negative of the removal score s_i; < 0 means more weight on i lowers L_V (i helps). theta must be
    the converged weighted fit (gradient ~ 0); solver is a SOLVERS key or a solve function.
    """
    solve = SOLVERS[solver] if isinstance(solver, str) else solver
    device = tensors.device_of(theta, device)
    theta = tensors.as_tensor(theta, device)
    g_val = objective.validation_gradient(theta, val_features, val_teacher_logits, val_labels, kd=kd,
                                          chunk_size=chunk_size, device=device)
    direction = solve(theta, features, teacher_logits, labels, weights, g_val, mu=mu, kd=kd,
                      bias_damping=bias_damping, chunk_size=chunk_size, device=device)
    return -influence_scores(theta, direction, features, teacher_logits, labels, kd=kd, chunk_size=chunk_size,
                             device=device)


# ----------------------------------------------------------------------------- cross-fitting


class Clock:
    """Seconds per stage: ``lap(stage)`` adds the time since the previous lap to ``seconds[stage]``."""

    def __init__(self):
        self.seconds, self._last = {}, time.perf_counter()

    def lap(self, stage: str):
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def _first_non_finite(array, chunk_size: int):
    """(row, column) of the first NaN/Inf of a 2-D array (N, k) read in chunks, or None. Sharded: each
    rank reads its own rows and the earliest of the ranks' finds is returned on every rank."""
    count = len(array)
    start, stop = sharding.rows(count)
    found = (count, 0)
    for first in range(start, stop, chunk_size):
        bad = np.argwhere(~np.isfinite(np.asarray(array[first:min(first + chunk_size, stop)], dtype=np.float64)))
        if len(bad):
            found = (first + int(bad[0][0]), int(bad[0][1]))
            break
    rank, world = sharding.context()
    finds = torch.zeros((world, 2), dtype=torch.float64)
    finds[rank] = torch.tensor(found, dtype=torch.float64)
    finds = sharding.total(finds)
    row, column = (int(value) for value in finds[int(torch.argmin(finds[:, 0]))])
    return None if row >= count else (row, column)


def validated_labels(labels, features, teacher_logits) -> np.ndarray:
    """labels as (N,) int64 in [0, C), or a ValueError saying what is wrong with them (or with the
    shapes of features (N, d) and teacher_logits (N, C))."""
    for name, array, axes in (("features", features, "(N, d)"), ("teacher_logits", teacher_logits, "(N, C)")):
        shape = tuple(getattr(array, "shape", np.shape(array)))
        if len(shape) != 2:
            raise ValueError(f"{name} must be a 2-d array {axes}, got shape {shape}")
        if name == "teacher_logits" and shape[1] == 0:  # no feature column is fine: a bias-only proxy
            raise ValueError(f"{name} must have at least one column, got shape {shape}")
    labels, count = np.asarray(labels), len(features)
    classes = np.asarray(teacher_logits[:1]).shape[1]
    if len(teacher_logits) != count or labels.shape != (count,):
        raise ValueError(f"features ({count} rows), teacher_logits ({len(teacher_logits)} rows) and labels "
                         f"(shape {labels.shape}) must describe the same N samples")
    if labels.dtype.kind not in "iub":
        if labels.dtype.kind != "f" or not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype} with non-integer values")
    labels = labels.astype(np.int64)
    if count and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}) (teacher_logits has {classes} columns); got "
                         f"{labels.min()}..{labels.max()}")
    return labels


def pool_statistics(features, teacher_logits, chunk_size: int):
    """Pool mean and std (d,) for standardising; refuses NaN/Inf (constant columns standardise to 0).
    Under torchrun each rank reads only its shard of the rows, for the statistics and for the checks."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf while summing: reported below
        mean, std = feature_statistics(features, chunk_size=chunk_size, rows=sharding.rows(len(features)),
                                       combine=lambda sums: sharding.total(torch.from_numpy(sums)).numpy())
    if not np.isfinite(mean).all():
        where = _first_non_finite(features, chunk_size)
        at = "" if where is None else f" (first at row {where[0]}, column {where[1]})"
        raise ValueError(f"features contain NaN or Inf{at}; remove or impute those samples before scoring")
    where = _first_non_finite(teacher_logits, chunk_size)
    if where is not None:
        raise ValueError(f"teacher logits contain NaN or Inf (first at row {where[0]}, column {where[1]}); "
                         "remove those samples or fix the teacher before scoring")
    return mean, std  # constant columns standardise to exactly 0 (feature_statistics)


def cross_fitting_folds(labels, folds: int, seed: int) -> np.ndarray:
    """Fold id (N,) int64 of K >= 2 stratified folds (``proxy.stratified_folds``); refuses an empty fold."""
    if folds < 2:
        raise ValueError("cross-fitting needs folds >= 2 (each fold is validated on the others)")
    fold = proxy.stratified_folds(labels, folds, seed)
    sizes = np.bincount(fold, minlength=folds)
    if (sizes == 0).any():
        fewer = f"; or use fewer folds (folds={folds}, at least 2)" if folds > 2 else ""
        raise ValueError(f"cross-fitting left a fold empty (fold sizes {sizes.tolist()} for N={len(labels)}): every "
                         f"class has fewer than folds={folds} samples; add samples{fewer}")
    return fold


def prepare(features, teacher_logits, labels, config: InfluenceConfig, clock: Clock):
    """Config with the estimator resolved, standardised pool view, logits view, fold ids, mu, table."""
    if config.folds < 2:
        raise ValueError("cross-fitting needs folds >= 2 (each fold is validated on the others)")
    if config.solver not in SOLVERS:
        raise ValueError(f"unknown solver {config.solver!r}; choose one of {sorted(SOLVERS)}")
    if config.estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {config.estimator!r}; choose one of {ESTIMATORS}")
    parameters = np.asarray(teacher_logits[:1]).shape[1] * (features.shape[1] + 1)
    rows = len(labels) // config.folds
    config = dataclasses.replace(config, estimator=resolve_estimator(config, parameters, rows))
    mean, std = pool_statistics(features, teacher_logits, config.chunk_size)
    pool, logits = FeatureView(features, mean=mean, std=std), FeatureView(teacher_logits)
    fold = cross_fitting_folds(labels, config.folds, config.seed)
    clock.lap("standardise")
    settings = config.proxy
    if settings.mu is not None:
        return config, pool, logits, fold, float(settings.mu), []
    mu, table = proxy.choose_mu(pool, logits, labels, kd=settings.kd, grid=settings.mu_grid, folds=config.folds,
                                seed=config.seed, bias_damping=settings.bias_damping, tolerance=settings.tolerance,
                                max_iterations=settings.max_iterations, chunk_size=config.chunk_size,
                                device=config.device)
    clock.lap("choose_mu")
    return config, pool, logits, fold, mu, table


def _training_fold(pool, logits, index, config: InfluenceConfig):
    x, t = pool.subset(index), logits.subset(index)
    if config.materialise_fold:
        return x.materialise(config.chunk_size), t.materialise(config.chunk_size)
    return x, t


def resolve_estimator(config: InfluenceConfig, parameters: int, rows: int | None = None) -> str:
    """The estimator actually used for C(d+1) = ``parameters`` and ``rows`` samples per fold.

    "auto" is "newton" with the direct solver where the dense matrices fit and the fold has fewer
    than AUTO_NEWTON_ROWS_PER_PARAMETER samples per parameter, else "first_order". Measured on the
    digits teacher (673 samples per fold, 650 parameters): first-order slope of true on predicted
    leave-one-out change 0.72 (outside 0.8..1.25), newton 1.00; with many samples per parameter the
    two agree and first-order is cheaper."""
    if config.estimator == "auto":
        few_rows = rows is None or rows < AUTO_NEWTON_ROWS_PER_PARAMETER * parameters
        dense = config.solver == "direct" and parameters <= NEWTON_LIMIT
        return "newton" if dense and few_rows else "first_order"
    if config.estimator == "newton" and parameters > NEWTON_LIMIT:
        raise ValueError(f"estimator 'newton' needs dense (C(d+1))^2 matrices; C(d+1) = {parameters} is too large")
    return config.estimator


def removal_scores(theta, train: tuple, validation: tuple, mu: float, config: InfluenceConfig) -> np.ndarray:
    """Scores of the training samples, (n,) float64 numpy, > 0 helpful, by config.estimator (see ESTIMATORS).
    The math runs on config.device; theta (C, d+1) tensor or array."""
    settings, chunk, device = config.proxy, config.chunk_size, tensors.resolve_device(config.device)
    theta = tensors.as_tensor(theta, device)
    options = dict(mu=mu, kd=settings.kd, bias_damping=settings.bias_damping, chunk_size=chunk, device=device)
    if resolve_estimator(config, theta.numel(), len(train[2])) == "newton":  # resolved by prepare; re-checked
        return tensors.to_numpy(solvers.newton_removal_scores(theta, *train, *validation, **options))
    g_val = objective.validation_gradient(theta, *validation, kd=settings.kd, chunk_size=chunk,
                                          device=device)  # (C, d+1)
    if config.solver == "cg":
        limits = {"tolerance": config.cg_tolerance, "max_iterations": config.cg_max_iterations}
        options.update({k: v for k, v in limits.items() if v is not None})
    direction = SOLVERS[config.solver](theta, *train, None, g_val, **options)  # v = H^{-1} g_V
    return tensors.to_numpy(influence_scores(theta, direction, *train, kd=settings.kd, chunk_size=chunk,
                                             device=device))


def _score_fold(pool, logits, labels, fold, k, mu, config: InfluenceConfig, clock: Clock, notify):
    settings, chunk = config.proxy, config.chunk_size
    train, held_out = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
    x, t = _training_fold(pool, logits, train, config)
    target = []  # the fit's stopping norm, tolerance (1 + ||grad at the start||)

    def on_iteration(iteration, theta, grad_norm, products):  # a fit at ImageNet size runs for an hour
        if not target:
            target.append(settings.tolerance * (1.0 + grad_norm))
        notify(k, {"stage": "fit", "fold": k, "folds": config.folds, "iteration": iteration,
                   "grad_norm": grad_norm, "target": target[0], "products": products})

    fitted = proxy.fit(x, t, labels[train], mu=mu, kd=settings.kd, bias_damping=settings.bias_damping,
                       tolerance=settings.tolerance, max_iterations=settings.max_iterations, chunk_size=chunk,
                       device=config.device, on_iteration=on_iteration)
    if not fitted.converged:
        logger.warning("fold %d: proxy fit stopped at ||grad|| = %.3g", k, fitted.grad_norm)
    clock.lap("fit")
    validation = (pool.subset(held_out), logits.subset(held_out), labels[held_out])
    scores = removal_scores(fitted.theta, (x, t, labels[train]), validation, mu, config)
    clock.lap("solve")
    kd_loss = tensors.to_numpy(objective.per_sample_loss(fitted.theta, x, t, labels[train], kd=settings.kd,
                                                         chunk_size=chunk))
    clock.lap("scores")
    return train, scores, kd_loss, fitted


def score(features, teacher_logits, labels, *, config: InfluenceConfig = InfluenceConfig(),
          on_step=None) -> InfluenceResult:
    """Cross-fitted influence scores for every sample of the pool.

    features (N, d) any float dtype (memmap OK), teacher_logits (N, C), labels (N,) int in [0, C).
    Returns an :class:`InfluenceResult` (numpy); scores > 0 = helpful. on_step(step, info) after each stage.
    The proxy's math runs on ``config.device`` ("cpu" or "cuda"; a ValueError when CUDA is not available).
    Raises ValueError on NaN/Inf features or logits, labels outside [0, C) or of the wrong shape, and
    an empty cross-fitting fold. Constant feature columns standardise to 0 (as if deleted); a class
    with one sample is scored like any other sample (see the module docstring).
    """
    if config.proxy.family != "linear":
        raise ValueError(f"scores.score computes the linear proxy's scores; the {config.proxy.family!r} family is "
                         "scored by influence.families.score")
    tensors.resolve_device(config.device)  # refuse an unavailable device before any work
    clock, labels = Clock(), validated_labels(labels, features, teacher_logits)
    notify = on_step or (lambda step, info: None)
    config, pool, logits, fold, mu, table = prepare(features, teacher_logits, labels, config, clock)
    notify(0, {"stage": "prepare", "mu": mu, "folds": config.folds})
    scores, kd_loss, grad_norms = np.zeros(len(labels)), np.zeros(len(labels)), []
    for k in range(config.folds):
        train, fold_scores, fold_loss, fitted = _score_fold(pool, logits, labels, fold, k, mu, config, clock,
                                                            notify)
        scores[train], kd_loss[train] = fold_scores, fold_loss
        grad_norms.append(fitted.grad_norm)
        notify(k + 1, {"stage": "fold", "fold": k, "folds": config.folds, "grad_norm": fitted.grad_norm,
                       "iterations": fitted.iterations, "seconds": dict(clock.seconds)})
    teacher = teacher_statistics(teacher_logits, labels, chunk_size=config.chunk_size)
    teacher["kd_loss"] = kd_loss
    clock.lap("teacher_scores")
    seconds = dict(clock.seconds)
    seconds["total"] = float(sum(clock.seconds.values()))
    logger.info("influence: N=%d mu=%.4g solver=%s %.2fs, %.1f%% harmful", len(labels), mu, config.solver,
                seconds["total"], 100.0 * float((scores < 0).mean()) if len(scores) else 0.0)
    return InfluenceResult(scores=scores, fold=fold, mu=mu, solver=config.solver, teacher_scores=teacher,
                           seconds=seconds, grad_norms=grad_norms, mu_table=table, estimator=config.estimator)

"""The KD-aligned linear proxy student of METHOD.md section 2.

    f_theta(phi) = W phi + b,   theta = [W | b]  (C, d+1) float64,  x = [phi; 1]  (d+1,)
    l_i(theta)   = (1 - lam) CE(f(phi_i), y_i) + lam tau^2 KL(softmax(t_i/tau) || softmax(f(phi_i)/tau))
    L_in(theta)  = sum_i w_i l_i(theta) + mu/2 (||W||_F^2 + eps ||b||^2)          (SUM form, w_i in [0, 1])

Everything is a pure function over arrays. ``features`` may be any float dtype (a float16
np.memmap included) or a :class:`FeatureView`; they are read ``chunk_size`` rows at a time and cast
to float64 per chunk, so no function here holds more than one float64 chunk of features.
Lower loss / objective is better. The flat parameter order (Hessian rows) is ``theta.reshape(-1)``:
index ``c * (d + 1) + j``.

The per-sample gradient is rank one: grad l_i = outer(r_i, x_i), with the output residual
    r_i = (1 - lam) (softmax(f_i) - onehot(y_i)) + lam tau (softmax(f_i/tau) - softmax(t_i/tau)),
and the output curvature is B_i = (1 - lam)(diag p - p p^T) + lam (diag q - q q^T), so the Hessian
is exact: H = sum_i w_i B_i kron x_i x_i^T + diag(regulariser).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from ifbeta.config import KDConfig
from ifbeta.runtime import thread_map
from ifbeta.streaming import FeatureView, feature_statistics, row_view, take_rows

logger = logging.getLogger(__name__)

CHUNK_SIZE = 8192  # rows of features cast to float64 at a time
OPERATOR_CACHE_BYTES = 1 << 30  # HessianOperator keeps x, p, q in memory up to this size
DENSE_NEWTON_LIMIT = 4000  # C (d+1) up to which fit() uses dense Newton, above: Newton-CG
DENSE_ROWS_PER_PARAMETER = 2  # dense Newton also needs N <= 2 C (d+1): building H costs O(N C^2 d^2)
REFRESH_PRODUCTS = 12  # CG products per Newton step (or solve) above which a reused Hessian factor is rebuilt


def use_dense(rows: int, size: int) -> bool:
    """Dense Newton/Cholesky when the Hessian is small and cheap to build, else matrix-free CG.

    Building H is O(N C^2 (d+1)^2) against ~70 preconditioned Hessian-vector products of O(N C d):
    measured on CIFAR-10 features (N=5000, C(d+1)=650) Newton-CG fits 3.3x faster than dense."""
    return size <= DENSE_NEWTON_LIMIT and rows <= DENSE_ROWS_PER_PARAMETER * size
_HESSIAN_BLOCK_ELEMENTS = 1 << 22  # rows x C(d+1) per Hessian outer-product block (32 MiB)

__all__ = [
    "CHUNK_SIZE", "FeatureView", "ProxyFit", "choose_mu", "feature_statistics", "fit", "gradient",
    "HessianOperator", "hessian", "hessian_diagonal", "hvp", "objective", "per_sample_loss", "predict_proba",
    "regulariser", "residuals", "standardise", "stratified_folds", "take_rows", "teacher_head", "validation_gradient",
    "validation_loss",
]


@dataclass(frozen=True)
class ProxyFit:
    """Result of :func:`fit`. theta (C, d+1) float64; grad_norm = ||grad L_in|| at theta (lower is better)."""

    theta: np.ndarray
    grad_norm: float
    iterations: int
    objective: float
    converged: bool
    products: int = 0  # Hessian-vector products spent (Newton-CG)


def standardise(features, *, mean=None, std=None, chunk_size: int = CHUNK_SIZE):
    """Z = (features - mean) / std.

    features (N, d) any float dtype; mean, std (d,) float64, computed chunk-wise when not given
    (constant columns get std 1). Returns (Z (N, d) float64, mean, std). Z is materialised: for
    arrays larger than RAM use ``FeatureView(features, mean=mean, std=std)`` instead.
    """
    if mean is None or std is None:
        mean, std = feature_statistics(features, chunk_size=chunk_size)
    view = FeatureView(features, mean=np.asarray(mean, np.float64), std=np.asarray(std, np.float64))
    return view.materialise(), view.mean, view.std


def regulariser(shape, *, mu: float, bias_damping: float = 1e-3) -> np.ndarray:
    """Per-parameter ridge (C, d+1) float64: mu on W, mu * bias_damping on b."""
    classes, width = shape
    row = np.full(width, float(mu))
    row[-1] = float(mu) * float(bias_damping)
    return np.broadcast_to(row, (classes, width)).copy()


# ----------------------------------------------------------------------------- chunked KD math


def _chunks(features, teacher_logits, labels, weights, chunk_size):
    """Yield (x (m, d+1), t (m, C), y (m,) int64, w (m,) or None) float64 chunks.

    Raises ValueError for a label outside [0, C): numpy would otherwise read label -1 as class C - 1."""
    labels = np.asarray(labels)
    for start in range(0, len(labels), chunk_size):
        stop = min(len(labels), start + chunk_size)
        phi = np.asarray(features[start:stop], dtype=np.float64)
        x = np.empty((stop - start, phi.shape[1] + 1))  # (m, d+1)
        x[:, :-1] = phi
        x[:, -1] = 1.0
        t = np.asarray(teacher_logits[start:stop], dtype=np.float64)
        y = labels[start:stop].astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= t.shape[1]):
            bad = start + int(np.flatnonzero((y < 0) | (y >= t.shape[1]))[0])
            raise ValueError(f"label {int(labels[bad])} of sample {bad} is outside [0, {t.shape[1]}): "
                             f"labels must be class indices of the teacher's {t.shape[1]} logits")
        w = None if weights is None else np.asarray(weights[start:stop], dtype=np.float64)
        yield x, t, y, w


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass
class _Heads:
    """Softmax quantities of one chunk, all (m, C) float64."""

    log_p: np.ndarray  # log softmax(f)
    log_q: np.ndarray  # log softmax(f / tau)
    log_pt: np.ndarray  # log softmax(t / tau)

    @property
    def p(self):
        return np.exp(self.log_p)

    @property
    def q(self):
        return np.exp(self.log_q)


def _heads(theta, x, t, kd: KDConfig) -> _Heads:
    outputs = x @ theta.T  # (m, C)
    return _Heads(_log_softmax(outputs), _log_softmax(outputs / kd.tau), _log_softmax(t / kd.tau))


def _chunk_loss(heads: _Heads, y, kd: KDConfig):
    cross_entropy = -heads.log_p[np.arange(len(y)), y]
    kl = (np.exp(heads.log_pt) * (heads.log_pt - heads.log_q)).sum(axis=1)
    return (1.0 - kd.lam) * cross_entropy + kd.lam * kd.tau**2 * kl  # (m,)


def _chunk_residual(heads: _Heads, y, kd: KDConfig):
    residual = (1.0 - kd.lam) * heads.p
    residual[np.arange(len(y)), y] -= 1.0 - kd.lam
    residual += kd.lam * kd.tau * (heads.q - np.exp(heads.log_pt))
    return residual  # (m, C)


def _curvature_times(p, q, u, kd: KDConfig):
    """B_i u_i for every row: (m, C); p = softmax(f), q = softmax(f / tau), u (m, C)."""
    cross = p * u - p * (p * u).sum(axis=1, keepdims=True)
    distil = q * u - q * (q * u).sum(axis=1, keepdims=True)
    return (1.0 - kd.lam) * cross + kd.lam * distil


def _weighted(values, w):
    return values if w is None else values * (w[:, None] if values.ndim == 2 else w)


# ----------------------------------------------------------------------------- public math


def per_sample_loss(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE):
    """l_i (N,) float64, the KD loss of each sample under the proxy; lower = better fitted."""
    theta = np.asarray(theta, np.float64)
    parts = [_chunk_loss(_heads(theta, x, t, kd), y, kd)
             for x, t, y, _ in _chunks(features, teacher_logits, labels, None, chunk_size)]
    return np.concatenate(parts) if parts else np.zeros(0)


def residuals(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE):
    """r (N, C) float64 with grad_theta l_i = outer(r_i, [phi_i, 1])."""
    theta = np.asarray(theta, np.float64)
    parts = [_chunk_residual(_heads(theta, x, t, kd), y, kd)
             for x, t, y, _ in _chunks(features, teacher_logits, labels, None, chunk_size)]
    return np.concatenate(parts) if parts else np.zeros((0, theta.shape[0]))


def _value_and_gradient(theta, features, teacher_logits, labels, weights, *, mu, bias_damping, kd,
                        chunk_size, with_gradient=True):
    """(L_in, its gradient) at theta in one streamed pass (the gradient is skipped when not wanted)."""
    theta = np.asarray(theta, np.float64)
    rows = _Rows(features, teacher_logits, labels, weights, kd=kd, chunk_size=chunk_size, cache_bytes=0)
    point = _evaluate(theta, rows, regulariser(theta.shape, mu=mu, bias_damping=bias_damping),
                      with_gradient=with_gradient)
    return point.value, point.grad


def objective(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
              kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> float:
    """L_in = sum_i w_i l_i + mu/2 (||W||^2 + eps ||b||^2), a float (SUM form, not mean); lower is better."""
    return _value_and_gradient(theta, features, teacher_logits, labels, weights, mu=mu, bias_damping=bias_damping,
                               kd=kd, chunk_size=chunk_size, with_gradient=False)[0]


def gradient(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
             kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """grad L_in (C, d+1) float64."""
    return _value_and_gradient(theta, features, teacher_logits, labels, weights, mu=mu, bias_damping=bias_damping,
                               kd=kd, chunk_size=chunk_size)[1]


def hessian(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
            kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """Exact dense Hessian of L_in, (C(d+1), C(d+1)) float64, rows in ``theta.reshape(-1)`` order.

    Cost O(N C^2 (d+1)^2). Memory: the result (C(d+1))^2 floats and one block of rows: the rank-one
    parts accumulate in place in its lower triangle (BLAS syrk), which is mirrored at the end.
    """
    theta = np.asarray(theta, np.float64)
    classes, width = theta.shape
    size = classes * width
    block = max(1, _HESSIAN_BLOCK_ELEMENTS // (2 * size))
    matrix = np.zeros((size, size), order="F")  # lower triangle valid until the mirror below
    matrix[np.diag_indices(size)] = regulariser(theta.shape, mu=mu, bias_damping=bias_damping).reshape(-1)
    for x, t, y, w in _chunks(features, teacher_logits, labels, weights, chunk_size):
        w = np.ones(len(y)) if w is None else w
        for start in range(0, len(y), block):
            rows = slice(start, start + block)
            heads = _heads(theta, x[rows], t[rows], kd)
            xs, ws = x[rows], w[rows]
            diagonal = ws[:, None] * ((1.0 - kd.lam) * heads.p + kd.lam * heads.q)  # (m, C)
            for c in range(classes):
                span = slice(c * width, (c + 1) * width)
                matrix[span, span] += (xs * diagonal[:, c:c + 1]).T @ xs
            scaled = np.concatenate([np.sqrt((1.0 - kd.lam) * ws)[:, None] * heads.p,
                                     np.sqrt(kd.lam * ws)[:, None] * heads.q])  # (2m, C)
            outer = (scaled[:, :, None] * np.concatenate([xs, xs])[:, None, :]).reshape(-1, size)  # (2m, C(d+1))
            # matrix -= outer^T outer, lower triangle, in place (Fortran order lets syrk write into it)
            matrix = scipy.linalg.blas.dsyrk(-1.0, outer, beta=1.0, c=matrix, trans=1, lower=1, overwrite_c=1)
    _mirror_lower(matrix)
    return matrix


def _mirror_lower(matrix: np.ndarray, block: int = 1024) -> None:
    """Copy the strict lower triangle of a square matrix onto its upper triangle, in place, one
    block of columns at a time (no size^2 temporaries)."""
    size = len(matrix)
    for start in range(0, size, block):
        stop = min(size, start + block)
        corner = matrix[start:stop, start:stop]
        matrix[start:stop, start:stop] = np.tril(corner) + np.tril(corner, -1).T
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T


def hessian_diagonal(theta, features, teacher_logits, labels, *, weights=None, mu: float,
                     bias_damping: float = 1e-3, kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """diag(H) as (C, d+1) float64, O(N C d); used as a preconditioner."""
    theta = np.asarray(theta, np.float64)
    result = regulariser(theta.shape, mu=mu, bias_damping=bias_damping)
    for x, t, y, w in _chunks(features, teacher_logits, labels, weights, chunk_size):
        heads = _heads(theta, x, t, kd)
        p, q = heads.p, heads.q
        curvature = (1.0 - kd.lam) * (p - p * p) + kd.lam * (q - q * q)  # (m, C) = diag B_i
        result += _weighted(curvature, w).T @ (x * x)
    return result


class _Rows:
    """One problem's rows as float64 chunks (x = [phi, 1] (m, d+1), log softmax(t / tau) (m, C), y, w).

    Kept in memory when they (and the softmax heads of one theta) fit in ``cache_bytes``: every pass
    of fit() then skips the cast and the teacher's softmax, and Hessian products reuse the heads of
    the current iterate. Larger problems are re-read from ``features`` on every pass."""

    def __init__(self, features, teacher_logits, labels, weights, *, kd: KDConfig, chunk_size: int,
                 cache_bytes: int = OPERATOR_CACHE_BYTES):
        self.source, self.kd = (features, teacher_logits, labels, weights, chunk_size), kd
        classes = np.asarray(teacher_logits[:1]).shape[1]
        per_row = (features.shape[1] + 1 + 3 * classes + 2) * 8
        self.cached = list(self._read()) if len(np.asarray(labels)) * per_row <= cache_bytes else None

    def _read(self):
        for x, t, y, w in _chunks(*self.source):
            yield x, _log_softmax(t / self.kd.tau), y, w

    def __iter__(self):
        return iter(self.cached) if self.cached is not None else self._read()


@dataclass
class _Point:
    """An iterate of fit(): theta (C, d+1), L_in, its gradient, and the softmax heads [(p, q)] per
    chunk when the rows are cached (None otherwise)."""

    theta: np.ndarray
    value: float
    grad: np.ndarray
    heads: list | None


def _evaluate(theta, rows: _Rows, ridge: np.ndarray, *, with_gradient: bool = True) -> _Point:
    """L_in and its gradient at theta in one pass over the rows (SUM form, ridge (C, d+1))."""
    kd = rows.kd
    value, grad = 0.5 * float((ridge * theta * theta).sum()), ridge * theta
    heads = [] if rows.cached is not None else None
    for x, log_pt, y, w in rows:
        outputs = x @ theta.T  # (m, C)
        chunk = _Heads(_log_softmax(outputs), _log_softmax(outputs / kd.tau), log_pt)
        value += float(_weighted(_chunk_loss(chunk, y, kd), w).sum())
        if with_gradient:
            grad += _weighted(_chunk_residual(chunk, y, kd), w).T @ x  # (C, d+1)
        if heads is not None:
            heads.append((chunk.p, chunk.q))
    return _Point(theta, value, grad, heads)


class HessianOperator:
    """v -> H v for the Hessian of L_in at one (theta, weights): matrix-free, O(N C d) per product.

    With u = x_i^T V (the change of sample i's outputs along V), w_i B_i u is

        a_i * u - P_i (p_i . u) - Q_i (q_i . u),   a = w ((1-lam) p + lam q),  P = w (1-lam) p,  Q = w lam q,

    so the terms (x, p, q, a, P, Q) are computed once at construction. When they fit in
    ``cache_bytes`` they stay in memory and every product is two matmuls and a few row operations
    per chunk; otherwise (features larger than RAM) each product streams the features and
    recomputes them. ``products`` counts the calls. Call with a (C, d+1) or flat vector; returns (C, d+1).
    """

    def __init__(self, theta, features, teacher_logits, labels, *, weights=None, mu: float,
                 bias_damping: float = 1e-3, kd: KDConfig, chunk_size: int = CHUNK_SIZE,
                 cache_bytes: int = OPERATOR_CACHE_BYTES):
        self.theta = np.asarray(theta, np.float64)
        self.ridge = regulariser(self.theta.shape, mu=mu, bias_damping=bias_damping)
        self.kd, self.products = kd, 0
        self._source = (features, teacher_logits, labels, weights, chunk_size)
        classes, width = self.theta.shape
        rows = len(np.asarray(labels))
        self._cache = None
        if rows * (width + 5 * classes) * 8 <= cache_bytes:
            self._cache = [self._chunk_terms(x, t, w) for x, t, _, w in self._chunks()]

    @classmethod
    def _at_point(cls, point: _Point, rows: _Rows, ridge: np.ndarray) -> "HessianOperator":
        """The operator at a fit() iterate whose rows and heads are cached: no pass over the data."""
        operator = cls.__new__(cls)
        operator.theta, operator.ridge, operator.kd, operator.products = point.theta, ridge, rows.kd, 0
        operator._source = None
        operator._cache = [operator._terms(x, p, q, w) for (x, _, _, w), (p, q) in zip(rows.cached, point.heads)]
        return operator

    def _chunks(self):
        features, teacher_logits, labels, weights, chunk_size = self._source
        return _chunks(features, teacher_logits, labels, weights, chunk_size)

    def _terms(self, x, p, q, w):
        lam = self.kd.lam
        big_p, big_q = _weighted((1.0 - lam) * p, w), _weighted(lam * q, w)
        return x, p, q, big_p + big_q, big_p, big_q

    def _chunk_terms(self, x, t, w):
        heads = _heads(self.theta, x, t, self.kd)
        return self._terms(x, heads.p, heads.q, w)

    def __call__(self, vector) -> np.ndarray:
        vector = np.asarray(vector, np.float64).reshape(self.theta.shape)
        self.products += 1
        result = self.ridge * vector
        terms = self._cache if self._cache is not None else (self._chunk_terms(x, t, w) for x, t, _, w in self._chunks())
        for x, p, q, a, big_p, big_q in terms:
            u = x @ vector.T  # (m, C): change of the outputs along `vector`
            image = a * u
            image -= big_p * np.einsum("mc,mc->m", p, u)[:, None]
            image -= big_q * np.einsum("mc,mc->m", q, u)[:, None]
            result += image.T @ x
        return result


def hvp(theta, vector, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
        kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """Matrix-free H @ vector, O(N C d). vector (C, d+1) or flat; returns theta's shape (C, d+1).

    For many products at one theta build a :class:`HessianOperator` once instead."""
    return HessianOperator(theta, features, teacher_logits, labels, weights=weights, mu=mu, bias_damping=bias_damping,
                           kd=kd, chunk_size=chunk_size, cache_bytes=0)(vector)


def validation_loss(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> float:
    """L_V = mean_j l_j(theta) over the given (validation) samples, a float; lower is better."""
    count = len(np.asarray(labels))
    value, _ = _value_and_gradient(theta, features, teacher_logits, labels, None, mu=0.0, bias_damping=0.0, kd=kd,
                                   chunk_size=chunk_size, with_gradient=False)
    return value / count


def validation_gradient(theta, features, teacher_logits, labels, *, kd: KDConfig,
                        chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """grad L_V (C, d+1) float64 (mean over the given samples, no regulariser)."""
    count = len(np.asarray(labels))
    _, grad = _value_and_gradient(theta, features, teacher_logits, labels, None, mu=0.0, bias_damping=0.0, kd=kd,
                                  chunk_size=chunk_size)
    return grad / count


def predict_proba(theta, features, *, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """softmax(W phi + b): (N, C) float64, rows sum to 1."""
    theta = np.asarray(theta, np.float64)
    parts = []
    for start in range(0, len(features), chunk_size):
        phi = np.asarray(features[start:start + chunk_size], dtype=np.float64)
        parts.append(np.exp(_log_softmax(phi @ theta[:, :-1].T + theta[:, -1])))
    return np.concatenate(parts) if parts else np.zeros((0, theta.shape[0]))


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
    ``preconditioner`` (flat v -> M^-1 v) or else by EKFAC at the current theta."""

    def __init__(self, problem: dict, dense: bool, preconditioner=None):
        self.problem, self.dense, self.factor, self.preconditioner = problem, dense, None, preconditioner
        self.products = 0

    def direction(self, point: _Point, rows: _Rows, ridge: np.ndarray, *, forcing: float, refresh: bool):
        theta, flat = point.theta, point.grad.reshape(-1)
        if not self.dense:
            from ifbeta.solvers import conjugate_gradient, ekfac_preconditioner  # late: solvers builds on proxy

            operator = (HessianOperator._at_point(point, rows, ridge) if point.heads is not None
                        else HessianOperator(theta, **self.problem))
            preconditioner = self.preconditioner or ekfac_preconditioner(theta, **self.problem)
            step, _, _ = conjugate_gradient(lambda v: operator(v).reshape(-1), flat, tolerance=forcing,
                                            max_iterations=max(50, flat.size // 10), preconditioner=preconditioner)
            self.products += operator.products
            return -step.reshape(theta.shape)
        if refresh or self.factor is None:
            matrix = hessian(theta, **self.problem)
            try:
                self.factor = scipy.linalg.cho_factor(matrix)
            except np.linalg.LinAlgError:  # not numerically PD (mu ~ 0): lift the spectrum slightly
                shift = 1e-10 * float(np.abs(np.diag(matrix)).max())
                self.factor = scipy.linalg.cho_factor(matrix + shift * np.eye(len(matrix)))
        return -scipy.linalg.cho_solve(self.factor, flat).reshape(theta.shape)


def _line_search(point: _Point, direction, rows: _Rows, ridge: np.ndarray) -> _Point | None:
    """Backtracking Armijo; full step when the predicted decrease is below round-off. Each trial is
    evaluated with its gradient (one pass), so the accepted point needs no second pass."""
    grad, value = point.grad, point.value
    slope = float((grad * direction).sum())
    if slope >= 0:  # not a descent direction (inexact CG): fall back to steepest descent
        direction, slope = -grad, -float((grad * grad).sum())
    if -slope <= 1e-13 * (1.0 + abs(value)):
        return _evaluate(point.theta + direction, rows, ridge)
    step = 1.0
    while step > 1e-12:
        trial = _evaluate(point.theta + step * direction, rows, ridge)
        if trial.value <= value + 1e-4 * step * slope:
            return trial
        step *= 0.5
    return None


def teacher_head(features, teacher_logits, *, ridge: float = 1e-6, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """Least-squares head (C, d+1) with [phi, 1] theta^T ~ teacher logits (relative ridge); fit()'s cold start.

    The teacher's logits are (nearly) a linear function of its own penultimate features, so this
    lands next to the KD optimum and Newton needs a few steps instead of a few dozen.
    """
    width = features.shape[1] + 1
    gram, cross = np.zeros((width, width)), None
    for x, t, _, _ in _chunks(features, teacher_logits, np.zeros(len(features), np.int64), None, chunk_size):
        gram += x.T @ x
        cross = x.T @ t if cross is None else cross + x.T @ t  # (d+1, C)
    gram[np.diag_indices(width)] += ridge * (np.trace(gram) / width + 1.0)
    return scipy.linalg.solve(gram, cross, assume_a="pos").T


def fit(features, teacher_logits, labels, *, weights=None, mu: float, kd: KDConfig, bias_damping: float = 1e-3,
        init=None, tolerance: float = 1e-8, max_iterations: int = 100, chunk_size: int = CHUNK_SIZE,
        method: str = "auto", preconditioner=None) -> ProxyFit:
    """theta*(w) = argmin L_in by damped Newton (exact, to round-off).

    Stops when ||grad|| <= tolerance * (1 + ||grad at the start||) (ProxyConfig.tolerance), so a
    warm start is polished relative to how far it started. method: "newton" (dense Hessian +
    Cholesky), "newton-cg" (matrix-free, EKFAC-preconditioned CG on hvp, any size) or "auto" (dense
    when C(d+1) <= DENSE_NEWTON_LIMIT). init (C, d+1) warm-starts; weights (N,) in [0, 1] or None.
    preconditioner: flat v -> M^-1 v for Newton-CG (implies it), e.g. the Hessian factor of a nearby
    fit; ProxyFit.products counts the Hessian-vector products spent.
    """
    labels = np.asarray(labels)
    classes = np.asarray(teacher_logits[:1]).shape[1]
    width = features.shape[1] + 1
    dense = use_dense(len(labels), classes * width) if method == "auto" else method == "newton"
    dense = dense and preconditioner is None
    problem = dict(features=features, teacher_logits=teacher_logits, labels=labels, weights=weights, mu=mu,
                   bias_damping=bias_damping, kd=kd, chunk_size=chunk_size)
    if init is None:  # cold start: the better of zero and the teacher's least-squares head
        candidates = [np.zeros((classes, width)), teacher_head(features, teacher_logits, chunk_size=chunk_size)]
        theta = min(candidates, key=lambda candidate: objective(candidate, **problem))
    else:
        theta = np.array(init, dtype=np.float64)
    rows = _Rows(features, teacher_logits, labels, weights, kd=kd, chunk_size=chunk_size)
    ridge = regulariser(theta.shape, mu=mu, bias_damping=bias_damping)
    point = _evaluate(theta, rows, ridge)
    threshold = tolerance * (1.0 + float(np.linalg.norm(point.grad)))
    # Newton-CG forcing term (Eisenstat-Walker), relative to the problem's scale, not the warm start's
    scale = 1.0 if dense else 1.0 + float(np.linalg.norm(_evaluate(np.zeros_like(theta), rows, ridge).grad))
    iterations, previous_norm, system = 0, np.inf, _NewtonSystem(problem, dense, preconditioner)
    while np.linalg.norm(point.grad) > threshold and iterations < max_iterations:
        norm = float(np.linalg.norm(point.grad))
        direction = system.direction(point, rows, ridge, forcing=min(0.5, np.sqrt(norm / scale)),
                                     refresh=norm > 0.2 * previous_norm)
        trial, previous_norm = _line_search(point, direction, rows, ridge), norm
        if trial is None:
            logger.warning("proxy fit: line search stalled at ||grad|| = %.3g", norm)
            break
        point, iterations = trial, iterations + 1
        logger.debug("proxy fit: iteration %d objective %.12g ||grad|| %.3g", iterations, point.value,
                     np.linalg.norm(point.grad))
    theta, value, grad = point.theta, point.value, point.grad
    norm = float(np.linalg.norm(grad))
    return ProxyFit(theta=theta, grad_norm=norm, iterations=iterations, objective=value, converged=norm <= threshold,
                    products=system.products)


class _DataCurvature:
    """Preconditioners for a sequence of fits on one training set that differ in mu (choose_mu).

    Where dense Newton is too costly per iteration (N > 2 C(d+1)) but C(d+1) <= DENSE_NEWTON_LIMIT,
    the unregularised Hessian is built once at a fitted theta and each fit gets the Cholesky factor
    of it plus its own ridge; rebuilt when a fit needed many products. Elsewhere: None (fit's default)."""

    def __init__(self, features, teacher_logits, labels, *, kd, bias_damping, chunk_size):
        classes = np.asarray(teacher_logits[:1]).shape[1]
        self.size = classes * (features.shape[1] + 1)
        self.enabled = self.size <= DENSE_NEWTON_LIMIT and not use_dense(len(labels), self.size)
        self.problem = dict(features=features, teacher_logits=teacher_logits, labels=labels, kd=kd,
                            chunk_size=chunk_size)
        self.bias_damping, self.matrix, self.shape = bias_damping, None, (classes, features.shape[1] + 1)

    def preconditioner(self, mu: float):
        if self.matrix is None:
            return None
        ridge = regulariser(self.shape, mu=mu, bias_damping=self.bias_damping).reshape(-1)
        factor = scipy.linalg.cho_factor(self.matrix + np.diag(ridge))
        return lambda vector: scipy.linalg.cho_solve(factor, vector)

    def update(self, theta, result: ProxyFit) -> None:
        if self.enabled and (self.matrix is None or result.products > REFRESH_PRODUCTS * max(1, result.iterations)):
            self.matrix = hessian(theta, **self.problem, mu=0.0, bias_damping=0.0)


def choose_mu(features, teacher_logits, labels, *, kd: KDConfig, grid=(1e-3, 1e-2, 1e-1, 1.0, 10.0), folds: int = 2,
              seed: int = 0, bias_damping: float = 1e-3, tolerance: float = 1e-8, max_iterations: int = 100,
              chunk_size: int = CHUNK_SIZE):
    """Pick the ridge by held-out L_V (lower is better).

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
                       chunk_size=chunk_size)
        theta, curvature = None, _DataCurvature(x_train, t_train, labels[train], kd=kd, bias_damping=bias_damping,
                                                chunk_size=chunk_size)
        values = np.zeros(len(grid))
        for g_index in order:
            mu = grid[g_index] * len(train) / 1000.0
            result = fit(x_train, t_train, labels[train], mu=mu, init=theta, **problem,
                         preconditioner=curvature.preconditioner(mu))
            theta = result.theta
            curvature.update(theta, result)
            values[g_index] = validation_loss(theta, row_view(features, held_out), row_view(teacher_logits, held_out),
                                              labels[held_out], kd=kd, chunk_size=chunk_size)
        return values

    losses = sum(thread_map(fold_losses, range(folds))) / folds
    scale = len(labels) / folds / 1000.0
    table = [{"grid": float(g), "mu": float(g) * scale, "val_loss": float(v)} for g, v in zip(grid, losses)]
    best = int(np.argmin(losses))
    logger.info("choose_mu: grid value %g (mu %.4g) held-out L_V %.6g", grid[best], grid[best] * scale, losses[best])
    return float(grid[best]) * scale, table

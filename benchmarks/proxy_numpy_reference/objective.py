"""The objective of the KD-aligned linear proxy (docs/METHOD.md, section 2): loss, gradient, curvature.

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

from dataclasses import dataclass

import numpy as np
import scipy.linalg.blas

from ifbeta.config import KDConfig
from ifbeta.data.streaming import FeatureView, feature_statistics, standardise  # noqa: F401  (standardise: bilevel)

CHUNK_SIZE = 8192  # rows of features cast to float64 at a time
OPERATOR_CACHE_BYTES = 1 << 30  # HessianOperator keeps x, p, q in memory up to this size
_HESSIAN_BLOCK_ELEMENTS = 1 << 22  # rows x C(d+1) per Hessian outer-product block (32 MiB)


def regulariser(shape, *, mu: float, bias_damping: float = 1e-3) -> np.ndarray:
    """Per-parameter ridge (C, d+1) float64: mu on W, mu * bias_damping on b."""
    classes, width = shape
    row = np.full(width, float(mu))
    row[-1] = float(mu) * float(bias_damping)
    return np.broadcast_to(row, (classes, width)).copy()


# ----------------------------------------------------------------------------- chunked KD math


def chunks(features, teacher_logits, labels, weights, chunk_size):
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


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass
class Heads:
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


def output_heads(theta, x, t, kd: KDConfig) -> Heads:
    outputs = x @ theta.T  # (m, C)
    return Heads(log_softmax(outputs), log_softmax(outputs / kd.tau), log_softmax(t / kd.tau))


def chunk_loss(heads: Heads, y, kd: KDConfig):
    cross_entropy = -heads.log_p[np.arange(len(y)), y]
    kl = (np.exp(heads.log_pt) * (heads.log_pt - heads.log_q)).sum(axis=1)
    return (1.0 - kd.lam) * cross_entropy + kd.lam * kd.tau**2 * kl  # (m,)


def chunk_residual(heads: Heads, y, kd: KDConfig):
    residual = (1.0 - kd.lam) * heads.p
    residual[np.arange(len(y)), y] -= 1.0 - kd.lam
    residual += kd.lam * kd.tau * (heads.q - np.exp(heads.log_pt))
    return residual  # (m, C)


def curvature_times(p, q, u, kd: KDConfig):
    """B_i u_i for every row: (m, C); p = softmax(f), q = softmax(f / tau), u (m, C)."""
    cross = p * u - p * (p * u).sum(axis=1, keepdims=True)
    distil = q * u - q * (q * u).sum(axis=1, keepdims=True)
    return (1.0 - kd.lam) * cross + kd.lam * distil


def weighted(values, w):
    return values if w is None else values * (w[:, None] if values.ndim == 2 else w)


# ----------------------------------------------------------------------------- public math


def per_sample_loss(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE):
    """l_i (N,) float64, the KD loss of each sample under the proxy; lower = better fitted."""
    theta = np.asarray(theta, np.float64)
    parts = [chunk_loss(output_heads(theta, x, t, kd), y, kd)
             for x, t, y, _ in chunks(features, teacher_logits, labels, None, chunk_size)]
    return np.concatenate(parts) if parts else np.zeros(0)


def residuals(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE):
    """r (N, C) float64 with grad_theta l_i = outer(r_i, [phi_i, 1])."""
    theta = np.asarray(theta, np.float64)
    parts = [chunk_residual(output_heads(theta, x, t, kd), y, kd)
             for x, t, y, _ in chunks(features, teacher_logits, labels, None, chunk_size)]
    return np.concatenate(parts) if parts else np.zeros((0, theta.shape[0]))


def value_and_gradient(theta, features, teacher_logits, labels, weights, *, mu, bias_damping, kd,
                        chunk_size, with_gradient=True):
    """(L_in, its gradient) at theta in one streamed pass (the gradient is skipped when not wanted)."""
    theta = np.asarray(theta, np.float64)
    rows = Rows(features, teacher_logits, labels, weights, kd=kd, chunk_size=chunk_size, cache_bytes=0)
    point = evaluate(theta, rows, regulariser(theta.shape, mu=mu, bias_damping=bias_damping),
                      with_gradient=with_gradient)
    return point.value, point.grad


def objective(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
              kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> float:
    """L_in = sum_i w_i l_i + mu/2 (||W||^2 + eps ||b||^2), a float (SUM form, not mean); lower is better."""
    return value_and_gradient(theta, features, teacher_logits, labels, weights, mu=mu, bias_damping=bias_damping,
                               kd=kd, chunk_size=chunk_size, with_gradient=False)[0]


def gradient(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
             kd: KDConfig, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """grad L_in (C, d+1) float64."""
    return value_and_gradient(theta, features, teacher_logits, labels, weights, mu=mu, bias_damping=bias_damping,
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
    for x, t, y, w in chunks(features, teacher_logits, labels, weights, chunk_size):
        w = np.ones(len(y)) if w is None else w
        for start in range(0, len(y), block):
            rows = slice(start, start + block)
            heads = output_heads(theta, x[rows], t[rows], kd)
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
    for x, t, y, w in chunks(features, teacher_logits, labels, weights, chunk_size):
        heads = output_heads(theta, x, t, kd)
        p, q = heads.p, heads.q
        curvature = (1.0 - kd.lam) * (p - p * p) + kd.lam * (q - q * q)  # (m, C) = diag B_i
        result += weighted(curvature, w).T @ (x * x)
    return result


class Rows:
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
        for x, t, y, w in chunks(*self.source):
            yield x, log_softmax(t / self.kd.tau), y, w

    def __iter__(self):
        return iter(self.cached) if self.cached is not None else self._read()


@dataclass
class Point:
    """An iterate of fit(): theta (C, d+1), L_in, its gradient, and the softmax heads [(p, q)] per
    chunk when the rows are cached (None otherwise)."""

    theta: np.ndarray
    value: float
    grad: np.ndarray
    heads: list | None


def evaluate(theta, rows: Rows, ridge: np.ndarray, *, with_gradient: bool = True) -> Point:
    """L_in and its gradient at theta in one pass over the rows (SUM form, ridge (C, d+1))."""
    kd = rows.kd
    value, grad = 0.5 * float((ridge * theta * theta).sum()), ridge * theta
    heads = [] if rows.cached is not None else None
    for x, log_pt, y, w in rows:
        outputs = x @ theta.T  # (m, C)
        chunk = Heads(log_softmax(outputs), log_softmax(outputs / kd.tau), log_pt)
        value += float(weighted(chunk_loss(chunk, y, kd), w).sum())
        if with_gradient:
            grad += weighted(chunk_residual(chunk, y, kd), w).T @ x  # (C, d+1)
        if heads is not None:
            heads.append((chunk.p, chunk.q))
    return Point(theta, value, grad, heads)


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
    def at_point(cls, point: Point, rows: Rows, ridge: np.ndarray) -> "HessianOperator":
        """The operator at a fit() iterate whose rows and heads are cached: no pass over the data."""
        operator = cls.__new__(cls)
        operator.theta, operator.ridge, operator.kd, operator.products = point.theta, ridge, rows.kd, 0
        operator._source = None
        operator._cache = [operator._terms(x, p, q, w) for (x, _, _, w), (p, q) in zip(rows.cached, point.heads)]
        return operator

    def _chunks(self):
        features, teacher_logits, labels, weights, chunk_size = self._source
        return chunks(features, teacher_logits, labels, weights, chunk_size)

    def _terms(self, x, p, q, w):
        lam = self.kd.lam
        big_p, big_q = weighted((1.0 - lam) * p, w), weighted(lam * q, w)
        return x, p, q, big_p + big_q, big_p, big_q

    def _chunk_terms(self, x, t, w):
        heads = output_heads(self.theta, x, t, self.kd)
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
    value, _ = value_and_gradient(theta, features, teacher_logits, labels, None, mu=0.0, bias_damping=0.0, kd=kd,
                                   chunk_size=chunk_size, with_gradient=False)
    return value / count


def validation_gradient(theta, features, teacher_logits, labels, *, kd: KDConfig,
                        chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """grad L_V (C, d+1) float64 (mean over the given samples, no regulariser)."""
    count = len(np.asarray(labels))
    _, grad = value_and_gradient(theta, features, teacher_logits, labels, None, mu=0.0, bias_damping=0.0, kd=kd,
                                  chunk_size=chunk_size)
    return grad / count


def predict_proba(theta, features, *, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """softmax(W phi + b): (N, C) float64, rows sum to 1."""
    theta = np.asarray(theta, np.float64)
    parts = []
    for start in range(0, len(features), chunk_size):
        phi = np.asarray(features[start:start + chunk_size], dtype=np.float64)
        parts.append(np.exp(log_softmax(phi @ theta[:, :-1].T + theta[:, -1])))
    return np.concatenate(parts) if parts else np.zeros((0, theta.shape[0]))

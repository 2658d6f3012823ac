"""The objective of the KD-aligned linear proxy (docs/METHOD.md, section 2): loss, gradient, curvature.

    f_theta(phi) = W phi + b,   theta = [W | b]  (C, d+1) float64 tensor,  x = [phi; 1]  (d+1,)
    l_i(theta)   = (1 - lam) CE(f(phi_i), y_i) + lam tau^2 KL(softmax(t_i/tau) || softmax(f(phi_i)/tau))
    L_in(theta)  = sum_i w_i l_i(theta) + mu/2 (||W||_F^2 + eps ||b||^2)          (SUM form, w_i in [0, 1])

Everything is a pure function in torch. ``features`` may be any float array (a float16 np.memmap included),
a :class:`FeatureView` or a tensor; they are read ``chunk_size`` rows at a time and sent to ``device``
("cpu", "cuda" or a torch.device) as float32 (from pinned memory, non-blocking, on CUDA), so no function
here holds more than one chunk of features (the stream, devices and conversions: ``tensors.py``; the fit's
iterates: :class:`Point`, evaluated over :class:`tensors.Rows`; where the rows are re-read at every pass, an
iterate's outputs are kept in an ``outputs.OutputStore`` so that passes needing only them skip the matmul).
Precision: products that only shape a step or a solve (the Hessian, Hessian-vector products, EKFAC factors,
scores) are float32 matmuls accumulated in float64; the outputs x theta^T, the softmax heads, the loss and
the gradient, whose zero defines theta*, are float64, so fits converge to a float64 tolerance and leave-one-out
refits resolve 1/n^2 changes. theta, vectors and results are float64 tensors on ``device`` (numpy inputs
are converted once).
Lower loss / objective is better. The flat parameter order (Hessian rows) is ``theta.reshape(-1)``:
index ``c * (d + 1) + j``.

The per-sample gradient is rank one: grad l_i = outer(r_i, x_i), with the output residual
    r_i = (1 - lam) (softmax(f_i) - onehot(y_i)) + lam tau (softmax(f_i/tau) - softmax(t_i/tau)),
and the output curvature is B_i = (1 - lam)(diag p - p p^T) + lam (diag q - q q^T), so the Hessian
is exact: H = sum_i w_i B_i kron x_i x_i^T + diag(regulariser).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ifbeta.config import KDConfig
from ifbeta.data.streaming import FeatureView, feature_statistics, standardise  # noqa: F401  (standardise: bilevel)
from ifbeta.influence import sharding
from ifbeta.influence.tensors import (
    CHUNK_SIZE,
    DOUBLE,
    OPERATOR_CACHE_BYTES,
    SINGLE,
    Rows,
    as_tensor,
    chunks,
    device_of,
    log_softmax,
    resolve_device,
    send,
    single_matmul,
)

_HESSIAN_BLOCK_ELEMENTS = 1 << 22  # rows x C(d+1) per Hessian outer-product block (16 MiB in float32)


def regulariser(shape, *, mu: float, bias_damping: float = 1e-3, device=None) -> torch.Tensor:
    """Per-parameter ridge (C, d+1) float64: mu on W, mu * bias_damping on b."""
    classes, width = shape
    row = torch.full((width,), float(mu), dtype=DOUBLE, device=resolve_device(device))
    row[-1] = float(mu) * float(bias_damping)
    return row.expand(classes, width).clone()


# ----------------------------------------------------------------------------- chunked KD math


@dataclass
class Heads:
    """Softmax quantities of one chunk, all (m, C) float64 tensors."""

    log_p: torch.Tensor  # log softmax(f)
    log_q: torch.Tensor  # log softmax(f / tau)
    log_pt: torch.Tensor  # log softmax(t / tau)

    @property
    def p(self):
        return torch.exp(self.log_p)

    @property
    def q(self):
        return torch.exp(self.log_q)


def outputs_of(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f = x theta^T (m, C) float64 (x float32 is exact in float64)."""
    return x.to(DOUBLE) @ theta.T


def output_heads(theta, x, t, kd: KDConfig) -> Heads:
    outputs = outputs_of(theta, x)  # (m, C)
    return Heads(log_softmax(outputs), log_softmax(outputs / kd.tau), log_softmax(t.to(DOUBLE) / kd.tau))


def _at_labels(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return values.gather(1, y[:, None])[:, 0]


def chunk_loss(heads: Heads, y, kd: KDConfig):
    cross_entropy = -_at_labels(heads.log_p, y)
    kl = (torch.exp(heads.log_pt) * (heads.log_pt - heads.log_q)).sum(dim=1)
    return (1.0 - kd.lam) * cross_entropy + kd.lam * kd.tau**2 * kl  # (m,)


def chunk_residual(heads: Heads, y, kd: KDConfig):
    residual = (1.0 - kd.lam) * heads.p
    residual.scatter_add_(1, y[:, None], torch.full((len(y), 1), -(1.0 - kd.lam), dtype=residual.dtype,
                                                     device=residual.device))
    residual += kd.lam * kd.tau * (heads.q - torch.exp(heads.log_pt))
    return residual  # (m, C)


def curvature_times(p, q, u, kd: KDConfig):
    """B_i u_i for every row: (m, C); p = softmax(f), q = softmax(f / tau), u (m, C)."""
    cross = p * u - p * (p * u).sum(dim=1, keepdim=True)
    distil = q * u - q * (q * u).sum(dim=1, keepdim=True)
    return (1.0 - kd.lam) * cross + kd.lam * distil


def weighted(values, w):
    return values if w is None else values * (w[:, None] if values.ndim == 2 else w)


# ----------------------------------------------------------------------------- public math


def per_sample_loss(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE,
                    device=None) -> torch.Tensor:
    """l_i (N,) float64, the KD loss of each sample under the proxy; lower = better fitted."""
    device = device_of(theta, device)
    theta = as_tensor(theta, device)
    parts = [chunk_loss(output_heads(theta, x, t, kd), y, kd)
             for x, t, y, _ in chunks(features, teacher_logits, labels, None, chunk_size, device)]
    return sharding.gather(torch.cat(parts) if parts else torch.zeros(0, dtype=DOUBLE, device=device), len(labels))


def residuals(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE,
              device=None) -> torch.Tensor:
    """r (N, C) float64 with grad_theta l_i = outer(r_i, [phi_i, 1])."""
    device = device_of(theta, device)
    theta = as_tensor(theta, device)
    parts = [chunk_residual(output_heads(theta, x, t, kd), y, kd)
             for x, t, y, _ in chunks(features, teacher_logits, labels, None, chunk_size, device)]
    local = torch.cat(parts) if parts else torch.zeros((0, theta.shape[0]), dtype=DOUBLE, device=device)
    return sharding.gather(local, len(labels))


def value_and_gradient(theta, features, teacher_logits, labels, weights, *, mu, bias_damping, kd,
                       chunk_size, with_gradient=True, device=None):
    """(L_in, its gradient (C, d+1) float64) at theta in one streamed pass (gradient None when not wanted)."""
    device = device_of(theta, device)
    theta = as_tensor(theta, device)
    rows = Rows(features, teacher_logits, labels, weights, kd=kd, chunk_size=chunk_size, cache_bytes=0,
                device=device)
    point = evaluate(theta, rows, regulariser(theta.shape, mu=mu, bias_damping=bias_damping, device=device),
                     with_gradient=with_gradient)
    return point.value, point.grad if with_gradient else None


def objective(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
              kd: KDConfig, chunk_size: int = CHUNK_SIZE, device=None) -> float:
    """L_in = sum_i w_i l_i + mu/2 (||W||^2 + eps ||b||^2), a float (SUM form, not mean); lower is better."""
    return value_and_gradient(theta, features, teacher_logits, labels, weights, mu=mu, bias_damping=bias_damping,
                              kd=kd, chunk_size=chunk_size, with_gradient=False, device=device)[0]


def gradient(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
             kd: KDConfig, chunk_size: int = CHUNK_SIZE, device=None) -> torch.Tensor:
    """grad L_in (C, d+1) float64."""
    return value_and_gradient(theta, features, teacher_logits, labels, weights, mu=mu, bias_damping=bias_damping,
                              kd=kd, chunk_size=chunk_size, device=device)[1]


def hessian(theta, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
            kd: KDConfig, chunk_size: int = CHUNK_SIZE, device=None) -> torch.Tensor:
    """Exact dense Hessian of L_in, (C(d+1), C(d+1)) float64, rows in ``theta.reshape(-1)`` order.

    Cost O(N C^2 (d+1)^2) in float32 matmuls, summed in float32 within a chunk and in float64 across
    chunks. Memory: the result (C(d+1))^2 float64, one float32 chunk sum of that size, one block of rows.
    """
    device = device_of(theta, device)
    theta = as_tensor(theta, device)
    classes, width = theta.shape
    size = classes * width
    block = max(1, _HESSIAN_BLOCK_ELEMENTS // (2 * size))
    matrix = torch.zeros((size, size), dtype=DOUBLE, device=device)
    partial = torch.zeros((size, size), dtype=SINGLE, device=device)  # one chunk's float32 sum
    for x, t, y, w in chunks(features, teacher_logits, labels, weights, chunk_size, device):
        w = torch.ones(len(y), dtype=DOUBLE, device=device) if w is None else w
        partial.zero_()
        for start in range(0, len(y), block):
            xs, ts, ws = x[start:start + block], t[start:start + block], w[start:start + block]
            heads = output_heads(theta, xs, ts, kd)
            diagonal = (ws[:, None] * ((1.0 - kd.lam) * heads.p + kd.lam * heads.q)).to(SINGLE)  # (m, C)
            for c in range(classes):
                span = slice(c * width, (c + 1) * width)
                partial[span, span].addmm_((xs * diagonal[:, c:c + 1]).T, xs)
            scaled = torch.cat([torch.sqrt((1.0 - kd.lam) * ws)[:, None] * heads.p,
                                torch.sqrt(kd.lam * ws)[:, None] * heads.q]).to(SINGLE)  # (2m, C)
            outer = (scaled[:, :, None] * torch.cat([xs, xs])[:, None, :]).reshape(-1, size)  # (2m, C(d+1))
            partial.addmm_(outer.T, outer, alpha=-1.0)
        matrix += partial  # float64 accumulation across chunks
    del partial
    matrix = sharding.total(matrix)  # rank partials, added in rank order
    view = matrix.view(classes, width, classes, width)  # data part P D P: exact math, drops float32 leakage
    view -= view.mean(dim=0, keepdim=True)
    view -= view.mean(dim=2, keepdim=True)
    _symmetrise(matrix)
    matrix.diagonal().add_(regulariser(theta.shape, mu=mu, bias_damping=bias_damping, device=device).reshape(-1))
    return matrix


def centred(values: torch.Tensor) -> torch.Tensor:
    """values (C, d+1) minus their mean over classes: the projection P onto the complement of the
    class-constant directions (theta[c, j] = v_j for every c). Every B_i annihilates those directions
    (B_i 1 = 0), so the data part of H is P D P exactly and there H is its ridge alone. Applying P around
    the float32 data products is exact math that keeps their round-off out of those weakly curved
    directions (curvature mu, mu * eps for the bias)."""
    return values - values.mean(dim=0, keepdim=True)


def _symmetrise(matrix: torch.Tensor, block: int = 1024) -> None:
    """matrix <- (matrix + matrix^T) / 2 in place, one block pair at a time (no size^2 temporaries)."""
    size = len(matrix)
    for row in range(0, size, block):
        for column in range(row, size, block):
            upper = matrix[row:row + block, column:column + block]
            lower = matrix[column:column + block, row:row + block]
            average = 0.5 * (upper + lower.T)
            upper.copy_(average)
            lower.copy_(average.T)


def hessian_diagonal(theta, features, teacher_logits, labels, *, weights=None, mu: float,
                     bias_damping: float = 1e-3, kd: KDConfig, chunk_size: int = CHUNK_SIZE,
                     device=None) -> torch.Tensor:
    """diag(H) as (C, d+1) float64, O(N C d); used as a preconditioner."""
    device = device_of(theta, device)
    theta = as_tensor(theta, device)
    result = regulariser(theta.shape, mu=mu, bias_damping=bias_damping, device=device)
    if not sharding.lead():
        result.zero_()  # the ridge counts once, on rank 0
    for x, t, y, w in chunks(features, teacher_logits, labels, weights, chunk_size, device):
        heads = output_heads(theta, x, t, kd)
        p, q = heads.p, heads.q
        curvature = (1.0 - kd.lam) * (p - p * p) + kd.lam * (q - q * q)  # (m, C) = diag B_i
        result += single_matmul(weighted(curvature, w).T, x * x)
    return sharding.total(result)


@dataclass
class Point:
    """An iterate of fit(): theta (C, d+1), L_in, its gradient (C, d+1), and the softmax heads [(p, q)]
    per chunk when the rows are cached (None otherwise); tensors float64 on the rows' device. ``outputs``:
    the outputs.OutputStore holding x theta^T of every chunk, when the pass that made the point wrote one."""

    theta: torch.Tensor
    value: float
    grad: torch.Tensor
    heads: list | None
    outputs: object = None


def ridge_value(theta, ridge):
    """mu/2 (||W||^2 + eps ||b||^2) as a float64 tensor; zero off rank 0 (the ridge counts once)."""
    value = 0.5 * (ridge * theta * theta).sum()
    return value if sharding.lead() else torch.zeros_like(value)


def evaluate(theta, rows: Rows, ridge: torch.Tensor, *, with_gradient: bool = True, store=None,
             known=None) -> Point:
    """L_in and its gradient at theta in one pass over the rows (SUM form, ridge (C, d+1)); float64.

    store: an outputs.OutputStore that receives every chunk's outputs x theta^T (then Point.outputs);
    known(k) -> chunk k's outputs when they are already at hand (fit's line search), so the pass skips
    the matmul that makes them."""
    kd = rows.kd
    theta = as_tensor(theta, rows.device)
    value = ridge_value(theta, ridge)
    grad = ridge * theta if sharding.lead() else torch.zeros_like(theta)
    heads = [] if rows.cached is not None else None
    for index, (x, log_pt, y, w) in enumerate(rows):
        outputs = known(index) if known is not None else outputs_of(theta, x)  # (m, C)
        chunk = Heads(log_softmax(outputs), log_softmax(outputs / kd.tau), log_pt)
        value = value + weighted(chunk_loss(chunk, y, kd), w).sum()
        if with_gradient:
            grad += weighted(chunk_residual(chunk, y, kd), w).T @ x.to(DOUBLE)  # (C, d+1)
        if heads is not None:
            heads.append((chunk.p, chunk.q))
        if store is not None:
            store[index] = outputs
    value, grad = sharding.total(torch.as_tensor(value, dtype=DOUBLE, device=rows.device), grad)
    return Point(theta, float(value), grad, heads, store)


class HessianOperator:
    """v -> H v for the Hessian of L_in at one (theta, weights): matrix-free, O(N C d) per product.

    With u = x_i^T V (the change of sample i's outputs along V), w_i B_i u is

        a_i * u - P_i (p_i . u) - Q_i (q_i . u),   a = w ((1-lam) p + lam q),  P = w (1-lam) p,  Q = w lam q,

    so the terms (x, p, q, a, P, Q) are computed once at construction (float32, on the device). When
    they fit in ``cache_bytes`` they stay in memory and every product is two float32 matmuls and a few row
    operations per chunk, accumulated in float64; otherwise (features larger than memory) each product
    streams the features and recomputes them. ``products`` counts the calls. Call with a (C, d+1) or flat
    vector (tensor or array); returns (C, d+1) float64.
    """

    def __init__(self, theta, features, teacher_logits, labels, *, weights=None, mu: float,
                 bias_damping: float = 1e-3, kd: KDConfig, chunk_size: int = CHUNK_SIZE,
                 cache_bytes: int = OPERATOR_CACHE_BYTES, device=None):
        self.device = device_of(theta, device)
        self.theta = as_tensor(theta, self.device)
        self.ridge = regulariser(self.theta.shape, mu=mu, bias_damping=bias_damping, device=self.device)
        self.kd, self.products = kd, 0
        self._source = (features, teacher_logits, labels, weights, chunk_size, self.device)
        classes, width = self.theta.shape
        self._cache, self._stream = None, None
        if len(labels) * (width + 5 * classes) * 4 <= cache_bytes:
            self._cache = [self._chunk_terms(x, t, w) for x, t, _, w in chunks(*self._source)]

    @classmethod
    def at_point(cls, point: Point, rows: Rows, ridge: torch.Tensor) -> "HessianOperator":
        """The operator at a fit() iterate: with its rows and heads cached, no pass over the data; with its
        outputs stored (Point.outputs), each product streams the features only and takes the heads from
        the stored outputs (softmax in float32, as the terms), not from a float64 matmul."""
        operator = cls.__new__(cls)
        operator.theta, operator.ridge, operator.kd, operator.products = point.theta, ridge, rows.kd, 0
        operator.device, operator._source, operator._cache, operator._stream = rows.device, None, None, None
        if point.heads is not None:
            operator._cache = [operator._terms(x, p, q, w) for (x, _, _, w), (p, q) in zip(rows.cached, point.heads)]
        else:
            operator._stream = (rows, point.outputs)
        return operator

    def _stored_terms(self):
        rows, outputs = self._stream
        for index, (x, w) in enumerate(rows.inputs()):
            f = outputs[index].to(SINGLE)
            yield self._terms(x, torch.softmax(f, dim=1), torch.softmax(f / self.kd.tau, dim=1), w)

    def _terms(self, x, p, q, w):
        lam = self.kd.lam
        big_p, big_q = weighted((1.0 - lam) * p, w), weighted(lam * q, w)
        return tuple(value.to(SINGLE) for value in (p, q, big_p + big_q, big_p, big_q)) + (x,)

    def _chunk_terms(self, x, t, w):
        heads = output_heads(self.theta, x, t, self.kd)
        return self._terms(x, heads.p, heads.q, w)

    def __call__(self, vector) -> torch.Tensor:
        vector = as_tensor(vector, self.device).reshape(self.theta.shape)
        self.products += 1
        data = torch.zeros_like(vector)
        single = centred(vector).to(SINGLE)
        if self._cache is not None:
            terms = self._cache
        elif self._stream is not None:
            terms = self._stored_terms()
        else:
            terms = (self._chunk_terms(x, t, w) for x, t, _, w in chunks(*self._source))
        for p, q, a, big_p, big_q, x in terms:
            u = x @ single.T  # (m, C): change of the outputs along `vector`
            image = a * u - big_p * (p * u).sum(dim=1, keepdim=True) - big_q * (q * u).sum(dim=1, keepdim=True)
            data += (image.T @ x).to(DOUBLE)
        return self.ridge * vector + centred(sharding.total(data))  # P D P v + R v (see centred)


def hvp(theta, vector, features, teacher_logits, labels, *, weights=None, mu: float, bias_damping: float = 1e-3,
        kd: KDConfig, chunk_size: int = CHUNK_SIZE, device=None) -> torch.Tensor:
    """Matrix-free H @ vector, O(N C d). vector (C, d+1) or flat; returns theta's shape (C, d+1) float64.

    For many products at one theta build a :class:`HessianOperator` once instead."""
    return HessianOperator(theta, features, teacher_logits, labels, weights=weights, mu=mu, bias_damping=bias_damping,
                           kd=kd, chunk_size=chunk_size, cache_bytes=0, device=device)(vector)


def validation_loss(theta, features, teacher_logits, labels, *, kd: KDConfig, chunk_size: int = CHUNK_SIZE,
                    device=None) -> float:
    """L_V = mean_j l_j(theta) over the given (validation) samples, a float; lower is better."""
    value, _ = value_and_gradient(theta, features, teacher_logits, labels, None, mu=0.0, bias_damping=0.0, kd=kd,
                                  chunk_size=chunk_size, with_gradient=False, device=device)
    return value / len(labels)


def validation_gradient(theta, features, teacher_logits, labels, *, kd: KDConfig,
                        chunk_size: int = CHUNK_SIZE, device=None) -> torch.Tensor:
    """grad L_V (C, d+1) float64 (mean over the given samples, no regulariser)."""
    _, grad = value_and_gradient(theta, features, teacher_logits, labels, None, mu=0.0, bias_damping=0.0, kd=kd,
                                 chunk_size=chunk_size, device=device)
    return grad / len(labels)


def predict_proba(theta, features, *, chunk_size: int = CHUNK_SIZE, device=None) -> torch.Tensor:
    """softmax(W phi + b): (N, C) float64, rows sum to 1."""
    device = device_of(theta, device)
    theta = as_tensor(theta, device)
    parts = []
    for start in range(0, len(features), chunk_size):
        phi = send(features[start:start + chunk_size], device).to(DOUBLE)  # the float32 stream, as everywhere
        parts.append(torch.softmax(phi @ theta[:, :-1].T + theta[:, -1], dim=1))
    return torch.cat(parts) if parts else torch.zeros((0, theta.shape[0]), dtype=DOUBLE, device=device)

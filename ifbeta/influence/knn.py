"""The soft k-nearest-neighbour proxy (docs/METHOD.md section 9): a kernel smoother of the teacher's
tempered soft labels in the standardised teacher feature space, fitted on a weighted subset.

A linear head on the teacher's penultimate features recovers the teacher's own head from almost any
subset (the logits are linear in those features), so its validation loss hardly tells subsets apart.
This proxy cannot copy the teacher: it predicts a validation sample only from the training samples
near it, so its validation KD loss measures how well the subset covers the teacher's function where
the validation data lies.

Prediction of a validation sample j (z_j standardised as in section 1) from candidates i with sample
weights w_i in [0, 1], sorted by squared distance d_ji^2 = ||z_j - z_i||^2 (ties by index):

    e_ji = min(w_i, max(0, k - sum_{i' nearer than i} w_i'))      the first k units of weight mass
    a_ji = e_ji exp(-d_ji^2 / h^2)                                 kernel times weight
    q_j  = sum_i a_ji P_i / sum_i a_ji,   P_i = softmax(t_i / tau)  (C,), a tempered distribution

With weights 0/1, e_ji = w_i on the k nearest KEPT samples and 0 elsewhere: q_j is the kernel-weighted
mean of their tempered teacher distributions. With fractional weights the neighbourhood holds k units
of weight mass, so q_j, and J, are continuous and piecewise smooth in w (a sample of weight 0 takes
no mass). No kept sample at all: q_j = uniform. h = inf is the plain (unweighted) k-NN mean.

The proxy's logits are f_j = tau log q_j, so its per-sample loss is the KD loss of section 2:

    l_j = (1 - lam) CE(softmax(tau log q_j), y_j) + lam tau^2 KL(softmax(t_j / tau) || q_j)

and J = L_V = mean_j l_j over the validation samples (lower is better). dJ/dw_i is exact (derivative
for INCREASING w_i, < 0 = more weight on i lowers L_V, as ``scores.influence_on_weights``); at a kink
of the mass rule (a cumulative weight exactly k) it is the one-sided derivative of the "full" branch.
The removal score is the exact leave-one-out change of L_V, s_i = L_V(w with w_i = 0) - L_V(w) > 0
helpful: only validation samples that hold i in their k units of mass change, each recomputed with
the next nearest candidates filling i's mass (``removal_scores``).

k (``ProxyConfig.neighbours``) and h (``bandwidth``) are chosen on the fitting side only
(``choose_settings``): every training sample is predicted from its neighbours among the OTHER
training samples and the (k, h) with the lowest mean KD loss over ``neighbour_grid`` x
``bandwidth_grid`` wins (h = grid value times the median distance to the k-th neighbour), so the
validation samples that J and the scores measure on never choose the settings.

Neighbour search (``nearest``): exact blocked matmul up to EXACT_LIMIT reference rows, above it an
approximate index (pynndescent, NN-descent, on the host) whose candidates get exact distances.

Everything is torch on ``device`` ("cpu", "cuda" or a torch.device; the device of the Neighbours' query
otherwise), in float64 throughout: the neighbour order decides which samples hold the k units of mass, and
float32 distances would reorder near-ties and change the exact leave-one-out scores. Inputs may be numpy
arrays or tensors (converted once); results are float64 / int64 tensors on the device (``tensors.to_numpy``
at the package boundary); the float results of ``validation_loss`` and the settings table are Python floats.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ifbeta.config import KDConfig
from ifbeta.influence.tensors import DOUBLE, as_tensor

logger = logging.getLogger(__name__)

__all__ = ["EXACT_LIMIT", "Neighbours", "choose_settings", "loss", "nearest", "predict", "removal_scores",
           "tempered", "validation_loss", "weight_gradient"]

EXACT_LIMIT = 100_000  # reference rows up to which neighbours are exact (blocked matmul), above: pynndescent
BLOCK_ELEMENTS = 1 << 22  # query rows x reference rows (or x columns x classes) per block (32 MiB of float64)


def _on(values, device=None, dtype=DOUBLE) -> torch.Tensor:
    """values as a ``dtype`` tensor; on ``device`` when given, else where a tensor already is (cpu for arrays)."""
    if device is None and isinstance(values, torch.Tensor):
        return values.to(dtype=dtype)
    return as_tensor(values, device, dtype)


def tempered(teacher_logits, tau: float, device=None) -> torch.Tensor:
    """softmax(t / tau) (n, C) float64, the tempered teacher distributions."""
    return torch.softmax(_on(teacher_logits, device) / tau, dim=1)


# ----------------------------------------------------------------------------- neighbour search


def _first_by_distance(sq: torch.Tensor, count: int) -> torch.Tensor:
    """Column order (m, count) of the smallest entries of each row of sq, ties by column (a stable sort)."""
    return torch.sort(sq, dim=1, stable=True).indices[:, :count]


def _exact(query, reference, count: int, exclude_self: bool):
    """Blocked exact search: (indices, squared distances) (m, count), ascending, ties by index."""
    norms = (reference * reference).sum(dim=1)
    rows = max(1, BLOCK_ELEMENTS // max(1, len(reference)))
    indices, distances = [], []
    for start in range(0, len(query), rows):
        block = query[start:start + rows]
        d2 = ((block * block).sum(dim=1)[:, None] - 2.0 * block @ reference.T + norms[None, :]).clamp_min_(0.0)
        if exclude_self:
            local = torch.arange(len(block), device=d2.device)
            d2[local, start + local] = torch.inf
        order = _first_by_distance(d2, count)
        indices.append(order)
        distances.append(torch.gather(d2, 1, order))
    return torch.cat(indices), torch.cat(distances)


def _approximate(query, reference, count: int, exclude_self: bool, seed: int):
    """NN-descent candidates (pynndescent, on the host), re-ranked by exact squared distance on the device."""
    from pynndescent import NNDescent

    extra = 1 if exclude_self else 0
    host = reference.cpu().numpy()
    index = NNDescent(host, n_neighbors=min(len(host) - 1, max(15, count + extra)), random_state=seed)
    found, _ = index.query(query.cpu().numpy(), k=min(len(host), count + extra))
    candidates = torch.as_tensor(np.sort(np.asarray(found, dtype=np.int64), axis=1), device=query.device)
    d2 = ((query[:, None, :] - reference[candidates]) ** 2).sum(dim=2)  # (m, K), candidates ascending
    if exclude_self:
        d2[candidates == torch.arange(len(query), device=query.device)[:, None]] = torch.inf
    order = _first_by_distance(d2, count)  # ties by candidate index (the columns are sorted by it)
    return torch.gather(candidates, 1, order), torch.gather(d2, 1, order)


def nearest(query, reference, count: int, *, exclude_self: bool = False, exact_limit: int = EXACT_LIMIT,
            seed: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` nearest reference rows of every query row: (indices (m, count) int64, squared
    distances (m, count) float64) tensors, ascending (ties by index). exclude_self: query IS reference and
    row i never lists itself. Exact up to ``exact_limit`` reference rows, approximate (pynndescent) above."""
    query = _on(query, device)
    reference = _on(reference, query.device)
    count = min(count, len(reference) - (1 if exclude_self else 0))
    if count <= 0 or len(query) == 0:
        return (torch.zeros((len(query), 0), dtype=torch.int64, device=query.device),
                torch.zeros((len(query), 0), dtype=DOUBLE, device=query.device))
    if len(reference) <= exact_limit:
        return _exact(query, reference, count, exclude_self)
    return _approximate(query, reference, count, exclude_self, seed)


@dataclass
class Neighbours:
    """Validation rows' candidates sorted by distance: indices, sq (m, M). Grown (``cover``) until each
    row's listed weight reaches the mass asked, or M is every candidate. query (m, d) and reference (n, d)
    are float64 tensors on ``device`` (arrays are converted when built)."""

    query: torch.Tensor  # (m, d) standardised validation features
    reference: torch.Tensor  # (n, d) standardised candidates
    indices: torch.Tensor | None = None
    sq: torch.Tensor | None = None
    exclude_self: bool = False
    device: str | torch.device | None = None

    def __post_init__(self):
        self.query = _on(self.query, self.device)
        self.reference = _on(self.reference, self.query.device)
        self.device = self.query.device

    def cover(self, weights, mass: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, sq) whose columns hold at least ``mass`` of ``weights`` (n,) in every row."""
        weights = _on(weights, self.device)
        total = len(self.reference) - (1 if self.exclude_self else 0)
        columns = 0 if self.indices is None else self.indices.shape[1]
        if columns == 0:
            columns = min(total, int(np.ceil(1.5 * mass / max(float(weights.mean()), 1e-3))) + 1)
        while True:
            if self.indices is None or self.indices.shape[1] < columns:
                self.indices, self.sq = nearest(self.query, self.reference, columns, exclude_self=self.exclude_self)
            if columns >= total or float(weights[self.indices].sum(dim=1).min()) >= mass:
                return self.indices, self.sq
            columns = min(total, 2 * columns)


# ----------------------------------------------------------------------------- prediction and loss


def _effective(weights, mass: float):
    """e = min(w, max(0, k - mass of nearer columns)) (..., M), and the mass still free before each column."""
    free = mass - (torch.cumsum(weights, dim=-1) - weights)
    return torch.minimum(weights, free.clamp_min(0.0)), free


def _kernel(sq, effective, bandwidth: float):
    """exp(-(d^2 - d_min^2) / h^2) (..., M), d_min over the active columns (cancels in q)."""
    shift = torch.where(effective > 0, sq, torch.inf).amin(dim=-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    return torch.exp(torch.clamp_max(-(sq - shift) / bandwidth**2, 700.0))


def predict(sq, weights, targets, *, mass: float, bandwidth: float) -> torch.Tensor:
    """q (..., C): sq (..., M) ascending squared distances, weights (..., M) the listed candidates'
    sample weights, targets (..., M, C) their tempered teacher distributions (on sq's device).
    No mass: uniform."""
    sq = _on(sq)
    weights, targets = _on(weights, sq.device), _on(targets, sq.device)
    effective, _ = _effective(weights, mass)
    a = effective * _kernel(sq, effective, bandwidth)  # (..., M)
    total = a.sum(dim=-1, keepdim=True)
    q = torch.einsum("...m,...mc->...c", a, targets)
    empty = total[..., 0] <= 0
    q = q / torch.where(total > 0, total, 1.0)
    q[empty] = 1.0 / targets.shape[-1]
    return q


def loss(q, teacher, labels, kd: KDConfig) -> torch.Tensor:
    """l_j (...,) of the proxy's logits tau log q: (1 - lam) CE + lam tau^2 KL(teacher || q); lower is better.
    q, teacher (..., C) tempered distributions, labels (...,) int."""
    q = _on(q)
    teacher, labels = _on(teacher, q.device), _on(labels, q.device, torch.int64)
    log_q = torch.log(q)
    log_p = torch.log_softmax(kd.tau * log_q, dim=-1)  # log softmax(tau log q)
    cross_entropy = -torch.gather(log_p, -1, labels[..., None])[..., 0]
    kl = (teacher * (torch.log(teacher.clamp_min(1e-300)) - log_q)).sum(dim=-1)
    return (1.0 - kd.lam) * cross_entropy + kd.lam * kd.tau**2 * kl


def _loss_gradient(q, teacher, labels, kd: KDConfig):
    """dl_j/dq_j (m, C)."""
    p = torch.softmax(kd.tau * torch.log(q), dim=1)
    p[torch.arange(len(labels), device=p.device), labels] -= 1.0
    return ((1.0 - kd.lam) * kd.tau * p - kd.lam * kd.tau**2 * teacher) / q


def _blocks(count: int, columns: int, classes: int):
    step = max(1, BLOCK_ELEMENTS // max(1, columns * classes))
    return [slice(start, min(count, start + step)) for start in range(0, count, step)]


def _arguments(neighbours: Neighbours, weights, targets, val_teacher, val_labels):
    """The fold's arrays as tensors on the Neighbours' device: weights, targets, val_teacher (float64), labels."""
    device = neighbours.device
    return (_on(weights, device), _on(targets, device), _on(val_teacher, device),
            _on(val_labels, device, torch.int64))


def validation_loss(neighbours: Neighbours, weights, targets, val_teacher, val_labels, *, kd: KDConfig,
                    mass: float, bandwidth: float) -> tuple[float, float]:
    """(L_V, accuracy of argmax q on the validation labels); weights (n,), targets (n, C) of the candidates."""
    weights, targets, val_teacher, val_labels = _arguments(neighbours, weights, targets, val_teacher, val_labels)
    indices, sq = neighbours.cover(weights, mass)
    total, correct = 0.0, 0
    for rows in _blocks(len(indices), indices.shape[1], targets.shape[1]):
        q = predict(sq[rows], weights[indices[rows]], targets[indices[rows]], mass=mass, bandwidth=bandwidth)
        total += float(loss(q, val_teacher[rows], val_labels[rows], kd).sum())
        correct += int((q.argmax(dim=1) == val_labels[rows]).sum())
    return total / max(1, len(indices)), correct / max(1, len(indices))


def weight_gradient(neighbours: Neighbours, weights, targets, val_teacher, val_labels, *, kd: KDConfig,
                    mass: float, bandwidth: float) -> torch.Tensor:
    """dL_V/dw (n,) float64 tensor for INCREASING each w_i (< 0: more weight on i lowers L_V).

    Per validation row, with a = e K, Z = sum a, v_m = K_m g_j . (P_m - q_j) / Z (g = dl/dq): a column
    before the mass boundary gets v_m, and every column nearer than the boundary column b also loses
    v_b (its mass comes out of b's share)."""
    weights, targets, val_teacher, val_labels = _arguments(neighbours, weights, targets, val_teacher, val_labels)
    indices, sq = neighbours.cover(weights, mass)
    gradient = torch.zeros(len(weights), dtype=DOUBLE, device=weights.device)
    for rows in _blocks(len(indices), indices.shape[1], targets.shape[1]):
        index, w, P = indices[rows], weights[indices[rows]], targets[indices[rows]]  # (b, M), (b, M), (b, M, C)
        effective, free = _effective(w, mass)
        kernel = _kernel(sq[rows], effective, bandwidth)
        a = effective * kernel
        total = a.sum(dim=1, keepdim=True)
        q = torch.einsum("bm,bmc->bc", a, P) / torch.where(total > 0, total, 1.0)
        q[total[:, 0] <= 0] = 1.0 / P.shape[-1]  # no mass: uniform, and no gradient (v = 0 below)
        g = _loss_gradient(q, val_teacher[rows], val_labels[rows], kd)  # (b, C)
        v = kernel * torch.einsum("bc,bmc->bm", g, P - q[:, None, :]) / torch.where(total > 0, total, torch.inf)
        full = (free >= w) & (free > 0)  # e = w (w = 0 included while mass is free)
        boundary = (free > 0) & (free < w)  # at most one column per row
        v_boundary = (v * boundary).sum(dim=1, keepdim=True)
        before = torch.flip(torch.cumsum(torch.flip(boundary.long(), [1]), dim=1), [1]) > boundary.long()
        contribution = v * full - v_boundary * before  # columns nearer than the boundary give up v_b
        gradient.index_add_(0, index.reshape(-1), contribution.reshape(-1))
    return gradient / max(1, len(indices))


def removal_scores(neighbours: Neighbours, weights, targets, val_teacher, val_labels, *, kd: KDConfig,
                   mass: float, bandwidth: float) -> torch.Tensor:
    """Exact leave-one-out s_i = L_V(w_i = 0) - L_V(w), (n,) float64 tensor, > 0 helpful.

    Only rows holding i in their mass change: for each active column p (e > 0) the row is predicted
    again with that column's weight 0, the next listed candidates filling the mass (the list covers
    mass k + 1 >= k + w_i)."""
    weights, targets, val_teacher, val_labels = _arguments(neighbours, weights, targets, val_teacher, val_labels)
    indices, sq = neighbours.cover(weights, mass + 1.0)
    scores = torch.zeros(len(weights), dtype=DOUBLE, device=weights.device)
    for rows in _blocks(len(indices), indices.shape[1], targets.shape[1]):
        index, w, P, d2 = indices[rows], weights[indices[rows]], targets[indices[rows]], sq[rows]
        y, teacher = val_labels[rows], val_teacher[rows]
        base = loss(predict(d2, w, P, mass=mass, bandwidth=bandwidth), teacher, y, kd)  # (b,)
        active = _effective(w, mass)[0] > 0
        for column in torch.nonzero(active.any(dim=0))[:, 0].tolist():
            members = torch.nonzero(active[:, column])[:, 0]
            removed = w[members].clone()
            removed[:, column] = 0.0
            q = predict(d2[members], removed, P[members], mass=mass, bandwidth=bandwidth)
            scores.index_add_(0, index[members, column], loss(q, teacher[members], y[members], kd) - base[members])
    return scores / max(1, len(indices))


# ----------------------------------------------------------------------------- settings by validation


def _median(values: torch.Tensor) -> float:
    """numpy's median (the mean of the two middle values for an even count)."""
    ordered = torch.sort(values).values
    middle = len(ordered) // 2
    return float(ordered[middle]) if len(ordered) % 2 else float(0.5 * (ordered[middle - 1] + ordered[middle]))


def choose_settings(features, targets, labels, *, kd: KDConfig, neighbour_grid=(5, 10, 20, 50),
                    bandwidth_grid=(0.25, 0.5, 1.0, 2.0, 4.0), neighbours: int | None = None,
                    bandwidth: float | None = None, device=None) -> tuple[int, float, list[dict]]:
    """(k, h, table) by leave-one-out on the fitting side: each training sample (features (n, d)
    standardised, targets (n, C) tempered, labels (n,)) predicted from the other training samples;
    lowest mean KD loss wins. A given ``neighbours`` / ``bandwidth`` fixes that setting. h = grid value
    x median distance to the k-th other sample. table rows {neighbours, bandwidth, scale, loo_loss}."""
    n = len(labels)
    if n < 2:
        raise ValueError(f"the k-NN proxy needs at least 2 training samples, got {n}")
    ks = sorted({min(int(k), n - 1) for k in ((neighbours,) if neighbours is not None else neighbour_grid)})
    if min(ks) < 1:
        raise ValueError(f"neighbours must be >= 1, got {min(ks)}")
    table = Neighbours(features, features, exclude_self=True, device=device)
    targets, labels = _on(targets, table.device), _on(labels, table.device, torch.int64)
    indices, sq = table.cover(torch.ones(n, dtype=DOUBLE, device=table.device), float(max(ks)))
    ones, P, rows = torch.ones(indices.shape, dtype=DOUBLE, device=table.device), targets[indices], []
    for k in ks:
        median = float(np.sqrt(_median(sq[:, k - 1])))
        scales = (None,) if bandwidth is not None else bandwidth_grid
        for scale in scales:
            h = float(bandwidth) if scale is None else float(scale) * max(median, 1e-12)
            q = predict(sq, ones, P, mass=float(k), bandwidth=h)
            rows.append({"neighbours": k, "bandwidth": h, "scale": scale,
                         "loo_loss": float(loss(q, targets, labels, kd).mean())})
    best = min(rows, key=lambda row: row["loo_loss"])
    logger.info("knn proxy: k=%d h=%.4g (leave-one-out KD loss %.6g)", best["neighbours"], best["bandwidth"],
                best["loo_loss"])
    return best["neighbours"], best["bandwidth"], rows

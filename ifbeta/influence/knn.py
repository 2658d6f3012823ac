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
approximate index (pynndescent, NN-descent) whose candidates get exact distances.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ifbeta.config import KDConfig

logger = logging.getLogger(__name__)

__all__ = ["EXACT_LIMIT", "Neighbours", "choose_settings", "loss", "nearest", "predict", "removal_scores",
           "tempered", "validation_loss", "weight_gradient"]

EXACT_LIMIT = 100_000  # reference rows up to which neighbours are exact (blocked matmul), above: pynndescent
BLOCK_ELEMENTS = 1 << 22  # query rows x reference rows (or x columns x classes) per block (32 MiB of float64)


def tempered(teacher_logits, tau: float) -> np.ndarray:
    """softmax(t / tau) (n, C) float64, the tempered teacher distributions."""
    z = np.asarray(teacher_logits, dtype=np.float64) / tau
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- neighbour search


def _exact(query, reference, count: int, exclude_self: bool):
    """Blocked exact search: (indices, squared distances) (m, count), ascending, ties by index."""
    norms = (reference * reference).sum(axis=1)
    rows = max(1, BLOCK_ELEMENTS // max(1, len(reference)))
    indices, distances = [], []
    for start in range(0, len(query), rows):
        block = query[start:start + rows]
        d2 = np.maximum((block * block).sum(axis=1)[:, None] - 2.0 * block @ reference.T + norms[None, :], 0.0)
        if exclude_self:
            d2[np.arange(len(block)), start + np.arange(len(block))] = np.inf
        order = np.lexsort((np.broadcast_to(np.arange(d2.shape[1]), d2.shape), d2), axis=1)[:, :count]
        indices.append(order)
        distances.append(np.take_along_axis(d2, order, axis=1))
    return np.concatenate(indices), np.concatenate(distances)


def _approximate(query, reference, count: int, exclude_self: bool, seed: int):
    """NN-descent candidates (pynndescent), re-ranked by exact squared distance."""
    from pynndescent import NNDescent

    extra = 1 if exclude_self else 0
    index = NNDescent(reference, n_neighbors=min(len(reference) - 1, max(15, count + extra)), random_state=seed)
    candidates, _ = index.query(query, k=min(len(reference), count + extra))
    candidates = np.asarray(candidates, dtype=np.int64)
    d2 = ((query[:, None, :] - reference[candidates]) ** 2).sum(axis=2)
    if exclude_self:
        d2[candidates == np.arange(len(query))[:, None]] = np.inf
    order = np.lexsort((candidates, d2), axis=1)[:, :count]
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(d2, order, axis=1)


def nearest(query, reference, count: int, *, exclude_self: bool = False, exact_limit: int = EXACT_LIMIT,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` nearest reference rows of every query row: (indices (m, count) int64, squared
    distances (m, count) float64), ascending (ties by index). exclude_self: query IS reference and row
    i never lists itself. Exact up to ``exact_limit`` reference rows, approximate (pynndescent) above."""
    query, reference = np.asarray(query, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    count = min(count, len(reference) - (1 if exclude_self else 0))
    if count <= 0 or len(query) == 0:
        return np.zeros((len(query), 0), np.int64), np.zeros((len(query), 0))
    if len(reference) <= exact_limit:
        return _exact(query, reference, count, exclude_self)
    return _approximate(query, reference, count, exclude_self, seed)


@dataclass
class Neighbours:
    """Validation rows' candidates sorted by distance: indices, sq (m, M). Grown (``cover``) until each
    row's listed weight reaches the mass asked, or M is every candidate."""

    query: np.ndarray  # (m, d) standardised validation features
    reference: np.ndarray  # (n, d) standardised candidates
    indices: np.ndarray | None = None
    sq: np.ndarray | None = None
    exclude_self: bool = False

    def cover(self, weights: np.ndarray, mass: float) -> tuple[np.ndarray, np.ndarray]:
        """(indices, sq) whose columns hold at least ``mass`` of ``weights`` (n,) in every row."""
        total = len(self.reference) - (1 if self.exclude_self else 0)
        columns = 0 if self.indices is None else self.indices.shape[1]
        if columns == 0:
            columns = min(total, int(np.ceil(1.5 * mass / max(float(np.mean(weights)), 1e-3))) + 1)
        while True:
            if self.indices is None or self.indices.shape[1] < columns:
                self.indices, self.sq = nearest(self.query, self.reference, columns, exclude_self=self.exclude_self)
            if columns >= total or weights[self.indices].sum(axis=1).min() >= mass:
                return self.indices, self.sq
            columns = min(total, 2 * columns)


# ----------------------------------------------------------------------------- prediction and loss


def _effective(weights, mass: float):
    """e = min(w, max(0, k - mass of nearer columns)) (..., M), and the mass still free before each column."""
    free = mass - (np.cumsum(weights, axis=-1) - weights)
    return np.minimum(weights, np.maximum(0.0, free)), free


def _kernel(sq, effective, bandwidth: float):
    """exp(-(d^2 - d_min^2) / h^2) (..., M), d_min over the active columns (cancels in q)."""
    active = effective > 0
    shift = np.where(active, sq, np.inf).min(axis=-1, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    return np.exp(np.minimum(-(sq - shift) / bandwidth**2, 700.0))


def predict(sq, weights, targets, *, mass: float, bandwidth: float) -> np.ndarray:
    """q (..., C): sq (..., M) ascending squared distances, weights (..., M) the listed candidates'
    sample weights, targets (..., M, C) their tempered teacher distributions. No mass: uniform."""
    effective, _ = _effective(weights, mass)
    a = effective * _kernel(sq, effective, bandwidth)  # (..., M)
    total = a.sum(axis=-1, keepdims=True)
    q = np.einsum("...m,...mc->...c", a, targets)
    empty = total[..., 0] <= 0
    q = q / np.where(total > 0, total, 1.0)
    q[empty] = 1.0 / targets.shape[-1]
    return q


def loss(q, teacher, labels, kd: KDConfig) -> np.ndarray:
    """l_j (...,) of the proxy's logits tau log q: (1 - lam) CE + lam tau^2 KL(teacher || q); lower is better.
    q, teacher (..., C) tempered distributions, labels (...,) int."""
    log_q = np.log(q)
    scaled = kd.tau * log_q
    top = scaled.max(axis=-1, keepdims=True)
    log_p = scaled - top - np.log(np.exp(scaled - top).sum(axis=-1, keepdims=True))  # log softmax(tau log q)
    cross_entropy = -np.take_along_axis(log_p, np.asarray(labels)[..., None], axis=-1)[..., 0]
    kl = (teacher * (np.log(np.maximum(teacher, 1e-300)) - log_q)).sum(axis=-1)
    return (1.0 - kd.lam) * cross_entropy + kd.lam * kd.tau**2 * kl


def _loss_gradient(q, teacher, labels, kd: KDConfig):
    """dl_j/dq_j (m, C)."""
    scaled = kd.tau * np.log(q)
    p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1.0
    return ((1.0 - kd.lam) * kd.tau * p - kd.lam * kd.tau**2 * teacher) / q


def _blocks(count: int, columns: int, classes: int):
    step = max(1, BLOCK_ELEMENTS // max(1, columns * classes))
    return [slice(start, min(count, start + step)) for start in range(0, count, step)]


def validation_loss(neighbours: Neighbours, weights, targets, val_teacher, val_labels, *, kd: KDConfig,
                    mass: float, bandwidth: float) -> tuple[float, float]:
    """(L_V, accuracy of argmax q on the validation labels); weights (n,), targets (n, C) of the candidates."""
    weights = np.asarray(weights, dtype=np.float64)
    indices, sq = neighbours.cover(weights, mass)
    total, correct = 0.0, 0
    for rows in _blocks(len(indices), indices.shape[1], targets.shape[1]):
        q = predict(sq[rows], weights[indices[rows]], targets[indices[rows]], mass=mass, bandwidth=bandwidth)
        total += float(loss(q, val_teacher[rows], val_labels[rows], kd).sum())
        correct += int((q.argmax(axis=1) == val_labels[rows]).sum())
    return total / max(1, len(indices)), correct / max(1, len(indices))


def weight_gradient(neighbours: Neighbours, weights, targets, val_teacher, val_labels, *, kd: KDConfig,
                    mass: float, bandwidth: float) -> np.ndarray:
    """dL_V/dw (n,) float64 for INCREASING each w_i (< 0: more weight on i lowers L_V).

    Per validation row, with a = e K, Z = sum a, v_m = K_m g_j . (P_m - q_j) / Z (g = dl/dq): a column
    before the mass boundary gets v_m, and every column nearer than the boundary column b also loses
    v_b (its mass comes out of b's share)."""
    weights = np.asarray(weights, dtype=np.float64)
    indices, sq = neighbours.cover(weights, mass)
    gradient = np.zeros(len(weights))
    for rows in _blocks(len(indices), indices.shape[1], targets.shape[1]):
        index, w, P = indices[rows], weights[indices[rows]], targets[indices[rows]]  # (b, M), (b, M), (b, M, C)
        effective, free = _effective(w, mass)
        kernel = _kernel(sq[rows], effective, bandwidth)
        a = effective * kernel
        total = a.sum(axis=1, keepdims=True)
        q = np.einsum("bm,bmc->bc", a, P) / np.where(total > 0, total, 1.0)
        q[total[:, 0] <= 0] = 1.0 / P.shape[-1]  # no mass: uniform, and no gradient (v = 0 below)
        g = _loss_gradient(q, val_teacher[rows], val_labels[rows], kd)  # (b, C)
        v = kernel * np.einsum("bc,bmc->bm", g, P - q[:, None, :]) / np.where(total > 0, total, np.inf)
        full = (free >= w) & (free > 0)  # e = w (w = 0 included while mass is free)
        boundary = (free > 0) & (free < w)  # at most one column per row
        v_boundary = (v * boundary).sum(axis=1, keepdims=True)
        before = np.cumsum(boundary[:, ::-1], axis=1)[:, ::-1] > boundary  # columns nearer than the boundary
        contribution = v * full - v_boundary * before
        np.add.at(gradient, index.reshape(-1), contribution.reshape(-1))
    return gradient / max(1, len(indices))


def removal_scores(neighbours: Neighbours, weights, targets, val_teacher, val_labels, *, kd: KDConfig,
                   mass: float, bandwidth: float) -> np.ndarray:
    """Exact leave-one-out s_i = L_V(w_i = 0) - L_V(w), (n,) float64, > 0 helpful.

    Only rows holding i in their mass change: for each active column p (e > 0) the row is predicted
    again with that column's weight 0, the next listed candidates filling the mass (the list covers
    mass k + 1 >= k + w_i)."""
    weights = np.asarray(weights, dtype=np.float64)
    indices, sq = neighbours.cover(weights, mass + 1.0)
    scores = np.zeros(len(weights))
    for rows in _blocks(len(indices), indices.shape[1], targets.shape[1]):
        index, w, P, d2 = indices[rows], weights[indices[rows]], targets[indices[rows]], sq[rows]
        y, teacher = val_labels[rows], val_teacher[rows]
        base = loss(predict(d2, w, P, mass=mass, bandwidth=bandwidth), teacher, y, kd)  # (b,)
        active = _effective(w, mass)[0] > 0
        for column in np.flatnonzero(active.any(axis=0)):
            members = np.flatnonzero(active[:, column])
            removed = w[members].copy()
            removed[:, column] = 0.0
            q = predict(d2[members], removed, P[members], mass=mass, bandwidth=bandwidth)
            np.add.at(scores, index[members, column], loss(q, teacher[members], y[members], kd) - base[members])
    return scores / max(1, len(indices))


# ----------------------------------------------------------------------------- settings by validation


def choose_settings(features, targets, labels, *, kd: KDConfig, neighbour_grid=(5, 10, 20, 50),
                    bandwidth_grid=(0.25, 0.5, 1.0, 2.0, 4.0), neighbours: int | None = None,
                    bandwidth: float | None = None) -> tuple[int, float, list[dict]]:
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
    table = Neighbours(features, features, exclude_self=True)
    indices, sq = table.cover(np.ones(n), float(max(ks)))
    ones, P, rows = np.ones(indices.shape), targets[indices], []
    for k in ks:
        median = float(np.sqrt(np.median(sq[:, k - 1])))
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

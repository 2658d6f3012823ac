"""Coverage selection rules on the standardised teacher features: D2-Pruning, herding, k-center greedy,
facility location.

Signature and return value as in ``selection.score_based``; each method's core (a pure function of
the group's points) sits just above its wrapper. Deterministic except for k-center's first centre.
"""
from __future__ import annotations

import heapq
import math

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from ifbeta.data.streaming import feature_statistics
from ifbeta.selection.grouping import grouped, standardised
from ifbeta.selection.signals import teacher_score, to_difficulty

# ---------------------------------------------------------------------------------------------
# D2-Pruning


def knn_graph(points: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices): (n, m) each, m = min(neighbours, n - 1), self excluded."""
    m = min(neighbours, len(points) - 1)
    if m <= 0:
        return np.zeros((len(points), 0)), np.zeros((len(points), 0), dtype=np.int64)
    distances, indices = NearestNeighbors(n_neighbors=m + 1).fit(points).kneighbors(points)
    is_self = indices == np.arange(len(points))[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # duplicates may hide self: drop the farthest instead
    keep = ~is_self
    return distances[keep].reshape(len(points), m), indices[keep].reshape(len(points), m)


def d2_choose(points, difficulty, quota, *, neighbours, gamma_forward, gamma_reverse):
    """D2-Pruning on one group. points (n, d), difficulty (n,) >= 0. Returns (local indices,
    forward-passed scores (n,)). Forward: s'_u = s_u + sum_{v in kNN(u)} exp(-gamma_f d_uv) s_v.
    Selection: repeatedly take argmax s' (ties by index), then s'_v -= exp(-gamma_r d_uv) s'_u for
    the kNN v of the chosen u (reverse message passing)."""
    distances, indices = knn_graph(points, neighbours)
    density = difficulty + (np.exp(-gamma_forward * distances) * difficulty[indices]).sum(axis=1)
    forward = density.copy()
    heap = [(-value, node) for node, value in enumerate(density)]
    heapq.heapify(heap)
    chosen = np.zeros(len(points), dtype=bool)
    picked = []
    while len(picked) < quota:
        negative, node = heapq.heappop(heap)
        if chosen[node] or -negative != density[node]:
            continue  # already taken, or a stale entry
        chosen[node] = True
        picked.append(node)
        for distance, neighbour in zip(distances[node], indices[node]):
            if not chosen[neighbour]:
                density[neighbour] -= math.exp(-gamma_reverse * distance) * density[node]
                heapq.heappush(heap, (-density[neighbour], neighbour))
    return np.asarray(picked, dtype=np.int64), forward


def d2(inputs, k, *, ratio, seed, score="el2n", neighbours=10, gamma_forward=1.0, gamma_reverse=1.0,
       stratify=True, config=None):
    """D2-Pruning on a kNN graph of the standardised features scaled by 1/sqrt(d) (so distances are
    O(1)); one graph per class when stratified. Deterministic. Scores: the forward-passed difficulty."""
    difficulty = to_difficulty(score, teacher_score(inputs, score, seed=seed, config=config))
    statistics = feature_statistics(inputs.features)
    scale = 1.0 / math.sqrt(inputs.features.shape[1])
    forward = np.zeros(len(difficulty))

    def choose(members, quota):
        points = standardised(inputs.features, members, statistics) * scale
        local, forward[members] = d2_choose(points, difficulty[members], quota, neighbours=neighbours,
                                            gamma_forward=gamma_forward, gamma_reverse=gamma_reverse)
        return members[local]
    indices = grouped(inputs.labels, k, stratify, choose)
    info = {"neighbours": neighbours, "gamma_forward": gamma_forward, "gamma_reverse": gamma_reverse,
            "score": score, "stratified": stratify}
    return indices, forward, info


# ---------------------------------------------------------------------------------------------
# Herding


def herding_choose(points: np.ndarray, quota: int) -> np.ndarray:
    """Greedy herding (Welling; iCaRL): step t adds the point that brings the running mean of the
    selection closest to the group mean. Deterministic; returns local indices in selection order."""
    mean = points.mean(axis=0)
    norms = (points ** 2).sum(axis=1)
    total = np.zeros(points.shape[1])
    available = np.ones(len(points), dtype=bool)
    picked = np.empty(quota, dtype=np.int64)
    for step in range(quota):
        target = (step + 1) * mean - total  # the point that would make the new mean exact
        gain = 2.0 * points @ target - norms  # = ||target||^2 - ||target - x||^2
        gain[~available] = -np.inf
        picked[step] = int(np.argmax(gain))
        available[picked[step]] = False
        total += points[picked[step]]
    return picked


def herding(inputs, k, *, ratio, seed, stratify=True):
    """Greedy herding on standardised features towards the class mean (global mean when
    ``stratify=False``). Deterministic. Scores: None."""
    statistics = feature_statistics(inputs.features)
    choose = lambda members, quota: members[herding_choose(standardised(inputs.features, members, statistics), quota)]  # noqa: E731
    return grouped(inputs.labels, k, stratify, choose), None, {"stratified": stratify}


# ---------------------------------------------------------------------------------------------
# k-center greedy


def kcenter_choose(points: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """k-center greedy (Sener & Savarese): a random first centre, then repeatedly the point farthest
    from all chosen centres. Returns local indices in selection order."""
    norms = (points ** 2).sum(axis=1)
    picked = np.empty(quota, dtype=np.int64)
    nearest = np.full(len(points), np.inf)
    for step in range(quota):
        node = int(rng.integers(len(points))) if step == 0 else int(np.argmax(nearest))
        picked[step] = node
        squared = norms - 2.0 * points @ points[node] + norms[node]
        nearest = np.minimum(nearest, squared)
        nearest[node] = -np.inf  # never chosen twice, even among duplicates (min keeps -inf)
    return picked


def kcenter(inputs, k, *, ratio, seed, stratify=True):
    """k-center greedy on standardised features, per class (``stratify=False``: over the whole pool);
    the first centre of each group is drawn from ``seed``. Scores: None."""
    statistics = feature_statistics(inputs.features)
    rng = np.random.default_rng(seed)
    choose = lambda members, quota: members[kcenter_choose(standardised(inputs.features, members, statistics), quota, rng)]  # noqa: E731
    return grouped(inputs.labels, k, stratify, choose), None, {"stratified": stratify}


# ---------------------------------------------------------------------------------------------
# Facility location


def distance_rows(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(rows), n) from points[rows] to every point, from the coordinate
    differences (``scipy.spatial.distance.cdist``: no cancellation, d(i, i) = 0 exactly)."""
    return cdist(points[rows], points)


def facility_location_choose(points: np.ndarray, quota: int, *, block: int = 1024) -> np.ndarray:
    """Greedy facility location on one group: maximise F(S) = sum_i max_{j in S} sim(i, j) with
    sim(i, j) = D - d(i, j), d Euclidean and D the group's largest pairwise distance (so sim >= 0,
    sim(i, i) = D, and F(S) = n D - sum_i min_{j in S} d(i, j): the k-median cost turned into a
    monotone submodular gain). Lazy greedy (Minoux): the gains of a submodular F only shrink, so a
    stale gain is an upper bound; the top of the heap is recomputed exactly (one row of distances)
    until a fresh gain stays on top. Ties go to the lower index, as plain greedy's argmax does.

    points (n, d) float64, 1 <= quota <= n. Pairwise distances are computed in row blocks of
    ``block`` (memory O(block * n)), never stored whole. Returns local indices in selection order."""
    n = len(points)
    row_sums, largest = np.zeros(n), 0.0
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        distances = distance_rows(points, rows)
        row_sums[rows] = distances.sum(axis=1)
        largest = max(largest, float(distances.max()))
    covered = np.zeros(n)  # max_{j in S} sim(i, j); 0 for the empty set
    heap = [(-(n * largest - row_sums[j]), j, -1) for j in range(n)]  # (-gain bound, index, step it is exact at)
    heapq.heapify(heap)
    picked: list[int] = []
    while len(picked) < quota:
        bound, node, fresh_at = heapq.heappop(heap)
        similarity = largest - distance_rows(points, np.array([node]))[0]
        if fresh_at == len(picked):
            picked.append(node)
            covered = np.maximum(covered, similarity)
            continue
        heapq.heappush(heap, (-float(np.maximum(similarity - covered, 0.0).sum()), node, len(picked)))
    return np.asarray(picked, dtype=np.int64)


def facility_location_objective(points: np.ndarray, chosen: np.ndarray) -> float:
    """F(S) of ``facility_location_choose`` for local indices ``chosen`` (same similarity, same D)."""
    distances = distance_rows(points, np.arange(len(points)))
    return float((distances.max() - distances[:, np.asarray(chosen)]).max(axis=1).sum()) if len(chosen) else 0.0


def facility_location(inputs, k, *, ratio, seed, stratify=True, block=1024):
    """Greedy facility location on standardised features, per class (``stratify=False``: over the
    whole pool); similarity = the group's largest distance minus the Euclidean distance.
    Deterministic (the seed is unused). Scores: None."""
    statistics = feature_statistics(inputs.features)

    def choose(members, quota):
        points = standardised(inputs.features, members, statistics)
        return members[facility_location_choose(points, quota, block=block)]
    info = {"stratified": stratify, "similarity": "max distance - distance"}
    return grouped(inputs.labels, k, stratify, choose), None, info

"""The heuristic selection methods behind ``selection.select`` (METHOD.md section 7).

Every method has the signature ``method(inputs, k, *, ratio, seed, **options)`` and returns
``(indices, scores, info)``: exactly k distinct sample indices (any order; ``select`` sorts them),
the (N,) score it ranked by (or None) and a dict of method-specific facts.

Class stratification: unless noted, a method runs inside each class with the quota of
``policy.class_quotas`` (proportional to class size, largest remainder, total exactly k) and takes
``stratify=False`` for the published global form. ``random`` is the only unstratified default.

Score directions (what ``Selection.scores`` holds):
- ``el2n`` = ||softmax(t) - onehot(y)||_2 in [0, sqrt 2]: higher = harder.
- ``entropy`` = -sum p log p of the teacher (nats): higher = more uncertain = harder.
- ``margin`` = t_y - max_{c != y} t_c (logits): lower = harder.
- ``kd_loss`` = KD loss of the linear proxy (influence.score): higher = harder.
- ``difficulty`` (CCS, D2, DUAL) maps each onto >= 0, higher = harder; margin becomes sigmoid(-m).

The cheap ones come from ``influence.teacher_statistics`` (temperature 1), so scores passed in from
an influence artefact and scores computed here on demand select the same subset.

The IF-Beta methods and the training-based ones (``el2n-train``, ``forgetting``) live in
``ifbeta.selection``.
"""
from __future__ import annotations

import heapq
import math

import numpy as np
from scipy.special import log_softmax
from scipy.stats import beta as beta_distribution
from sklearn.neighbors import NearestNeighbors

from ifbeta.data.streaming import feature_statistics
from ifbeta.policy import beta as policy

TEACHER_SCORES = ("el2n", "entropy", "margin", "kd_loss")
HARDER_IS_HIGHER = {"el2n": True, "entropy": True, "margin": False, "kd_loss": True}
CHUNK = 65536  # rows per chunk for (N, C) and (N, d) float64 temporaries

# ---------------------------------------------------------------------------------------------
# Teacher scores


def teacher_confidence(logits: np.ndarray, labels: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """p_y: (N,) float64 in [0, 1], the teacher's probability of the true label (chunked)."""
    out = np.empty(len(labels), dtype=np.float64)
    for start in range(0, len(labels), CHUNK):
        block = np.asarray(logits[start:start + CHUNK], dtype=np.float64) / temperature  # (n, C)
        rows = np.arange(len(block))
        out[start:start + CHUNK] = np.exp(log_softmax(block, axis=1)[rows, labels[start:start + CHUNK]])
    return out


def cheap_teacher_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """{"el2n", "entropy", "margin"}: the teacher scores that need no proxy fit, exactly as in the
    influence artefact (``influence.teacher_statistics``, temperature 1), (N,) float64 each."""
    from ifbeta.influence import scores as influence
    return influence.teacher_statistics(logits, np.asarray(labels))


def to_difficulty(name: str, values: np.ndarray) -> np.ndarray:
    """Map a teacher score onto a difficulty >= 0 (higher = harder) for CCS, D2 and DUAL."""
    if name == "margin":
        return 0.5 * (1.0 - np.tanh(values / 2.0))  # = sigmoid(-margin), in (0, 1)
    if name not in HARDER_IS_HIGHER:
        raise ValueError(f"unknown difficulty score {name!r}; choose one of {', '.join(TEACHER_SCORES)}")
    return np.maximum(values, 0.0)


# ---------------------------------------------------------------------------------------------
# Shared machinery


def grouped(labels: np.ndarray, k: int, stratify: bool, choose) -> np.ndarray:
    """Concatenate ``choose(members, quota) -> chosen member indices`` over the classes (quota by
    ``policy.class_quotas``) or over one global group. Classes are visited in label order."""
    labels = np.asarray(labels)
    if not stratify:
        groups = [(np.arange(len(labels)), k)]
    else:
        quotas = policy.class_quotas(labels, k)
        groups = [(np.flatnonzero(labels == c), int(q)) for c, q in enumerate(quotas) if q > 0]
    chosen = []
    for members, quota in groups:
        picked = np.asarray(choose(members, quota), dtype=np.int64)
        assert len(picked) == quota, (len(picked), quota)
        chosen.append(picked)
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def top(values: np.ndarray, members: np.ndarray, quota: int, *, largest: bool = True,
        rng: np.random.Generator | None = None) -> np.ndarray:
    """The ``quota`` members with the largest (or smallest) values; ties by index, or at random
    when ``rng`` is given."""
    keys = values[members] if largest else -values[members]
    tiebreak = rng.random(len(members)) if rng is not None else np.arange(len(members))
    return members[np.lexsort((tiebreak, -keys))[:quota]]


def gumbel_top(log_weights: np.ndarray, members: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """Sample ``quota`` members without replacement proportionally to exp(log_weights) (Gumbel-top-k).
    Zero weights (-inf) come last, in random order."""
    keys = log_weights[members] + rng.gumbel(size=len(members))
    return members[np.lexsort((rng.random(len(members)), -keys))[:quota]]


def standardised(features: np.ndarray, rows: np.ndarray, statistics) -> np.ndarray:
    """(len(rows), d) float64: the rows standardised with the pool statistics
    (``feature_statistics`` = ``streaming.feature_statistics``: chunked, std 0 -> 1)."""
    mean, scale = statistics
    return (np.asarray(features[rows], dtype=np.float64) - mean) / scale


# ---------------------------------------------------------------------------------------------
# Score-based methods


def random_uniform(inputs, k, *, ratio, seed):
    """Uniform without replacement over the whole pool (unstratified). Scores: None."""
    rng = np.random.default_rng(seed)
    return rng.choice(len(inputs.labels), size=k, replace=False), None, {}


def random_balanced(inputs, k, *, ratio, seed):
    """Class quotas (stratified), uniform without replacement inside each class. Scores: None."""
    rng = np.random.default_rng(seed)
    choose = lambda members, quota: rng.choice(members, size=quota, replace=False)  # noqa: E731
    return grouped(inputs.labels, k, True, choose), None, {}


def top_by_score(values: np.ndarray, labels: np.ndarray, k: int, *, largest: bool, stratify: bool):
    """Top-k of ``values`` (per class by quota when stratified); ties broken by index."""
    return grouped(labels, k, stratify, lambda members, quota: top(values, members, quota, largest=largest))


def moderate_distances(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) float64: Euclidean distance of each standardised feature vector to its class's
    coordinate-wise median (Moderate-DS)."""
    statistics = feature_statistics(features)
    distance = np.empty(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        block = standardised(features, members, statistics)  # (n_c, d)
        distance[members] = np.linalg.norm(block - np.median(block, axis=0), axis=1)
    return distance


def middle_band(values: np.ndarray, members: np.ndarray, quota: int) -> np.ndarray:
    """The ``quota`` members whose value ranks are centred on the median rank."""
    order = members[np.argsort(values[members], kind="stable")]
    start = (len(members) - quota) // 2
    return order[start:start + quota]


def ccs_budgets(counts: np.ndarray, total: int) -> np.ndarray:
    """CCS budget allocation: visit strata smallest first; each gets min(size, remaining budget //
    remaining strata). (S,) int64, sum exactly min(total, counts.sum())."""
    counts = np.asarray(counts, dtype=np.int64)
    budgets = np.zeros(len(counts), dtype=np.int64)
    remaining = int(total)
    for position, stratum in enumerate(np.argsort(counts, kind="stable")):
        share = remaining // (len(counts) - position)
        budgets[stratum] = min(int(counts[stratum]), share)
        remaining -= budgets[stratum]
    return budgets


def ccs_hard_cut(ratio: float) -> float:
    """Default CCS hard cut-off beta (fraction of the hardest samples removed first) at pruning ratio
    r: CCS's CIFAR-10 setting as we read it (0 up to r = 0.5, 0.1 at 0.7-0.8, 0.3 at 0.9), linearly
    interpolated in between."""
    return float(np.interp(ratio, [0.0, 0.5, 0.7, 0.8, 0.9, 1.0], [0.0, 0.0, 0.1, 0.1, 0.3, 0.3]))


def ccs_choose(difficulty, members, quota, *, hard_cut, strata, rng):
    """CCS inside one group: drop the hardest ``hard_cut`` fraction (never below the quota), split the
    rest into ``strata`` equal-width score bins, budget smallest-first, uniform within each bin."""
    cut = min(int(round(hard_cut * len(members))), len(members) - quota)
    kept = top(difficulty, members, len(members) - cut, largest=False)
    values = difficulty[kept]
    width = (values.max() - values.min()) / strata
    bins = np.zeros(len(kept), dtype=np.int64) if width <= 0 else \
        np.minimum(((values - values.min()) / width).astype(np.int64), strata - 1)
    budgets = ccs_budgets(np.bincount(bins, minlength=strata), quota)
    picked = [rng.choice(kept[bins == b], size=budgets[b], replace=False) for b in range(strata) if budgets[b]]
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


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


def dual_beta_weights(confidence: np.ndarray, score: np.ndarray, ratio: float, *, c_d: float = 5.5,
                      top_count: int = 10, eps: float = 1e-6) -> tuple[float, float, float, np.ndarray]:
    """DUAL's ratio-adaptive Beta rule. Returns (alpha, beta, mu_top, weights (N,) >= 0).

    mu_top = mean confidence of the ``top_count`` highest-scoring samples (DUAL's anchor);
    beta = 15 (1 - mu_top)(1 - r^c_D), alpha = 16 - beta; weight_i = BetaPDF(conf_i; alpha, beta) *
    score_i with conf clipped to [eps, 1 - eps] and beta floored at 1e-3 (mu_top = 1 gives beta 0).
    """
    anchor = np.argsort(-score, kind="stable")[:top_count]
    mu_top = float(np.mean(confidence[anchor]))
    beta = max(15.0 * (1.0 - mu_top) * (1.0 - ratio ** c_d), 1e-3)
    alpha = 16.0 - beta
    density = beta_distribution.pdf(np.clip(confidence, eps, 1.0 - eps), alpha, beta)
    return alpha, beta, mu_top, density * score


def dual_teacher_score(confidence: np.ndarray) -> np.ndarray:
    """DUAL's score (1 - mean) * std with the teacher's confidence p as the mean and the Bernoulli
    std sqrt(p (1 - p)) standing in for the std over epochs: (N,) in [0, 0.33], higher = kept more."""
    return (1.0 - confidence) * np.sqrt(confidence * (1.0 - confidence))


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


# ---------------------------------------------------------------------------------------------
# Inputs on demand


def influence_scores(inputs, *, seed: int = 0, config=None) -> np.ndarray:
    """s: (N,) float64, > 0 helpful: ``inputs.influence`` or, when absent, ``influence.score``."""
    if inputs.influence is not None:
        return np.asarray(inputs.influence, dtype=np.float64)
    return _influence_result(inputs, seed, config).scores


def teacher_score(inputs, name: str, *, seed: int = 0, config=None) -> np.ndarray:
    """(N,) float64 teacher score ``name`` from ``inputs.teacher_scores`` or computed on demand
    (el2n / entropy / margin here, kd_loss through ``influence.score``'s proxy fit)."""
    if inputs.teacher_scores is not None and name in inputs.teacher_scores:
        return np.asarray(inputs.teacher_scores[name], dtype=np.float64)
    if name == "kd_loss":
        return np.asarray(_influence_result(inputs, seed, config).teacher_scores["kd_loss"], dtype=np.float64)
    if name not in TEACHER_SCORES:
        raise ValueError(f"unknown teacher score {name!r}; choose one of {', '.join(TEACHER_SCORES)}")
    return cheap_teacher_scores(inputs.teacher_logits, inputs.labels)[name]


def _influence_result(inputs, seed, config):
    from ifbeta.config import InfluenceConfig
    from ifbeta.influence import scores as influence  # heavy: imported only when a score must be computed
    config = config if config is not None else InfluenceConfig(seed=seed)
    return influence.score(inputs.features, inputs.teacher_logits, inputs.labels, config=config)


# ---------------------------------------------------------------------------------------------
# Methods: method(inputs, k, *, ratio, seed, **options) -> (indices, scores, info)


def influence_top(inputs, k, *, ratio, seed, stratify=True, config=None):
    """The k highest influence scores (most helpful), per class by quota. Scores: s, higher kept."""
    scores = influence_scores(inputs, seed=seed, config=config)
    return top_by_score(scores, inputs.labels, k, largest=True, stratify=stratify), scores, {"stratified": stratify}


def teacher_score_method(name: str):
    """Top-k by one teacher score, per class by quota. ``keep="hard"`` (default: the hardest, i.e.
    highest el2n / entropy / kd_loss, lowest margin) or ``"easy"``. Scores: the raw teacher score."""
    def method(inputs, k, *, ratio, seed, keep="hard", stratify=True, config=None):
        if keep not in ("hard", "easy"):
            raise ValueError(f"keep must be 'hard' or 'easy', got {keep!r}")
        scores = teacher_score(inputs, name, seed=seed, config=config)
        largest = HARDER_IS_HIGHER[name] == (keep == "hard")
        indices = top_by_score(scores, inputs.labels, k, largest=largest, stratify=stratify)
        return indices, scores, {"keep": keep, "stratified": stratify}
    method.__name__ = f"{name}_teacher"
    method.__doc__ = teacher_score_method.__doc__
    return method


def moderate(inputs, k, *, ratio, seed, stratify=True):
    """Moderate-DS: distance of standardised features to the class median; keep the middle band of
    distances around the median distance (per class; ``stratify=False``: one global band, as in the
    paper). Scores: the distance, kept where closest in rank to the median."""
    distance = moderate_distances(inputs.features, inputs.labels)
    indices = grouped(inputs.labels, k, stratify, lambda members, quota: middle_band(distance, members, quota))
    return indices, distance, {"stratified": stratify}


def ccs(inputs, k, *, ratio, seed, score="el2n", hard_cut=None, strata=50, stratify=True, config=None):
    """Coverage-centric coreset selection over a teacher difficulty (default el2n). ``hard_cut``
    None = ``ccs_hard_cut(ratio)``. Scores: the difficulty, higher = harder."""
    difficulty = to_difficulty(score, teacher_score(inputs, score, seed=seed, config=config))
    hard_cut = ccs_hard_cut(ratio) if hard_cut is None else float(hard_cut)
    rng = np.random.default_rng(seed)
    choose = lambda members, quota: ccs_choose(difficulty, members, quota, hard_cut=hard_cut,  # noqa: E731
                                               strata=strata, rng=rng)
    indices = grouped(inputs.labels, k, stratify, choose)
    return indices, difficulty, {"hard_cut": hard_cut, "strata": strata, "score": score, "stratified": stratify}


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


def dual_beta(inputs, k, *, ratio, seed, c_d=5.5, score="dual", top_count=10, temperature=1.0,
              stratify=True, config=None):
    """DUAL's fixed Beta rule with the teacher's confidence p_y standing in for the mean prediction over
    training. ``score="dual"``: (1 - p) sqrt(p (1 - p)); or a teacher difficulty name. Sampling
    without replacement proportional to the weight (Gumbel-top-k), per class by quota.
    Scores: the weight BetaPDF(p) * score."""
    confidence = teacher_confidence(inputs.teacher_logits, inputs.labels, temperature=temperature)
    values = dual_teacher_score(confidence) if score == "dual" else \
        to_difficulty(score, teacher_score(inputs, score, seed=seed, config=config))
    alpha, beta, mu_top, weights = dual_beta_weights(confidence, values, ratio, c_d=c_d, top_count=top_count)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    indices = grouped(inputs.labels, k, stratify, lambda members, quota: gumbel_top(log_weights, members, quota, rng))
    info = {"alpha": alpha, "beta": beta, "mu_top": mu_top, "c_d": c_d, "score": score, "stratified": stratify}
    return indices, weights, info


def herding(inputs, k, *, ratio, seed, stratify=True):
    """Greedy herding on standardised features towards the class mean (global mean when
    ``stratify=False``). Deterministic. Scores: None."""
    statistics = feature_statistics(inputs.features)
    choose = lambda members, quota: members[herding_choose(standardised(inputs.features, members, statistics), quota)]  # noqa: E731
    return grouped(inputs.labels, k, stratify, choose), None, {"stratified": stratify}


def kcenter(inputs, k, *, ratio, seed, stratify=True):
    """k-center greedy on standardised features, per class (``stratify=False``: over the whole pool);
    the first centre of each group is drawn from ``seed``. Scores: None."""
    statistics = feature_statistics(inputs.features)
    rng = np.random.default_rng(seed)
    choose = lambda members, quota: members[kcenter_choose(standardised(inputs.features, members, statistics), quota, rng)]  # noqa: E731
    return grouped(inputs.labels, k, stratify, choose), None, {"stratified": stratify}

"""The Beta sampling policy of docs/METHOD.md section 4.

Every sample gets a rank ``u_i`` in (0, 1) (ascending along the policy axis, so u near 1 is the
most helpful / easiest sample) and the weight ``f_i = BetaPDF(u_i; alpha, beta)``.

- alpha = beta = 1: uniform, i.e. random pruning.
- alpha >> beta: the most helpful; beta >> alpha: the least helpful; both > 1: a middle window.

Two views of the same policy:
- ``sample_subset``: exactly k distinct samples, drawn without replacement proportionally to f
  (Gumbel-top-k, i.e. a Plackett-Luce draw), within each class by quota when stratified.
- ``policy_probabilities``: the soft version, inclusion probabilities ``pi`` proportional to f
  with iterative capping at 1 (sum exactly k, per class under stratification). These are the
  sample weights of the relaxed bilevel problem and what the app displays. Note that the
  Gumbel-top-k sampler's true inclusion probabilities are close to, but not exactly, ``pi``.

Everything is numpy float64 except the ``*_torch`` functions, which are differentiable with
respect to (log alpha, log beta) for the implicit hypergradient.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import betaln, digamma

__all__ = [
    "rank_normalise", "beta_log_weights", "beta_weights", "inclusion_probabilities",
    "inclusion_probabilities_from_log", "inclusion_probabilities_torch", "class_quotas",
    "sample_subset", "strata", "policy_probabilities", "policy_probabilities_torch", "kl_to_uniform",
    "kl_to_uniform_torch", "k_for_ratio", "plackett_luce_log_probability", "beta_log_weights_torch", "kl_beta",
    "kl_beta_torch", "ratio_adaptive_prior", "CROSSOVER_RATIO", "TILT_BASE", "STARTS", "policy_prior",
]


def rank_normalise(values: np.ndarray, *, groups: np.ndarray | None = None) -> np.ndarray:
    """u: (N,) float64 in (0, 1), u_i = (rank_i + 0.5) / n, ascending within each group.

    ``groups`` (N,) int (e.g. class labels): ranks are taken within each group, n = group size.
    Ties keep their input order (stable sort), so the result is deterministic.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ValueError("rank_normalise: values contain NaN or infinity")
    groups = np.zeros(len(values), dtype=np.int64) if groups is None else np.asarray(groups).reshape(-1)
    if len(groups) != len(values):
        raise ValueError(f"rank_normalise: {len(values)} values but {len(groups)} group labels")
    u = np.empty(len(values), dtype=np.float64)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        order = members[np.argsort(values[members], kind="stable")]  # ascending
        u[order] = (np.arange(len(members)) + 0.5) / len(members)
    return u


def beta_log_weights(u: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """log BetaPDF(u; alpha, beta): (N,) float64, finite for u in (0, 1)."""
    u = np.asarray(u, dtype=np.float64)
    _check_shape_parameters(alpha, beta)
    return (alpha - 1.0) * np.log(u) + (beta - 1.0) * np.log1p(-u) - betaln(alpha, beta)


def beta_weights(u: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """f = BetaPDF(u; alpha, beta): (N,) float64 >= 0 (computed in log space)."""
    return np.exp(beta_log_weights(u, alpha, beta))


def inclusion_probabilities(weights: np.ndarray, k: int) -> np.ndarray:
    """pi: (N,) float64 in [0, 1], sum exactly k, pi_i proportional to weights_i where not capped.

    Iterative capping: the largest weights get pi = 1, the rest share k - (number capped)
    proportionally. ``weights`` must be >= 0 with at least k positive entries.
    """
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise ValueError("inclusion_probabilities: weights must be finite and >= 0")
    with np.errstate(divide="ignore"):
        return inclusion_probabilities_from_log(np.log(weights), k)


def inclusion_probabilities_from_log(log_weights: np.ndarray, k: int) -> np.ndarray:
    """As ``inclusion_probabilities`` but from log weights (-inf allowed), with no underflow."""
    log_weights = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    capped, log_scale = _capping(log_weights, k)
    pi = np.zeros(len(log_weights))
    pi[capped] = 1.0
    free = ~capped
    pi[free] = np.exp(log_weights[free] + log_scale)
    return np.minimum(pi, 1.0)


def _capping(log_weights: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """(capped mask, log c) with pi = 1 on the mask and pi = c * w elsewhere, sum(pi) = k."""
    n = len(log_weights)
    if not 1 <= k <= n:
        raise ValueError(f"inclusion probabilities need 1 <= k <= N, got k={k}, N={n}")
    if np.any(np.isnan(log_weights)) or np.any(log_weights == np.inf):
        raise ValueError("inclusion probabilities: weights must be finite")
    if np.count_nonzero(np.isfinite(log_weights)) < k:
        raise ValueError(f"inclusion probabilities: fewer than k={k} positive weights")
    order = np.argsort(-log_weights, kind="stable")  # descending
    ordered = log_weights[order]
    # suffix[m] = log sum_{j >= m} w_(j): the mass left after capping the m largest
    suffix = np.logaddexp.accumulate(ordered[::-1])[::-1]
    m = np.arange(k)  # at most k - 1 capped: with k - 1 capped the rest still holds mass
    log_c = np.log(k - m) - suffix[:k]
    fits = ordered[:k] + log_c <= 1e-12  # the largest uncapped weight gets pi <= 1
    capped_count = int(np.argmax(fits)) if fits.any() else k
    capped = np.zeros(n, dtype=bool)
    capped[order[:capped_count]] = True
    log_scale = float(log_c[capped_count]) if capped_count < k else -np.inf
    return capped, log_scale


def inclusion_probabilities_torch(log_weights: torch.Tensor, k: int) -> torch.Tensor:
    """Differentiable pi from log weights: (N,) tensor, sum k, each in [0, 1].

    The capped set is piecewise constant in the weights, so it is found without gradient and the
    free part is ``(k - m) * softmax(log_weights[free])``; the gradient is exact wherever the
    capped set does not change (almost everywhere).
    """
    capped, _ = _capping(log_weights.detach().cpu().double().numpy(), k)
    capped_t = torch.as_tensor(capped, device=log_weights.device)
    free_count = k - int(capped.sum())
    masked = log_weights.masked_fill(capped_t, -math.inf)
    free_part = free_count * torch.softmax(masked, dim=0) if free_count > 0 else torch.zeros_like(log_weights)
    return torch.where(capped_t, torch.ones_like(log_weights), free_part)


def class_quotas(labels: np.ndarray, k: int, *, num_classes: int | None = None) -> np.ndarray:
    """quotas: (C,) int64, proportional to class sizes, total exactly k, each <= class size.

    Largest-remainder rounding (ties to the lower class index). Every non-empty class gets at
    least one sample (taken from the class whose quota exceeds its exact share the most), so
    k must be at least the number of non-empty classes. C = num_classes or max(label) + 1.
    """
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    if n == 0:
        raise ValueError("class_quotas: no samples")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and N={n}, got k={k}")
    counts = np.bincount(labels, minlength=num_classes or 0).astype(np.int64)
    present = int(np.count_nonzero(counts))
    if k < present:
        raise ValueError(f"a class-stratified subset of k={k} samples cannot cover {present} classes: "
                         "keep more samples (lower the pruning ratio) or pass stratify=False")
    exact = k * counts / n
    quotas = np.floor(exact).astype(np.int64)
    remainder = exact - quotas
    short = k - int(quotas.sum())
    order = np.lexsort((np.arange(len(counts)), -remainder))  # largest remainder first
    quotas[order[:short]] += 1
    for empty in np.flatnonzero((quotas == 0) & (counts > 0)):
        donor = int(np.argmax(np.where(quotas > 1, quotas - exact, -np.inf)))
        quotas[donor] -= 1
        quotas[empty] += 1
    return quotas


def strata(labels: np.ndarray, k: int, stratify: bool) -> list[tuple[np.ndarray, int]]:
    """[(member indices (n_c,) int64, quota)] per non-empty quota (stratified) or one global group."""
    labels = np.asarray(labels).reshape(-1)
    if not stratify:
        if not 1 <= k <= len(labels):
            raise ValueError(f"k must be between 1 and N={len(labels)}, got k={k}")
        return [(np.arange(len(labels)), k)]
    quotas = class_quotas(labels, k)
    return [(np.flatnonzero(labels == c), int(q)) for c, q in enumerate(quotas) if q > 0]


def check_unit_interval(u) -> np.ndarray:
    """u as a 1-d float64 array strictly inside (0, 1), or a ValueError naming the first bad row."""
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 1:
        raise ValueError(f"u must be a 1-d array (N,), got shape {u.shape}")
    bad = np.flatnonzero(~((u > 0.0) & (u < 1.0)))
    if len(bad):
        raise ValueError(f"u must lie strictly inside (0, 1) (ranks, see policy.beta.ranks); row {int(bad[0])} is "
                         f"{u[bad[0]]!r} ({len(bad)} row(s) outside)")
    return u


def sample_subset(u: np.ndarray, labels: np.ndarray, k: int, alpha: float, beta: float, *,
                  seed: int | np.random.Generator, stratify: bool = True) -> np.ndarray:
    """Exactly k distinct sample indices, sorted int64, drawn without replacement prop. to f.

    Gumbel-top-k: keep the largest ``log f_i + G_i`` (G_i standard Gumbel) within each class up to
    its quota (stratified) or globally. One Gumbel per sample, drawn from ``seed`` in index order,
    so the same seed gives the same subset.
    """
    u = check_unit_interval(u)
    if np.shape(labels) != u.shape:
        raise ValueError(f"labels must have shape {u.shape} like u, got {np.shape(labels)}")
    keys = beta_log_weights(u, alpha, beta) + np.random.default_rng(seed).gumbel(size=len(u))
    chosen = [members[np.argsort(-keys[members], kind="stable")[:quota]]
              for members, quota in strata(labels, k, stratify)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def policy_probabilities(u: np.ndarray, labels: np.ndarray, k: int, alpha: float, beta: float, *,
                         stratify: bool = True) -> np.ndarray:
    """pi: (N,) float64 in [0, 1], per-class inclusion probabilities summing to the class quotas
    (stratified) or global ones summing to k."""
    log_f = beta_log_weights(check_unit_interval(u), alpha, beta)
    pi = np.zeros(len(log_f))
    for members, quota in strata(labels, k, stratify):
        pi[members] = inclusion_probabilities_from_log(log_f[members], quota)
    return pi


def beta_log_weights_torch(u: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """log BetaPDF(u; e^log_alpha, e^log_beta), differentiable in (log_alpha, log_beta)."""
    alpha, beta = log_alpha.exp(), log_beta.exp()
    log_norm = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    return (alpha - 1) * torch.log(u) + (beta - 1) * torch.log1p(-u) - log_norm


def policy_probabilities_torch(u: np.ndarray, labels: np.ndarray, k: int, log_alpha: torch.Tensor,
                               log_beta: torch.Tensor, *, stratify: bool = True) -> torch.Tensor:
    """Differentiable ``policy_probabilities``: (N,) float64 tensor, grad w.r.t. log alpha/beta."""
    u_t = torch.as_tensor(np.asarray(u, dtype=np.float64))
    log_f = beta_log_weights_torch(u_t, log_alpha, log_beta)
    pi = torch.zeros_like(log_f)
    for members, quota in strata(labels, k, stratify):
        index = torch.as_tensor(members)
        pi = pi.index_put((index,), inclusion_probabilities_torch(log_f[index], quota))
    return pi


def plackett_luce_log_probability(log_weights: torch.Tensor, ordered: np.ndarray) -> torch.Tensor:
    """log P(draw the sequence ``ordered`` first, in that order) under sampling without replacement
    proportional to exp(log_weights), i.e. the law of Gumbel-top-k's ordered output."""
    picked = torch.as_tensor(np.asarray(ordered, dtype=np.int64))
    rest = torch.ones(len(log_weights), dtype=torch.bool)
    rest[picked] = False
    log_picked = log_weights[picked]
    rest_mass = torch.logsumexp(log_weights[rest], dim=0) if bool(rest.any()) else log_weights.new_tensor(-math.inf)
    remaining = torch.logcumsumexp(log_picked.flip(0), dim=0).flip(0)  # mass of picked[j:]
    return (log_picked - torch.logaddexp(remaining, rest_mass)).sum()


def kl_to_uniform(alpha: float, beta: float) -> float:
    """KL(Beta(alpha, beta) || U(0, 1)) = -H(Beta(alpha, beta)) in nats, >= 0, 0 only at (1, 1)."""
    _check_shape_parameters(alpha, beta)
    entropy = (betaln(alpha, beta) - (alpha - 1) * digamma(alpha) - (beta - 1) * digamma(beta)
               + (alpha + beta - 2) * digamma(alpha + beta))
    return float(-entropy)


def kl_to_uniform_torch(log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """``kl_to_uniform`` as a differentiable function of (log alpha, log beta)."""
    alpha, beta = log_alpha.exp(), log_beta.exp()
    log_norm = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    entropy = (log_norm - (alpha - 1) * torch.digamma(alpha) - (beta - 1) * torch.digamma(beta)
               + (alpha + beta - 2) * torch.digamma(alpha + beta))
    return -entropy


def kl_beta(alpha: float, beta: float, alpha0: float, beta0: float) -> float:
    """KL(Beta(alpha, beta) || Beta(alpha0, beta0)) in nats, >= 0, 0 only when equal (closed form):
    ln B(alpha0, beta0) - ln B(alpha, beta) + (alpha - alpha0) psi(alpha) + (beta - beta0) psi(beta)
    + (alpha0 - alpha + beta0 - beta) psi(alpha + beta); at (alpha0, beta0) = (1, 1) it is ``kl_to_uniform``."""
    _check_shape_parameters(alpha, beta)
    _check_shape_parameters(alpha0, beta0)
    return float(betaln(alpha0, beta0) - betaln(alpha, beta) + (alpha - alpha0) * digamma(alpha)
                 + (beta - beta0) * digamma(beta) + (alpha0 - alpha + beta0 - beta) * digamma(alpha + beta))


def kl_beta_torch(log_alpha: torch.Tensor, log_beta: torch.Tensor, alpha0: float, beta0: float) -> torch.Tensor:
    """``kl_beta`` as a differentiable function of (log alpha, log beta), the prior fixed."""
    alpha, beta = log_alpha.exp(), log_beta.exp()
    log_norm = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    log_norm0 = math.lgamma(alpha0) + math.lgamma(beta0) - math.lgamma(alpha0 + beta0)
    return (log_norm0 - log_norm + (alpha - alpha0) * torch.digamma(alpha) + (beta - beta0) * torch.digamma(beta)
            + (alpha0 - alpha + beta0 - beta) * torch.digamma(alpha + beta))


CROSSOVER_RATIO = 0.5  # where the ratio-adaptive prior is uniform (CCS cuts hard samples only above it)
TILT_BASE = 4.0  # alpha0(r) = TILT_BASE ** (r - CROSSOVER_RATIO): alpha0 / beta0 = 2 at r = 1, 1/2 at r = 0
STARTS = ("uniform", "ratio-adaptive")


def ratio_adaptive_prior(ratio: float) -> tuple[float, float]:
    """(alpha0, beta0) = (4^(r - 1/2), 4^(1/2 - r)) at pruning ratio r in (0, 1): the published rule
    (Sorscher et al. 2022, CCS, DUAL) keep the hard samples when little is pruned, the easy ones when
    much is. On the policy axis u near 1 is helpful / easy and u near 0 is harmful / hard (low
    influence, the noisy end; METHOD.md section 4), so r < 1/2 tilts towards u near 0 (beta0 > 1 >
    alpha0), r > 1/2 towards u near 1, and r = 1/2 (``CROSSOVER_RATIO``) is uniform, the only ratio
    where alpha0 = beta0 = 1. Mean u of the prior: 1 / (1 + 16^(1/2 - r)); e.g. r = 0.9: (1.74, 0.57)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1), got {ratio}")
    alpha0 = TILT_BASE ** (ratio - CROSSOVER_RATIO)
    return float(alpha0), float(1.0 / alpha0)


def policy_prior(start: str, ratio: float) -> tuple[float, float]:
    """The (alpha0, beta0) the KL shrinkage pulls towards at ``ratio``: (1, 1) = U(0, 1) for
    "uniform", ``ratio_adaptive_prior(ratio)`` for "ratio-adaptive" (which is also where the
    optimiser starts; "uniform" starts at ``PolicyConfig.init``)."""
    if start not in STARTS:
        raise ValueError(f"unknown policy start {start!r}; choose one of {', '.join(STARTS)}")
    return ratio_adaptive_prior(ratio) if start == "ratio-adaptive" else (1.0, 1.0)


def k_for_ratio(n: int, ratio: float) -> int:
    """k = round((1 - ratio) * n) samples kept at pruning ratio ``ratio`` in (0, 1); k >= 1."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1), got {ratio}")
    k = int(round((1.0 - ratio) * n))
    if k < 1:
        raise ValueError(f"pruning ratio {ratio} keeps no sample out of {n}")
    return k


def _check_shape_parameters(alpha: float, beta: float) -> None:
    if not (alpha > 0 and beta > 0 and math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"Beta shape parameters must be finite and > 0, got alpha={alpha}, beta={beta}")


"""Estimates of J and dJ/dpsi at one psi = (log alpha, log beta) (docs/METHOD.md section 5, estimators).

- ``relaxed``: J at the relaxed weights pi(psi) (the policy's inclusion probabilities on each fold's
  candidates) and the exact hypergradient of that relaxed problem: dJ/dw_i from the fold's proxy
  family (``influence.weighted``; linear: ``scores.influence_on_weights`` at theta*(pi), the implicit
  gradient; knn: the closed form of ``knn.weight_gradient``), the derivative for INCREASING w_i (< 0
  means more weight on i lowers L_V), chained through pi(psi) by autograd. ``implicit`` is it with
  the gradient.
- ``reinforce``: the score-function gradient of E[J] over Gumbel-top-k subsets (unbiased for the
  discrete policy, noisier).

Each returns an ``inner.Evaluation`` (J averaged over the folds, lower is better; gradient (2,)).
"""
from __future__ import annotations

import numpy as np
import torch

from ifbeta.policy import beta as policy
from ifbeta.policy import inner
from ifbeta.threads import thread_map

__all__ = ["implicit", "reinforce", "relaxed"]


def relaxed(problem: inner.Problem, psi: np.ndarray, ratio: float, with_gradient: bool = True) -> inner.Evaluation:
    """J at the relaxed weights pi(psi), and the implicit hypergradient dJ/dpsi.

    dJ/dw_i from each fold's ``evaluate`` at the weights pi; chained through pi(psi) by autograd.
    """
    psi_t = torch.tensor(psi, dtype=torch.float64, requires_grad=with_gradient)
    probabilities = [policy.policy_probabilities_torch(fold.u, fold.labels, policy.k_for_ratio(len(fold.labels), ratio),
                                                       psi_t[0], psi_t[1], stratify=problem.config.stratify)
                     for fold in problem.folds]  # (n_f,) each

    def work(fold: inner.Fold, weights: np.ndarray):
        return fold.evaluate(weights, with_gradient)

    outcomes = thread_map(work, problem.folds, [pi.detach().numpy() for pi in probabilities])
    count = len(problem.folds)
    total = inner.Evaluation(sum(o[0] for o in outcomes) / count, sum(o[1] for o in outcomes) / count, None)
    if with_gradient:
        chained = sum(pi @ torch.as_tensor(o[2]) for pi, o in zip(probabilities, outcomes)) / count
        total.gradient = torch.autograd.grad(chained, psi_t)[0].numpy()
    return total


def implicit(problem: inner.Problem, psi: np.ndarray, ratio: float, rng: np.random.Generator) -> inner.Evaluation:
    """``relaxed`` with its gradient; the estimator signature of the Adam loop (rng unused: deterministic)."""
    return relaxed(problem, psi, ratio, with_gradient=True)


def reinforce(problem: inner.Problem, psi: np.ndarray, ratio: float, rng: np.random.Generator) -> inner.Evaluation:
    """Score-function gradient of E[J(subset)] over Gumbel-top-k subsets; J reported = mean sampled J.

    Gumbel-top-k draws an ordered sequence with the Plackett-Luce law (per class under
    stratification); J depends on the set only, so E[(J - b) grad log PL(sequence)] is an unbiased
    gradient of the expected J of the discrete policy. b = leave-one-out mean of the other draws.
    """
    samples = problem.config.reinforce_samples
    if samples < 2:
        raise ValueError("reinforce needs reinforce_samples >= 2 (leave-one-out baseline)")
    psi_t = torch.tensor(psi, dtype=torch.float64, requires_grad=True)
    total = inner.Evaluation(0.0, 0.0, np.zeros(2))
    for fold in problem.folds:
        k = policy.k_for_ratio(len(fold.labels), ratio)
        log_f = policy.beta_log_weights_torch(torch.as_tensor(fold.u), psi_t[0], psi_t[1])  # (n_f,)
        groups = policy.strata(fold.labels, k, problem.config.stratify)
        losses, log_probabilities = [], []
        for _ in range(samples):
            keys = log_f.detach().numpy() + rng.gumbel(size=len(fold.u))
            weights, log_probability = np.zeros(len(fold.u)), 0.0
            for members, quota in groups:
                local = np.argsort(-keys[members], kind="stable")[:quota]  # drawn order within the class
                weights[members[local]] = 1.0
                log_probability = log_probability + policy.plackett_luce_log_probability(
                    log_f[torch.as_tensor(members)], local)
            loss, accuracy, _ = fold.evaluate(weights, with_gradient=False)
            losses.append(loss)
            log_probabilities.append(log_probability)
            total.accuracy += accuracy / (samples * len(problem.folds))
        losses = np.array(losses)
        baseline = (losses.sum() - losses) / (samples - 1)
        surrogate = sum(float(a) * lp for a, lp in zip(losses - baseline, log_probabilities)) / samples
        total.gradient += torch.autograd.grad(surrogate, psi_t)[0].numpy() / len(problem.folds)
        total.J += float(losses.mean()) / len(problem.folds)
    return total

"""Weighted proxy fits on one fold of the bilevel split (docs/METHOD.md section 5): the interface every
proxy family offers the policy loop, and the linear family's implementation.

A fold holds the candidates (standardised features (n_f, d), teacher logits (n_f, C), labels (n_f,)),
its validation set V and the policy's ranks ``u`` of the candidates (set by ``policy.inner``).
``evaluate(weights, with_gradient)`` -> (J, accuracy, dJ/dw): J = L_V of the proxy fitted with sample
weights w (n_f,) in [0, 1] (lower is better), the proxy's accuracy on V, and dJ/dw_i for INCREASING
w_i (< 0 means more weight on i lowers L_V; None without gradient). ``reset()`` returns to the full
fit (w = 1); ``warm_state()`` / ``restore(state)`` carry the warm starts through a checkpoint (JSON).

``LinearFold``: the KD-aligned linear head of section 2, refitted warm-started from the fold's last fit
(which it replaces); large folds fit by Newton-CG with a Cholesky (or EKFAC) preconditioner reused
across outer steps, and the adjoint solve H^-1 g_V is warm-started from the previous step. Its math runs
in torch on ``device`` (theta, the adjoint and the preconditioner stay there as float64 tensors); J, the
accuracy and dJ/dw leave it as floats and a numpy (n_f,) float64 array.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ifbeta.config import KDConfig, ProxyConfig
from ifbeta.influence import objective, proxy, solvers, tensors
from ifbeta.influence import scores as influence

logger = logging.getLogger(__name__)

__all__ = ["LinearFold", "WeightedFold", "matrix_free"]


@dataclass
class WeightedFold:
    """One direction of the split: candidates (standardised) and V; ``u`` the policy's ranks (n_f,)."""

    features: np.ndarray  # (n_f, d)
    teacher_logits: np.ndarray  # (n_f, C)
    labels: np.ndarray  # (n_f,)
    val_features: np.ndarray
    val_teacher_logits: np.ndarray
    val_labels: np.ndarray
    kd: KDConfig
    u: np.ndarray | None = None


@dataclass
class LinearFold(WeightedFold):
    """The linear proxy on one fold. theta is the warm start; theta_full the fit with all candidates."""

    mu: float = 0.0
    bias_damping: float = 1e-3
    theta_full: torch.Tensor | None = None  # (C, d+1) float64 on device
    theta: torch.Tensor | None = None
    preconditioner: Callable | None = None  # flat v -> H^-1 v at a recent (theta, w); reused across steps
    adjoint: torch.Tensor | None = None  # last H^-1 g_V, the warm start of the next hypergradient solve
    device: str = "cpu"

    @classmethod
    def build(cls, train: tuple, validation: tuple, *, settings: ProxyConfig, mu: float,
              device: str = "cpu") -> "LinearFold":
        """Fit the candidates with weights 1 (the warm start of every later fit)."""
        full = proxy.fit(*train, mu=mu, kd=settings.kd, bias_damping=settings.bias_damping, device=device)
        return cls(*train, *validation, kd=settings.kd, mu=mu, bias_damping=settings.bias_damping,
                   theta_full=full.theta, theta=full.theta, device=device)

    def reset(self) -> None:
        self.theta, self.adjoint = self.theta_full, None

    def warm_state(self) -> dict:
        return {"theta": self.theta.tolist(), "adjoint": None if self.adjoint is None else self.adjoint.tolist()}

    def restore(self, state: dict) -> None:
        self.theta = tensors.as_tensor(state["theta"], self.device)
        self.adjoint = None if state["adjoint"] is None else tensors.as_tensor(state["adjoint"], self.device)

    def reusable_preconditioner(self, weights: np.ndarray) -> Callable:
        """The reusable preconditioner, built at (warm start, weights) when missing: the Cholesky factor
        where C(d+1) <= proxy.DENSE_NEWTON_LIMIT, EKFAC above (outer steps move w a little)."""
        if self.preconditioner is None:
            build = (solvers.cholesky_preconditioner if self.theta_full.numel() <= proxy.DENSE_NEWTON_LIMIT
                     else solvers.ekfac_preconditioner)
            self.preconditioner = build(self.theta, self.features, self.teacher_logits, self.labels, weights,
                                        mu=self.mu, kd=self.kd, bias_damping=self.bias_damping, device=self.device)
        return self.preconditioner

    def fit(self, weights: np.ndarray) -> torch.Tensor:
        """theta* (C, d+1) with sample weights (n_f,) in [0, 1], warm-started from the last fit."""
        preconditioner = self.reusable_preconditioner(weights) if matrix_free(self) else None
        result = proxy.fit(self.features, self.teacher_logits, self.labels, weights=weights, mu=self.mu, kd=self.kd,
                           bias_damping=self.bias_damping, init=self.theta, preconditioner=preconditioner,
                           device=self.device)
        if not result.converged:
            logger.warning("inner proxy fit stopped at ||grad|| = %.3g after %d iterations", result.grad_norm,
                           result.iterations)
        if result.products > proxy.REFRESH_PRODUCTS * max(1, result.iterations):
            self.preconditioner = None  # drifted: rebuild at the next fit
        self.theta = result.theta
        return result.theta

    def validate(self, theta) -> tuple[float, float]:
        """(L_V, accuracy on V) of the proxy theta (C, d+1)."""
        loss = objective.validation_loss(theta, self.val_features, self.val_teacher_logits, self.val_labels,
                                         kd=self.kd, device=self.device)
        probabilities = tensors.to_numpy(objective.predict_proba(theta, self.val_features, device=self.device))
        accuracy = float((probabilities.argmax(axis=1) == np.asarray(self.val_labels)).mean())
        return loss, accuracy

    def _adjoint_solver(self, weights: np.ndarray):
        """The solve function of influence_on_weights: dense where small, else CG warm-started from the
        last step's solution with the fold's preconditioner."""
        if not matrix_free(self):
            return "direct"

        def solve(theta, features, teacher_logits, labels, weights_, rhs, **options):
            calls = []
            preconditioner = self.reusable_preconditioner(weights)

            def counted(vector):
                calls.append(1)
                return preconditioner(vector)

            self.adjoint = solvers.solve_cg(theta, features, teacher_logits, labels, weights_, rhs, **options,
                                            preconditioner=counted, initial=self.adjoint)
            if len(calls) > proxy.REFRESH_PRODUCTS:
                self.preconditioner = None
            return self.adjoint

        return solve

    def evaluate(self, weights: np.ndarray, with_gradient: bool = True):
        """(J, accuracy, dJ/dw (n_f,) or None); dJ/dw = scores.influence_on_weights at theta*(w)."""
        weights = np.asarray(weights, dtype=np.float64)
        theta = self.fit(weights)
        loss, accuracy = self.validate(theta)
        if not with_gradient:
            return loss, accuracy, None
        d_weights = influence.influence_on_weights(
            theta, self.features, self.teacher_logits, self.labels, weights, self.val_features,
            self.val_teacher_logits, self.val_labels, mu=self.mu, kd=self.kd, bias_damping=self.bias_damping,
            solver=self._adjoint_solver(weights), device=self.device)
        return loss, accuracy, tensors.to_numpy(d_weights)


def matrix_free(fold: LinearFold) -> bool:
    """Large folds fit by Newton-CG; small ones by dense Newton (exact and cheaper there)."""
    return not proxy.use_dense(len(fold.labels), fold.theta_full.numel())

"""Every selection method behind one signature: ``select(method, inputs, ratio, *, seed, **options)``.

A method keeps k = round((1 - ratio) * N) samples (``policy.k_for_ratio``) and returns exactly k
unique indices, sorted int64; the same seed gives the same subset. ``METHODS`` is the explicit
registry (name -> function, one-line description, optional inputs it reads, costly, stochastic).

Missing inputs are computed on demand: ``influence`` through ``influence.score`` (a proxy fit),
the teacher scores el2n / entropy / margin from the logits (``influence.statistics.teacher_statistics``),
kd_loss through ``influence.score``. Pass them in ``SelectionInputs`` to reuse cached artefacts. ``images`` are
only read by the costly training-based methods and are never computed.

Class stratification (quotas of ``policy.class_quotas``) is the default everywhere except
``random``; ``stratify=False`` gives the published global form. The methods live in one module per
family: ``score_based`` (random, top-k, Moderate-DS, CCS, DUAL), ``coverage`` (D2, herding,
k-center, facility location), ``training_dynamics`` (EL2N of a trained student, forgetting) and ``beta_policy``
(IF-Beta); ``signals`` lists the score directions.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ifbeta.policy import beta as policy
from ifbeta.selection import beta_policy, coverage, score_based, training_dynamics

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["SelectionInputs", "Selection", "MethodSpec", "METHODS", "select", "describe_methods"]


@dataclass(frozen=True)
class SelectionInputs:
    """What the methods read. Arrays are (N, ...) over the same samples in the same order."""

    features: np.ndarray  # (N, d) teacher penultimate features, any float dtype (memmap is fine)
    teacher_logits: np.ndarray  # (N, C)
    labels: np.ndarray  # (N,) int64 in [0, C)
    influence: np.ndarray | None = None  # (N,) s_i, > 0 helpful; None = computed on demand
    teacher_scores: dict[str, np.ndarray] | None = None  # el2n, entropy, margin, kd_loss: (N,) each
    images: "torch.Tensor | None" = None  # (N, C, H, W) uint8, only for training-based methods
    num_classes: int | None = None  # None = teacher_logits.shape[1]

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-d integer array, got shape {labels.shape} dtype {labels.dtype}")
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        n = len(labels)
        if self.features.ndim != 2 or len(self.features) != n:
            raise ValueError(f"features must be (N={n}, d), got {self.features.shape}")
        if self.teacher_logits.ndim != 2 or len(self.teacher_logits) != n:
            raise ValueError(f"teacher_logits must be (N={n}, C), got {self.teacher_logits.shape}")
        if n and (labels.min() < 0 or labels.max() >= self.classes):
            raise ValueError(f"labels must lie in [0, {self.classes})")
        named = {"influence": self.influence, **(self.teacher_scores or {})}
        for name, values in named.items():
            if values is not None and np.shape(values) != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {np.shape(values)}")
            if values is not None and not np.all(np.isfinite(values)):
                raise ValueError(f"{name} contains NaN or infinity")
        if self.images is not None and (self.images.ndim != 4 or len(self.images) != n):
            raise ValueError(f"images must be (N={n}, C, H, W), got {tuple(self.images.shape)}")

    @property
    def classes(self) -> int:
        return int(self.num_classes or self.teacher_logits.shape[1])


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # (k,) int64, sorted, unique
    scores: np.ndarray | None  # (N,) what the method ranked by (direction in its docstring) or None
    info: dict = field(default_factory=dict)  # always "method", "seconds", "k", "ratio", "seed"


class MethodSpec(NamedTuple):
    function: Callable  # function(inputs, k, *, ratio, seed, **options) -> (indices, scores, info)
    description: str  # one line for menus and --help
    needs: frozenset  # optional inputs read: "influence", "teacher_scores" (on demand), "images" (required)
    costly: bool  # trains a network or optimises the policy even when every input is given
    stochastic: bool  # the seed changes the subset even when every score is given


# ---------------------------------------------------------------------------------------------
# Registry and entry point

_TEACHER = frozenset({"teacher_scores"})
_INFLUENCE = frozenset({"influence"})

METHODS: dict[str, MethodSpec] = {
    "random": MethodSpec(score_based.random_uniform, "uniform at random over the whole pool (unstratified)",
                         frozenset(), False, True),
    "random-balanced": MethodSpec(score_based.random_balanced, "uniform at random within class quotas",
                                  frozenset(), False, True),
    "influence-top": MethodSpec(score_based.influence_top, "highest influence per class (most helpful, no policy)",
                                _INFLUENCE, False, False),
    "el2n-teacher": MethodSpec(score_based.teacher_score_method("el2n"),
                               "highest EL2N against the teacher's probabilities per class (hardest)",
                               _TEACHER, False, False),
    "entropy": MethodSpec(score_based.teacher_score_method("entropy"),
                          "highest teacher entropy per class (most uncertain)", _TEACHER, False, False),
    "margin": MethodSpec(score_based.teacher_score_method("margin"),
                         "smallest teacher margin p_y - max other per class (hardest)", _TEACHER, False, False),
    "kd-loss": MethodSpec(score_based.teacher_score_method("kd_loss"),
                          "highest KD loss of the linear proxy per class (hardest; keep='easy' flips)",
                          _TEACHER, False, False),
    "moderate": MethodSpec(score_based.moderate, "Moderate-DS: middle band of distances to the class median",
                           frozenset(), False, False),
    "ccs": MethodSpec(score_based.ccs, "CCS: cut the hardest, 50 score strata filled smallest first",
                      _TEACHER, False, True),
    "d2": MethodSpec(coverage.d2, "D2-Pruning: kNN-graph message passing over teacher difficulty",
                     _TEACHER, False, False),
    "dual-beta": MethodSpec(score_based.dual_beta, "DUAL's ratio-adaptive Beta over teacher confidence",
                            _TEACHER, False, True),
    "herding": MethodSpec(coverage.herding, "herding towards the class mean of teacher features",
                          frozenset(), False, False),
    "kcenter": MethodSpec(coverage.kcenter, "k-center greedy on teacher features per class",
                          frozenset(), False, True),
    "facility-location": MethodSpec(coverage.facility_location,
                                    "facility location (lazy greedy) on teacher features per class",
                                    frozenset(), False, False),
    "ifbeta": MethodSpec(beta_policy.ifbeta_learned, "IF-Beta: Beta policy over influence ranks learned by bilevel",
                         _INFLUENCE, True, True),
    "ifbeta-entropy": MethodSpec(beta_policy.ifbeta_entropy, "IF-Beta's learned Beta over teacher-entropy ranks",
                                 _TEACHER, True, True),
    "ifbeta-knn": MethodSpec(beta_policy.ifbeta_knn, "IF-Beta over k-NN proxy influence ranks, J from the k-NN proxy",
                             frozenset(), True, True),
    "ifbeta-adaptive": MethodSpec(beta_policy.ifbeta_adaptive,
                                  "IF-Beta started at and shrunk towards a ratio-adaptive Beta prior",
                                  _INFLUENCE, True, True),
    "ifbeta-fixed": MethodSpec(beta_policy.ifbeta_fixed, "the Beta policy with given alpha and beta (no learning)",
                               _INFLUENCE, False, True),
    "el2n-train": MethodSpec(training_dynamics.el2n_train, "EL2N from a few epochs of real student training (costly)",
                             frozenset({"images"}), True, True),
    "forgetting": MethodSpec(training_dynamics.forgetting, "forgetting events over a few epochs of real training (costly)",
                             frozenset({"images"}), True, True),
}


def describe_methods() -> list[tuple[str, str]]:
    """[(name, one-line description)] in registry order."""
    return [(name, spec.description) for name, spec in METHODS.items()]


def select(method: str, inputs: SelectionInputs, ratio: float, *, seed: int = 0, **options) -> Selection:
    """Keep k = round((1 - ratio) * N) samples with ``method``; options go to the method.

    Raises ValueError for an unknown method, a ratio outside (0, 1), missing images, or a
    stratified method asked for fewer samples than there are classes; TypeError for an unknown option.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {', '.join(METHODS)}")
    spec = METHODS[method]
    if "images" in spec.needs and inputs.images is None:
        raise ValueError(f"method {method!r} trains a student and needs SelectionInputs.images")
    k = policy.k_for_ratio(len(inputs.labels), ratio)
    start = time.perf_counter()
    indices, scores, info = spec.function(inputs, k, ratio=ratio, seed=seed, **options)
    seconds = time.perf_counter() - start
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    if len(indices) != k or (k > 1 and np.any(np.diff(indices) == 0)):
        raise RuntimeError(f"method {method!r} returned {len(indices)} indices ({len(np.unique(indices))} "
                           f"unique), expected {k}")
    log.info("select %s: kept %d of %d in %.2f s", method, k, len(inputs.labels), seconds)
    info = {**info, "method": method, "seconds": seconds, "k": k, "ratio": ratio, "seed": seed}
    return Selection(indices=indices, scores=scores, info=info)

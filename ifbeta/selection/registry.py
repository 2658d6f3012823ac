"""Every selection method behind one signature: ``select(method, inputs, ratio, *, seed, **options)``.

A method keeps k = round((1 - ratio) * N) samples (``policy.k_for_ratio``) and returns exactly k
unique indices, sorted int64; the same seed gives the same subset. ``METHODS`` is the explicit
registry (name -> function, one-line description, optional inputs it reads, costly, stochastic).

Missing inputs are computed on demand: ``influence`` through ``influence.score`` (a proxy fit),
the teacher scores el2n / entropy / margin from the logits (``influence.teacher_statistics``), kd_loss through
``influence.score``. Pass them in ``SelectionInputs`` to reuse cached artefacts. ``images`` are
only read by the costly training-based methods and are never computed.

Class stratification (quotas of ``policy.class_quotas``) is the default everywhere except
``random``; ``stratify=False`` gives the published global form. See ``baselines`` for the score
directions.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ifbeta.policy import axes
from ifbeta.policy import beta as policy
from ifbeta.selection import baselines

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
# IF-Beta methods


def _axis_values(inputs, axis: str, seed: int, config) -> np.ndarray:
    """The values the Beta acts on, oriented so that u near 1 is helpful / easy:
    "influence" = s (> 0 helpful); "entropy" = minus the teacher entropy (low entropy = easy)."""
    if axis == "influence":
        return baselines.influence_scores(inputs, seed=seed, config=config)
    if axis == "entropy":
        return axes.easier_first(baselines.teacher_score(inputs, "entropy", seed=seed, config=config))
    raise ValueError(f"unknown policy axis {axis!r}; choose 'influence' or 'entropy'")


def _sample_policy(inputs, k, values, alpha, beta, seed, stratify):
    u = policy.rank_normalise(values, groups=inputs.labels if stratify else None)
    return policy.sample_subset(u, inputs.labels, k, alpha, beta, seed=seed, stratify=stratify)


def ifbeta_learned(inputs, k, *, ratio, seed, axis="influence", stratify=True, kd=None, config=None, on_step=None,
                   **policy_options):
    """IF-Beta: (alpha, beta) learned by ``bilevel.optimise_policy`` on the ranks of ``axis`` (other
    options, e.g. estimator, steps, shrinkage, go to it), then ``policy.sample_subset`` with ``seed``.
    ``kd`` defaults to ``config.proxy.kd`` (config: the InfluenceConfig used when s is computed here).
    Scores: the axis values (higher = u nearer 1)."""
    from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig
    from ifbeta.policy import bilevel
    kd = kd if kd is not None else (config.proxy.kd if config is not None else KDConfig())
    config = config if config is not None else InfluenceConfig(proxy=ProxyConfig(kd=kd), seed=seed)
    values = _axis_values(inputs, axis, seed, config)
    start = time.perf_counter()
    result = bilevel.optimise_policy(inputs.features, inputs.teacher_logits, inputs.labels, ratios=[ratio],
                                     axis_values=values, axis=axis, kd=kd, stratify=stratify, seed=seed,
                                     on_step=on_step, **policy_options)[0]
    alpha, beta = float(result.alpha), float(result.beta)
    indices = _sample_policy(inputs, k, values, alpha, beta, seed, stratify)
    info = {"alpha": alpha, "beta": beta, "axis": axis, "estimator": result.estimator, "stratified": stratify,
            "converged": bool(result.converged), "shrinkage_c": float(result.c), "mu": float(result.mu),
            "trace": result.trace, "optimise_seconds": time.perf_counter() - start}
    return indices, values, info


def ifbeta_entropy(inputs, k, *, ratio, seed, **options):
    """IF-Beta with the Beta over per-class teacher-entropy ranks (low entropy = easy = u near 1)."""
    return ifbeta_learned(inputs, k, ratio=ratio, seed=seed, axis="entropy", **options)


def ifbeta_fixed(inputs, k, *, ratio, seed, alpha=None, beta=None, axis="influence", stratify=True, config=None):
    """The Beta policy with given ``alpha`` and ``beta`` (both required), no optimisation.
    Scores: the axis values."""
    if alpha is None or beta is None:
        raise ValueError("ifbeta-fixed needs the options alpha and beta, e.g. alpha=2.0, beta=1.0")
    values = _axis_values(inputs, axis, seed, config)
    indices = _sample_policy(inputs, k, values, float(alpha), float(beta), seed, stratify)
    return indices, values, {"alpha": float(alpha), "beta": float(beta), "axis": axis, "stratified": stratify}


# ---------------------------------------------------------------------------------------------
# Training-based methods (costly by design: their cost is part of the comparison)


def _channel_statistics(images: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Per-channel mean and std of uint8 images in [0, 1] units: (1, C, 1, 1) float32 each."""
    import torch
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for block in images.split(4096):
        block = block.to(torch.float64) / 255.0
        total += block.sum(dim=(0, 2, 3))
        squares += (block ** 2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean ** 2).clamp_min(1e-12).sqrt()
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def _train_student(inputs, *, epochs, seed, arch, batch_size, learning_rate, device, on_batch, on_step):
    """Plain cross-entropy SGD for ``epochs`` from ``seed``; ``on_batch(indices, logits)`` sees every
    training batch. Returns (model in eval mode, normalise function, architecture name)."""
    import torch
    import torch.nn.functional as F

    from ifbeta.models import zoo as models
    images = torch.as_tensor(inputs.images)
    labels = torch.as_tensor(inputs.labels)
    mean, std = (tensor.to(device) for tensor in _channel_statistics(images))
    normalise = lambda batch: (batch.to(device).float() / 255.0 - mean) / std  # noqa: E731
    arch = arch or models.default_architectures("", images.shape[-1])[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.build(arch, num_classes=inputs.classes, in_channels=images.shape[1]).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            if len(batch) < 2:
                continue  # batch norm needs two samples
            logits = model(normalise(images[batch]))
            loss = F.cross_entropy(logits, labels[batch].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            on_batch(batch, logits.detach())
        if on_step is not None:
            on_step(epoch, {"epoch": epoch + 1, "epochs": epochs, "loss": float(loss.detach())})
    return model.eval(), normalise, arch


def _el2n_of(model, normalise, inputs) -> np.ndarray:
    """EL2N ||softmax(f(x)) - onehot(y)||_2 of the trained student for every sample: (N,) float64."""
    import torch
    images = torch.as_tensor(inputs.images)
    with torch.no_grad():
        logits = torch.cat([model(normalise(block)).double().cpu() for block in images.split(1024)])
    return baselines.cheap_teacher_scores(logits.numpy(), inputs.labels)["el2n"]


def el2n_train(inputs, k, *, ratio, seed, epochs=3, repeats=1, arch=None, batch_size=128, learning_rate=0.05,
               device="cpu", stratify=True, on_step=None):
    """EL2N (Paul et al.) of a student trained ``epochs`` epochs with plain CE, averaged over ``repeats``
    seeds; keep the highest (hardest) per class. ``arch`` None = the default student for the image
    size (``models.default_architectures``). Scores: EL2N, higher = harder."""
    start = time.perf_counter()
    scores = np.zeros(len(inputs.labels))
    for repeat in range(repeats):
        model, normalise, arch_name = _train_student(
            inputs, epochs=epochs, seed=seed * 1000 + repeat, arch=arch, batch_size=batch_size,
            learning_rate=learning_rate, device=device, on_batch=lambda batch, logits: None, on_step=on_step)
        scores += _el2n_of(model, normalise, inputs) / repeats
    indices = baselines.top_by_score(scores, inputs.labels, k, largest=True, stratify=stratify)
    info = {"training_seconds": time.perf_counter() - start, "epochs": epochs, "repeats": repeats,
            "arch": arch_name, "stratified": stratify}
    return indices, scores, info


def forgetting(inputs, k, *, ratio, seed, epochs=10, arch=None, batch_size=128, learning_rate=0.05,
               device="cpu", stratify=True, on_step=None):
    """Forgetting events (Toneva et al.) over ``epochs`` epochs of plain-CE training: a sample is
    forgotten when it was classified correctly at its previous presentation and is not now; a
    never-learnt sample counts as infinitely forgotten. Keep the most forgotten per class, ties at
    random (seeded). Scores: the event count (inf = never learnt), higher = kept first."""
    events = np.zeros(len(inputs.labels))
    previous = np.zeros(len(inputs.labels), dtype=bool)
    learnt = np.zeros(len(inputs.labels), dtype=bool)

    def on_batch(batch, logits):
        rows = batch.numpy()
        correct = logits.argmax(dim=1).cpu().numpy() == inputs.labels[rows]
        events[rows] += previous[rows] & ~correct
        previous[rows] = correct
        learnt[rows] |= correct

    start = time.perf_counter()
    _, _, arch_name = _train_student(inputs, epochs=epochs, seed=seed, arch=arch, batch_size=batch_size,
                                     learning_rate=learning_rate, device=device, on_batch=on_batch, on_step=on_step)
    scores = np.where(learnt, events, np.inf)
    rng = np.random.default_rng(seed)
    indices = baselines.grouped(inputs.labels, k, stratify,
                                lambda members, quota: baselines.top(scores, members, quota, rng=rng))
    info = {"training_seconds": time.perf_counter() - start, "epochs": epochs, "arch": arch_name,
            "never_learnt": int((~learnt).sum()), "stratified": stratify}
    return indices, scores, info


# ---------------------------------------------------------------------------------------------
# Registry and entry point

_TEACHER = frozenset({"teacher_scores"})
_INFLUENCE = frozenset({"influence"})

METHODS: dict[str, MethodSpec] = {
    "random": MethodSpec(baselines.random_uniform, "uniform at random over the whole pool (unstratified)",
                         frozenset(), False, True),
    "random-balanced": MethodSpec(baselines.random_balanced, "uniform at random within class quotas",
                                  frozenset(), False, True),
    "influence-top": MethodSpec(baselines.influence_top, "highest influence per class (most helpful, no policy)",
                                _INFLUENCE, False, False),
    "el2n-teacher": MethodSpec(baselines.teacher_score_method("el2n"),
                               "highest EL2N against the teacher's probabilities per class (hardest)",
                               _TEACHER, False, False),
    "entropy": MethodSpec(baselines.teacher_score_method("entropy"),
                          "highest teacher entropy per class (most uncertain)", _TEACHER, False, False),
    "margin": MethodSpec(baselines.teacher_score_method("margin"),
                         "smallest teacher margin p_y - max other per class (hardest)", _TEACHER, False, False),
    "kd-loss": MethodSpec(baselines.teacher_score_method("kd_loss"),
                          "highest KD loss of the linear proxy per class (hardest; keep='easy' flips)",
                          _TEACHER, False, False),
    "moderate": MethodSpec(baselines.moderate, "Moderate-DS: middle band of distances to the class median",
                           frozenset(), False, False),
    "ccs": MethodSpec(baselines.ccs, "CCS: cut the hardest, 50 score strata filled smallest first",
                      _TEACHER, False, True),
    "d2": MethodSpec(baselines.d2, "D2-Pruning: kNN-graph message passing over teacher difficulty",
                     _TEACHER, False, False),
    "dual-beta": MethodSpec(baselines.dual_beta, "DUAL's ratio-adaptive Beta over teacher confidence",
                            _TEACHER, False, True),
    "herding": MethodSpec(baselines.herding, "herding towards the class mean of teacher features",
                          frozenset(), False, False),
    "kcenter": MethodSpec(baselines.kcenter, "k-center greedy on teacher features per class",
                          frozenset(), False, True),
    "ifbeta": MethodSpec(ifbeta_learned, "IF-Beta: Beta policy over influence ranks learned by bilevel",
                         _INFLUENCE, True, True),
    "ifbeta-entropy": MethodSpec(ifbeta_entropy, "IF-Beta's learned Beta over teacher-entropy ranks",
                                 _TEACHER, True, True),
    "ifbeta-fixed": MethodSpec(ifbeta_fixed, "the Beta policy with given alpha and beta (no learning)",
                               _INFLUENCE, False, True),
    "el2n-train": MethodSpec(el2n_train, "EL2N from a few epochs of real student training (costly)",
                             frozenset({"images"}), True, True),
    "forgetting": MethodSpec(forgetting, "forgetting events over a few epochs of real training (costly)",
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

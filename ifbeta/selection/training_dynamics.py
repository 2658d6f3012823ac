"""Training-dynamics selection rules: EL2N of a briefly trained student, forgetting events.

Costly by design (their cost is part of the comparison): each trains a fresh student on
``inputs.images`` with the project's one training loop, ``models.training.fit`` (plain
cross-entropy, no augmentation, its SGD and LR schedule), reading every batch through fit's
``on_batch`` hook. Signature and return value as in ``selection.score_based``.
"""
from __future__ import annotations

import time

import numpy as np

from ifbeta.selection.grouping import grouped, top, top_by_score
from ifbeta.selection.signals import cheap_teacher_scores


def student_config(*, epochs: int, seed: int, batch_size: int, learning_rate: float):
    """The ``TrainConfig`` of the selection students: cross-entropy from ``seed``, no augmentation."""
    from ifbeta.models.training import TrainConfig
    return TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed, augment=False)


def train_student(inputs, *, epochs, seed, arch, batch_size, learning_rate, device, on_batch=None, on_step=None):
    """Train a fresh student on ``inputs.images`` with ``fit`` (``student_config``); the model is
    initialised from ``seed`` without touching the global torch RNG. ``on_batch(indices, logits)`` sees
    every training batch, ``on_step`` fit's batch and epoch events. Returns (model in eval mode on
    ``device``, its ``Normaliser``, architecture name)."""
    import torch

    from ifbeta.data.datasets import DatasetSplit, channel_statistics
    from ifbeta.models import zoo as models
    from ifbeta.models.training import Normaliser, fit
    images = torch.as_tensor(inputs.images)
    data = DatasetSplit("selection", "train", images, inputs.labels, [str(i) for i in range(len(inputs.labels))],
                        [str(c) for c in range(inputs.classes)])
    arch = arch or models.default_architectures("", images.shape[-1])[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.build(arch, num_classes=inputs.classes, in_channels=images.shape[1])
    normaliser = Normaliser(*channel_statistics(images))
    config = student_config(epochs=epochs, seed=seed, batch_size=batch_size, learning_rate=learning_rate)
    fit(model, data, config=config, device=torch.device(device), normaliser=normaliser, on_step=on_step,
        on_batch=on_batch)
    return model.eval(), normaliser, arch


def student_logits(model, normaliser, images) -> np.ndarray:
    """(N, C) float64: the trained student's logits on ``images`` (N, C, H, W) uint8, in blocks of 1024."""
    import torch
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(normaliser(block.to(device))).double().cpu()
                          for block in torch.as_tensor(images).split(1024)]).numpy()


def el2n_train(inputs, k, *, ratio, seed, epochs=3, repeats=1, arch=None, batch_size=128, learning_rate=0.05,
               device="cpu", stratify=True, on_step=None):
    """EL2N (Paul et al.) of a student trained ``epochs`` epochs with plain CE, averaged over ``repeats``
    seeds; keep the highest (hardest) per class. ``arch`` None = the default student for the image
    size (``models.default_architectures``). Scores: EL2N in [0, sqrt 2], higher = harder."""
    start = time.perf_counter()
    scores = np.zeros(len(inputs.labels))
    for repeat in range(repeats):
        model, normaliser, arch_name = train_student(
            inputs, epochs=epochs, seed=seed * 1000 + repeat, arch=arch, batch_size=batch_size,
            learning_rate=learning_rate, device=device, on_step=on_step)
        logits = student_logits(model, normaliser, inputs.images)
        scores += cheap_teacher_scores(logits, inputs.labels)["el2n"] / repeats
    indices = top_by_score(scores, inputs.labels, k, largest=True, stratify=stratify)
    info = {"training_seconds": time.perf_counter() - start, "epochs": epochs, "repeats": repeats,
            "arch": arch_name, "stratified": stratify}
    return indices, scores, info


def forgetting_counter(labels: np.ndarray):
    """(on_batch, result): ``on_batch(indices, logits)`` counts forgetting events (correct at a sample's
    previous presentation, wrong now); ``result()`` gives the (N,) float64 counts with inf for a
    sample never classified correctly (never learnt, or never presented)."""
    events = np.zeros(len(labels))
    previous = np.zeros(len(labels), dtype=bool)
    learnt = np.zeros(len(labels), dtype=bool)

    def on_batch(rows, logits):
        correct = logits.argmax(dim=1).cpu().numpy() == labels[rows]
        events[rows] += previous[rows] & ~correct
        previous[rows] = correct
        learnt[rows] |= correct

    return on_batch, lambda: np.where(learnt, events, np.inf)


def forgetting(inputs, k, *, ratio, seed, epochs=10, arch=None, batch_size=128, learning_rate=0.05,
               device="cpu", stratify=True, on_step=None):
    """Forgetting events (Toneva et al.) over ``epochs`` epochs of plain-CE training: a sample is
    forgotten when it was classified correctly at its previous presentation and is not now; a
    never-learnt sample counts as infinitely forgotten. Keep the most forgotten per class, ties at
    random (seeded). Scores: the event count (inf = never learnt), higher = kept first."""
    on_batch, counts = forgetting_counter(inputs.labels)
    start = time.perf_counter()
    _, _, arch_name = train_student(inputs, epochs=epochs, seed=seed, arch=arch, batch_size=batch_size,
                                    learning_rate=learning_rate, device=device, on_batch=on_batch, on_step=on_step)
    scores = counts()
    rng = np.random.default_rng(seed)
    indices = grouped(inputs.labels, k, stratify, lambda members, quota: top(scores, members, quota, rng=rng))
    info = {"training_seconds": time.perf_counter() - start, "epochs": epochs, "arch": arch_name,
            "never_learnt": int(np.isinf(scores).sum()), "stratified": stratify}
    return indices, scores, info

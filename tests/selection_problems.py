"""Small selection problems whose answers are known, shared by the selection tests."""
from __future__ import annotations

import numpy as np
import torch

from ifbeta.selection.registry import SelectionInputs
from ifbeta.selection.signals import cheap_teacher_scores


def make_problem(n=240, d=8, classes=4, seed=0, images=True, scores=True) -> SelectionInputs:
    """Class blobs in feature space, logits from a noisy linear teacher, 8x8 one-channel images whose
    brightness pattern depends on the class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    labels = np.concatenate([labels, rng.integers(0, classes, n - len(labels))])
    centres = rng.normal(size=(classes, d)) * 2.0
    features = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)
    logits = features @ rng.normal(size=(d, classes)) * 0.3 + 2.0 * np.eye(classes)[labels]
    teacher_scores = None
    if scores:
        teacher_scores = cheap_teacher_scores(logits, labels)
        teacher_scores["kd_loss"] = teacher_scores["el2n"] ** 2 + 0.01 * rng.random(n)
    pictures = None
    if images:
        pattern = rng.integers(0, 256, size=(classes, 1, 8, 8))
        noisy = pattern[labels] * 0.7 + rng.integers(0, 77, size=(n, 1, 8, 8))
        pictures = torch.as_tensor(noisy.clip(0, 255).astype(np.uint8))
    return SelectionInputs(features, logits, labels, influence=rng.normal(size=n),
                           teacher_scores=teacher_scores, images=pictures)


def ccs_problem():
    """One class; difficulties at the centres of 50 equal strata over [0, 1]: 3 samples in stratum 0,
    200 in stratum 10, 50 in stratum 20, 4 in stratum 49 (min exactly 0 and max exactly 1)."""
    centre = lambda b: (b + 0.5) / 50  # noqa: E731
    values = np.concatenate([[0.0, centre(0), centre(0)], np.full(200, centre(10)), np.full(50, centre(20)),
                             [centre(49), centre(49), centre(49), 1.0]])
    n = len(values)
    inputs = SelectionInputs(np.random.default_rng(0).normal(size=(n, 3)), np.zeros((n, 1)),
                             np.zeros(n, dtype=np.int64), teacher_scores={"el2n": values})
    return inputs, values


def blobs_problem(per_blob=11, blobs=5):
    """Five tight, far-apart blobs in one class; blob 0 is the hardest."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(blobs, 6)) * 10
    blob = np.repeat(np.arange(blobs), per_blob)
    features = centres[blob] + 0.01 * rng.normal(size=(len(blob), 6))
    el2n = np.where(blob == 0, 1.0, 0.5) + 0.001 * rng.random(len(blob))
    n = len(blob)
    inputs = SelectionInputs(features, np.zeros((n, 1)), np.zeros(n, dtype=np.int64), teacher_scores={"el2n": el2n})
    return inputs, blob, 1 - blobs / n


def kept_and_dropped(selection, members):
    kept = np.isin(members, selection.indices)
    return members[kept], members[~kept]


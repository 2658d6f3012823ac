"""Gaussian-mixture pools with a linear teacher, shared by the tests of ``ifbeta/influence``."""
import numpy as np


def corrupt(teacher, labels, index, rng):
    """Give samples ``index`` a random wrong label AND teacher logits that agree with it (swap two logits)."""
    classes = teacher.shape[1]
    wrong = (labels[index] + rng.integers(1, classes, len(index))) % classes
    right_logit, wrong_logit = teacher[index, labels[index]].copy(), teacher[index, wrong].copy()
    teacher[index, labels[index]], teacher[index, wrong] = wrong_logit, right_logit
    labels[index] = wrong


def mixture(n, d, classes, seed, corrupted=0, separation=2.0):
    """Gaussian-mixture 'teacher features' (n, d) with a teacher head linear in them; the first
    ``corrupted`` samples are mislabelled and the teacher agrees with the wrong label (harmful under KD)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, d)) * separation / np.sqrt(d)
    labels = rng.integers(0, classes, n)
    features = means[labels] + rng.normal(size=(n, d))
    head = 1.5 * means
    teacher = features @ head.T - 0.5 * (head * means).sum(1)  # (n, C)
    corrupt(teacher, labels, np.arange(corrupted), rng)
    return features, teacher, labels

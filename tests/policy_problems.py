"""Small policy problems whose answer is known, shared by the tests of ``ifbeta/policy``.

(1) ``flipped_problem``: Gaussian classes, teacher logits follow the true classes, 30% of the labels
    flipped to a random other class: under the KD loss with lam = 0.5 the flipped samples are harmful.
(2) ``hard_problem``: 30% "hard" samples whose teacher logits are soft and noisy (unfittable by a
    linear head): at a very high pruning ratio the easy samples are the ones to keep.
"""
import numpy as np

from ifbeta.config import KDConfig, PolicyConfig
from ifbeta.policy import inner


def gaussian_classes(rng, n, d, classes, separation):
    means = rng.normal(size=(classes, d)) * separation
    labels = np.arange(n) % classes
    features = means[labels] + rng.normal(size=(n, d))
    teacher = 2.0 * features @ means.T - (means**2).sum(axis=1)  # (n, C) Gaussian log-likelihoods
    return features, teacher / teacher.std() * 3.0, labels


def flipped_problem(n=480, d=8, classes=4, flip=0.3, seed=0):
    rng = np.random.default_rng(seed)
    features, teacher, labels = gaussian_classes(rng, n, d, classes, 2.0)
    flipped = rng.random(n) < flip
    labels = labels.copy()
    labels[flipped] = (labels[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    return features, teacher, labels, flipped


def hard_problem(n=480, d=8, classes=4, hard=0.3, seed=0):
    rng = np.random.default_rng(seed)
    features, teacher, labels = gaussian_classes(rng, n, d, classes, 1.5)
    is_hard = rng.random(n) < hard
    teacher[is_hard] = 0.2 * teacher[is_hard] + 2.0 * rng.normal(size=(is_hard.sum(), classes))
    return features, teacher, labels, is_hard


def prepared(features, teacher, labels, axis, mu=None, **config) -> inner.Problem:
    """The inner problem of the bilevel loop with the defaults (mu None: chosen by validation)."""
    return inner.prepare(features, teacher, labels, axis, kd=KDConfig(), mu=mu, bias_damping=1e-3,
                         config=PolicyConfig(**config))

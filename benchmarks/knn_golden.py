"""Golden float64 outputs of the k-NN proxy on two fixed, seeded Gaussian-mixture problems.

Writes tests/data/knn_golden.npz (checked by tests/test_knn_golden.py): the cross-fitted leave-one-out
scores of ``knn_scores.score`` (scores, fold, kd_loss, the chosen (k, h) per fold), and on one fold with
fractional weights the neighbour lists, the prediction q, L_V and its accuracy, the weight gradient
dL_V/dw and the exact removal scores. The fixture was recorded with the numpy implementation; rerunning
this script records the current implementation's outputs instead.

    python benchmarks/knn_golden.py [--out tests/data/knn_golden.npz]
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import golden  # noqa: E402
from influence_problems import mixture  # noqa: E402

from ifbeta.config import InfluenceConfig, KDConfig, ProxyConfig  # noqa: E402
from ifbeta.influence import knn, knn_scores  # noqa: E402

PROBLEMS = {"small": dict(n=400, d=8, classes=4, seed=21, neighbours=None, bandwidth=None),
            "large": dict(n=1500, d=24, classes=10, seed=22, neighbours=10, bandwidth=None)}
KD = KDConfig(tau=4.0, lam=0.9)


def numbers(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def problem_outputs(n, d, classes, seed, neighbours, bandwidth) -> dict:
    features, teacher, labels = mixture(n, d, classes, seed, corrupted=n // 20)
    settings = ProxyConfig(kd=KD, family="knn", neighbours=neighbours, bandwidth=bandwidth)
    result = knn_scores.score(features, teacher, labels, config=InfluenceConfig(proxy=settings))
    chosen = [(row["neighbours"], row["bandwidth"]) for row in result.mu_table if row["chosen"]]
    rng = np.random.default_rng(seed + 1)
    z = (features - features.mean(axis=0)) / features.std(axis=0)
    train, validation = np.arange(n // 2), np.arange(n // 2, n)
    fold = knn_scores.KnnFold.build((z[train], teacher[train], labels[train]),
                                    (z[validation], teacher[validation], labels[validation]), settings=settings)
    weights = np.clip(rng.uniform(-0.3, 1.3, size=len(train)), 0.0, 1.0)
    loss, accuracy, gradient = fold.evaluate(weights)
    options = dict(kd=KD, mass=float(fold.k), bandwidth=fold.bandwidth)
    data = (fold.neighbours, weights, fold.targets, fold.val_targets, fold.val_labels)
    removal = knn.removal_scores(*data, **options)
    indices, sq = (np.asarray(values) for values in knn.nearest(z[validation], z[train], 12))
    q = knn.predict(sq, weights[indices], np.asarray(fold.targets)[indices], mass=float(fold.k),
                    bandwidth=fold.bandwidth)
    return {"scores": numbers(result.scores), "fold": np.asarray(result.fold), "chosen": numbers(chosen),
            "kd_loss": numbers(result.teacher_scores["kd_loss"]), "weights": weights,
            "fold_settings": numbers([fold.k, fold.bandwidth]), "weighted_loss": numbers(loss),
            "weighted_accuracy": numbers(accuracy), "weight_gradient": numbers(gradient),
            "removal_scores": numbers(removal), "nearest_indices": np.asarray(indices, np.int64),
            "nearest_sq": numbers(sq), "predict_q": numbers(q)}


def main() -> None:
    golden.main(__doc__.splitlines()[0], PROBLEMS, problem_outputs, ROOT / "tests" / "data" / "knn_golden.npz")


if __name__ == "__main__":
    main()

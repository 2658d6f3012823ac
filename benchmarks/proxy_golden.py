"""Golden float64 outputs of the linear proxy on two fixed, seeded Gaussian-mixture problems.

Writes tests/data/proxy_golden.npz (checked by tests/test_torch_proxy.py): fitted theta, the gradient
and an HVP at a fixed point, the direct / cg / ekfac solves of one rhs (the validation gradient), the
first-order influence scores (influence_scores and scores.score) and one hypergradient dJ/dw of the
weighted fold. The fixture was recorded with the float64 numpy implementation; rerunning this script
records the current implementation's outputs instead.

    python benchmarks/proxy_golden.py [--out tests/data/proxy_golden.npz]
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
from ifbeta.influence import objective, proxy, scores, solvers, weighted  # noqa: E402

PROBLEMS = {"small": dict(n=600, d=16, classes=5, seed=11, mu=1.0),
            "large": dict(n=2000, d=32, classes=10, seed=12, mu=2.0)}
KD = KDConfig(tau=4.0, lam=0.9)


def numbers(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def problem_outputs(n, d, classes, seed, mu) -> dict:
    features, teacher, labels = mixture(n, d, classes, seed, corrupted=n // 20)
    val_features, val_teacher, val_labels = mixture(n // 2, d, classes, seed + 100)
    data = (features, teacher, labels)
    options = dict(mu=mu, kd=KD, bias_damping=1e-3)
    fitted = proxy.fit(*data, **options, tolerance=1e-12)
    theta = numbers(fitted.theta)
    rng = np.random.default_rng(seed + 1)
    point = rng.normal(size=theta.shape) * 0.1
    vector = rng.normal(size=theta.shape)
    rhs = numbers(objective.validation_gradient(theta, val_features, val_teacher, val_labels, kd=KD))
    solves = {name: numbers(solvers.SOLVERS[name](theta, *data, None, rhs, **options)) for name in solvers.SOLVERS}
    direction = solves["direct"]
    first_order = numbers(scores.influence_scores(theta, direction, *data, kd=KD))
    config = InfluenceConfig(proxy=ProxyConfig(kd=KD, mu=mu), solver="direct", estimator="first_order")
    result = scores.score(features, teacher, labels, config=config)
    fold = weighted.LinearFold.build(data, (val_features, val_teacher, val_labels),
                                     settings=ProxyConfig(kd=KD), mu=mu)
    weights = np.clip(rng.uniform(0.2, 1.2, size=n), 0.0, 1.0)
    loss, accuracy, d_weights = fold.evaluate(weights)
    return {"theta": theta, "grad_norm": numbers(fitted.grad_norm),
            "point": point, "vector": vector,
            "gradient": numbers(objective.gradient(point, *data, **options)),
            "objective": numbers(objective.objective(point, *data, **options)),
            "hvp": numbers(objective.hvp(theta, vector, *data, **options)),
            "rhs": rhs, **{f"solve_{name}": value for name, value in solves.items()},
            "influence_scores": first_order, "score": numbers(result.scores), "fold": np.asarray(result.fold),
            "weights": weights, "weighted_loss": numbers(loss), "weighted_theta": numbers(fold.theta),
            "hypergradient": numbers(d_weights)}


def main() -> None:
    golden.main(__doc__.splitlines()[0], PROBLEMS, problem_outputs, ROOT / "tests" / "data" / "proxy_golden.npz")


if __name__ == "__main__":
    main()

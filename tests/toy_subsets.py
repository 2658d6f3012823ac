"""A toy dataset (ids, labels, class names, fingerprint) and a subset written for it, shared by the
tests of ``ifbeta/subsets``."""
from dataclasses import dataclass, field

import numpy as np

from ifbeta.subsets import files as subset


@dataclass
class FakeDataset:
    name: str
    ids: list
    labels: np.ndarray
    class_names: list
    fingerprint: str = "f" * 64
    split: str = field(default="train")


def make_dataset(n=12, classes=("cat", "dog", "bird"), name="toy", fingerprint="a" * 64):
    labels = np.arange(n) % len(classes)
    return FakeDataset(name, [f"{name}/{i}" for i in range(n)], labels, list(classes), fingerprint)


def write_toy(directory, dataset=None, indices=(1, 4, 7), **kwargs):
    dataset = dataset or make_dataset()
    n = len(dataset.ids)
    defaults = dict(indices=np.array(indices), dataset=dataset, method="if-beta", ratio=0.75, seed=3,
                    alpha=2.0, beta=0.5, scores=np.linspace(-1, 1, n), u=(np.arange(n) + 0.5) / n,
                    inclusion=np.full(n, len(indices) / n), teacher={"arch": "resnet20", "checkpoint_sha256": "b" * 64},
                    extra={"mu": np.float64(0.1), "trace": [1, 2]})
    defaults.update(kwargs)
    return subset.write(directory, **defaults)

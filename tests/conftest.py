"""Shared fixtures: an isolated artefact store per test session, tiny image folders, the digits teacher."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

from ifbeta.threads import limit_blas_threads  # noqa: E402

limit_blas_threads()


@pytest.fixture(scope="session")
def session_store(tmp_path_factory):
    from ifbeta.store import Store

    root = tmp_path_factory.mktemp("cache")
    os.environ["IFBETA_CACHE"] = str(root)
    return Store(root)


@pytest.fixture(scope="session")
def digits(session_store):
    from ifbeta.data import datasets as data

    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="session")
def digits_teacher(digits, session_store):
    from ifbeta.models.teachers import resolve_teacher

    train, test = digits
    return resolve_teacher("auto", train, store=session_store, test=test)


@pytest.fixture(scope="session")
def digits_features(digits, digits_teacher, session_store):
    from ifbeta.models.features import teacher_features

    return teacher_features(digits_teacher, digits[0], store=session_store)


def write_image(path: Path, size=(12, 12), mode="RGB", seed=0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze() if channels == 1 else pixels, mode).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A 3-class ImageFolder with train/ (6 per class) and test/ (2 per class), 12x12 RGB PNGs."""
    root = tmp_path / "folder"
    for split, count in (("train", 6), ("test", 2)):
        for c, name in enumerate(["cat", "dog", "eel"]):
            for i in range(count):
                write_image(root / split / name / f"{i:03d}.png", seed=hash((split, c, i)) % 1000)
    return root

"""selection.training_dynamics: EL2N of a trained student and forgetting events, both trained by the
project's one loop (models.training.fit) and read through its on_batch hook."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifbeta.data.datasets import DatasetSplit, channel_statistics
from ifbeta.models import training
from ifbeta.models import zoo as models
from ifbeta.selection import training_dynamics
from ifbeta.selection.registry import select
from tests.selection_problems import kept_and_dropped, make_problem

TINY = {"arch": "cnn-tiny", "batch_size": 64}


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny conv nets on a busy 2-core machine run ~100x faster with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def direct_fit(inputs, *, epochs, seed, on_batch=None):
    """The student of ``train_student`` built by hand and trained by a direct ``fit`` call."""
    n = len(inputs.labels)
    data = DatasetSplit("selection", "train", inputs.images, inputs.labels, [str(i) for i in range(n)],
                        [str(c) for c in range(inputs.classes)])
    torch.manual_seed(seed)
    model = models.build("cnn-tiny", num_classes=inputs.classes, in_channels=1)
    config = training_dynamics.student_config(epochs=epochs, seed=seed, batch_size=64, learning_rate=0.05)
    result = training.fit(model, data, config=config, device=torch.device("cpu"), on_batch=on_batch,
                          normaliser=training.Normaliser(*channel_statistics(inputs.images)))
    return model, result


def test_the_student_is_trained_by_fit(problem):
    seen = []
    model, _, arch = training_dynamics.train_student(problem, epochs=2, seed=4, learning_rate=0.05, device="cpu",
                                                     on_batch=lambda rows, logits: seen.append((rows, logits)), **TINY)
    reference, result = direct_fit(problem, epochs=2, seed=4)
    assert arch == "cnn-tiny"
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert len(seen) == result.steps == 2 * training.steps_per_epoch(len(problem.labels), 64)
    for rows, logits in seen:  # full batches of distinct samples, one logit row each
        assert rows.dtype == np.int64 and len(np.unique(rows)) == 64 and logits.shape == (64, problem.classes)
        assert not logits.requires_grad


def test_forgetting_counts_the_events_of_fits_batches(problem):
    on_batch, counts = training_dynamics.forgetting_counter(problem.labels)
    direct_fit(problem, epochs=3, seed=2, on_batch=on_batch)
    chosen = select("forgetting", problem, 0.5, seed=2, epochs=3, **TINY)
    np.testing.assert_array_equal(chosen.scores, counts())


def test_forgetting_counter_by_hand():
    labels = np.array([0, 1, 1])
    on_batch, counts = training_dynamics.forgetting_counter(labels)
    right, wrong = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    for logits in (right, wrong, right, wrong):  # sample 0: learnt, forgotten twice
        on_batch(np.array([0]), logits)
    for logits in (right, right):  # sample 1: never correct (label 1) -> inf
        on_batch(np.array([1]), logits)
    on_batch(np.array([2]), wrong)  # sample 2: learnt at once, never forgotten
    np.testing.assert_array_equal(counts(), [2.0, np.inf, 0.0])


def test_training_methods_report_their_cost(problem):
    forgotten = select("forgetting", problem, 0.5, epochs=2, **TINY)
    assert forgotten.info["epochs"] == 2 and forgotten.info["training_seconds"] > 0
    assert forgotten.info["arch"] == "cnn-tiny"
    assert forgotten.info["never_learnt"] == int(np.isinf(forgotten.scores).sum())
    counts = forgotten.scores
    for label in range(4):  # keeps the most forgotten (never learnt = inf) per class
        kept, dropped = kept_and_dropped(forgotten, np.flatnonzero(problem.labels == label))
        assert counts[kept].min() >= counts[dropped].max()
    events = []
    el2n = select("el2n-train", problem, 0.5, epochs=1, on_step=lambda step, info: events.append(info), **TINY)
    assert el2n.info["epochs"] == 1 and np.all((el2n.scores >= 0) & (el2n.scores <= math.sqrt(2)))
    assert [info["epoch"] for info in events if info["event"] == "epoch"] == [1]  # fit's progress events
    assert sum(info["event"] == "batch" for info in events) == training.steps_per_epoch(len(problem.labels), 64)

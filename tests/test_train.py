import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ifbeta.config import KDConfig
from ifbeta.models import training as train
from ifbeta.models import zoo as models


def test_kd_loss_golden_value_has_the_tau_squared_factor():
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0]])
    labels = torch.tensor([1])
    kd = KDConfig(tau=2.0, lam=0.75)
    p_t = F.softmax(teacher / 2, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / 2, 1))).sum()
    expected = 0.25 * F.cross_entropy(student, labels) + 0.75 * 4.0 * kl
    assert torch.allclose(train.kd_loss(student, teacher, labels, kd), expected)
    # hand-computed: CE = log(e + 1 + 1/e) = 1.40761, KL(tau=2) = 0.20494 -> 0.25 * 1.40761 + 3 * 0.20494
    assert train.kd_loss(student, teacher, labels, kd).item() == pytest.approx(0.96673, abs=2e-4)
    assert train.kd_loss(teacher, teacher, labels, KDConfig(lam=1.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_augment_crop_is_a_shift_and_flip_mirrors():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(train.augment(images, generator, crop_padding=0, flip=False), images)
    out = train.augment(images, torch.Generator().manual_seed(1), crop_padding=1, flip=False)
    padded = F.pad(images, (1, 1, 1, 1))
    for b in range(2):  # every output is one of the 9 shifted windows of the padded input
        windows = [padded[b, :, r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(out[b], w) for w in windows)
    batch = torch.arange(32 * 1 * 4 * 4, dtype=torch.uint8).view(32, 1, 4, 4)  # no image is its own mirror
    flipped = train.augment(batch, torch.Generator().manual_seed(3), crop_padding=0, flip=True)
    mirrored = [torch.equal(flipped[b], batch[b].flip(2)) for b in range(32)]
    unchanged = [torch.equal(flipped[b], batch[b]) for b in range(32)]
    assert all(m != u for m, u in zip(mirrored, unchanged))  # each image is either mirrored or left as is
    assert 0 < sum(mirrored) < 32  # and a seeded batch of 32 has both


def test_teacher_and_kd_student_learn_digits(digits, digits_teacher):
    train_split, test = digits
    assert digits_teacher.info.metadata["test_top1"] > 0.95
    torch.manual_seed(0)
    student = models.build("cnn-tiny", num_classes=10, in_channels=1)
    result = train.fit(student, train_split, config=train.TrainConfig(epochs=6, batch_size=64), test=test,
                       teacher=digits_teacher.model, normaliser=digits_teacher.normaliser)
    assert result.test_top1 > 0.85 and len(result.history) == 6


class Killed(Exception):
    pass


def test_resume_after_a_kill_equals_an_uninterrupted_run(digits, tmp_path):
    train_split, _ = digits
    subset = np.arange(0, len(train_split), 3)
    config = train.TrainConfig(epochs=4, batch_size=64, seed=5)

    def run(checkpoint_dir, kill_after=None):
        torch.manual_seed(config.seed)
        model = models.build("cnn-tiny", num_classes=10, in_channels=1)

        def on_step(step, info):
            if kill_after is not None and info["event"] == "epoch" and info["epoch"] == kill_after:
                raise Killed

        return model, train.fit(model, train_split, config=config, indices=subset, checkpoint_dir=checkpoint_dir,
                                on_step=on_step)

    reference, _ = run(tmp_path / "reference")
    with pytest.raises(Killed):
        run(tmp_path / "killed", kill_after=2)
    resumed, result = run(tmp_path / "killed")
    assert result.resumed_from == 2 and len(result.history) == 4
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_damaged_resume_file_is_ignored_not_trusted(digits, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"garbage")
    model = models.build("cnn-tiny", num_classes=10, in_channels=1)
    result = train.fit(model, digits[0], config=train.TrainConfig(epochs=1, batch_size=256), checkpoint_dir=tmp_path)
    assert result.resumed_from == 0 and len(result.history) == 1


def test_resume_checkpoint_of_another_run_is_ignored(digits, tmp_path):
    train_split, _ = digits
    subset = np.arange(0, len(train_split), 4)

    def resumed_from(seed=1, indices=subset, arch="cnn-tiny"):
        torch.manual_seed(seed)
        model = models.build(arch, num_classes=10, in_channels=1)
        config = train.TrainConfig(epochs=1, batch_size=128, seed=seed)
        return train.fit(model, train_split, config=config, indices=indices, checkpoint_dir=tmp_path).resumed_from

    assert resumed_from() == 0
    assert resumed_from(seed=2) == 0  # another seed
    assert resumed_from(seed=2, indices=subset[1:]) == 0  # other samples
    assert resumed_from(seed=2, indices=subset[1:], arch="cnn-small") == 0  # another architecture
    assert resumed_from(seed=2, indices=subset[1:], arch="cnn-small") == 1  # the same run resumes


def test_eval_every_tests_on_schedule_and_after_the_last_epoch(digits):
    train_split, test = digits
    torch.manual_seed(0)
    student = models.build("cnn-tiny", num_classes=10, in_channels=1)
    result = train.fit(student, train_split, config=train.TrainConfig(epochs=5, batch_size=128),
                       indices=np.arange(256), test=test, eval_every=2)
    tested = [record["epoch"] for record in result.history if "test_top1" in record]
    assert tested == [2, 4, 5]
    assert result.test_top1 == result.history[-1]["test_top1"]


def test_steps_per_epoch_drops_the_partial_batch_but_never_reaches_zero():
    assert train.steps_per_epoch(1000, 128) == 7
    assert train.steps_per_epoch(1024, 128) == 8
    assert train.steps_per_epoch(100, 128) == 1 and train.steps_per_epoch(0, 128) == 1


def test_on_batch_sees_every_step_and_changes_nothing(digits):
    train_split, _ = digits
    config = train.TrainConfig(epochs=2, batch_size=64, seed=1)
    subset = np.arange(200)

    def trained(on_batch=None):
        torch.manual_seed(0)
        model = models.build("cnn-tiny", num_classes=10, in_channels=1)
        result = train.fit(model, train_split, config=config, indices=subset, device=torch.device("cpu"),
                           on_batch=on_batch)
        return model, result

    seen = []
    hooked, result = trained(lambda rows, logits: seen.append((rows.copy(), tuple(logits.shape))))
    plain, _ = trained()
    assert len(seen) == result.steps == 2 * train.steps_per_epoch(len(subset), 64) == 6
    assert all(shape == (64, 10) and np.isin(rows, subset).all() and len(np.unique(rows)) == 64 for rows, shape in seen)
    for (name, a), b in zip(hooked.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name

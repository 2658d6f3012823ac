import numpy as np
import torch

from ifbeta.models.features import extract, teacher_features


def test_features_equal_a_direct_forward_pass_at_any_batch_size(digits, digits_teacher):
    train, _ = digits
    model, normaliser = digits_teacher.model.eval(), digits_teacher.normaliser
    with torch.inference_mode():
        x = normaliser(train.images[:300])
        direct_phi = model.forward_features(x).numpy()
        direct_logits = model(x).numpy()
    small = train.subset(np.arange(300))
    for batch_size in (7, 64, 1000):
        phi, logits = extract(digits_teacher, small, batch_size=batch_size, device=torch.device("cpu"))
        np.testing.assert_allclose(phi, direct_phi, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(logits, direct_logits, rtol=1e-4, atol=1e-5)


def test_features_are_cached_and_float16_is_an_option(digits, digits_teacher, session_store):
    train, _ = digits
    first = teacher_features(digits_teacher, train, store=session_store)
    again = teacher_features(digits_teacher, train, store=session_store)
    assert first.key == again.key and first.features.dtype == np.float32
    half = teacher_features(digits_teacher, train, store=session_store, float16=True)
    assert half.key != first.key and half.features.dtype == np.float16
    np.testing.assert_allclose(np.asarray(half.features, np.float32), first.features, rtol=2e-3, atol=2e-3)
    assert first.teacher_accuracy > 0.95

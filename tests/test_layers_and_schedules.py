"""The augmentation layer and the learning-rate schedule, checked against their definitions."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resnetctl.errors import RunError
from resnetctl.models.layers import RandomCropFlip
from resnetctl.training.schedules import EpochSchedule


def _images(n=16, size=32):
    return np.random.default_rng(1).integers(1, 256, (n, size, size, 3), dtype=np.uint8)


def test_crop_flip_is_an_exact_shift_with_zero_padding_and_optional_flip():
    images = _images()
    layer = RandomCropFlip(mode="translate", max_shift=4, seed=3)
    out = keras.ops.convert_to_numpy(layer(images, training=True)).round().astype(np.int64)
    for original, augmented in zip(images.astype(np.int64), out, strict=True):
        matches = []
        for flip in (False, True):
            src = original[:, ::-1] if flip else original
            padded = np.pad(src, ((4, 4), (4, 4), (0, 0)))
            for dy in range(9):
                for dx in range(9):
                    if np.array_equal(padded[dy : dy + 32, dx : dx + 32], augmented):
                        matches.append((flip, dy, dx))
        assert matches, "every output must be a padded crop of the input (or of its mirror)"


def test_augmentation_is_identity_at_inference_and_varies_in_training():
    images = _images()
    layer = RandomCropFlip(mode="resized", seed=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    assert out.shape == images.shape
    assert not np.allclose(out, images)
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize(
    "kind,kwargs,expected",
    [
        ("poly", {"power": 1.0}, [0.1, 0.075, 0.05, 0.025]),
        ("poly", {"power": 2.0}, [0.1, 0.05625, 0.025, 0.00625]),
        ("cosine", {}, [0.1, 0.0853553, 0.05, 0.0146447]),
        ("step", {"milestones": (1, 3)}, [0.1, 0.01, 0.01, 0.001]),
        ("constant", {}, [0.1, 0.1, 0.1, 0.1]),
    ],
)
def test_schedule_matches_the_per_epoch_formula(kind, kwargs, expected):
    schedule = EpochSchedule(kind, 0.1, steps_per_epoch=10, epochs=4, **kwargs)
    first_steps = [float(keras.ops.convert_to_numpy(schedule(e * 10))) for e in range(4)]
    assert first_steps == pytest.approx(expected, rel=1e-5)
    # the Python twin used for display agrees with the graph at every step
    every = [float(keras.ops.convert_to_numpy(schedule(step))) for step in range(40)]
    assert [schedule.at_step(step) for step in range(40)] == pytest.approx(every, rel=1e-6)
    assert schedule.at_epoch_end(0) == pytest.approx(every[9], rel=1e-6)


def test_warmup_ramps_linearly_and_schedule_serialises():
    schedule = EpochSchedule("poly", 0.1, steps_per_epoch=10, epochs=10, warmup_epochs=2)
    first = float(keras.ops.convert_to_numpy(schedule(0)))
    assert first == pytest.approx(0.1 * 0.1 / 2, rel=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == schedule.get_config()


def test_schedule_errors_say_what_was_received():
    with pytest.raises(RunError, match="Received: lr=0"):
        EpochSchedule("poly", 0.0, 10, 5)
    with pytest.raises(RunError, match="milestones"):
        EpochSchedule("step", 0.1, 10, 5)

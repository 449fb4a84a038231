"""The augmentation and mixing layers and the learning-rate schedule, checked against their definitions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from resnetctl.errors import RunError
from resnetctl.models.layers import BatchMix, RandomCropFlip
from resnetctl.training.config import TrainConfig, config_from_file, default_batch_size
from resnetctl.training.losses import SparseCrossentropy
from resnetctl.training.schedules import EpochSchedule
from tests.helpers import REPO, needs


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


def check_mixing_in_a_compiled_step(mixup: float, cutmix: float, steps: int = 4) -> None:
    """Jit-compiled train steps of Input -> BatchMix -> pooled classifier at lr 0, on images of one
    colour each: whichever the method (a blend, or a pasted box of the mirrored image), an image's
    pooled colour is ``share * own + (1 - share) * mirrored``, so the reported loss must be the
    cross-entropy against targets mixed by the same ``own_share`` (with label smoothing). Run in
    this process (TensorFlow) and by the e2e tier under JAX and torch. With both methods on, both
    must have been drawn: a CutMix share is a whole number of the 64 pixels, a MixUp share is not."""
    colours = np.random.default_rng(0).integers(0, 256, (6, 1, 1, 3))
    images = np.broadcast_to(colours, (6, 8, 8, 3)).astype(np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    classifier = keras.Sequential(
        [
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    mix = BatchMix(mixup, cutmix, seed=1)
    model = keras.Model(inputs, classifier(mix(inputs)))
    model.compile(keras.optimizers.SGD(0.0), SparseCrossentropy(0.1, mix=mix), jit_compile=True)
    shares = []
    for _ in range(steps):
        loss = float(model.train_on_batch(images, labels, return_dict=True)["loss"])
        share = float(keras.ops.convert_to_numpy(mix.own_share))
        shares.append(share)
        assert 0.0 <= share <= 1.0
        pooled = share * colours[:, 0, 0] + (1 - share) * colours[::-1, 0, 0]
        kernel, bias = (np.asarray(w, np.float64) for w in classifier.layers[-1].get_weights())
        logits = pooled / 255 @ kernel + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        one_hot = np.eye(3)[labels]
        target = (share * one_hot + (1 - share) * one_hot[::-1]) * 0.9 + 0.1 / 3
        expected = -np.mean(np.sum(target * np.log(probs), axis=1))
        assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(set(shares)) > 1, "a new draw every step"
    if mixup and cutmix:
        boxes = [abs(share * 64 - round(share * 64)) < 1e-4 for share in shares]
        assert any(boxes) and not all(boxes), f"both methods drawn in {steps} steps: {shares}"
    model.predict(images, verbose=0)  # inference: no mixing, and plain targets for any loss
    assert float(keras.ops.convert_to_numpy(mix.own_share)) == 1.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mix(images, training=False)), images)


@pytest.mark.parametrize(
    "mixup,cutmix",
    [(0.4, 1.0), pytest.param(0.4, 0.0, marks=pytest.mark.e2e), pytest.param(0.0, 1.0, marks=pytest.mark.e2e)],
)
def test_mixing_mixes_images_and_targets_alike_in_a_compiled_step(mixup, cutmix):
    check_mixing_in_a_compiled_step(mixup, cutmix)


def test_cutmix_pastes_one_box_from_the_mirrored_image_and_shares_by_area():
    images = np.random.default_rng(2).integers(0, 128, (5, 16, 16, 3), dtype=np.uint8)
    images[2] += 128  # the middle image is its own mirror; make every pair differ everywhere
    mirrored = images[::-1]
    layer = BatchMix(cutmix_alpha=1.0, seed=4)
    shares = []
    for _ in range(5):
        out = keras.ops.convert_to_numpy(layer(images, training=True))
        share = float(keras.ops.convert_to_numpy(layer.own_share))
        shares.append(share)
        from_mirror = np.all(out == mirrored, axis=-1)
        assert np.all(from_mirror | np.all(out == images, axis=-1))
        for i in (0, 1, 3, 4):  # one rectangle, the same for every image of the batch
            rows, cols = np.nonzero(from_mirror[i])
            if rows.size:
                assert rows.size == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert 1 - from_mirror[i].mean() == pytest.approx(share, abs=1e-6)
    assert len(set(shares)) > 1


def test_batch_mix_draws_beta_and_respects_its_probability():
    layer = BatchMix(mixup_alpha=1.0, seed=0)
    draws = np.array([float(keras.ops.convert_to_numpy(layer._beta(1.0))) for _ in range(150)])
    assert abs(draws.mean() - 0.5) < 0.08 and abs(draws.var() - 1 / 12) < 0.03  # Beta(1, 1) is uniform
    small = np.array([float(keras.ops.convert_to_numpy(layer._beta(0.05))) for _ in range(50)])
    assert np.all(np.isfinite(small)) and np.mean((small < 0.01) | (small > 0.99)) > 0.7
    never = BatchMix(mixup_alpha=1.0, prob=0.0, seed=0)
    images = _images(4, 8)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(never(images, training=True)), images)
    assert float(keras.ops.convert_to_numpy(never.own_share)) == 1.0
    with pytest.raises(ValueError):
        BatchMix(seed=0)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "backend", [pytest.param("jax", marks=needs("jax")), pytest.param("torch", marks=needs("torch"))]
)
def test_mixing_compiles_on_jax_and_torch(backend):
    code = (
        "from tests.test_layers_and_schedules import check_mixing_in_a_compiled_step as check; "
        "check(0.4, 1.0, steps=8)"  # one compiled step holding both methods, each drawn (a compile is 25 s on torch)
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(
    "options,text",
    [
        ({"ema": 1.0}, "`ema` must be in [0, 1). Received: ema=1.0"),
        ({"ema": -0.5}, "`ema` must be in [0, 1). Received: ema=-0.5"),
        ({"mixup": -0.2}, "`mixup` must be a finite number >= 0"),
        ({"cutmix": float("nan")}, "`cutmix` must be a finite number >= 0"),
        ({"mixup": 0.2, "mix_prob": 1.5}, "`mix_prob` must be in [0, 1]"),
        ({"mix_prob": 0.5}, "apply only with --mixup and/or --cutmix"),
    ],
)
def test_recipe_options_are_checked_before_keras(options, text):
    with pytest.raises(RunError, match=re.escape(text)):
        TrainConfig(model="resnet20", **options).validate()
    TrainConfig(model="resnet20", ema=0.999, mixup=0.2, cutmix=1.0, mix_prob=0.5).validate()


def test_ema_is_off_by_default_and_zero_or_an_older_runs_null_is_off(tmp_path):
    """``--ema 0`` is off, as the default is; a config.json written when off was ``null`` still
    reads as off, for resume and --config."""
    subset = SimpleNamespace(splits={"train": 4_499}, image_size=32)
    assert TrainConfig(model="resnet20").validate().resolved(subset).ema == 0
    assert TrainConfig(model="resnet20", ema=0.9).validate().resolved(subset).ema == 0.9
    older = tmp_path / "config.json"
    older.write_text(json.dumps({"model": "resnet20", "dataset": "cifar10", "ema": None, "created": "2026-11-01"}))
    assert config_from_file(older).validate().ema == 0
    assert TrainConfig.from_dict({"model": "resnet20", "ema": None}).ema == 0


def test_default_batch_size_halves_while_an_epoch_has_under_fifty_steps():
    """The papers' 128 where an epoch has 50 steps or more (CIFAR, Tiny ImageNet in full)."""
    assert [default_batch_size(n) for n in (100_000, 50_000, 45_000, 6_273, 6_272, 4_499, 1_000, 10)] == [
        128,
        128,
        128,
        128,
        64,
        64,
        32,
        32,
    ]
    subset = SimpleNamespace(splits={"train": 4_499}, image_size=32)
    resolved = TrainConfig(model="resnet20").resolved(subset)
    assert (resolved.batch_size, resolved.augmentation) == (64, "crop-flip")
    assert TrainConfig(model="resnet20", batch_size=128).resolved(subset).batch_size == 128

"""The seeds' own settings, as their code has them: the from-scratch project's two networks
(parameter counts exact), ImageDataGenerator's affine augmentation, per-epoch decay, decay
placement and input normalisation."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from scipy import ndimage

from resnetctl.models import create_model, get_spec
from resnetctl.models.layers import RandomAffineFlip
from resnetctl.models.profile import profile_spec
from resnetctl.training.schedules import EpochSchedule
from resnetctl.training.settings import build_config
from resnetctl.training.trainer import build_model
from tests.helpers import REPO

# meng1994412/ResNet_from_scratch: ResNet.build(32, 32, 3, 10, (9, 9, 9), (64, 64, 128, 256)) and
# the Tiny ImageNet ResNet at 64 px / 200 classes, counted by Keras' model.summary() of their code.
SEED_PARAMS = {"preact-resnet56-wide": (32, 10, 886_102), "tiny-imagenet-resnet41": (64, 200, 2_265_748)}


@pytest.mark.parametrize("name", sorted(SEED_PARAMS))
def test_the_from_scratch_networks_have_the_repo_parameter_counts(name):
    size, classes, expected = SEED_PARAMS[name]
    model = create_model(name, input_size=size, num_classes=classes)
    normalize = sum(w.numpy().size for w in model.get_layer("normalize").weights)
    assert model.count_params() - normalize == expected
    assert profile_spec(get_spec(name), size, classes).params == expected  # `build`'s count, without Keras
    assert model.get_layer("input_bn").epsilon == pytest.approx(2e-5)
    assert model.get_layer("stage1_block1_shortcut_conv").kernel.shape[-2:] == (
        64,
        model.get_layer("stage1_block1_conv3").kernel.shape[-1],
    )  # stage 1 projects too
    assert model.get_layer("stem_conv").kernel_initializer.__class__.__name__ == "GlorotUniform"


def _image_data_generator(image, theta, tx, ty, shear, zx, zy):
    """Keras 2's ``apply_affine_transform`` (keras_preprocessing), rebuilt from its matrices with
    SciPy, one channel at a time: order 1, fill_mode nearest; angles in degrees, shifts in pixels."""
    h, w = image.shape[:2]
    theta, shear = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    matrix = rotation @ shift @ shearing @ zoom
    o_x, o_y = h / 2 - 0.5, w / 2 - 0.5
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    matrix = offset @ matrix @ reset
    channels = [
        ndimage.affine_transform(image[..., c], matrix[:2, :2], matrix[:2, 2], order=1, mode="nearest")
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def test_affine_augmentation_is_image_data_generators_transform():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    params = {
        "theta": np.array([0.0, 17.0, -12.0, 5.0]),
        "tx": np.array([0.1, -0.2, 0.05, 0.0]),
        "ty": np.array([-0.1, 0.15, 0.2, 0.0]),
        "shear": np.array([0.0, 10.0, -15.0, 3.0]),
        "zx": np.array([1.0, 0.9, 1.15, 0.85]),
        "zy": np.array([1.0, 1.1, 0.87, 1.0]),
    }
    radians = {k: np.deg2rad(v) if k in ("theta", "shear") else v for k, v in params.items()}
    ours = keras.ops.convert_to_numpy(
        RandomAffineFlip.warp(images, **{k: keras.ops.convert_to_tensor(v, "float32") for k, v in radians.items()})
    )
    for i in range(len(images)):
        one = {k: v[i] for k, v in params.items()}
        expected = _image_data_generator(
            images[i], one["theta"], one["tx"] * 32, one["ty"] * 32, one["shear"], one["zx"], one["zy"]
        )
        np.testing.assert_allclose(ours[i], expected, atol=2e-3)


def test_affine_layer_fills_with_the_edge_not_zeros_and_is_identity_at_inference():
    layer = RandomAffineFlip(shift=0.3, flip=False, seed=1)
    images = np.full((8, 16, 16, 3), 200, np.uint8)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    assert out.min() == pytest.approx(200.0)  # a constant image stays constant under nearest fill
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images.astype("float32"))


def test_per_epoch_decay_holds_the_rate_for_the_whole_epoch():
    stepped = EpochSchedule("poly", 0.1, steps_per_epoch=10, epochs=5, per_epoch=True)
    smooth = EpochSchedule("poly", 0.1, steps_per_epoch=10, epochs=5)
    assert [stepped.at_step(s) for s in (10, 15, 19)] == [pytest.approx(0.08)] * 3
    assert smooth.at_step(15) < smooth.at_step(10)
    assert float(keras.ops.convert_to_numpy(stepped(19))) == pytest.approx(0.08)
    reloaded = EpochSchedule.from_config(stepped.get_config())
    assert reloaded.per_epoch and reloaded.at_step(25) == pytest.approx(0.1 * (1 - 2 / 5))
    assert stepped.at_epoch_end(0) == pytest.approx(0.1)


def test_decay_placement_stem_blocks_and_classifier_apart():
    model = create_model(
        "preact-resnet56-wide", weight_decay=2e-4, stem_weight_decay=1e-3, classifier_weight_decay=1e-3
    )

    def l2(name):
        regularizer = model.get_layer(name).kernel_regularizer
        return None if regularizer is None else regularizer.get_config()["l2"]

    assert l2("stem_conv") == pytest.approx(5e-4)
    assert l2("logits") == pytest.approx(5e-4)
    assert l2("stage2_block3_conv2") == pytest.approx(1e-4)
    assert l2("stage1_block1_shortcut_conv") == pytest.approx(1e-4)
    notebook = create_model("resnet20", weight_decay=2e-4, classifier_weight_decay=0.0)
    assert notebook.get_layer("logits").kernel_regularizer is None
    assert notebook.get_layer("stem_conv").kernel_regularizer.get_config()["l2"] == pytest.approx(1e-4)


def test_per_pixel_normalisation_is_inside_the_model():
    rng = np.random.default_rng(0)
    mean = rng.uniform(100, 140, (32, 32, 3)).astype("float32")
    model = create_model("resnet8", mean=mean, std=np.ones_like(mean))
    normalize = keras.Model(model.input, model.get_layer("normalize").output)
    image = np.full((1, 32, 32, 3), 128, np.uint8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalize(image))[0], 128 - mean, atol=1e-4)


def test_the_notebook_recipe_builds_the_network_of_the_notebook_baseline_script():
    """keras-resnet20's model and benchmarks/notebook_baseline.py (the notebook as a plain Keras 3
    script) are one network: the same kernels, Keras' BN defaults, no BN on the pooled projection.
    The script's convolutions keep Keras' default bias, which each BN after them absorbs."""
    spec = importlib.util.spec_from_file_location("notebook_baseline", REPO / "benchmarks" / "notebook_baseline.py")
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    theirs = baseline.resnet20((32, 32, 3), 10, seed=0)
    # the run's own path: the recipe's config through train's model options (per-channel statistics
    # here, so no train.h5 is read; normalisation is a layer without kernels either way)
    info = SimpleNamespace(image_size=32, num_classes=10, mean=(125.0,) * 3, std=(60.0,) * 3, splits={"train": 45_000})
    config = build_config(None, "keras-resnet20", flags={"dataset": "x", "normalization": "channel"}, open_info=None)
    ours = build_model(config, info)

    def kernels(model):
        return sorted(tuple(layer.kernel.shape) for layer in model.layers if hasattr(layer, "kernel"))

    def norms(model):
        bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        return [(layer.epsilon, layer.momentum) for layer in bns]

    assert kernels(ours) == kernels(theirs)
    assert norms(ours) == norms(theirs) == [(1e-3, 0.99)] * 19  # the stem and two a block, none on a shortcut

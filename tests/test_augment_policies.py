"""Keras' own augmentation policies inside the model (``--augmentation randaugment``,
``--random-erasing P``): training only, reseeded per epoch, saved and exported, trained through the
CLI, and kept under XLA on JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from resnetctl.runs import RunDir
from tests.helpers import needs, run_in_process


def test_the_policy_changes_training_images_only_and_draws_by_epoch(tmp_path):
    import keras

    from resnetctl.export import inference_model
    from resnetctl.models import create_model
    from resnetctl.models.layers import KerasPolicy

    model = create_model("resnet8", input_size=16, num_classes=2, augmentation="randaugment", erasing=0.5, seed=3)
    policy = model.get_layer("policy")
    assert isinstance(policy.rand_augment, keras.layers.RandAugment)
    assert isinstance(policy.random_erasing, keras.layers.RandomErasing)
    images = keras.ops.cast(np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)), "float32")

    def draw(epoch):
        policy.reseed(epoch)
        return keras.ops.convert_to_numpy(policy(images, training=True))

    assert np.array_equal(keras.ops.convert_to_numpy(policy(images, training=False)), images)
    first = draw(4)
    assert not np.array_equal(first, images) and first.min() >= 0 and first.max() <= 255
    assert np.array_equal(first, draw(4)) and not np.array_equal(first, draw(5))  # (seed, epoch) alone

    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path).get_layer("policy").get_config()
    assert again["randaugment"] and again["erasing"] == 0.5 and again["magnitude"] == pytest.approx(0.1)
    assert not any(isinstance(layer, KerasPolicy) for layer in inference_model(model).layers)


@pytest.mark.e2e
def test_training_with_randaugment_and_erasing(two_class_data, tmp_path):
    runs = tmp_path / "runs"
    run_in_process("train", "resnet8", "--dataset", "tiny", "--data-dir", two_class_data, "--runs-dir", runs,
            "--run", "ra", "--epochs", 1, "--batch-size", 8, "--augmentation", "randaugment",
            "--randaugment-magnitude", 0.2, "--random-erasing", 0.5)  # fmt: skip
    record = RunDir(runs / "ra").config()
    assert record["augmentation"] == "randaugment" and record["random_erasing"] == 0.5
    assert record["randaugment_magnitude"] == 0.2 and len(RunDir(runs / "ra").history()) == 1
    summary = json.loads(run_in_process("summary", runs / "ra", "--json").stdout)
    assert summary[0]["recipe"]["augmentation"] == "randaugment"


JAX_STEP = """
import numpy as np, resnetctl
from resnetctl.models import create_model
model = create_model("resnet8", input_size=16, num_classes=2, augmentation="randaugment", erasing=0.5, seed=0)
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile="auto")
model.fit(np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4, int), epochs=1, verbose=0)
print("JIT", model.jit_compile)
"""


@pytest.mark.e2e
@needs("jax")
def test_randaugment_keeps_the_jax_step_jitted():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", JAX_STEP], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "JIT True" in proc.stdout

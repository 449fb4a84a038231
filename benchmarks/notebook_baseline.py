"""The seed notebook's ResNet20 recipe as a plain Keras 3 script: the baseline `resnetctl train`'s
default recipe must beat at the same epoch budget, on the same data.

    python benchmarks/notebook_baseline.py --dataset-dir DATA/cifar-10-jpeg [--epochs 30] [--seed 0]
                                           [--out results.json]

It reads the splits a `resnetctl prepare` wrote (train.h5, val.h5, test.h5: the same 45,000 /
5,000 / 10,000 images the tool's runs see) with h5py and nothing else of resnetctl, and trains as
the notebook did: ResNet20 v1 (conv-BN-ReLU, 2x2 average pool + 1x1 conv between stages,
he_normal, ``l2(1e-4)`` on the convolutions, no decay on the classifier), per-pixel mean and std
from the training images, 4/32 shifts (``fill_mode="nearest"``) and horizontal flips, SGD 0.1
with Nesterov momentum 0.9 at batch 64, ``ReduceLROnPlateau(loss, sqrt(0.1), patience 5,
min_delta 0.01, min_lr 1e-6)``, ``EarlyStopping(val_accuracy, patience 20)``, the best val
accuracy kept. Keras 3 has no ImageDataGenerator: its shifts are ``RandomTranslation`` (same
fractions, same nearest fill), inside the model as the tool does it. It prints and writes the
test accuracy of the best and the last epoch, the epoch that first reached 90% val accuracy and the
wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import h5py
import keras
import numpy as np


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["images"][...], f["labels"][...].astype("int64")


def conv_bn(x, filters, strides=1, relu=True):
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.l2(1e-4),
    )(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x) if relu else x


def resnet20(input_shape, classes: int, seed: int) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = keras.layers.RandomTranslation(4 / 32, 4 / 32, fill_mode="nearest", seed=seed)(inputs)
    x = keras.layers.RandomFlip("horizontal", seed=seed + 1)(x)
    x = conv_bn(x, 16)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            y = conv_bn(x, filters, strides)
            y = conv_bn(y, filters, relu=False)
            if strides > 1:  # the notebook's shortcut: average pool, then a 1x1 convolution
                x = keras.layers.AveragePooling2D(2)(x)
                x = keras.layers.Conv2D(
                    filters, 1, kernel_initializer="he_normal", kernel_regularizer=keras.regularizers.l2(1e-4)
                )(x)
            x = keras.layers.Activation("relu")(keras.layers.add([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", kernel_initializer="he_normal")(x)
    return keras.Model(inputs, outputs, name="notebook_resnet20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-dir", type=Path, required=True, help="a dataset folder resnetctl prepared")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        load(args.dataset_dir / f"{split}.h5") for split in ("train", "val", "test")
    )
    classes = int(y_train.max()) + 1
    mean = x_train.mean(axis=0, dtype="float64")
    std = x_train.std(axis=0, dtype="float64")

    def normalize(x):
        return ((x - mean) / std).astype("float32")

    x_train, x_val, x_test = normalize(x_train), normalize(x_val), normalize(x_test)
    y_train, y_val, y_test = (keras.utils.to_categorical(y, classes) for y in (y_train, y_val, y_test))

    model = resnet20(x_train.shape[1:], classes, args.seed)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    best_path = Path(f"/tmp/notebook_baseline_{args.seed}.weights.h5")
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(
            monitor="loss", factor=math.sqrt(0.1), patience=5, min_delta=0.01, cooldown=0, min_lr=1e-6
        ),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=20),
        keras.callbacks.ModelCheckpoint(best_path, monitor="val_accuracy", save_best_only=True, save_weights_only=True),
    ]
    start = time.monotonic()
    history = model.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=2,
    ).history
    wall = time.monotonic() - start
    last = model.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)["accuracy"]
    model.load_weights(best_path)
    best = model.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)["accuracy"]
    val = history["val_accuracy"]
    results = {
        "script": "benchmarks/notebook_baseline.py",
        "epochs_run": len(val),
        "seed": args.seed,
        "best_epoch": int(np.argmax(val)) + 1,
        "best_val_accuracy": float(max(val)),
        "test_accuracy_best": float(best),
        "test_accuracy_last": float(last),
        "first_epoch_val_90": next((i + 1 for i, v in enumerate(val) if v >= 0.9), None),
        "wall_s": round(wall, 1),
        "backend": keras.backend.backend(),
        "val_accuracy": [round(float(v), 4) for v in val],
    }
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

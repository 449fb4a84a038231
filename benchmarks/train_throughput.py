"""Training throughput of `resnetctl train` against three baselines, alternated in one invocation.

    python benchmarks/train_throughput.py [--model resnet20] [--dataset shapes] [--batch-size 128]
                                          [--precision float32|mixed_float16|mixed_bfloat16]
                                          [--lr 0.1] [--steps-per-execution K]
                                          [--rounds 2] [--no-origin] [--sides train,bare,pipeline]

- bare: the same model (augmentation layer included), compiled the same way, `model.fit(x, y)` on
  in-memory arrays with no callbacks: compute only, the ceiling for any input pipeline.
- pipeline: resnetctl's ``Batches`` feeding the same bare ``fit``: where between the two the
  difference lies (input pipeline, or train()'s validation, checkpoints and callbacks).
- origin: the pipeline of the project we reproduce, Keras 2's `ImageDataGenerator.flow` (from
  `tf_keras`: `pip install tf_keras`) doing 4-pixel shifts and flips on the CPU, feeding the same
  model with its augmentation layer off. The model is the same so that only the pipeline differs.

Every side compiles with the same resolved config, ``steps_per_execution`` included (train's
automatic K unless ``--steps-per-execution`` is given). The first epoch of each run (tracing,
warm-up) is dropped.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import keras
import numpy as np

from resnetctl.data.pipeline import EpochStart, train_batches
from resnetctl.data.store import open_dataset, read_split
from resnetctl.hooks import TrainingProgress
from resnetctl.models import create_model_for
from resnetctl.plan import plan_train
from resnetctl.training.config import TrainConfig
from resnetctl.training.trainer import compile_model, make_schedule, train


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def compiled_model(config: TrainConfig, info, steps: int, augmentation: str):
    keras.mixed_precision.set_dtype_policy(config.precision)  # as train() does
    model = create_model_for(config.model, info, weight_decay=config.weight_decay, augmentation=augmentation, seed=0)
    compile_model(model, config, make_schedule(config, steps), info.num_classes)
    return model


def bare_fit(config: TrainConfig, x, y, info) -> float:
    model = compiled_model(config, info, math.ceil(len(x) / config.batch_size), "crop-flip")
    timer = EpochTimer()
    model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=0, callbacks=[timer])
    return len(x) / np.mean(timer.times[1:])


def pipeline_fit(config: TrainConfig, info) -> float:
    """resnetctl's input pipeline (``Batches`` + ``EpochStart``) feeding bare ``fit``: no
    validation, no checkpoints, no progress callbacks. Splits the gap between the two others."""
    batches = train_batches(info, config.batch_size, None, config.seed)
    model = compiled_model(config, info, len(batches), "crop-flip")
    timer = EpochTimer()
    model.fit(batches, epochs=config.epochs, shuffle=False, verbose=0, callbacks=[EpochStart(batches), timer])
    return info.splits["train"] / np.mean(timer.times[1:])


def origin_fit(config: TrainConfig, x, y, info) -> float:
    """Keras 2 ImageDataGenerator.flow: shifts of up to 4 pixels and flips, on the CPU, in Python."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    steps = math.ceil(len(x) / config.batch_size)
    flow = ImageDataGenerator(
        width_shift_range=4, height_shift_range=4, horizontal_flip=True, fill_mode="constant"
    ).flow(x, y, batch_size=config.batch_size, shuffle=True)

    def batches():
        for xb, yb in flow:  # float32 from the generator; the model takes uint8 like every side here
            yield xb.astype(np.uint8), yb

    model = compiled_model(config, info, steps, "none")
    timer = EpochTimer()
    model.fit(batches(), steps_per_epoch=steps, epochs=config.epochs, verbose=0, callbacks=[timer])
    return len(x) / np.mean(timer.times[1:])


class EpochEnds(TrainingProgress):
    """The wall clock at the end of each of train's epochs, after its checkpoint, history and
    plot: what a user waits for, per-epoch costs included."""

    def __init__(self):
        self.times = []

    def epoch_end(self, row):
        self.times.append(time.perf_counter())


def ours(config: TrainConfig, runs_dir: str, name: str, images: int, steps_only: list) -> float:
    """Epochs 2..N of ``train`` by the wall clock, from the end of epoch 1 to the end of the last.
    Train's own images_per_second column (appended to ``steps_only``) counts the steps alone,
    not validation or the epoch's writes."""
    ends = EpochEnds()
    result = train(plan_train(config.with_overrides(runs_dir=runs_dir, run=name)), ends)  # no progress display
    steps_only.append(float(np.mean([r["images_per_second"] for r in result.history[1:]])))
    return images * (len(ends.times) - 1) / (ends.times[-1] - ends.times[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--steps-per-execution", type=int, default=None, help="default: train's automatic K")
    parser.add_argument("--no-origin", action="store_true", help="skip the tf_keras ImageDataGenerator side")
    parser.add_argument("--sides", default="train,bare,pipeline", help="which of train, bare, pipeline to run")
    args = parser.parse_args()
    info = open_dataset(args.dataset, args.data_dir)
    x, y = read_split(info, "train")
    config = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        precision=args.precision,
        steps_per_execution=args.steps_per_execution,
    ).resolved(info)
    wanted = set(args.sides.split(","))
    runs = tempfile.mkdtemp(prefix="resnetctl-bench-runs-")
    bare, pipeline, train_rates, origin, train_steps = [], [], [], [], []
    sides = [
        (rates, run)
        for name, rates, run in (
            ("train", train_rates, lambda r: ours(config, runs, f"round{r}", info.splits["train"], train_steps)),
            ("bare", bare, lambda r: bare_fit(config, x, y, info)),
            ("pipeline", pipeline, lambda r: pipeline_fit(config, info)),
        )
        if name in wanted
    ]
    if not args.no_origin:
        sides.append((origin, lambda r: origin_fit(config, x, y, info)))
    for r in range(args.rounds):  # the order rotates each round, so drift and warm-up hit every side
        for rates, run in sides[r % len(sides) :] + sides[: r % len(sides)]:
            rates.append(run(r))
    print(
        f"{args.model} on {args.dataset} ({len(x)} images), batch {args.batch_size}, "
        f"{args.precision}, lr {config.lr}, steps_per_execution {config.steps_per_execution}, "
        f"backend {keras.backend.backend()}"
    )
    for label, rates in (
        ("bare model.fit (compute only)", bare),
        ("fit on resnetctl's Batches", pipeline),
        ("resnetctl train (wall clock)", train_rates),
        ("train, steps only (its column)", train_steps),
        ("ImageDataGenerator.flow", origin),
    ):
        if rates:
            print(f"{label + ':':31s}{np.mean(rates):8.1f} images/s  {[round(float(v), 1) for v in rates]}")
    if train_rates and bare:
        print(f"ratio train / bare:            {np.mean(train_rates) / np.mean(bare):8.3f}   (goal >= 0.90)")
        print(f"ratio train steps only / bare: {np.mean(train_steps) / np.mean(bare):8.3f}")
    if pipeline and bare:
        print(f"ratio Batches / bare:          {np.mean(pipeline) / np.mean(bare):8.3f}")
    if origin:
        print(f"ratio train / ImageDataGenerator: {np.mean(train_rates) / np.mean(origin):5.3f}")


if __name__ == "__main__":
    main()

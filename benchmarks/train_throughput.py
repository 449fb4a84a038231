"""Training throughput of `resnetctl train` against a bare `model.fit` on in-memory arrays.

    python benchmarks/train_throughput.py [--model resnet20] [--dataset shapes] [--rounds 2]

Both sides build the same model (augmentation included) and compile it the same way; the bare
side calls `model.fit(x, y)` with no callbacks (compute only). They alternate in one invocation,
and the first epoch of each run (tracing, warm-up) is dropped.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import keras
import numpy as np

from resnetctl.data.store import open_dataset, read_split
from resnetctl.models import create_model
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


def bare_fit(config: TrainConfig, x, y, info) -> float:
    model = create_model(config.model, input_size=info.image_size, num_classes=info.num_classes,
                         mean=info.mean, std=info.std, weight_decay=config.weight_decay,
                         augmentation="crop-flip", seed=0)
    compile_model(model, config, make_schedule(config, math.ceil(len(x) / config.batch_size)),
                  info.num_classes)
    timer = EpochTimer()
    model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=0,
              callbacks=[timer])
    return len(x) / np.mean(timer.times[1:])


def ours(config: TrainConfig, runs_dir: str, name: str) -> float:
    import io

    from rich.console import Console

    result = train(config.with_overrides(runs_dir=runs_dir, run=name), Console(file=io.StringIO()))
    return float(np.mean([r["images_per_second"] for r in result.history[1:]]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    info = open_dataset(args.dataset, args.data_dir)
    x, y = read_split(info, "train")
    config = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                         epochs=args.epochs)
    runs = tempfile.mkdtemp(prefix="resnetctl-bench-runs-")
    bare, train_rates = [], []
    for r in range(args.rounds):
        train_rates.append(ours(config, runs, f"round{r}"))
        bare.append(bare_fit(config, x, y, info))
    print(f"{args.model} on {args.dataset} ({len(x)} images), backend {keras.backend.backend()}")
    print(f"bare model.fit (compute only): {np.mean(bare):8.1f} images/s  {bare}")
    print(f"resnetctl train:               {np.mean(train_rates):8.1f} images/s  {train_rates}")
    print(f"ratio train / bare:            {np.mean(train_rates) / np.mean(bare):8.3f}   (goal >= 0.90)")


if __name__ == "__main__":
    main()

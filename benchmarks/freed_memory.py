"""What ``KeepFreedMemory`` saves: fit on resnetctl's ``Batches`` without it and with it, alternated.

    python benchmarks/freed_memory.py [--model resnet20] [--dataset cifar10] [--data-dir DIR]
                                      [--batch-size 64] [--epochs 2] [--rounds 2]

TensorFlow's generator op sets glibc's trim threshold, which pins the mmap threshold at 128 KiB
(src/resnetctl/heap.py). Each side prints images/s and minor page faults per image, both over
the epochs after the first (tracing, warm-up); the ratios compare the two sides in this process.
"""

from __future__ import annotations

import argparse
import resource
import time

import keras
import numpy as np

from resnetctl.data.pipeline import EpochStart, train_batches
from resnetctl.data.store import open_dataset
from resnetctl.heap import KeepFreedMemory
from resnetctl.models import create_model_for
from resnetctl.training.config import TrainConfig
from resnetctl.training.trainer import compile_model, make_schedule


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class EpochCost(keras.callbacks.Callback):
    """Seconds and minor page faults of each epoch."""

    def __init__(self):
        super().__init__()
        self.seconds, self.faults = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.start_faults = time.perf_counter(), minor_faults()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
        self.faults.append(minor_faults() - self.start_faults)


def fit(config: TrainConfig, info, keep: bool) -> tuple[float, float]:
    """(images/s, minor faults per image) of ``fit`` on ``Batches`` after the first epoch."""
    batches = train_batches(info, config.batch_size, None, config.seed)
    model = create_model_for(config.model, info, weight_decay=config.weight_decay, seed=0)
    compile_model(model, config, make_schedule(config, len(batches)), info.num_classes)
    cost = EpochCost()
    callbacks = [*([KeepFreedMemory()] if keep else []), EpochStart(batches), cost]
    model.fit(batches, epochs=config.epochs, shuffle=False, verbose=0, callbacks=callbacks)
    images = info.splits["train"]
    return images / np.mean(cost.seconds[1:]), np.mean(cost.faults[1:]) / images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    info = open_dataset(args.dataset, args.data_dir)
    config = TrainConfig(
        model=args.model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size
    )
    sides = {False: [], True: []}
    for r in range(args.rounds):  # without first in even rounds, with first in odd ones
        for keep in (False, True) if r % 2 == 0 else (True, False):
            sides[keep].append(fit(config, info, keep))
    print(f"{args.model} on {args.dataset} ({info.splits['train']} images), batch {args.batch_size}")
    for keep, label in ((False, "without KeepFreedMemory"), (True, "with KeepFreedMemory")):
        rates, faults = zip(*sides[keep], strict=True)
        per_round = ", ".join(f"{r:.1f}/{f:.1f}" for r, f in sides[keep])
        print(f"{label + ':':25s}{np.mean(rates):8.1f} images/s {np.mean(faults):8.1f} faults/image  ({per_round})")
    (rate_off, faults_off), (rate_on, faults_on) = (np.mean(sides[k], axis=0) for k in (False, True))
    print(f"ratio images/s with / without:   {rate_on / rate_off:6.2f}")
    print(f"ratio faults with / without:     {faults_on / faults_off:8.4f}")


if __name__ == "__main__":
    main()

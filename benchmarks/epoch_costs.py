"""What train's per-epoch writes cost, in the process: ``model.save`` of the checkpoint, the copy
to best.keras, and the monitor.png plot, for ResNet20 and ResNet56 (median of 3); and what of it
stays on the training thread now that checkpoints after the first are saved by a twin on the
writer thread: the host copy of the state (``host``), against the foreground save (``save``).

    python benchmarks/epoch_costs.py [--models resnet20,resnet56]

On a GPU these sit between epochs that take 2-4 s for 50,000 CIFAR images (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from resnetctl import atomic
from resnetctl.checkpoints import CheckpointTwin, host_copy
from resnetctl.models import create_model_for
from resnetctl.plots import plot_monitor
from resnetctl.runs import save_checkpoint
from resnetctl.training.config import TrainConfig
from resnetctl.training.trainer import compile_model, make_schedule


class Info:  # the few DatasetInfo fields create_model_for reads
    image_size, num_classes, mean, std = 32, 10, [127.5] * 3, [64.0] * 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet20,resnet56")
    args = parser.parse_args()
    rows = [
        {"epoch": e, "lr": 0.1, "loss": 2 - e / 100, "accuracy": 0.1 + e / 200, "val_loss": 2.0, "val_accuracy": 0.3}
        for e in range(1, 31)
    ]
    for name in args.models.split(","):
        config = TrainConfig(model=name, batch_size=8, epochs=1)
        model = create_model_for(name, Info(), weight_decay=5e-4, seed=0)
        compile_model(model, config, make_schedule(config, 10), 10)
        model.fit(np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8, np.int32), verbose=0)  # optimizer state
        folder = Path(tempfile.mkdtemp(prefix="resnetctl-epoch-costs-"))
        times = {"save": [], "copy": [], "plot": [], "host": [], "twin save": []}
        save_checkpoint(model, folder / "first.keras", {"epoch": 1, "metrics": {}})
        twin = CheckpointTwin(folder / "first.keras", model)
        for _ in range(3):
            t0 = time.perf_counter()
            save_checkpoint(model, folder / "last.keras", {"epoch": 1, "metrics": {}})
            t1 = time.perf_counter()
            atomic.copy_file(folder / "last.keras", folder / "best.keras")
            t2 = time.perf_counter()
            plot_monitor(rows, folder / "monitor.png", title=name)
            t3 = time.perf_counter()
            state = host_copy(model)
            t4 = time.perf_counter()
            twin.save(state, folder / "twin.keras", {"epoch": 1, "metrics": {}})
            t5 = time.perf_counter()
            for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                times[key].append(seconds)
        size = (folder / "last.keras").stat().st_size / 1e6
        print(name, ", ".join(f"{k} {np.median(v):.3f} s" for k, v in times.items()), f"({size:.1f} MB)")
        foreground = np.median(times["save"]) + np.median(times["copy"])  # the plot was already off it
        print(
            f"  on the training thread per epoch: host copy {np.median(times['host']):.4f} s against "
            f"save + best copy {foreground:.3f} s (ratio {np.median(times['host']) / foreground:.4f})"
        )


if __name__ == "__main__":
    main()

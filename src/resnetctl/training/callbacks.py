"""Callbacks that keep a run resumable: history, checkpoints, curves, clean stops."""

from __future__ import annotations

import math
import time

import keras

from resnetctl import atomic
from resnetctl.runs import RunDir, save_checkpoint


class StopRequested(Exception):
    """Raised from inside ``fit`` to leave it at once (a signal or a non-finite loss)."""

    def __init__(self, reason: str, epoch: int):
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch  # 1-based epoch that was running


def plot_monitor(rows: list[dict], path) -> None:
    """Loss and accuracy curves, train and val, redrawn from the whole history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, [r.get(key) for r in rows], label=f"train {key}")
        if any("val_" + key in r for r in rows):
            ax.plot(epochs, [r.get("val_" + key, math.nan) for r in rows], label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


class RunRecorder(keras.callbacks.Callback):
    """Writes history.csv, monitor.png and the checkpoints after each finished epoch.

    ``last.keras`` every epoch, ``checkpoints/epoch_NNNN.keras`` every ``checkpoint_every``
    epochs, ``best.keras`` when val accuracy improves: one ``model.save``, then copies.
    """

    def __init__(self, run: RunDir, history: list[dict], schedule, images: int,
                 checkpoint_every: int, signals: dict):
        super().__init__()
        self.run = run
        self.rows = history
        self.schedule = schedule
        self.images = images
        self.every = checkpoint_every
        self.signals = signals
        self.best = max((r.get("val_accuracy", -1.0) for r in history), default=-1.0)
        self.epoch = 0
        self.started = 0.0
        self.train_seconds = 0.0

    def _check(self, logs):
        if self.signals["signal"]:
            raise StopRequested(f"received {self.signals['signal']}", self.epoch + 1)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise StopRequested("the loss became non-finite (NaN or inf)", self.epoch + 1)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs)
        self.train_seconds = time.perf_counter() - self.started

    def on_test_batch_end(self, batch, logs=None):
        self._check(None)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self.started
        row = {
            "epoch": epoch + 1,
            "lr": self.schedule.at_epoch(epoch),
            **{k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs},
            "seconds": round(seconds, 3),
            "images_per_second": round(self.images / max(self.train_seconds, 1e-9), 1),
        }
        self.rows.append(row)
        self.run.write_history(self.rows)
        info = {"epoch": epoch + 1, "metrics": {k: v for k, v in row.items() if k != "epoch"}}
        save_checkpoint(self.model, self.run.last_path, info)
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.params.get("epochs"):
            self.run.checkpoint_dir.mkdir(exist_ok=True)
            atomic.copy_file(self.run.last_path, self.run.epoch_path(epoch + 1))
        score = row.get("val_accuracy", row.get("accuracy", 0.0))
        if score > self.best:
            self.best = score
            atomic.copy_file(self.run.last_path, self.run.best_path)
        plot_monitor(self.rows, self.run.monitor_path)

"""Live training progress with rich: a batch bar with loss, accuracy, lr, images/s and ETA,
and one table row per finished epoch. Plain lines when the console is not a terminal."""

from __future__ import annotations

import time

import keras
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _fmt(row: dict, key: str, spec: str = ".4f") -> str:
    return format(row[key], spec) if key in row else "-"


class RichProgress(keras.callbacks.Callback):
    """Given its Console, so tests can hand it ``Console(file=io.StringIO())``."""

    HEADER = f"{'epoch':>7} {'lr':>9} {'loss':>8} {'acc':>7} {'val_loss':>8} {'val_acc':>7} {'img/s':>8} {'time':>7}"

    def __init__(self, console: Console, rows: list[dict], schedule):
        super().__init__()
        self.console = console
        self.rows = rows  # shared with RunRecorder, which appends before we print
        self.schedule = schedule
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.task = None
        self.batch_size = 1

    def set_params(self, params):
        super().set_params(params)
        self.epochs = params.get("epochs")
        self.steps = params.get("steps")

    def on_train_begin(self, logs=None):
        self.console.print(self.HEADER, style="bold", highlight=False)
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.lr = self.schedule.at_epoch(epoch)  # once per epoch, not on the per-batch path
        self.started = time.perf_counter()
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(
                f"epoch {epoch + 1}/{self.epochs}", total=self.steps, stats=""
            )

    def on_train_batch_end(self, batch, logs=None):
        if self.progress is None or self.task is None:
            return
        logs = logs or {}
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        done = batch + 1
        stats = (
            f"loss {float(logs.get('loss', float('nan'))):.4f} "
            f"acc {float(logs.get('accuracy', float('nan'))):.4f} "
            f"lr {self.lr:.2e} {done / elapsed:.1f} steps/s"
        )
        self.progress.update(self.task, completed=done, stats=stats)

    def on_epoch_end(self, epoch, logs=None):
        row = self.rows[-1] if self.rows and self.rows[-1]["epoch"] == epoch + 1 else {}
        line = (
            f"{epoch + 1:>4}/{self.epochs:<2} {_fmt(row, 'lr', '9.2e')} {_fmt(row, 'loss', '8.4f')} "
            f"{_fmt(row, 'accuracy', '7.4f')} {_fmt(row, 'val_loss', '8.4f')} "
            f"{_fmt(row, 'val_accuracy', '7.4f')} {_fmt(row, 'images_per_second', '8.1f')} "
            f"{_fmt(row, 'seconds', '6.1f')}s"
        )
        self.console.print(line, highlight=False)

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

"""The rich progress callback, given its own Console as a terminal, during a real fit."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from resnetctl.models import create_model
from resnetctl.training.config import TrainConfig
from resnetctl.training.progress import RichProgress
from resnetctl.training.trainer import compile_model, make_schedule


def test_live_progress_prints_one_row_per_finished_epoch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 64)
    config = TrainConfig(model="resnet8", epochs=2, batch_size=16)
    schedule = make_schedule(config, steps_per_epoch=4)
    model = create_model("resnet8", num_classes=4)
    compile_model(model, config, schedule, num_classes=4)
    out = io.StringIO()
    rows: list[dict] = []
    console = Console(file=out, force_terminal=True, width=120)

    class Rows(RichProgress):  # stands in for RunRecorder, which appends the row first
        def on_epoch_end(self, epoch, logs=None):
            rows.append({"epoch": epoch + 1, "lr": self.lr, "loss": float(logs["loss"])})
            super().on_epoch_end(epoch, logs)

    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Rows(console, rows, schedule)])
    text = out.getvalue()
    assert "epoch" in text and "val_loss" in text  # the header
    assert "   1/2 " in text and "   2/2 " in text  # one row per epoch
    assert "1.00e-01" in text and "5.00e-02" in text  # the lr of each epoch (poly, 2 epochs)
    assert [r["epoch"] for r in rows] == [1, 2]

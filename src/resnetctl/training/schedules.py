"""Learning-rate schedules of the papers, as one serialisable Keras schedule.

Evaluated every optimizer step from the step counter, so a checkpoint's ``iterations`` is all
a resumed run needs to continue at the right rate. At each epoch start the value equals the
per-epoch formula (poly: ``lr0 * (1 - epoch/epochs) ** power``, as in the reproduced project).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from resnetctl.errors import RunError
from resnetctl.training.config import SCHEDULES as KINDS  # noqa: F401
from resnetctl.training.config import check_schedule_args


@keras.saving.register_keras_serializable(package="resnetctl")
class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """poly | step | cosine | constant over ``epochs``, with an optional linear warmup, then the
    ``segments`` that ``resume`` added: from ``from_epoch`` on, a constant ``lr`` and/or a new
    horizon ``epochs`` for the formula (unset keys carry over from the piece before). A run's
    config.json holds the same list, so ``train --config`` replays the schedule a run had."""

    def __init__(
        self,
        kind: str,
        base_lr: float,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float = 0.0,
        power: float = 1.0,
        milestones: tuple[int, ...] | list[int] = (),
        gamma: float = 0.1,
        segments: tuple[dict, ...] | list[dict] = (),
    ):
        check_schedule_args(kind, base_lr, epochs, warmup_epochs, power, milestones)
        if steps_per_epoch < 1:
            raise RunError(f"`steps_per_epoch` must be >= 1. Received: {steps_per_epoch}")
        self.kind = kind
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.warmup_epochs = float(warmup_epochs)
        self.power = float(power)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.segments = [dict(s) for s in segments]
        self.pieces = []  # (from_epoch, constant lr or None, horizon), resolved
        rate, horizon = None, self.epochs
        for segment in self.segments:
            rate = segment.get("lr") if segment.get("lr") is not None else rate
            horizon = segment.get("epochs") or horizon
            self.pieces.append((int(segment["from_epoch"]), rate, int(horizon)))

    def _rate(self, epoch, xp):
        """The schedule, once, for ``xp`` = ``keras.ops`` (in the graph) or NumPy (for display)."""
        lr = self._formula(epoch, float(self.epochs), xp)
        if self.warmup_epochs > 0:
            lr = lr * xp.minimum(1.0, (epoch + 1.0 / self.steps_per_epoch) / self.warmup_epochs)
        for start, constant, horizon in self.pieces:
            piece = constant * xp.ones_like(epoch) if constant is not None else self._formula(epoch, float(horizon), xp)
            lr = xp.where(epoch >= float(start), piece, lr)
        return lr

    def _formula(self, epoch, horizon: float, xp):
        progress = xp.clip(epoch / horizon, 0.0, 1.0)
        if self.kind == "poly":
            lr = self.base_lr * xp.power(1.0 - progress, self.power)
        elif self.kind == "cosine":
            lr = 0.5 * self.base_lr * (1.0 + xp.cos(math.pi * progress))
        elif self.kind == "step":
            passed = sum(xp.where(epoch >= float(m), 1.0, 0.0) for m in self.milestones)
            lr = self.base_lr * xp.power(self.gamma, passed)
        else:
            lr = self.base_lr * xp.ones_like(epoch)
        return lr

    def __call__(self, step):
        return self._rate(ops.cast(step, "float32") / float(self.steps_per_epoch), ops)

    def at_step(self, step: int) -> float:
        """The rate of optimizer step ``step`` (0-based), computed in Python: no device round trip."""
        return float(self._rate(np.float32(step) / np.float32(self.steps_per_epoch), np))

    def at_epoch_end(self, epoch: int) -> float:
        """The rate of the last step of 0-based ``epoch``: history.csv's ``lr``."""
        return self.at_step((epoch + 1) * self.steps_per_epoch - 1)

    def get_config(self):
        return {
            "kind": self.kind,
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
            "power": self.power,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "segments": self.segments,
        }

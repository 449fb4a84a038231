"""Learning-rate schedules of the papers, as one serialisable Keras schedule.

Evaluated every optimizer step from the step counter, so a checkpoint's ``iterations`` is all
a resumed run needs to continue at the right rate. At each epoch start the value equals the
per-epoch formula (poly: ``lr0 * (1 - epoch/epochs) ** power``, as in the reproduced project).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from resnetctl.errors import RunError

KINDS = ("poly", "step", "cosine", "constant")


def check_schedule_args(kind, base_lr, epochs, warmup_epochs=0.0, power=1.0, milestones=()):
    """Reject bad values with what was received (the Keras way)."""
    if kind not in KINDS:
        raise RunError(f"Unknown schedule. Received: schedule={kind!r}", hint=f"use one of {KINDS}")
    if not base_lr > 0:
        raise RunError(f"`lr` must be > 0. Received: lr={base_lr}")
    if epochs < 1:
        raise RunError(f"`epochs` must be >= 1. Received: epochs={epochs}")
    if warmup_epochs < 0 or warmup_epochs >= epochs:
        raise RunError(
            f"`warmup_epochs` must be in [0, epochs). Received: warmup_epochs={warmup_epochs}"
        )
    if kind == "poly" and not power > 0:
        raise RunError(f"`power` must be > 0. Received: power={power}")
    if kind == "step" and not milestones:
        raise RunError("The step schedule needs --milestones, e.g. --milestones 82,123")


@keras.saving.register_keras_serializable(package="resnetctl")
class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """poly | step | cosine | constant over ``epochs``, with an optional linear warmup."""

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

    def __call__(self, step):
        epoch = ops.cast(step, "float32") / float(self.steps_per_epoch)
        progress = ops.clip(epoch / float(self.epochs), 0.0, 1.0)
        if self.kind == "poly":
            lr = self.base_lr * ops.power(1.0 - progress, self.power)
        elif self.kind == "cosine":
            lr = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "step":
            passed = sum(ops.cast(epoch >= float(m), "float32") for m in self.milestones)
            lr = self.base_lr * ops.power(self.gamma, passed)
        else:
            lr = ops.convert_to_tensor(self.base_lr, "float32")
        if self.warmup_epochs > 0:
            ramp = ops.minimum(1.0, (epoch + 1.0 / self.steps_per_epoch) / self.warmup_epochs)
            lr = lr * ramp
        return lr

    def at_epoch(self, epoch: int) -> float:
        """The rate at the first step of 0-based ``epoch`` (what history.csv records)."""
        return float(ops.convert_to_numpy(self(epoch * self.steps_per_epoch)))

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
        }

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


def warmup_factor(epoch, warmup_epochs: float, steps_per_epoch: int, xp):
    """The linear warmup's multiplier at (fractional) ``epoch`` (> 0 warmup epochs): 1 from then on."""
    return xp.minimum(1.0, (epoch + 1.0 / steps_per_epoch) / warmup_epochs)


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
        per_epoch: bool = False,
    ):
        """``per_epoch``: the rate holds for a whole epoch at its first step's value (Keras'
        ``LearningRateScheduler``, as the seed projects stepped it), instead of moving every step."""
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
        self.per_epoch = bool(per_epoch)
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
            lr = lr * warmup_factor(epoch, self.warmup_epochs, self.steps_per_epoch, xp)
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

    def _epoch(self, step, xp):
        epoch = step / float(self.steps_per_epoch)
        return xp.floor(epoch) if self.per_epoch else epoch

    def __call__(self, step):
        return self._rate(self._epoch(ops.cast(step, "float32"), ops), ops)

    def at_step(self, step: int) -> float:
        """The rate of optimizer step ``step`` (0-based), computed in Python: no device round trip."""
        return float(self._rate(self._epoch(np.float32(step), np).astype(np.float32), np))

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
            "per_epoch": self.per_epoch,
        }


@keras.saving.register_keras_serializable(package="resnetctl")
class PlateauSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``--schedule plateau``: the rate the plateau rule holds, times the linear warmup.

    The rate lives in a non-trainable ``keras.Variable`` that :meth:`set_rate` assigns at an
    epoch's end (the rule is :class:`resnetctl.training.monitors.Plateau`), so the optimizer
    still evaluates the schedule per step (warmup). Created under the placement's scope, the
    variable is mirrored: a cross-replica assign gives every replica the same rate. The rule's
    state goes into every checkpoint's ``resnetctl.json``; ``resume`` builds this schedule from it.
    """

    replayable = False  # its rate depends on the metrics seen, not on the step alone

    def __init__(
        self,
        base_lr: float,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float = 0.0,
        lr: float | None = None,
        start_epoch: int = 0,
    ):
        check_schedule_args("plateau", base_lr, epochs, warmup_epochs)
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.warmup_epochs = float(warmup_epochs)
        lr = self.base_lr if lr is None else float(lr)
        self.changes = [(int(start_epoch), lr)]  # (first 0-based epoch, rate): what at_step reads
        self.rate = keras.Variable(lr, dtype="float32", trainable=False, name="plateau_lr")

    def set_rate(self, from_epoch: int, lr: float) -> None:
        """The rate of the epochs from ``from_epoch`` (0-based) on."""
        self.changes.append((int(from_epoch), float(lr)))
        self.rate.assign(lr)

    def __call__(self, step):
        lr = ops.cast(self.rate, "float32")
        if self.warmup_epochs > 0:
            epoch = ops.cast(step, "float32") / float(self.steps_per_epoch)
            lr = lr * warmup_factor(epoch, self.warmup_epochs, self.steps_per_epoch, ops)
        return lr

    def at_step(self, step: int) -> float:
        rate = np.float32(
            next((r for e, r in reversed(self.changes) if step >= e * self.steps_per_epoch), self.changes[0][1])
        )
        if self.warmup_epochs > 0:
            epoch = np.float32(step) / np.float32(self.steps_per_epoch)
            rate = rate * warmup_factor(epoch, self.warmup_epochs, self.steps_per_epoch, np)
        return float(rate)

    def at_epoch_end(self, epoch: int) -> float:
        return self.at_step((epoch + 1) * self.steps_per_epoch - 1)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
            "lr": self.changes[-1][1],
        }


@keras.saving.register_keras_serializable(package="resnetctl")
class ExponentialSweep(keras.optimizers.schedules.LearningRateSchedule):
    """``lr-find``'s rate: ``start * (end / start) ** (step / (steps - 1))``, from ``start`` at the
    first optimizer step to ``end`` at step ``steps - 1`` (held there after), the sweep of fastai's
    ``lr_find`` and of Smith (2017), "Cyclical learning rates", section 3.3."""

    def __init__(self, start: float, end: float, steps: int):
        if not (math.isfinite(start) and math.isfinite(end) and 0 < start < end):
            raise RunError(f"The sweep needs 0 < start < end. Received: start={start}, end={end}")
        if steps < 2:
            raise RunError(f"The sweep needs >= 2 steps. Received: steps={steps}")
        self.start, self.end, self.steps = float(start), float(end), int(steps)
        self.log_ratio = math.log(self.end / self.start)

    def _rate(self, step, xp):
        progress = xp.minimum(step / float(self.steps - 1), 1.0)
        return self.start * xp.exp(self.log_ratio * progress)

    def __call__(self, step):
        return self._rate(ops.cast(step, "float32"), ops)

    def at_step(self, step: int) -> float:
        return float(self._rate(np.float32(step), np).astype(np.float32))

    def at_epoch_end(self, epoch: int) -> float:  # the sweep has no epochs: its last rate
        return self.end

    def get_config(self):
        return {"start": self.start, "end": self.end, "steps": self.steps}

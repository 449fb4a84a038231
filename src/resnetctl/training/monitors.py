"""The two epoch-end rules that watch a metric: the plateau rate cut and early stopping.

Pure Python (no Keras), with Keras' own semantics (``keras.callbacks.ReduceLROnPlateau`` and
``EarlyStopping`` with ``mode="auto"``), but with their whole state in a dict: every checkpoint
stores it (``resnetctl.json``), so ``resume`` continues the rule exactly where it was.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from resnetctl.errors import RunError

MONITORS = ("loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5")


def maximised(monitor: str) -> bool:
    """Keras' ``mode="auto"``: accuracies go up, losses go down."""
    return "acc" in monitor or "top" in monitor


def check_monitor(option: str, monitor: str, has_val: bool | None = None, num_classes: int | None = None) -> None:
    """A metric train logs; ``val_*`` needs a val split, ``top5`` more than 5 classes."""
    if monitor not in MONITORS:
        raise RunError(f"Unknown {option} {monitor!r}", hint=f"use one of {', '.join(MONITORS)}")
    if has_val is False and monitor.startswith("val_"):
        raise RunError(
            f"{option} {monitor} needs a validation split, and this dataset has none",
            hint="monitor loss or accuracy, or prepare the dataset with a val split (--val-split)",
        )
    if num_classes is not None and num_classes <= 5 and monitor.endswith("top5"):
        raise RunError(f"{option} {monitor}: top-5 accuracy is only logged with more than 5 classes")


def beats(value: float, best: float | None, min_delta: float, monitor: str) -> bool:
    """Keras' ``_is_improvement``: ``value`` moved past ``best`` by more than ``min_delta``,
    compared in float32 as Keras' ``ops.less``/``ops.greater`` do."""
    if best is None:
        return True
    delta = abs(min_delta)
    if maximised(monitor):
        return bool(np.float32(value - delta) > np.float32(best))
    return bool(np.float32(value + delta) < np.float32(best))


def _f32(x: float) -> float:
    """The rate as the optimizer holds it (float32), so Python and the device agree bit for bit."""
    return float(np.float32(x))


@dataclass
class Plateau:
    """ReduceLROnPlateau: after ``patience`` epochs without an improvement of more than
    ``min_delta`` in ``monitor``, multiply the rate by ``factor`` (not below ``min_lr``), then
    wait ``cooldown`` epochs before counting again."""

    lr: float
    monitor: str = "loss"
    factor: float = math.sqrt(0.1)
    patience: int = 5
    min_delta: float = 0.01
    cooldown: int = 0
    min_lr: float = 1e-6
    best: float | None = None  # None: nothing seen yet (Keras' +-inf)
    wait: int = 0
    cooldown_counter: int = 0
    reductions: int = 0

    def __post_init__(self):
        self.lr = _f32(self.lr)

    def update(self, value: float | None) -> bool:
        """One epoch's value of ``monitor``; True when the rate was just cut."""
        if value is None or not math.isfinite(value):
            return False
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if beats(value, self.best, self.min_delta, self.monitor):
            self.best, self.wait = float(value), 0
            return False
        if self.cooldown_counter > 0:
            return False
        self.wait += 1
        if self.wait < self.patience or not self.lr > _f32(self.min_lr):
            return False
        self.lr = _f32(max(self.lr * self.factor, self.min_lr))
        self.reductions += 1
        self.cooldown_counter, self.wait = self.cooldown, 0
        return True

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Plateau:
        return cls(**state)


@dataclass
class EarlyStopping:
    """EarlyStopping: stop once ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs, i.e. ``patience`` epochs after the best one."""

    patience: int
    monitor: str = "val_accuracy"
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None  # 1-based
    wait: int = 0
    stopped_epoch: int | None = None  # 1-based; set when the rule ended the run

    def update(self, epoch: int, value: float | None) -> bool:
        """``epoch`` (1-based) ended with ``value``; True when the run must stop now."""
        if value is None or not math.isfinite(value):
            return False
        self.wait += 1
        if beats(value, self.best, self.min_delta, self.monitor):
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            return False
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def reason(self) -> str:
        return (
            f"early stopping: {self.monitor} did not improve by more than {self.min_delta:g} for "
            f"{self.patience} epochs after epoch {self.best_epoch}"
        )

    def continued(self) -> EarlyStopping:
        """``resume --epochs`` of a run this rule stopped: the best is kept, the count starts
        again, so the run gets ``patience`` more epochs to beat it."""
        return EarlyStopping(self.patience, self.monitor, self.min_delta, self.best, self.best_epoch, 0, None)

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> EarlyStopping:
        return cls(**state)


def new_rules(config, lr: float | None = None) -> dict:
    """The epoch-end rules of a run, fresh: the plateau cut (from ``lr``, default the run's) and
    early stopping, each where the config turns it on."""
    rules: dict = {}
    if config.schedule == "plateau":
        rules["plateau"] = Plateau(
            lr=config.lr if lr is None else lr,
            monitor=config.plateau_monitor,
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            min_delta=config.plateau_min_delta,
            cooldown=config.plateau_cooldown,
            min_lr=config.plateau_min_lr,
        )
    if config.early_stopping is not None:
        rules["early_stopping"] = EarlyStopping(
            config.early_stopping, config.early_stopping_monitor, config.early_stopping_min_delta
        )
    return rules


def saved_rules(config, info: dict, epoch: int, lr: float | None, epochs_given: bool, run) -> dict:
    """The rules as checkpoint ``info`` saved them. ``resume --lr`` starts the plateau rule
    afresh from that rate; a run early stopping ended continues only with ``--epochs`` (on
    purpose), its best kept and its count started again."""
    from resnetctl.commands import command

    rules = new_rules(config, lr)
    if "plateau" in rules and lr is None and info.get("plateau"):
        rules["plateau"] = Plateau.from_state(info["plateau"])
    if "early_stopping" in rules and info.get("early_stopping"):
        rule = EarlyStopping.from_state(info["early_stopping"])
        if rule.stopped_epoch is not None:
            if not epochs_given:
                raise RunError(
                    f"Run {run.name} was ended by {rule.reason()} (at epoch {rule.stopped_epoch})",
                    hint="train further on purpose, e.g.: "
                    + command("resume", "--run", run.path.resolve(), "--epochs", rule.stopped_epoch + rule.patience),
                )
            rule = rule.continued()
        rules["early_stopping"] = rule
    return {**rules, "start_epoch": epoch}

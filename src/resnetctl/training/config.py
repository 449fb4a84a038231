"""Defaults in a frozen dataclass, overridden by flags, written resolved to config.json.

Pure Python (no Keras): :meth:`TrainConfig.validate` answers every mistake in the options
before a backend is imported, and the CLI's help text is generated from these defaults.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import asdict, dataclass, fields, replace

from resnetctl.errors import RunError
from resnetctl.models.specs import AUGMENTATIONS

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("poly", "step", "cosine", "constant", "plateau")
STRATEGIES = ("auto", "none", "mirrored", "multi-worker")


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise RunError(f"Unknown strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")


def check_schedule_args(kind, base_lr, epochs, warmup_epochs=0.0, power=1.0, milestones=()):
    """Reject bad schedule values with what was received (the Keras way)."""
    if kind not in SCHEDULES:
        raise RunError(f"Unknown schedule. Received: schedule={kind!r}", hint=f"use one of {', '.join(SCHEDULES)}")
    if not (isinstance(base_lr, (int, float)) and math.isfinite(base_lr) and base_lr > 0):
        raise RunError(f"`lr` must be a finite number > 0. Received: lr={base_lr}")
    if epochs < 1:
        raise RunError(f"`epochs` must be >= 1. Received: epochs={epochs}")
    if not math.isfinite(warmup_epochs) or warmup_epochs < 0 or warmup_epochs >= epochs:
        raise RunError(f"`warmup_epochs` must be in [0, epochs). Received: warmup_epochs={warmup_epochs}")
    if kind == "poly" and not (math.isfinite(power) and power > 0):
        raise RunError(f"`power` must be > 0. Received: power={power}")
    if kind == "step":
        if not milestones:
            raise RunError("The step schedule needs --milestones, e.g. --milestones 82,123")
        if list(milestones) != sorted(set(milestones)) or milestones[0] < 1 or milestones[-1] >= epochs:
            raise RunError(
                f"`milestones` must be increasing epochs between 1 and {epochs - 1}. "
                f"Received: milestones={','.join(map(str, milestones))}"
            )
    elif milestones:
        raise RunError(f"--milestones only apply to --schedule step. Received: schedule={kind!r}")


PAPER_BATCH_SIZE = 128
MIN_STEPS_PER_EPOCH = 50
MIN_DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_SIZE_RULE = (
    f"{PAPER_BATCH_SIZE}, halved down to {MIN_DEFAULT_BATCH_SIZE} while an epoch has under {MIN_STEPS_PER_EPOCH} steps"
)


def default_batch_size(train_images: int) -> int:
    """The papers' 128, halved (down to 32) while an epoch would have fewer than 50 steps.

    Few steps, not few images, is what held small datasets back: 4,499 CIFAR images at 128 make
    36 steps an epoch, and batch 64 gained 5 and 7.5 points in 30 epochs on two seeds
    (docs/benchmarks.md). CIFAR and Tiny ImageNet in full keep the papers' batch."""
    size = PAPER_BATCH_SIZE
    while size > MIN_DEFAULT_BATCH_SIZE and math.ceil(train_images / size) < MIN_STEPS_PER_EPOCH:
        size //= 2
    return size


def default_augmentation(image_size: int) -> str:
    """Pad-and-crop + flip for small images (CIFAR, Tiny ImageNet), random-resized crop above."""
    return "crop-flip" if image_size <= 64 else "resized-crop-flip"


@dataclass(frozen=True)
class TrainConfig:
    model: str
    dataset: str = "shapes"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int | None = None  # None: default_batch_size(train images)
    lr: float = 0.1
    schedule: str = "poly"
    power: float = 1.0
    milestones: tuple[int, ...] = ()
    warmup_epochs: float | None = None  # None: default_warmup(epochs)
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    zero_init_last: bool = False
    augmentation: str | None = None  # None: default_augmentation(image size)
    precision: str = "float32"
    jit: bool | None = None  # None: Keras decides ("auto")
    seed: int = 0
    checkpoint_every: int = 5
    keep_checkpoints: int | None = None  # None: keep every periodic checkpoint
    clip_norm: float | None = None  # None: no gradient clipping
    ema: float = 0.0  # decay of an average of the weights used to validate and save; 0: off
    mixup: float = 0.0  # MixUp's Beta alpha; 0: off
    cutmix: float = 0.0  # CutMix's Beta alpha; 0: off
    mix_prob: float = 1.0  # share of batches mixed when --mixup/--cutmix are on
    mix_switch_prob: float = 0.5  # with both on, share of mixed batches that get CutMix
    init_from: str | None = None  # a run (its best checkpoint) or a .keras file to start from
    runs_dir: str | None = None
    run: str | None = None
    tensorboard: bool = False
    in_memory: bool | None = None  # None: in memory when the train split fits comfortably
    shortcut: str | None = None  # A | B | avgpool: the projection between stages; None: the model's own
    # --schedule plateau (Keras' ReduceLROnPlateau; defaults of the Keras ResNet20 notebook):
    plateau_monitor: str = "loss"  # the metric watched: loss | accuracy | top5 | val_loss | val_accuracy | val_top5
    plateau_factor: float = math.sqrt(0.1)  # in (0, 1): the rate is multiplied by it at each cut
    plateau_patience: int = 5  # >= 1: epochs without improvement before a cut
    plateau_min_delta: float = 0.01  # >= 0: a smaller change is no improvement
    plateau_cooldown: int = 0  # >= 0: epochs after a cut before counting again
    plateau_min_lr: float = 1e-6  # >= 0: the rate is never cut below it
    early_stopping: int | None = None  # >= 1: end the run this many epochs after the best one; None: off
    early_stopping_monitor: str = "val_accuracy"  # a metric as for plateau_monitor
    early_stopping_min_delta: float = 0.0  # >= 0: a smaller change is no improvement
    recipe: str | None = None  # the named recipe (training/recipes.py) the settings started from

    def warmup(self) -> float:
        """Warmup epochs; by default 2, or a tenth of a shorter run. Without warmup, lr 0.1 from the
        first step made one seed in three diverge early on the CIFAR subset (docs/benchmarks.md)."""
        return min(2.0, self.epochs / 10) if self.warmup_epochs is None else self.warmup_epochs

    def validate(self) -> TrainConfig:
        """Every option checked without Keras; returns self so calls chain."""
        from resnetctl import paths
        from resnetctl.models.specs import get_spec

        get_spec(self.model)
        for label, value in (
            ("epochs", self.epochs),
            ("batch_size", 1 if self.batch_size is None else self.batch_size),
            ("checkpoint_every", self.checkpoint_every),
        ):
            if value < 1:
                raise RunError(f"`{label}` must be >= 1. Received: {label}={value}")
        if self.optimizer not in OPTIMIZERS:
            raise RunError(f"Unknown optimizer {self.optimizer!r}", hint=f"use one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise RunError(f"Unknown precision {self.precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
        if self.augmentation is not None and self.augmentation not in AUGMENTATIONS:
            raise RunError(f"Unknown augmentation {self.augmentation!r}", hint=f"use one of {', '.join(AUGMENTATIONS)}")
        if not 0 <= self.label_smoothing < 1:
            raise RunError(f"`label_smoothing` must be in [0, 1). Received: {self.label_smoothing}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise RunError(f"`weight_decay` must be a finite number >= 0. Received: {self.weight_decay}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise RunError(f"`keep_checkpoints` must be >= 1. Received: keep_checkpoints={self.keep_checkpoints}")
        if self.clip_norm is not None and not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise RunError(f"`clip_norm` must be a finite number > 0. Received: {self.clip_norm}")
        if not (math.isfinite(self.ema) and 0 <= self.ema < 1):
            raise RunError(f"`ema` must be a decay in [0, 1) (0: off), e.g. 0.999. Received: ema={self.ema}")
        for label, value in (("mixup", self.mixup), ("cutmix", self.cutmix)):
            if not (math.isfinite(value) and value >= 0):
                raise RunError(f"`{label}` must be an alpha >= 0 (0: off). Received: {label}={value}")
        for label, value in (("mix_prob", self.mix_prob), ("mix_switch_prob", self.mix_switch_prob)):
            if not 0 <= value <= 1:
                raise RunError(f"`{label}` must be in [0, 1]. Received: {label}={value}")
        mixing_changed = (self.mix_prob, self.mix_switch_prob) != (DEFAULTS.mix_prob, DEFAULTS.mix_switch_prob)
        if mixing_changed and not (self.mixup or self.cutmix):
            raise RunError("--mix-prob and --mix-switch-prob apply only with --mixup and/or --cutmix")
        if not 0 <= self.momentum < 1:
            raise RunError(f"`momentum` must be in [0, 1). Received: {self.momentum}")
        check_schedule_args(self.schedule, self.lr, self.epochs, self.warmup(), self.power, self.milestones)
        self._check_monitors()
        if self.shortcut is not None:
            from resnetctl.models.specs import SHORTCUTS

            if self.shortcut not in SHORTCUTS:
                raise RunError(f"Unknown shortcut {self.shortcut!r}", hint=f"use one of {', '.join(SHORTCUTS)}")
        if self.run is not None:
            paths.check_name(self.run, "Run")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise RunError(
                "--tensorboard needs the tensorboard package",
                hint='install it with `pip install "resnetctl[tensorboard]"` (or `pip install tensorboard`)',
            )
        return self

    def _check_monitors(self) -> None:
        """The plateau and early-stopping settings; set for a rule that is off, they are refused."""
        from resnetctl.training.monitors import check_monitor

        plateau = {f: getattr(self, f) for f in PLATEAU_FIELDS}
        if self.schedule != "plateau":
            changed = [f for f, v in plateau.items() if v != getattr(DEFAULTS, f)]
            if changed:
                flags = ", ".join("--" + f.replace("_", "-") for f in changed)
                raise RunError(f"{flags} apply only with --schedule plateau. Received: schedule={self.schedule!r}")
        check_monitor("--plateau-monitor", self.plateau_monitor)
        if not (math.isfinite(self.plateau_factor) and 0 < self.plateau_factor < 1):
            raise RunError(f"`plateau_factor` must be in (0, 1). Received: plateau_factor={self.plateau_factor}")
        for label in ("plateau_patience", "early_stopping"):
            value = getattr(self, label)
            if value is not None and value < 1:
                raise RunError(f"`{label}` must be >= 1. Received: {label}={value}")
        for label in ("plateau_min_delta", "plateau_cooldown", "plateau_min_lr", "early_stopping_min_delta"):
            value = getattr(self, label)
            if not (math.isfinite(value) and value >= 0):
                raise RunError(f"`{label}` must be a finite number >= 0. Received: {label}={value}")
        if self.early_stopping is None:
            changed = [
                f
                for f in ("early_stopping_monitor", "early_stopping_min_delta")
                if getattr(self, f) != getattr(DEFAULTS, f)
            ]
            if changed:
                flags = ", ".join("--" + f.replace("_", "-") for f in changed)
                raise RunError(f"{flags} apply only with --early-stopping PATIENCE")
        check_monitor("--early-stopping-monitor", self.early_stopping_monitor)

    def check_dataset(self, info) -> None:
        """What needs the dataset: a ``val_*`` or ``top5`` metric to watch must be logged on it."""
        from resnetctl.training.monitors import check_monitor

        has_val = info.splits.get("val", 0) > 0
        if self.schedule == "plateau":
            check_monitor("--plateau-monitor", self.plateau_monitor, has_val, info.num_classes)
        if self.early_stopping is not None:
            check_monitor("--early-stopping-monitor", self.early_stopping_monitor, has_val, info.num_classes)

    def resolved(self, info) -> TrainConfig:
        """The defaults that depend on the dataset (batch size, augmentation) filled in from its
        ``DatasetInfo``: what ``train`` records in config.json and ``--dry-run`` shows."""
        self.check_dataset(info)
        return replace(
            self,
            batch_size=default_batch_size(info.splits["train"]) if self.batch_size is None else self.batch_size,
            augmentation=self.augmentation or default_augmentation(info.image_size),
        )

    def with_overrides(self, **overrides) -> TrainConfig:
        """Apply the flags a user actually gave (``None`` keeps the default)."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if v is not None and k in known})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["milestones"] = tuple(d.get("milestones") or ())
        if "ema" in d and d["ema"] is None:  # older runs wrote null for off
            d["ema"] = 0.0
        return cls(**d)


DEFAULTS = TrainConfig(model="")
PLATEAU_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name.startswith("plateau_"))


# what train adds to a run's config.json beside the options (config_from_file ignores them)
RUN_RECORD_KEYS = frozenset(
    {"created", "steps_per_epoch", "effective_warmup_epochs", "segments", "dataset_info", "versions", "placement"}
)


def config_from_file(path) -> TrainConfig:
    """The options of a run's ``config.json`` (or of any JSON object of its keys), to train that
    run again; its name is not taken (a new run gets a new one) and its lr changes by ``resume``
    are not replayed. An unknown key is an error, so a typo never passes silently."""
    options = config_file_options(path)
    try:
        return TrainConfig.from_dict(options)
    except TypeError as exc:
        raise RunError(f"--config {path}: {exc}") from None


def config_file_options(path) -> dict:
    """The options a ``--config`` file sets (its keys only, nothing filled in): what
    :func:`resnetctl.training.recipes.build_config` lays over a recipe."""
    from pathlib import Path

    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"Cannot read --config {path} ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        raise RunError(f'--config {path} is not a JSON object with a "model"')
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(record) - known - RUN_RECORD_KEYS)
    if unknown:
        raise RunError(
            f"Unknown keys in --config {path}: {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known))}"
        )
    return {k: v for k, v in record.items() if k in known and k != "run"}

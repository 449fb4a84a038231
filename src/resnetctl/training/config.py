"""Defaults in a frozen dataclass, overridden by flags, written resolved to config.json.

Pure Python (no Keras): :meth:`TrainConfig.validate` answers every mistake in the options
before a backend is imported, and the CLI's help text is generated from these defaults.
"""

from __future__ import annotations

import importlib.util
import json
import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace

from resnetctl.errors import RunError
from resnetctl.models.specs import AUGMENTATIONS, SHORTCUTS

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("poly", "step", "cosine", "constant", "plateau")
STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
# How the model normalises its uint8 input (inside the model, from the train split's statistics):
# per channel mean/std (ours), or the seeds' ways: a per-channel mean alone, the per-pixel mean
# image alone (He et al. 2015), the per-pixel mean and std.
NORMALIZATIONS = ("channel", "channel-mean", "pixel-mean", "pixel")
LR_UPDATES = ("step", "epoch")
VALIDATION_SPLITS = ("val", "test")


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
AUTO = "auto"  # --batch-size auto (training/batch_search.py)
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


# lr-find's sweep by default: fastai's lr_find (start_lr 1e-7, end_lr 10, num_it 100)
LR_FIND_START, LR_FIND_END, LR_FIND_STEPS = 1e-7, 10.0, 100
LR_FIND_RULES = ("peak", "valley", "minimum/10")  # training/lr_find.py says what each is
LR_FIND_RULE = "peak"

MAX_STEPS_PER_EXECUTION = 16
PROGRESS_UPDATES_PER_EPOCH = 20


def default_steps_per_execution(steps_per_epoch: int) -> int:
    """Optimizer steps per compiled call (Keras' ``steps_per_execution``): as many as leave an epoch
    at least 20 progress updates (NaN/inf and signal checks run as often), at most 16; 1 for
    epochs under 40 steps. Keras runs the last, shorter call of an epoch on the remainder."""
    return max(1, min(MAX_STEPS_PER_EXECUTION, steps_per_epoch // PROGRESS_UPDATES_PER_EPOCH))


def default_augmentation(image_size: int) -> str:
    """Pad-and-crop + flip for small images (CIFAR, Tiny ImageNet), random-resized crop above."""
    return "crop-flip" if image_size <= 64 else "resized-crop-flip"


def option(
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    maximum: float | None = None,
    show_default: str | None = None,
    flag: str | None = None,
    envvar: str | None = None,
    cli: bool = True,
    words: tuple[str, ...] = (),
) -> dict:
    """A train option's one declaration, kept in its field's metadata: the help and the default shown
    by ``-h``, the allowed values (checked by :meth:`TrainConfig.validate`, whatever the source: a
    flag, ``--config`` or a recipe), and the flag (``--name`` or ``--on/--off``; booleans get a
    ``--no-`` form). ``cli=False``: set by the tool, not by a flag."""
    return {
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "above": above,
        "below": below,
        "maximum": maximum,
        "show_default": show_default,
        "flag": flag,
        "envvar": envvar,
        "cli": cli,
        "words": words,
    }


def _opt(default, help: str, **kwargs):
    return field(default=default, metadata=option(help, **kwargs))


# config.json's schema: TrainConfig's fields, and what a run's config.json holds beside them
# (written by train and resume; ``train --config`` accepts them)
RECORD_KEYS = frozenset(
    {
        "created",
        "steps_per_epoch",
        "effective_warmup_epochs",
        "dataset_info",
        "versions",
        "placement",
        "resumes",
        "init",
        "parent",
        "mlflow_run",
        "batch_search",
        "seed_group",
    }
)


def check_extra(package: str, flag: str) -> None:
    """A flag that needs an optional extra (``pip install "resnetctl[PACKAGE]"``) is refused
    before anything is trained when the package is missing."""
    if importlib.util.find_spec(package) is None:
        raise RunError(f"{flag} needs the {package} package", hint=f"install it with `{install_hint(package)}`")


def install_hint(extra: str) -> str:
    return f'pip install "resnetctl[{extra}]"'


@dataclass(frozen=True)
class TrainConfig:
    model: str = field(metadata=option("Model name, e.g. resnet56 (see `build --list`).", cli=False))
    dataset: str | None = _opt(
        None, "Prepared dataset name or path.", show_default="the only prepared dataset (several: name one)"
    )
    data_dir: str | None = _opt(
        None, "Where datasets live.", show_default="the per-user data folder", envvar="RESNETCTL_DATA_DIR"
    )
    epochs: int = _opt(30, "Total epochs.", minimum=1)
    batch_size: int | None = _opt(
        None,
        "Global batch size, or auto: the largest power of two that fits the accelerator's memory for this model "
        "and precision, found by short real steps, the lr scaled with it (on a CPU: the default rule).",
        minimum=1,
        show_default=DEFAULT_BATCH_SIZE_RULE,
        words=("auto",),
    )
    lr: float = _opt(0.1, "Peak learning rate.", above=0)
    schedule: str = _opt("poly", " | ".join(SCHEDULES) + ".", choices=SCHEDULES)
    power: float = _opt(1.0, "poly: lr * (1 - epoch/epochs) ** power.", above=0)
    milestones: tuple[int, ...] = _opt((), "step: epochs where lr drops 10x, e.g. 82,123.", show_default="none")
    warmup_epochs: float | None = _opt(
        None, "Linear warmup from 0 to --lr.", minimum=0, show_default="2, a tenth of shorter runs"
    )
    lr_update: str = _opt(
        "step",
        "step: the schedule moves every optimizer step | epoch: once an epoch, as Keras' LearningRateScheduler.",
        choices=LR_UPDATES,
    )
    optimizer: str = _opt("sgd", "sgd | adamw.", choices=OPTIMIZERS)
    momentum: float = _opt(0.9, "SGD momentum.", minimum=0, below=1)
    nesterov: bool = _opt(True, "Nesterov momentum for sgd.")
    weight_decay: float = _opt(5e-4, "Decay coefficient (gradient += wd * w) of the conv and dense kernels.", minimum=0)
    stem_weight_decay: float | None = _opt(
        None, "The stem conv's own decay coefficient.", minimum=0, show_default="--weight-decay"
    )
    classifier_weight_decay: float | None = _opt(
        None, "The classifier's own decay coefficient.", minimum=0, show_default="--weight-decay"
    )
    normalization: str = _opt(
        "channel",
        "The input normalisation inside the model: channel (mean/std per channel) | channel-mean | "
        "pixel-mean (the mean image) | pixel (mean and std per pixel).",
        choices=NORMALIZATIONS,
    )
    label_smoothing: float = _opt(0.1, "Label smoothing of the loss.", minimum=0, below=1)
    zero_init_last: bool = _opt(False, "Start each residual branch at zero (timm's zero_init_last).")
    augmentation: str | None = _opt(
        None,
        " | ".join(AUGMENTATIONS) + ".",
        choices=AUGMENTATIONS,
        show_default="crop-flip up to 64px, else resized-crop-flip",
    )
    shift: float | None = _opt(
        None,
        "Largest shift of crop-flip, randaugment's crop-flip or affine-flip, a fraction of the side.",
        minimum=0,
        below=1,
        show_default="1/8 (4 px at 32)",
    )
    randaugment_magnitude: float = _opt(
        0.1,
        "randaugment: keras.layers.RandAugment's factor (0-1), each of its operations' own factor "
        "(rotation: a share of a full turn; translation, shear: of the side).",
        minimum=0,
        maximum=1,
    )
    random_erasing: float = _opt(
        0.0,
        "Random erasing (Zhong et al. 2017, keras.layers.RandomErasing): a box of noise on each image with "
        "this probability, after the augmentation.",
        minimum=0,
        maximum=1,
        show_default="off",
    )
    rotation: float = _opt(0.0, "affine-flip: largest rotation in degrees.", minimum=0, maximum=180)
    zoom: float = _opt(0.0, "affine-flip: zoom in [1 - zoom, 1 + zoom] per axis.", minimum=0, below=1)
    shear: float = _opt(0.0, "affine-flip: largest shear angle in degrees.", minimum=0, below=90)
    validation: str = _opt(
        "val",
        "The split watched during training: val (held out of train) | test (the seeds' protocol: no "
        "val split, the test set watched).",
        choices=VALIDATION_SPLITS,
    )
    precision: str = _opt("float32", " | ".join(PRECISIONS) + ".", choices=PRECISIONS)
    jit: bool | None = _opt(None, "XLA compilation.", show_default="Keras decides")
    seed: int = _opt(0, "Seed of the weights, the data order and the augmentation.")
    checkpoint_every: int = _opt(
        5, "Keep the checkpoint of every N-th epoch (checkpoints/epoch_NNNN.keras).", minimum=1
    )
    keep_recent: int = _opt(3, "Also keep the checkpoints of the N newest epochs, to go back to.", minimum=0)
    keep_checkpoints: int | None = _opt(
        None,
        "Keep at most N epoch checkpoints in all, the newest (best.keras and last.keras always stay).",
        minimum=1,
        show_default="no limit",
    )
    clip_norm: float | None = _opt(None, "Clip gradients to this global norm.", above=0, show_default="no clipping")
    ema: float = _opt(
        0.0,
        "Keep an exponential moving average of the weights with this decay per step (0: off); it is what "
        "validation, the checkpoints, evaluate, predict and export use.",
        minimum=0,
        below=1,
        show_default="off",
    )
    mixup: float = _opt(0.0, "MixUp with this Beta alpha (e.g. 0.2), in the train step.", minimum=0, show_default="off")
    cutmix: float = _opt(
        0.0, "CutMix with this Beta alpha (e.g. 1.0), in the train step.", minimum=0, show_default="off"
    )
    mix_prob: float = _opt(1.0, "Share of batches mixed by --mixup/--cutmix.", minimum=0, maximum=1)
    mix_switch_prob: float = _opt(
        0.5, "With --mixup and --cutmix, the share of mixed batches that get CutMix.", minimum=0, maximum=1
    )
    init_from: str | None = _opt(
        None,
        "Start from a run's best weights (or a .keras file): layers that match are loaded, a classifier for "
        "another class count starts fresh.",
        show_default="random init",
    )
    runs_dir: str | None = _opt(None, "Where runs live.", show_default="./runs", envvar="RESNETCTL_RUNS_DIR")
    run: str | None = _opt(None, "Run name.", show_default="MODEL-DATASET-TIMESTAMP")
    tensorboard: bool = _opt(False, "Also write TensorBoard logs (needs the tensorboard extra).")
    segments: tuple[dict, ...] = _opt(
        (), "The changes resume made to the schedule, in order (written by resume).", cli=False
    )
    mlflow: bool = _opt(
        False, "Log params, metrics and artifacts to MLflow (MLFLOW_TRACKING_URI; needs the mlflow extra)."
    )
    log_every: int = _opt(50, "Optimizer steps between the per-step scalars of --tensorboard and --mlflow.", minimum=1)
    steps_per_execution: int | None = _opt(
        None,
        "Optimizer steps per compiled call; progress, NaN and Ctrl+C checks run once per call.",
        minimum=1,
        show_default="up to 16, keeping 20 progress updates an epoch",
    )
    shortcut: str | None = _opt(
        None, "The projection between stages: A | B | avgpool.", choices=SHORTCUTS, show_default="the model's own"
    )
    shortcut_bn: bool | None = _opt(
        None, "A BatchNormalization after a projection shortcut (post-activation blocks).", show_default="yes"
    )
    bn_epsilon: float | None = _opt(None, "BatchNormalization epsilon.", above=0, show_default="the model's own")
    bn_momentum: float | None = _opt(
        None, "BatchNormalization moving-average momentum.", minimum=0, below=1, show_default="the model's own"
    )
    plateau_monitor: str = _opt("loss", "plateau: the metric watched (loss, accuracy, val_loss, val_accuracy, ...).")
    plateau_factor: float = _opt(
        math.sqrt(0.1),
        "plateau: the rate is multiplied by this at each cut.",
        above=0,
        below=1,
        show_default="sqrt(0.1) = 0.3162",
    )
    plateau_patience: int = _opt(5, "plateau: epochs without improvement before a cut.", minimum=1)
    plateau_min_delta: float = _opt(0.01, "plateau: a smaller change is no improvement.", minimum=0)
    plateau_cooldown: int = _opt(0, "plateau: epochs after a cut before counting again.", minimum=0)
    plateau_min_lr: float = _opt(1e-6, "plateau: the rate is never cut below this.", minimum=0)
    early_stopping: int | None = _opt(
        None,
        "End the run this many epochs after its best one (EarlyStopping's patience).",
        minimum=1,
        show_default="off",
    )
    early_stopping_monitor: str = _opt("val_accuracy", "early stopping: the metric watched.")
    early_stopping_min_delta: float = _opt(0.0, "early stopping: a smaller change is no improvement.", minimum=0)
    recipe: str | None = _opt(None, "The named recipe the settings started from (train --recipe).", cli=False)
    in_memory: bool | None = _opt(
        None,
        "Hold train in memory or stream it from HDF5.",
        flag="--in-memory/--stream",
        show_default="in memory when it fits",
    )

    def warmup(self) -> float:
        """Warmup epochs; by default 2, or a tenth of a shorter run. Without warmup, lr 0.1 from the
        first step made one seed in three diverge early on the CIFAR subset (docs/benchmarks.md)."""
        return min(2.0, self.epochs / 10) if self.warmup_epochs is None else self.warmup_epochs

    def total_epochs(self) -> int:
        """The epoch the run trains to: ``epochs``, or what the latest ``resume --epochs`` set."""
        return next((int(s["epochs"]) for s in reversed(self.segments) if s.get("epochs")), self.epochs)

    def segments_before(self, epoch: int, *, inclusive: bool = False) -> tuple[dict, ...]:
        """The schedule changes made before ``epoch`` (``inclusive``: or at it, so they shape the
        epochs after it): what a line going on from ``epoch`` keeps of this run's ``segments``."""
        return tuple(
            dict(s) for s in self.segments if s["from_epoch"] < epoch or (inclusive and s["from_epoch"] == epoch)
        )

    def validate(self) -> TrainConfig:
        """Every option checked without Keras (types, ranges and choices from each field's declaration,
        then what involves several fields); returns self so calls chain."""
        from resnetctl import paths
        from resnetctl.models.specs import get_spec

        for f in fields(self):
            _check_declared(f, getattr(self, f.name))
        get_spec(self.model)
        check_segments(self.segments)
        mixing_changed = (self.mix_prob, self.mix_switch_prob) != (DEFAULTS.mix_prob, DEFAULTS.mix_switch_prob)
        if mixing_changed and not (self.mixup or self.cutmix):
            raise RunError("--mix-prob and --mix-switch-prob apply only with --mixup and/or --cutmix")
        check_schedule_args(self.schedule, self.lr, self.epochs, self.warmup(), self.power, self.milestones)
        self._check_monitors()
        affine = [f for f in ("rotation", "zoom", "shear") if getattr(self, f)]
        if affine and self.augmentation != "affine-flip":
            flags = ", ".join("--" + f for f in affine)
            raise RunError(
                f"{flags} apply only with --augmentation affine-flip. Received: augmentation={self.augmentation!r}"
            )
        if self.randaugment_magnitude != DEFAULTS.randaugment_magnitude and self.augmentation != "randaugment":
            raise RunError(
                f"--randaugment-magnitude applies only with --augmentation randaugment. "
                f"Received: augmentation={self.augmentation!r}"
            )
        if self.shift is not None and self.augmentation not in (None, "crop-flip", "affine-flip", "randaugment"):
            raise RunError(
                f"--shift applies to crop-flip and affine-flip. Received: augmentation={self.augmentation!r}"
            )
        if not self.nesterov and self.optimizer != "sgd":
            raise RunError(f"--no-nesterov applies to sgd. Received: optimizer={self.optimizer!r}")
        if self.run is not None:
            paths.check_name(self.run, "Run")
        if self.tensorboard:
            check_extra("tensorboard", "--tensorboard")
        if self.mlflow:
            check_extra("mlflow", "--mlflow")
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
        check_monitor("--plateau-monitor", self.plateau_monitor)  # (ranges: the fields' declarations)
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

        if self.validation != "val" and not info.splits.get(self.validation):
            raise RunError(
                f"--validation {self.validation}: {info.name} has no {self.validation} split",
                hint=f"it has {', '.join(info.splits)}",
            )
        has_val = info.splits.get(self.validation, 0) > 0
        if self.schedule == "plateau":
            check_monitor("--plateau-monitor", self.plateau_monitor, has_val, info.num_classes)
        if self.early_stopping is not None:
            check_monitor("--early-stopping-monitor", self.early_stopping_monitor, has_val, info.num_classes)

    def resolved(self, info) -> TrainConfig:
        """The defaults that depend on the dataset (batch size, augmentation, steps per execution)
        filled in from its ``DatasetInfo``: what ``train`` records in config.json and ``--dry-run`` shows."""
        self.check_dataset(info)
        batch_size = default_batch_size(info.splits["train"]) if self.batch_size in (None, AUTO) else self.batch_size
        steps = math.ceil(info.splits["train"] / batch_size)
        return replace(
            self,
            batch_size=batch_size,
            augmentation=self.augmentation or default_augmentation(info.image_size),
            steps_per_execution=self.steps_per_execution or default_steps_per_execution(steps),
        )

    def with_overrides(self, **overrides) -> TrainConfig:
        """Apply the options a user actually gave (``None`` keeps what is there); an unknown name is
        an error, never dropped."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise RunError(f"Unknown train options: {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known))}")
        return TrainConfig.from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["segments"] = [dict(s) for s in self.segments]
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "the config") -> TrainConfig:
        """The options of ``d`` (other keys ignored), each checked for its declared type, so a
        ``"0.1"`` or a ``null`` where a number belongs is one clear error, not a crash later."""
        d = _upgrade({k: v for k, v in d.items() if k in _FIELDS})
        for name, value in d.items():
            d[name] = _coerce(name, value, _HINTS[name], source)
        if not isinstance(d.get("model"), str):
            raise RunError(f'{source} has no "model" name')
        return cls(**d)


DEFAULTS = TrainConfig(model="")
_FIELDS = {f.name: f for f in fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
PLATEAU_FIELDS = tuple(name for name in _FIELDS if name.startswith("plateau_"))


def _upgrade(options: dict) -> dict:
    """Options as older versions wrote them, read as today's: ``"ema": null`` meant off."""
    if "ema" in options and options["ema"] is None:
        options = {**options, "ema": 0.0}
    return options


def _kind(hint) -> tuple[type, bool]:
    """(the base type, whether None is allowed) of a field's type hint."""
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _coerce(name: str, value, hint, source: str):
    """``value`` as the field's type (ints accepted as floats, lists as tuples), or a RunError
    naming the source, the key and the value received."""
    base, optional = _kind(hint)
    if isinstance(value, str) and value in (_FIELDS[name].metadata.get("words") or ()):
        return value
    if value is None:
        if optional:
            return None
        raise RunError(f"{source}: `{name}` cannot be null; give a value or leave the key out")
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        words = "whole numbers" if item is int else "objects"
        if not isinstance(value, (list, tuple)) or not all(_is(item, v) for v in value):
            raise RunError(f"{source}: `{name}` must be a list of {words}. Received: {name}={json.dumps(value)}")
        return tuple(dict(v) if item is dict else v for v in value)
    if not _is(base, value):
        words = _TYPE_WORDS.get(base, base.__name__)
        raise RunError(f"{source}: `{name}` must be {words}. Received: {name}={json.dumps(value)}")
    return float(value) if base is float else value


def _is(kind, value) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_declared(f, value) -> None:
    """The range and choices a field declares (None, where allowed, is always fine)."""
    meta = f.metadata
    if value is None or not meta:
        return
    name = f.name
    if meta.get("choices") and value not in meta["choices"]:
        raise RunError(f"Unknown {name} {value!r}", hint=f"use one of {', '.join(meta['choices'])}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, above, below, high = (meta.get(k) for k in ("minimum", "above", "below", "maximum"))
        bad = (
            (isinstance(value, float) and not math.isfinite(value))
            or (low is not None and value < low)
            or (above is not None and value <= above)
            or (below is not None and value >= below)
            or (high is not None and value > high)
        )
        if bad:
            text = _range_text(low, above, below, high, "" if isinstance(value, int) else "a finite number ")
            raise RunError(f"`{name}` must be {text}. Received: {name}={value}")


def _range_text(low, above, below, high, noun: str) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1)``: the declared range as a user reads it."""
    lower = (f"[{low}", f">= {low}") if low is not None else (f"({above}", f"> {above}") if above is not None else None
    upper = (
        (f"{high}]", f"<= {high}") if high is not None else (f"{below})", f"< {below}") if below is not None else None
    )
    if lower and upper:
        return f"in {lower[0]}, {upper[0]}"
    return noun + (lower or upper)[1] if (lower or upper) else noun.strip()


def check_segments(segments) -> None:
    for s in segments:
        ok = (
            isinstance(s.get("from_epoch"), int)
            and s["from_epoch"] >= 0
            and (s.get("lr") is None or (isinstance(s["lr"], (int, float)) and math.isfinite(s["lr"]) and s["lr"] > 0))
            and (s.get("epochs") is None or (isinstance(s["epochs"], int) and s["epochs"] > s["from_epoch"]))
        )
        if not ok:
            raise RunError(
                f"A segment of the schedule is damaged: {s!r}",
                hint='each is {"from_epoch": E, "lr": RATE or null, "epochs": TOTAL or null}',
            )


def config_from_file(path) -> TrainConfig:
    """The options of a run's ``config.json`` (or of any JSON object of its keys), to train that
    run again: its schedule changes by ``resume`` (``segments``) are replayed, its name is not taken
    (a new run gets a new one). An unknown key is an error, so a typo never passes silently."""
    return TrainConfig.from_dict(config_file_options(path), source=f"--config {path}")


def config_file_options(path) -> dict:
    """The options a ``--config`` file sets (its keys only, each of its declared type, nothing
    filled in): what :func:`resnetctl.training.settings.build_config` lays over a recipe."""
    from pathlib import Path

    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"Cannot read --config {path} ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        raise RunError(f'--config {path} is not a JSON object with a "model"')
    unknown = sorted(set(record) - set(_FIELDS) - RECORD_KEYS)
    if unknown:
        raise RunError(
            f"Unknown keys in --config {path}: {', '.join(unknown)}", hint=f"known: {', '.join(sorted(_FIELDS))}"
        )
    options = _upgrade({k: v for k, v in record.items() if k in _FIELDS and k != "run"})
    where = f"--config {path}"
    return {k: _coerce(k, v, _HINTS[k], where) for k, v in options.items()}


def cli_options() -> list:
    """The train options a user sets by flag, in declaration order (the CLI is generated from these)."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli")]


def option_type(name: str) -> type:
    """The base type of the option ``name`` (``tuple[int, ...]`` for a list option)."""
    return _kind(_HINTS[name])[0]


# train options that tune keeps fixed, never searched (paths, names, the run itself)
NOT_SEARCHED = frozenset({"dataset", "data_dir", "runs_dir", "run", "init_from"})


def searchable() -> list[str]:
    """The train options ``tune`` can search: numbers and names, not flags, lists or paths."""
    return [f.name for f in cli_options() if f.name not in NOT_SEARCHED and option_kind(f)[0] in (int, float, str)]


def option_kind(f) -> tuple[type, bool]:
    """(base type, None allowed) of an option: what its flag parses."""
    return _kind(_HINTS[f.name])


def option_flag(f) -> str:
    """An option's flag as declared: ``--name``, or ``--name/--no-name`` for a boolean (or its own
    ``flag``, e.g. ``--in-memory/--stream``)."""
    dash = f.name.replace("_", "-")
    if option_kind(f)[0] is bool:
        return f.metadata.get("flag") or f"--{dash}/--no-{dash}"
    return f"--{dash}"


def parse_option(name: str, text: str, where: str = "the command line"):
    """The value of train option ``name`` written as text (a number, a name), typed and checked
    against the option's declaration (its range and choices), or one clear error."""
    if name not in _FIELDS or not _FIELDS[name].metadata.get("cli"):
        raise RunError(f"Unknown train option {name!r}", hint=f"known: {', '.join(f.name for f in cli_options())}")
    base, _ = _kind(_HINTS[name])
    value = text
    if isinstance(text, str) and text in (_FIELDS[name].metadata.get("words") or ()):
        return text
    if base in (int, float) and isinstance(text, str):
        try:
            value = base(text)
        except ValueError:
            raise RunError(f"{where}: `{name}` must be {_TYPE_WORDS[base]}. Received: {name}={text!r}") from None
    value = _coerce(name, value, _HINTS[name], where)
    _check_declared(_FIELDS[name], value)
    return value


_PATH_OPTIONS = ("data_dir", "runs_dir")


def flag_words(flags: dict) -> list[str]:
    """The command-line words that give ``flags`` (option name -> value; ``None``: not given) back
    to ``train``: what a printed ``train`` command repeats (``lr-find``, ``tune``). Folders are made
    absolute, so the command works from anywhere."""
    import os

    words: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        if name not in _FIELDS or not _FIELDS[name].metadata.get("cli"):
            raise RunError(f"Unknown train option {name!r}", hint=f"known: {', '.join(f.name for f in cli_options())}")
        flag = option_flag(_FIELDS[name])
        if "/" in flag:
            on, off = flag.split("/")
            words.append(on if value else off)
            continue
        if isinstance(value, (tuple, list)):
            value = ",".join(map(str, value))
        elif name in _PATH_OPTIONS:
            value = os.path.abspath(os.path.expanduser(str(value)))
        words += [flag, str(value)]
    return words


def option_words(name: str) -> tuple[str, ...]:
    """The words an option takes besides a number (``--batch-size auto``)."""
    return tuple(_FIELDS[name].metadata.get("words") or ())

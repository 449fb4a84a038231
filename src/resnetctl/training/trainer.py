"""``train`` and ``resume``: build or load, compile, fit with our callbacks, keep the run resumable."""

from __future__ import annotations

import datetime as dt
import math
import platform
from dataclasses import dataclass, replace

import keras
from rich.console import Console

from resnetctl import __version__, paths
from resnetctl.data.pipeline import fit_inputs, validation_inputs
from resnetctl.data.store import DatasetInfo, open_dataset
from resnetctl.errors import RunError, Stopped
from resnetctl.models import create_model, get_spec
from resnetctl.runs import RunDir, checkpoint_info, find_run, load_model
from resnetctl.signals import stop_on_signals
from resnetctl.training.callbacks import RunRecorder, StopRequested
from resnetctl.training.config import OPTIMIZERS, PRECISIONS, TrainConfig
from resnetctl.training.distribute import Placement, resolve
from resnetctl.training.losses import SparseCrossentropy
from resnetctl.training.progress import RichProgress
from resnetctl.training.schedules import EpochSchedule, check_schedule_args


@dataclass
class TrainResult:
    run: RunDir
    history: list[dict]
    placement: Placement | None = None

    @property
    def epochs_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0


def library_versions() -> dict:
    versions = {"resnetctl": __version__, "keras": keras.__version__, "python": platform.python_version(),
                "backend": keras.backend.backend()}
    import numpy

    versions["numpy"] = numpy.__version__
    backend_module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(versions["backend"])
    if backend_module:
        versions[backend_module] = __import__(backend_module).__version__
    return versions


def default_augmentation(image_size: int) -> str:
    """Pad-and-crop + flip for small images (CIFAR, Tiny ImageNet), random-resized crop above."""
    return "crop-flip" if image_size <= 64 else "resized-crop-flip"


def _validate(config: TrainConfig) -> None:
    get_spec(config.model)
    for label, value in (("epochs", config.epochs), ("batch_size", config.batch_size),
                         ("checkpoint_every", config.checkpoint_every)):
        if value < 1:
            raise RunError(f"`{label}` must be >= 1. Received: {label}={value}")
    if config.optimizer not in OPTIMIZERS:
        raise RunError(f"Unknown optimizer {config.optimizer!r}", hint=f"use one of {OPTIMIZERS}")
    if config.precision not in PRECISIONS:
        raise RunError(f"Unknown precision {config.precision!r}", hint=f"use one of {PRECISIONS}")
    if not 0 <= config.label_smoothing < 1:
        raise RunError(f"`label_smoothing` must be in [0, 1). Received: {config.label_smoothing}")
    check_schedule_args(config.schedule, config.lr, config.epochs, config.warmup(),
                        config.power, config.milestones)


def _set_up_backend(config: TrainConfig) -> None:
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.precision)


def make_schedule(config: TrainConfig, steps_per_epoch: int, constant_lr: float | None = None):
    if constant_lr is not None:
        return EpochSchedule("constant", constant_lr, steps_per_epoch, config.epochs)
    return EpochSchedule(config.schedule, config.lr, steps_per_epoch, config.epochs,
                         config.warmup(), config.power, config.milestones)


def compile_model(model, config: TrainConfig, schedule, num_classes: int) -> None:
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True)
    else:  # decoupled decay, not on BN parameters or biases
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"))
    model.compile(
        optimizer=optimizer,
        loss=SparseCrossentropy(label_smoothing=config.label_smoothing),
        metrics=metrics,
        jit_compile="auto" if config.jit is None else config.jit,
    )


def _dataset_summary(info: DatasetInfo) -> dict:
    return {"name": info.name, "path": str(info.path), "image_size": info.image_size,
            "num_classes": info.num_classes, "classes": info.classes, "splits": info.splits,
            "mean": info.mean, "std": info.std}


def train(config: TrainConfig, console: Console | None = None, strategy: str = "auto") -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` in a new run dir, placed by ``strategy``."""
    _validate(config)
    placement = resolve(strategy)
    placement.check_batch_size(config.batch_size)
    info = open_dataset(config.dataset, config.data_dir)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.run or f"{config.model}-{info.name}-{stamp}"
    run = RunDir(paths.runs_dir(config.runs_dir) / name)
    if placement.chief and run.config_path.exists():
        raise RunError(f"Run {run.path} already exists",
                       hint="resume it with `resnetctl resume --run` or pick another --run name")
    augmentation = config.augmentation or default_augmentation(info.image_size)
    config = replace(config, run=name, augmentation=augmentation)
    _set_up_backend(config)
    with placement.scope(), placement.output(run) as out:
        model = create_model(
            config.model,
            input_size=info.image_size,
            num_classes=info.num_classes,
            mean=info.mean,
            std=info.std,
            weight_decay=config.weight_decay if config.optimizer == "sgd" else 0.0,
            augmentation=augmentation,
            seed=config.seed,
            zero_init_last=config.zero_init_last,
        )
        steps = math.ceil(info.splits["train"] / config.batch_size)
        schedule = make_schedule(config, steps)
        compile_model(model, config, schedule, info.num_classes)
        out.path.mkdir(parents=True, exist_ok=True)
        record = {
            **config.to_dict(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "steps_per_epoch": steps,
            "effective_warmup_epochs": config.warmup(),  # warmup_epochs null: the default rule
            "segments": [],
            "dataset_info": _dataset_summary(info),
            "versions": library_versions(),
            "placement": placement.to_dict(),
        }
        out.write_config(record)
        history = _fit(out, model, config, info, [], 0, schedule, console, placement)
    return TrainResult(run, history, placement)


def resume(run: str | None = None, *, runs_dir: str | None = None, epoch: int | None = None,
           lr: float | None = None, epochs: int | None = None,
           console: Console | None = None, strategy: str = "auto") -> TrainResult:
    """Continue a run from the checkpoint of ``epoch`` (default: its latest).

    Model, optimizer state (iterations, momentum) and schedule position come back; history
    rows, checkpoints and segments after ``epoch`` are dropped, so curves have no gaps or
    duplicates. ``lr`` continues with that constant rate; ``epochs`` changes the total.
    Checkpoints don't depend on the placement: a run can resume on more or fewer devices.
    """
    placement = resolve(strategy)
    rd = find_run(run, runs_dir)
    record = rd.config()
    config = TrainConfig.from_dict(record)
    checkpoints = rd.checkpoints()
    if not checkpoints:
        raise RunError(f"Run {rd.path} has no checkpoint: it stopped before its first epoch ended",
                       hint=f"start it again with `resnetctl train {config.model}`")
    if epoch is None:
        epoch = max(checkpoints)
    start_from = rd.checkpoint(epoch)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    if lr is not None and not lr > 0:
        raise RunError(f"`lr` must be > 0. Received: lr={lr}")
    if epoch >= config.epochs:
        raise RunError(f"Run {rd.name} has done epoch {epoch} of {config.epochs}",
                       hint="pass --epochs TOTAL to train further")
    segments = [s for s in record.get("segments", []) if s["from_epoch"] < epoch]
    if lr is not None:
        segments.append({"from_epoch": epoch, "lr": lr})
    constant_lr = segments[-1]["lr"] if segments else None
    placement.check_batch_size(config.batch_size)

    _set_up_backend(config)
    info = open_dataset(config.dataset, config.data_dir)
    with placement.scope(), placement.output(rd) as out:
        model = load_model(start_from)
        steps = math.ceil(info.splits["train"] / config.batch_size)
        schedule = make_schedule(config, steps, constant_lr)
        _recompile_with_state(model, config, schedule, info.num_classes, start_from)

        if placement.chief:  # the abandoned future of this run
            for stale, path in checkpoints.items():
                if stale > epoch:
                    path.unlink()
            for path in (rd.last_path, rd.best_path):
                if path.exists() and path != start_from and _epoch_of(path) > epoch:
                    path.unlink()
        history = [r for r in rd.history() if r["epoch"] <= epoch]
        out.write_history(history)
        record.update(epochs=config.epochs, segments=segments, versions=library_versions(),
                      effective_warmup_epochs=config.warmup())
        record.setdefault("resumes", []).append(
            {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "from_epoch": epoch, "lr": lr, "epochs": config.epochs, "placement": placement.to_dict()})
        out.write_config(record)
        history = _fit(out, model, config, info, history, epoch, schedule, console, placement)
    return TrainResult(rd, history, placement)


def _recompile_with_state(model, config: TrainConfig, schedule, num_classes: int, source) -> None:
    """Compile afresh for this backend and placement, then restore the saved optimizer state.

    A checkpoint names the optimizer class of the backend that wrote it (``TorchSGD`` under
    torch), which can't step another backend's variables; the state itself (iterations,
    momentum) is plain arrays, so a run moves between backends and device counts.
    """
    state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    compile_model(model, config, schedule, num_classes)
    model.optimizer.build(model.trainable_variables)
    fresh = model.optimizer.variables
    if [tuple(v.shape) for v in fresh] != [s.shape for s in state]:
        raise RunError(f"The optimizer state in {source} does not fit {config.optimizer} on this model",
                       hint="resume from another checkpoint (--epoch) or start a new run")
    for variable, value in zip(fresh, state, strict=True):
        variable.assign(value)


def _epoch_of(path) -> int:
    return int(checkpoint_info(path)["epoch"])


def _fit(run: RunDir, model, config: TrainConfig, info: DatasetInfo, history: list[dict],
         initial_epoch: int, schedule, console: Console | None, placement: Placement) -> list[dict]:
    """``model.fit`` with our callbacks; returns the history, raises Stopped on a clean stop."""
    console = console or Console()
    console.print(f"[dim]{config.model} on {info.name}, {placement.describe()}[/]", highlight=False)
    inputs = fit_inputs(info, "train", config.batch_size, config.in_memory, config.seed,
                        placement.batch_multiple)
    validation = validation_inputs(info, config.batch_size, placement.batch_multiple)
    with stop_on_signals() as signals:
        recorder = RunRecorder(run, history, schedule, info.splits["train"],
                               config.checkpoint_every, signals)
        progress = RichProgress(console, history, schedule)
        callbacks = [recorder, progress]
        if config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.path / "tensorboard")))
        try:
            model.fit(**inputs, epochs=config.epochs, initial_epoch=initial_epoch,
                      validation_data=validation, callbacks=callbacks, verbose=0)
        except StopRequested as stop:
            progress.close()
            done = history[-1]["epoch"] if history else 0
            owner = f"kept {run.last_path}" if placement.chief else "the chief worker keeps"
            kept = f"{owner} (epoch {done})" if done else "no epoch finished, so there is nothing to resume"
            where = run.path if placement.chief else run.name
            hint = (f"resume with: resnetctl resume --run {where}" if done
                    else f"start again: resnetctl train {config.model} --dataset {config.dataset}")
            if "non-finite" in stop.reason:
                hint += " --lr <lower>"
            raise Stopped(f"Stopped in epoch {stop.epoch}: {stop.reason}; {kept}", hint=hint) from None
    return history

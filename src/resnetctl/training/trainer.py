"""``train`` and ``resume``: build or load, compile, fit with our callbacks, keep the run resumable.

One process writes a run at a time (``RunDir.lock``). Everything that can be checked is checked
before anything is written; a run that fails before its first epoch ends leaves nothing behind
(or, when stopped by a signal, a checkpoint-less run that ``train`` may start again).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import platform
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import keras

from resnetctl import __version__, paths
from resnetctl.data.pipeline import EpochStart, train_batches, validation_batches
from resnetctl.data.store import DatasetInfo, open_dataset, open_run_dataset
from resnetctl.errors import Diverged, RunError, Stopped, is_disk_full
from resnetctl.heap import KeepFreedMemory
from resnetctl.hooks import TrainingProgress
from resnetctl.models import check_model_fits, create_model_for
from resnetctl.runs import RunDir, checkpoint_info, find_run, load_model, now, score
from resnetctl.signals import stop_on_signals
from resnetctl.training.callbacks import (
    EarlyStop,
    EMAWeights,
    PlateauCut,
    Reporter,
    RunRecorder,
    StopRequested,
    swap_ema,
    tensorboard_writer,
)
from resnetctl.training.config import TrainConfig
from resnetctl.training.distribute import Placement, resolve
from resnetctl.training.losses import SparseCrossentropy
from resnetctl.training.monitors import EarlyStopping, Plateau
from resnetctl.training.schedules import EpochSchedule, PlateauSchedule

log = logging.getLogger("resnetctl")
# files a run dir holds; a run that never finished an epoch is cleared of these before a restart
RUN_FILES = ("config.json", "state.json", "history.csv", "monitor.png", "last.keras", "best.keras")


@dataclass
class TrainResult:
    run: RunDir
    history: list[dict]
    placement: Placement | None = None
    stopped_early: dict | None = None  # reason, best_epoch, stopped_epoch when early stopping ended it

    @property
    def epochs_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0


def library_versions() -> dict:
    versions = {
        "resnetctl": __version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "backend": keras.backend.backend(),
    }
    import numpy

    versions["numpy"] = numpy.__version__
    backend_module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(versions["backend"])
    if backend_module:
        versions[backend_module] = __import__(backend_module).__version__
    return versions


def _set_up_backend(config: TrainConfig) -> None:
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.precision)


def make_schedule(config: TrainConfig, steps_per_epoch: int, constant_lr: float | None = None, rules=None):
    """The optimizer's schedule; a plateau run's rate comes from its rule (``rules["plateau"]``)."""
    if config.schedule == "plateau":
        plateau = (rules or {}).get("plateau") or new_rules(config)["plateau"]
        start = (rules or {}).get("start_epoch", 0)
        return PlateauSchedule(config.lr, steps_per_epoch, config.epochs, config.warmup(), plateau.lr, start)
    if constant_lr is not None:
        return EpochSchedule("constant", constant_lr, steps_per_epoch, config.epochs)
    return EpochSchedule(
        config.schedule, config.lr, steps_per_epoch, config.epochs, config.warmup(), config.power, config.milestones
    )


def new_rules(config: TrainConfig, lr: float | None = None) -> dict:
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


def _saved_rules(config: TrainConfig, info: dict, epoch: int, lr: float | None, epochs_given: bool, run) -> dict:
    """The rules as checkpoint ``info`` saved them. ``resume --lr`` starts the plateau rule
    afresh from that rate; a run early stopping ended continues only with ``--epochs`` (on
    purpose), its best kept and its count started again."""
    rules = new_rules(config, lr)
    if "plateau" in rules and lr is None and info.get("plateau"):
        rules["plateau"] = Plateau.from_state(info["plateau"])
    if "early_stopping" in rules and info.get("early_stopping"):
        rule = EarlyStopping.from_state(info["early_stopping"])
        if rule.stopped_epoch is not None:
            if not epochs_given:
                raise RunError(
                    f"Run {run.name} was ended by {rule.reason()} (at epoch {rule.stopped_epoch})",
                    hint=f"train further on purpose: resnetctl resume --run {run.path.resolve()} --epochs TOTAL",
                )
            rule = rule.continued()
        rules["early_stopping"] = rule
    return {**rules, "start_epoch": epoch}


def compile_model(model, config: TrainConfig, schedule, num_classes: int) -> None:
    """The run's optimizer (with Keras' own weight average for ``--ema``), loss (mixing its
    targets with the model's :class:`BatchMix`, if any) and metrics."""
    from resnetctl.models.layers import BatchMix

    common = {"global_clipnorm": config.clip_norm}
    if config.ema:
        common.update(use_ema=True, ema_momentum=config.ema)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True, **common)
    else:  # decoupled decay, not on BN parameters or biases
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, **common)
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    mix = next((layer for layer in model.layers if isinstance(layer, BatchMix)), None)
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"))
    model.compile(
        optimizer=optimizer,
        loss=SparseCrossentropy(label_smoothing=config.label_smoothing, mix=mix),
        metrics=metrics,
        jit_compile="auto" if config.jit is None else config.jit,
    )


def _dataset_summary(info: DatasetInfo) -> dict:
    return {
        "name": info.name,
        "path": str(info.path.resolve()),
        "image_size": info.image_size,
        "num_classes": info.num_classes,
        "classes": info.classes,
        "splits": info.splits,
        "mean": info.mean,
        "std": info.std,
    }


def _init_from(model, config: TrainConfig) -> dict | None:
    """Fine-tuning: the matching layers of ``--init-from`` copied into ``model``; what was
    loaded and skipped goes into config.json."""
    if not config.init_from:
        return None
    from resnetctl.models.transfer import load_matching_weights
    from resnetctl.runs import init_source

    source_path = init_source(config.init_from, config.runs_dir)
    report = load_matching_weights(model, load_model(source_path, compile=False))
    if not report["loaded_layers"]:
        raise RunError(
            f"--init-from {source_path}: no layer matches {config.model}", hint="start from a run of the same model"
        )
    epoch = None
    with contextlib.suppress(RunError):  # a .keras file not written by train has no epoch
        epoch = checkpoint_info(source_path).get("epoch")
    return {"source": str(source_path.resolve()), "epoch": epoch, **report}


def _restartable(run: RunDir) -> bool:
    """A run of ours that never finished an epoch (stopped in its first, or killed while
    writing its first checkpoint) may be started again under its name."""
    return run.config_path.is_file() and not run.history() and not run.checkpoints()


def train(config: TrainConfig, progress: TrainingProgress | None = None, strategy: str = "auto") -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` in a new run dir, placed by ``strategy``."""
    config.validate()
    info = open_dataset(config.dataset, config.data_dir)
    root = paths.check_folder(paths.runs_dir(config.runs_dir), "Runs dir")
    name = config.run or f"{config.model}-{info.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    paths.check_name(name, "Run")
    run = RunDir(root / name)
    placement = resolve(strategy)
    config = replace(config.resolved(info), run=name)
    placement.check_batch_size(config.batch_size)
    _set_up_backend(config)
    with _RunWriter(run, placement) as out:
        if placement.chief and out.path.exists():
            if not _restartable(out):
                what = "already exists" if out.config_path.exists() else "exists and is not a resnetctl run"
                raise RunError(
                    f"Run folder {out.path} {what}",
                    hint="resume it with `resnetctl resume --run`, or pick another --run name",
                )
            _clear(out)
        with placement.scope():
            batches = train_batches(info, config.batch_size, config.in_memory, config.seed, placement.batch_multiple)
            model = create_model_for(
                config.model,
                info,
                weight_decay=config.weight_decay if config.optimizer == "sgd" else 0.0,
                augmentation=config.augmentation,
                seed=config.seed,
                zero_init_last=config.zero_init_last,
                mixup=config.mixup,
                cutmix=config.cutmix,
                mix_prob=config.mix_prob,
                mix_switch_prob=config.mix_switch_prob,
                shortcut=config.shortcut,
            )
            steps = len(batches)
            rules = new_rules(config)
            schedule = make_schedule(config, steps, rules=rules)
            init = _init_from(model, config)
            compile_model(model, config, schedule, info.num_classes)
            out.path.mkdir(parents=True, exist_ok=True)
            out.write_config(
                {
                    **config.to_dict(),
                    "created": now(),
                    "steps_per_epoch": steps,
                    "effective_warmup_epochs": config.warmup(),  # warmup_epochs null: the default rule
                    "segments": [],
                    "dataset_info": _dataset_summary(info),
                    **({"init": init} if init else {}),
                    "versions": library_versions(),
                    "placement": placement.to_dict(),
                }
            )
            history, stopped = _fit(
                out, model, config, info, batches, [], 0, schedule, -math.inf, progress, placement, rules
            )
    return TrainResult(run, history, placement, stopped)


def _clear(run: RunDir) -> None:
    for name in RUN_FILES:
        (run.path / name).unlink(missing_ok=True)
    for folder in (run.checkpoint_dir, run.tensorboard_dir):
        shutil.rmtree(folder, ignore_errors=True)


def resume(
    run: str | None = None,
    *,
    runs_dir: str | None = None,
    data_dir: str | None = None,
    epoch: int | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    progress: TrainingProgress | None = None,
    strategy: str = "auto",
) -> TrainResult:
    """Continue a run from the checkpoint of ``epoch`` (default: its latest).

    Model, optimizer state (iterations, momentum), augmentation RNG state and the schedule
    position come back from the checkpoint; the data order is a function of (seed, epoch):
    resuming gives the run that was never stopped. History rows, checkpoints and segments after
    ``epoch`` are dropped, and ``best.keras`` becomes the best checkpoint kept. ``lr`` continues
    with that constant rate; ``epochs`` changes the total.
    """
    rd = find_run(run, runs_dir)
    record = rd.config()
    config = TrainConfig.from_dict(record)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise RunError(f"`lr` must be a finite number > 0. Received: lr={lr}")
    if config.epochs < 1:
        raise RunError(f"`epochs` must be >= 1. Received: epochs={config.epochs}")
    placement = resolve(strategy)
    placement.check_batch_size(config.batch_size)
    with _RunWriter(rd, placement) as out:
        checkpoints = rd.checkpoints()
        if not checkpoints:
            raise RunError(
                f"Run {rd.path} has no checkpoint: it stopped before its first epoch ended",
                hint=f"start it again: resnetctl train {config.model} --run {rd.name} "
                f"--runs-dir {rd.path.parent} --dataset {config.dataset}",
            )
        epoch = max(checkpoints) if epoch is None else epoch
        start_from = rd.checkpoint(epoch)
        rules = _saved_rules(config, checkpoint_info(start_from), epoch, lr, epochs is not None, rd)
        if epoch >= config.epochs:
            raise RunError(
                f"Run {rd.name} has done epoch {epoch} of {config.epochs}",
                hint=f"train further: resnetctl resume --run {rd.path} --epochs TOTAL",
            )
        segments = [s for s in record.get("segments", []) if s["from_epoch"] < epoch]
        if lr is not None:
            segments.append({"from_epoch": epoch, "lr": lr})
        constant_lr = segments[-1]["lr"] if segments else None
        info = open_run_dataset(record, data_dir)
        _set_up_backend(config)
        with placement.scope():
            model = load_model(start_from)
            check_model_fits(model, start_from, info.num_classes, info.image_size, f"dataset {info.name!r}")
            batches = train_batches(info, config.batch_size, config.in_memory, config.seed, placement.batch_multiple)
            steps = len(batches)
            schedule = make_schedule(config, steps, constant_lr, rules)
            _recompile_with_state(model, config, schedule, info.num_classes, start_from)
            if config.ema:  # a checkpoint holds the average in the model (EMAWeights)
                swap_ema(model)
            history = [r for r in rd.history() if r["epoch"] <= epoch]
            best = _roll_back(out, checkpoints, epoch, start_from, history) if placement.chief else -math.inf
            out.write_history(history)
            record.update(
                epochs=config.epochs,
                segments=segments,
                versions=library_versions(),
                effective_warmup_epochs=config.warmup(),
                steps_per_epoch=steps,
            )
            record.setdefault("resumes", []).append(
                {"at": now(), "from_epoch": epoch, "lr": lr, "epochs": config.epochs, "placement": placement.to_dict()}
            )
            out.write_config(record)
            history, stopped = _fit(
                out, model, config, info, batches, history, epoch, schedule, best, progress, placement, rules
            )
    return TrainResult(rd, history, placement, stopped)


def _roll_back(run: RunDir, checkpoints: dict, epoch: int, start_from: Path, history: list[dict]) -> float:
    """Drop the abandoned future after ``epoch``; make ``best.keras`` the best checkpoint kept
    (by :func:`score`), or remove it when none is. Returns the score the run must beat."""
    for stale, path in checkpoints.items():
        if stale > epoch and path.parent == run.checkpoint_dir:
            path.unlink()
    if run.last_path.exists() and run.last_path != start_from and _epoch_of(run.last_path, epoch + 1) > epoch:
        run.last_path.unlink()
    scores = {r["epoch"]: score(r) for r in history}
    if run.best_path.exists() and _epoch_of(run.best_path, epoch + 1) <= epoch:
        return scores.get(_epoch_of(run.best_path, epoch + 1), -math.inf)
    run.best_path.unlink(missing_ok=True)
    kept = {e: p for e, p in checkpoints.items() if e <= epoch and p.exists() and p != run.best_path}
    if not kept:
        log.warning("no kept checkpoint up to epoch %d to be best.keras; it comes back when an epoch improves", epoch)
        return -math.inf
    best_epoch = max(kept, key=lambda e: (scores.get(e, -math.inf), e))
    from resnetctl import atomic

    atomic.copy_file(kept[best_epoch], run.best_path)
    log.warning("best.keras is now epoch %d, the best checkpoint kept up to epoch %d", best_epoch, epoch)
    return scores.get(best_epoch, -math.inf)


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
        raise RunError(
            f"The optimizer state in {source} does not fit {config.optimizer} on this model",
            hint="resume from another checkpoint (--epoch) or start a new run",
        )
    for variable, value in zip(fresh, state, strict=True):
        variable.assign(value)


def _epoch_of(path, unreadable: int) -> int:
    try:
        return int(checkpoint_info(path)["epoch"])
    except RunError:
        return unreadable


class _RunWriter:
    """Hold the run's lock (chief only) and yield the RunDir this process writes."""

    def __init__(self, run: RunDir, placement: Placement):
        self.run, self.placement = run, placement

    def __enter__(self) -> RunDir:
        from contextlib import ExitStack

        self.stack = ExitStack()
        if self.placement.chief:
            self.stack.enter_context(self.run.lock())
        return RunDir(self.stack.enter_context(self.placement.output(self.run.path)))

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)


def _resume_hint(run: RunDir, lr: float | None = None) -> str:
    hint = f"resume with: resnetctl resume --run {run.path.resolve()}"
    return hint + (f" --lr {lr:.3g}" if lr else "")


def _fit(
    run: RunDir,
    model,
    config: TrainConfig,
    info: DatasetInfo,
    batches,
    history: list[dict],
    initial_epoch: int,
    schedule,
    best_score: float,
    progress: TrainingProgress | None,
    placement: Placement,
    rules: dict | None = None,
) -> tuple[list[dict], dict | None]:
    """``model.fit`` with our callbacks; records the run's state; returns the history and, when
    early stopping ended the run, why (reason, best and stopped epochs).

    Raises Stopped (a signal), Diverged (a non-finite loss) or RunError (disk full, a failed
    read) with what was kept and the command that continues."""
    progress = progress or TrainingProgress()
    rules = {k: v for k, v in (rules or {}).items() if k in ("plateau", "early_stopping")}
    validation = validation_batches(info, config.batch_size, placement.batch_multiple)
    extra = [tensorboard_writer(run.tensorboard_dir)] if config.tensorboard else []
    fresh = initial_epoch == 0
    run.write_state("running", epoch=initial_epoch)
    progress.start(
        {
            "run": run.name,
            "path": str(run.path),
            "model": config.model,
            "dataset": info.name,
            "placement": placement.describe(),
            "epochs": config.epochs,
            "initial_epoch": initial_epoch,
            "steps": len(batches),
            "batch_size": config.batch_size,
            "images": info.splits["train"],
        }
    )
    with stop_on_signals() as signals:
        callbacks = [
            KeepFreedMemory(),
            EpochStart(batches),
            *([EMAWeights()] if config.ema else []),
            Reporter(progress, schedule, signals),
            *([PlateauCut(rules["plateau"], schedule)] if "plateau" in rules else []),
            *([EarlyStop(rules["early_stopping"])] if "early_stopping" in rules else []),
            RunRecorder(
                run,
                history,
                schedule,
                info.splits["train"],
                config.checkpoint_every,
                best_score,
                progress,
                extra,
                keep=config.keep_checkpoints,
                rules=rules,
            ),
        ]
        try:
            model.fit(
                batches,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                shuffle=False,
                validation_data=validation,
                callbacks=callbacks,
                verbose=0,
            )
        except StopRequested as stop:
            done = history[-1]["epoch"] if history else initial_epoch
            kept = f"kept {run.last_path} (epoch {done})" if done else "no epoch finished"
            state = "diverged" if stop.diverged else "stopped"
            run.write_state(state, epoch=done, reason=stop.reason)
            if stop.diverged:
                lr = schedule.at_step(max(0, stop.epoch - 1) * len(batches)) / 10
                hint = (
                    _resume_hint(run, lr)
                    if done
                    else f"start again with a lower rate: resnetctl train {config.model} --run {run.name} "
                    f"--runs-dir {run.path.parent.resolve()} --dataset {info.path.resolve()} "
                    f"--lr {config.lr / 10:.3g}"
                )
                raise Diverged(f"Stopped in epoch {stop.epoch}: {stop.reason}; {kept}", hint=hint) from None
            hint = (
                _resume_hint(run)
                if done
                else f"start again: resnetctl train {config.model} --run {run.name} "
                f"--runs-dir {run.path.parent.resolve()} --dataset {info.path.resolve()}"
            )
            raise Stopped(f"Stopped in epoch {stop.epoch}: {stop.reason}; {kept}", hint=hint) from None
        except BaseException as exc:
            done = history[-1]["epoch"] if history else initial_epoch
            if fresh and not done:  # nothing worth keeping: leave no run behind
                shutil.rmtree(run.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):  # the disk may be full
                    run.write_state("failed", epoch=done, reason=str(exc)[:500])
            if isinstance(exc, OSError) or is_disk_full(exc):
                what = "Disk full" if is_disk_full(exc) else "Cannot write"
                kept = f"the last good checkpoint is {run.last_path} (epoch {done})" if done else "nothing was kept"
                raise RunError(
                    f"{what} while training in {run.path} ({getattr(exc, 'strerror', None) or exc}); {kept}",
                    hint=(_resume_hint(run) + " once there is space") if done else "free some space and train again",
                ) from None
            raise
        finally:
            progress.close()
    early = rules.get("early_stopping")
    stopped = None
    if early is not None and early.stopped_epoch is not None:
        stopped = {"reason": early.reason(), "best_epoch": early.best_epoch, "stopped_epoch": early.stopped_epoch}
    run.write_state("finished", epoch=history[-1]["epoch"] if history else initial_epoch, **(stopped or {}))
    return history, stopped

"""``train`` and ``resume``: build or load, compile, fit with our callbacks, keep the run resumable.

One process writes a run at a time (``RunDir.lock``). Everything that can be checked is checked
before anything is written; a run that fails before its first epoch ends leaves nothing behind
(or, when stopped by a signal, a checkpoint-less run that ``train`` may start again).
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import shutil
from dataclasses import dataclass, field, replace

import keras

from resnetctl import __version__, atomic, tracking
from resnetctl.commands import resume_command, start_again_command
from resnetctl.data.pipeline import EpochStart, train_batches, validation_batches
from resnetctl.data.store import DatasetInfo, normalization_stats
from resnetctl.errors import Diverged, RunError, Stopped, is_disk_full
from resnetctl.heap import KeepFreedMemory
from resnetctl.hooks import TrainingProgress
from resnetctl.lineage import branch_off, fork, fork_record
from resnetctl.models import check_model_fits, create_model_for, get_spec
from resnetctl.runs import (
    MARKER,
    OWN_FILES,
    OWN_FOLDERS,
    RunDir,
    best_row,
    checkpoint_info,
    epoch_in,
    link_or_copy,
    load_model,
    now,
    score,
)
from resnetctl.signals import stop_on_signals
from resnetctl.training import distribute
from resnetctl.training.callbacks import (
    EarlyStop,
    EMAWeights,
    EpochWatch,
    PlateauCut,
    Reporter,
    RunRecorder,
    StepLogger,
    StopRequested,
    swap_ema,
)
from resnetctl.training.config import TrainConfig, default_batch_size
from resnetctl.training.distribute import Placement, resolve
from resnetctl.training.losses import SparseCrossentropy
from resnetctl.training.monitors import new_rules
from resnetctl.training.schedules import EpochSchedule, PlateauSchedule

log = logging.getLogger("resnetctl")


# files a run dir holds; a run that never finished an epoch is cleared of these before a restart
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


def set_up_backend(config: TrainConfig) -> None:
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.precision)


def make_schedule(config: TrainConfig, steps_per_epoch: int, rules=None):
    """The run's schedule, with the changes ``resume`` made (``config.segments``); a plateau run's
    rate comes from its rule (``rules["plateau"]``)."""
    if config.schedule == "plateau":
        plateau = (rules or {}).get("plateau") or new_rules(config)["plateau"]
        start = (rules or {}).get("start_epoch", 0)
        return PlateauSchedule(config.lr, steps_per_epoch, config.epochs, config.warmup(), plateau.lr, start)
    return EpochSchedule(
        config.schedule,
        config.lr,
        steps_per_epoch,
        config.epochs,
        config.warmup(),
        config.power,
        config.milestones,
        segments=config.segments,
        per_epoch=config.lr_update == "epoch",
    )


def compile_model(model, config: TrainConfig, schedule, num_classes: int) -> None:
    """The run's optimizer (with Keras' own weight average for ``--ema``), loss (mixing its
    targets with the model's :class:`BatchMix`, if any) and metrics."""
    from resnetctl.models.layers import BatchMix

    common = {"global_clipnorm": config.clip_norm}
    if config.ema:
        common.update(use_ema=True, ema_momentum=config.ema)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov, **common)
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
        steps_per_execution=distribute.steps_per_execution(config.steps_per_execution or 1),
    )


def model_options(config: TrainConfig, info: DatasetInfo) -> dict:
    """What the builder takes from a run's config: decay placement (kernels' L2 with sgd; AdamW
    decays in the optimizer), normalisation statistics, augmentation and mixing."""
    sgd = config.optimizer == "sgd"
    decay = lambda wd: (wd if sgd else 0.0) if wd is not None else None  # noqa: E731
    mean, std = normalization_stats(info, config.normalization)
    crop_px = None if config.shift is None else max(1, round(config.shift * info.image_size))  # None: size // 8
    shift = 1 / 8 if config.shift is None else config.shift
    return {
        "weight_decay": decay(config.weight_decay),
        "stem_weight_decay": decay(config.stem_weight_decay),
        "classifier_weight_decay": decay(config.classifier_weight_decay),
        "mean": mean,
        "std": std,
        "augmentation": config.augmentation,
        "max_shift": crop_px,
        "affine": {"shift": shift, "rotation": config.rotation, "zoom": config.zoom, "shear": config.shear},
        "seed": config.seed,
        "zero_init_last": config.zero_init_last,
        "mixup": config.mixup,
        "cutmix": config.cutmix,
        "mix_prob": config.mix_prob,
        "mix_switch_prob": config.mix_switch_prob,
        "shortcut": config.shortcut,
        "shortcut_bn": config.shortcut_bn,
        "bn_epsilon": config.bn_epsilon,
        "bn_momentum": config.bn_momentum,
        "erasing": config.random_erasing,
        "randaugment_magnitude": config.randaugment_magnitude,
    }


def build_model(config: TrainConfig, info: DatasetInfo):
    """A fresh model for the run's config, as ``train`` builds it (and ``lr-find`` sweeps it)."""
    return create_model_for(config.model, info, **model_options(config, info))


def settle_batch_size(plan):
    """``--batch-size auto``: the plan with the batch found by :func:`batch_search.search` (the
    run's model and precision, short real steps) and the rate scaled by the linear rule; any other
    plan as it is. Call it after :func:`set_up_backend` (the precision)."""
    if not plan.auto_batch:
        return plan
    from resnetctl.training.batch_search import scaled_lr, search

    requested, info = plan.requested, plan.dataset

    def build():
        model = build_model(plan.config, info)
        compile_model(model, plan.config, plan.config.lr, info.num_classes)
        return model

    found = search(build, info.image_size, info.num_classes, info.splits["train"])
    default = default_batch_size(info.splits["train"])
    lr = scaled_lr(requested.lr, found["batch_size"], default)
    config = replace(requested, batch_size=found["batch_size"], lr=lr).validate().resolved(info)
    record = {**found, "default_batch_size": default, "lr_at_default_batch": requested.lr, "lr": lr}
    return replace(plan, config=config, batch_search=record)


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


def train(plan, progress: TrainingProgress | None = None, watch=None) -> TrainResult:
    """Train a new run as planned by :func:`resnetctl.plan.plan_train`. ``watch(epoch, logs)``,
    called after each epoch, may end the run early by returning why
    (:class:`~resnetctl.training.callbacks.EpochWatch`: ``tune``'s pruner)."""
    placement = resolve(plan.strategy)
    set_up_backend(plan.config)
    plan = settle_batch_size(plan)
    config, info, run = plan.config, plan.dataset, plan.run
    placement.check_batch_size(config.batch_size)
    with _RunWriter(run, placement) as out, placement.scope():
        batches = train_batches_for(info, config, placement)
        validation = _validation_batches(info, config, placement)
        model = build_model(config, info)
        steps = len(batches)
        rules = new_rules(config)
        schedule = make_schedule(config, steps, rules=rules)
        init = _init_from(model, config)
        compile_model(model, config, schedule, info.num_classes)
        record = {
            **config.to_dict(),
            "created": now(),
            "steps_per_epoch": steps,
            "effective_warmup_epochs": config.warmup(),  # warmup_epochs null: the default rule
            "dataset_info": _dataset_summary(info),
            **({"batch_search": plan.batch_search} if plan.batch_search else {}),
            **({"seed_group": plan.seed_group} if plan.seed_group else {}),
            **({"init": init} if init else {}),
            "versions": library_versions(),
            "placement": placement.to_dict(),
        }
        trackers = tracking.open_trackers(config, out.tensorboard_dir, placement.chief, plan.tracking_off)
        record.update(trackers.open(out.path, record))  # a store that refuses: nothing was written
        with tracking.finished_on_error(trackers, out):
            if placement.chief and plan.restart:
                _clear(out)
            created = not out.path.exists()
            if placement.chief:
                out.create()
            out.write_config(record)
        fit = Fit(out, model, config, info, batches, placement, schedule, trackers, validation, rules=rules)
        batch_note = plan.batch_search["rule"] if plan.batch_search else None
        history, stopped = _fit(replace(fit, created=created, watch=watch, batch_note=batch_note), progress)
    return TrainResult(run, history, placement, stopped)


def _validation_batches(info: DatasetInfo, config: TrainConfig, placement: Placement):
    """The split watched each epoch, read before anything of the run is written."""
    p = placement
    return validation_batches(info, config.batch_size, p.batch_multiple, p.shard, p.data_on_device, config.validation)


def train_batches_for(info: DatasetInfo, config: TrainConfig, placement: Placement):
    """The train split fed as the placement needs it (device count, process share, device memory)."""
    p = placement
    return train_batches(
        info, config.batch_size, config.in_memory, config.seed, p.batch_multiple, p.shard, p.data_on_device
    )


def _clear(run: RunDir) -> None:
    """Empty a run of ours that never finished an epoch, before it starts again (only the files a
    run has; anything else in the folder stays)."""
    for name in OWN_FILES - {MARKER}:  # the marker stays: it is still our run
        (run.path / name).unlink(missing_ok=True)
    for folder in OWN_FOLDERS:
        shutil.rmtree(run.path / folder, ignore_errors=True)


def resume(plan, progress: TrainingProgress | None = None, watch=None) -> TrainResult:
    """Continue a run as planned by :func:`resnetctl.plan.plan_resume`; ``watch`` as for :func:`train`.

    Model, optimizer state (iterations, momentum), augmentation RNG state and the schedule
    position come back from the checkpoint; the data order is a function of (seed, epoch):
    resuming gives the run that was never stopped. Going back to an earlier epoch keeps what came
    after it as a branch (a run of its own, ``RUN.bK``); ``--fork NAME`` starts a new run from the
    epoch instead and leaves this one as it is. A new ``lr`` or ``epochs`` is recorded as a
    segment of the schedule, so ``train --config`` of the run replays it.
    """
    config, info = plan.config, plan.dataset
    placement = resolve(plan.strategy)
    placement.check_batch_size(config.batch_size)
    rd = plan.run
    with _RunWriter(rd, placement) as out:
        start_from = plan.source.checkpoint(plan.epoch)
        set_up_backend(config)
        with placement.scope():
            model = load_model(start_from)
            check_model_fits(model, start_from, info.num_classes, info.image_size, f"dataset {info.name!r}")
            if model.name != get_spec(config.model).name:  # another run's checkpoint copied in
                raise RunError(
                    f"{start_from} holds a {model.name!r} model, but run {plan.source.name} trains {config.model!r}",
                    hint="put the run's own checkpoint back, or resume from another epoch (--epoch)",
                )
            batches = train_batches_for(info, config, placement)
            steps = len(batches)
            schedule = make_schedule(config, steps, plan.rules)
            _recompile_with_state(model, config, schedule, info.num_classes, start_from)
            if config.ema:  # a checkpoint holds the average in the model (EMAWeights)
                swap_ema(model)
            history = plan.source.history_upto(plan.epoch)  # a row lost to a kill: refused or put back here
            validation = _validation_batches(info, config, placement)
            # the record of the line that goes on: a fork's own; a branch leaves the old line's
            # MLflow run with the epochs it keeps (this line gets its own)
            if plan.fork is not None:
                record = fork_record(plan.source, plan.epoch, plan.fork)
            else:
                record = plan.source.config()
                if plan.branches:
                    record.pop(tracking.MLFLOW_KEY, None)
            previous = (
                make_schedule(
                    replace(config, segments=TrainConfig.from_dict(record).segments_before(plan.epoch, inclusive=True)),
                    steps,
                )
                if config.schedule != "plateau"  # a plateau's rate is its rule's: nothing was planned
                else schedule
            )
            record.update(
                segments=[dict(s) for s in config.segments],
                versions=library_versions(),
                effective_warmup_epochs=config.warmup(),
                steps_per_epoch=steps,
                mlflow=config.mlflow,  # resume --mlflow / --no-mlflow
            )
            record["resumes"] = [  # later resumes belong to the branch that kept those epochs
                r for r in record.get("resumes", []) if isinstance(r, dict) and r.get("from_epoch", 0) < plan.epoch
            ]
            record["resumes"].append(
                {
                    "at": now(),
                    "from_epoch": plan.epoch,
                    "lr": plan.segment.get("lr") if plan.segment else None,
                    "epochs": config.total_epochs(),
                    "placement": placement.to_dict(),
                }
            )
            trackers = tracking.open_trackers(config, rd.tensorboard_dir, placement.chief, plan.tracking_off)
            # everything is checked, the tracker's store too: only now does the run change
            record.update(trackers.open(rd.path, record))
            with tracking.finished_on_error(trackers, rd):
                branch = None
                if placement.chief and plan.fork is not None:
                    with plan.source.lock():
                        fork(plan.source, plan.epoch, plan.fork)
                elif placement.chief and plan.branches:  # this process holds the run's lock already
                    branch = branch_off(plan.source, plan.epoch)
                    record["resumes"][-1]["branch"] = branch.name
                best = _best_kept(out, history, plan.epoch) if placement.chief else -math.inf
                if placement.chief:
                    out.create()
                    out.write_history(history)
                    out.write_config(record)
                    if out.checkpoints().get(plan.epoch) == out.last_path:  # its epoch file was lost to a kill
                        out.checkpoint_dir.mkdir(exist_ok=True)
                        link_or_copy(out.last_path, out.epoch_path(plan.epoch))
            resumed = {
                "from_epoch": plan.epoch,
                "lr": schedule.at_step(plan.epoch * steps),
                "planned_lr": previous.at_step(plan.epoch * steps),
                "branch": str(branch.path) if branch else None,
                "fork_of": plan.source.name if plan.fork else None,
            }
            fit = Fit(
                out, model, config, info, batches, placement, schedule, trackers, validation, plan.rules, history,
                plan.epoch, best, resumed=resumed, watch=watch,
            )  # fmt: skip
            history, stopped = _fit(fit, progress)
    return TrainResult(rd, history, placement, stopped)


def _best_kept(run: RunDir, history: list[dict], epoch: int) -> float:
    """The score of ``best.keras`` when the run goes on from ``epoch``: the best of the epochs up
    to ``epoch`` that have a checkpoint. ``best.keras`` is replaced when it holds another epoch:
    a later one (the epochs after ``epoch`` went to a branch), an unreadable one, or a worse one
    (its copy failed on a full disk after a better epoch's checkpoint was written)."""
    by_epoch = {r["epoch"]: r for r in history}
    holder = epoch_in(run.best_path) if run.best_path.is_file() else None
    kept = {e: p for e, p in run.checkpoints().items() if e <= epoch and p != run.best_path}
    if holder is not None and holder <= epoch:
        kept[holder] = run.best_path
    chosen = best_row([by_epoch[e] for e in sorted(kept) if e in by_epoch])
    if chosen is None:
        with contextlib.suppress(FileNotFoundError):
            run.best_path.unlink()
        return -math.inf
    if chosen["epoch"] != holder:
        atomic.copy_file(kept[chosen["epoch"]], run.best_path)  # a copy, as RunRecorder makes it
        log.warning("best.keras is now epoch %d, the best checkpoint kept up to epoch %d", chosen["epoch"], epoch)
    return score(chosen)


def _recompile_with_state(model, config: TrainConfig, schedule, num_classes: int, source) -> None:
    """Compile afresh for this backend and placement, then restore the saved optimizer state.

    A checkpoint names the optimizer class of the backend that wrote it (``TorchSGD`` under
    torch), which can't step another backend's variables; the state itself (iterations,
    momentum) is plain arrays, so a run moves between backends and device counts.
    """
    if getattr(model, "optimizer", None) is None:  # saved uncompiled: no optimizer state to continue from
        raise RunError(f"{source} holds a model without its optimizer state; a run can't continue from it")
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
    return "resume with: " + resume_command(run, lr)


def _marks(run: RunDir) -> list[tuple[int, str]]:
    """Where this run was resumed (and at which rate), for monitor.png."""
    try:
        resumes = run.config().get("resumes") or []
    except RunError:
        return []
    marks = []
    for r in resumes:
        if isinstance(r, dict) and isinstance(r.get("from_epoch"), int):
            lr = f" lr {r['lr']:.3g}" if isinstance(r.get("lr"), (int, float)) else ""
            marks.append((r["from_epoch"], f"resume{lr}"))
    return marks


def _kept(run: RunDir, done: int) -> str:
    """What a stopped or failed run kept, read from the files (not assumed)."""
    checkpoints = run.checkpoints()
    if not done or not checkpoints:
        return "no epoch finished" if not done else "no readable checkpoint was kept"
    newest = max(checkpoints)
    return f"the last good checkpoint is epoch {newest} ({checkpoints[newest]}); history.csv has {done} epochs"


@dataclass(frozen=True)
class Fit:
    """One ``model.fit`` of a run, as train and resume set it up: ``trackers`` opened
    (``tracking.open_trackers(...).open``) and ``validation`` read before anything of the run
    was written."""

    run: RunDir  # where this call writes (the placement's output folder)
    model: object
    config: TrainConfig
    info: DatasetInfo
    batches: object
    placement: Placement
    schedule: object
    trackers: tracking.Trackers
    validation: object
    rules: dict | None = None  # the plateau and early-stopping rules
    history: list[dict] = field(default_factory=list)  # the rows before initial_epoch
    initial_epoch: int = 0
    best_score: float = -math.inf
    created: bool = False  # this call made the run's folder (removed again if nothing is kept)
    resumed: dict | None = None  # what resume changed, for the progress display and the trackers
    watch: object | None = None  # watch(epoch, logs) -> why to stop, or None (tune's pruner)
    batch_note: str | None = None  # how --batch-size auto chose the batch, for the progress display


def _fit(fit: Fit, progress: TrainingProgress | None) -> tuple[list[dict], dict | None]:
    """``model.fit`` with our callbacks; records the run's state; returns the history and, when
    early stopping or ``watch`` ended the run, why (reason, best and stopped epochs).

    Raises Stopped (a signal), Diverged (a non-finite loss) or RunError (disk full, a failed
    read) with what was kept and the command that continues."""
    run, model, config, info, batches, placement = fit.run, fit.model, fit.config, fit.info, fit.batches, fit.placement
    history, initial_epoch, schedule, best_score = fit.history, fit.initial_epoch, fit.schedule, fit.best_score
    trackers, validation, created, resumed = fit.trackers, fit.validation, fit.created, fit.resumed
    watch, batch_note = fit.watch, fit.batch_note
    progress = progress or TrainingProgress()
    rules = {k: v for k, v in (fit.rules or {}).items() if k in ("plateau", "early_stopping")}
    fresh = initial_epoch == 0
    epochs = config.total_epochs()
    run.write_state("running", epoch=initial_epoch)
    progress.start(
        {
            "run": run.name,
            "path": str(run.path),
            "model": config.model,
            "dataset": info.name,
            "placement": placement.describe(),
            "epochs": epochs,
            "initial_epoch": initial_epoch,
            "resumed": resumed,
            "num_classes": info.num_classes,
            "validation": validation is not None,
            "best_score": best_score,
            "steps": len(batches),
            "batch_size": config.batch_size,
            "batch_search": batch_note,
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
            *([watcher := EpochWatch(watch)] if watch is not None else []),
            recorder := RunRecorder(
                run,
                history,
                schedule,
                info.splits["train"],
                config.checkpoint_every,
                best_score,
                progress,
                [trackers.log_epoch] if trackers else [],
                keep=config.keep_checkpoints,
                recent=config.keep_recent,
                model_name=config.model,
                marks=_marks(run),
                rules=rules,
                background_saves=placement.saves_in_background,
            ),
            *([StepLogger(trackers, schedule, config.log_every)] if trackers else []),
        ]
        try:
            with tracking.session(trackers, run, initial_epoch):
                try:
                    model.fit(
                        batches,
                        epochs=epochs,
                        initial_epoch=initial_epoch,
                        shuffle=False,
                        validation_data=validation,
                        callbacks=callbacks,
                        verbose=0,
                    )
                except BaseException:
                    # the last epoch's writes finish before anything is said about what was kept;
                    # a write that failed outranks the reason the loop ended
                    if (failure := recorder.close()) is not None:
                        raise failure from None
                    raise
        except StopRequested as stop:
            done = history[-1]["epoch"] if history else initial_epoch
            kept = _kept(run, done)
            state = "diverged" if stop.diverged else "stopped"
            run.write_state(state, epoch=done, reason=stop.reason)
            if stop.diverged:
                lr = schedule.at_step(max(0, stop.epoch - 1) * len(batches)) / 10
                hint = (
                    _resume_hint(run, lr)
                    if done
                    else "start again with a lower rate: " + start_again_command(run, info.path, config.lr / 10)
                )
                raise Diverged(f"Stopped in epoch {stop.epoch}: {stop.reason}; {kept}", hint=hint) from None
            hint = _resume_hint(run) if done else "start again with: " + start_again_command(run, info.path)
            raise Stopped(f"Stopped in epoch {stop.epoch}: {stop.reason}; {kept}", hint=hint) from None
        except BaseException as exc:
            done = history[-1]["epoch"] if history else initial_epoch
            if fresh and not done and created:  # nothing worth keeping in a folder this call made
                shutil.rmtree(run.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):  # the disk may be full
                    run.write_state("failed", epoch=done, reason=str(exc)[:500])
            if isinstance(exc, OSError) or is_disk_full(exc):
                what = "Disk full" if is_disk_full(exc) else "Cannot write"
                kept = _kept(run, done)
                raise RunError(
                    f"{what} while training in {run.path} ({getattr(exc, 'strerror', None) or exc}); {kept}",
                    hint=(_resume_hint(run) + " once there is space") if done else "free some space and train again",
                ) from None
            raise
        finally:
            progress.close()
            recorder.close()  # no-op unless an error came before fit: the writes end before the lock goes
    early = rules.get("early_stopping")
    stopped = None
    if early is not None and early.stopped_epoch is not None:
        stopped = {"reason": early.reason(), "best_epoch": early.best_epoch, "stopped_epoch": early.stopped_epoch}
    elif watch is not None and watcher.stopped_epoch is not None:
        best = best_row(history)
        stopped = {
            "reason": watcher.reason(),
            "best_epoch": best and best["epoch"],
            "stopped_epoch": watcher.stopped_epoch,
        }
    run.write_state("finished", epoch=history[-1]["epoch"] if history else initial_epoch, **(stopped or {}))
    return history, stopped

"""A command's plan: what it will do, worked out and checked without Keras.

``train``, ``resume``, ``evaluate``, ``predict`` and ``export`` each make their plan first: the
config merged with the flags and validated, the dataset, the run, the checkpoint and every
output resolved. Mistakes are answered here, at once and before a backend is imported; the CLI
only parses and renders, and the library functions that do the work take the plan, so no check
is written twice. ``train --dry-run`` prints :meth:`TrainPlan.describe`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from resnetctl import paths, tracking
from resnetctl.commands import command, start_again_command
from resnetctl.data.store import DatasetInfo, fits_in_memory, open_dataset, open_run_dataset
from resnetctl.errors import RunError
from resnetctl.runs import RunDir, find_run, init_source, snapshot_file
from resnetctl.scoring import check_topk, check_tta
from resnetctl.training.config import (
    AUTO,
    LR_FIND_END,
    LR_FIND_RULE,
    LR_FIND_RULES,
    LR_FIND_START,
    LR_FIND_STEPS,
    STRATEGIES,
    TrainConfig,
)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise RunError(f"Unknown strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    return strategy


@dataclass(frozen=True)
class TrainPlan:
    """A new run: the resolved config, its dataset and its folder."""

    config: TrainConfig  # resolved: dataset, batch size, augmentation and run name filled in
    dataset: DatasetInfo
    run: RunDir
    strategy: str
    restart: bool  # the folder is a run of ours that never finished an epoch: it starts again
    in_memory: bool
    requested: TrainConfig | None = None  # --batch-size auto: the config before the batch is found
    batch_search: dict | None = None  # --batch-size auto: what was measured (training/batch_search.py)
    seed_group: dict | None = None  # train --seeds: {"name", "seeds", "runs"} of the sibling runs

    @property
    def auto_batch(self) -> bool:
        """``--batch-size auto`` still to be measured (it needs the backend: train and --dry-run do it)."""
        return self.requested is not None and self.batch_search is None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.dataset.splits["train"] / self.config.batch_size)

    def spec(self):
        """The architecture that will be trained (the model's spec with the run's shortcut)."""
        from resnetctl.models.specs import spec_with

        return spec_with(self.config.model, shortcut=self.config.shortcut, shortcut_bn=self.config.shortcut_bn)

    def model_profile(self) -> tuple:
        """(spec, profile, dataset) for ``--dry-run``: the model counted for this dataset."""
        from resnetctl.models.profile import profile_spec

        spec, info = self.spec(), self.dataset
        return spec, profile_spec(spec, info.image_size, info.num_classes), info

    def describe(self) -> dict:
        """Every setting as it will be used (what ``--dry-run`` shows and config.json records)."""
        c = self.config
        auto = {}
        if self.auto_batch:
            auto = {"batch_size": f"auto (measured when training starts; the default rule gives {c.batch_size})"}
        elif self.batch_search:
            auto = {"batch_search": self.batch_search["rule"]}
        return {
            **c.to_dict(),
            **auto,
            "warmup_epochs": c.warmup(),
            "jit": "auto (Keras compiles with XLA where the backend can)" if c.jit is None else c.jit,
            "in_memory": self.in_memory,
            "steps_per_epoch": self.steps_per_epoch,
            "run_path": str(self.run.path),
            "restart": self.restart,
            "strategy": self.strategy,
        }

    def start_again(self) -> str:
        """The command that starts this run again from nothing (printed after an early stop)."""
        return start_again_command(self.run, self.dataset.path)

    tracking_off = "train without --mlflow"  # how to go on when the MLflow store refuses


def plan_train(config: TrainConfig, strategy: str = "auto") -> TrainPlan:
    """Check everything ``train`` needs before anything is written."""
    config.validate()
    check_strategy(strategy)
    info = open_dataset(config.dataset, config.data_dir)
    root = paths.check_folder(paths.runs_dir(config.runs_dir), "Runs dir")
    if config.init_from:
        init_source(config.init_from, config.runs_dir)
    name = config.run or f"{config.model}-{info.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    paths.check_name(name, "Run")
    run = RunDir(root / name)
    restart = False
    if run.path.exists() or run.path.is_symlink():
        if not run.path.is_dir() or not run.is_run():
            raise RunError(
                f"{run.path} exists and is not a resnetctl run; it was left untouched",
                hint="pick another --run name",
            )
        state = run.state()
        if state.get("state") == "running":
            raise RunError(
                f"Run {run.path} is training now (in use by pid {state.get('pid')})",
                hint=f"watch it with: {command('summary', run.path.resolve(), '--follow')}; or pick another --run name",
            )
        if run.history() or run.checkpoints():
            raise RunError(
                f"Run {run.path} already exists",
                hint=f"continue it with: {command('resume', '--run', run.path.resolve())}; or pick another --run name",
            )
        restart = True
    named = replace(config, run=name, dataset=info.name if config.dataset is None else config.dataset)
    resolved = named.resolved(info)
    in_memory = fits_in_memory(info, "train") if config.in_memory is None else config.in_memory
    requested = named if config.batch_size == AUTO else None
    plan = TrainPlan(resolved, info, run, strategy, restart, in_memory, requested)
    if config.mlflow:  # the store answers (bounded), before Keras and before anything is written
        tracking.check_store(None, plan.tracking_off)
    return plan


def plan_seeds(config: TrainConfig, seeds: int, strategy: str = "auto") -> list[TrainPlan]:
    """``train --seeds N``: N sibling runs ``RUN-sS`` for seeds S = SEED .. SEED+N-1 (RUN: ``--run``
    or the default name), all planned (names, folders, settings) before any of them trains."""
    if seeds < 1:
        raise RunError(f"`seeds` must be >= 1. Received: seeds={seeds}")
    config.validate()
    info = open_dataset(config.dataset, config.data_dir)
    base = config.run or f"{config.model}-{info.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    names = [f"{base}-s{config.seed + k}" for k in range(seeds)]
    group = {"name": base, "seeds": [config.seed + k for k in range(seeds)], "runs": names}
    plans = [
        replace(plan_train(replace(config, run=name, seed=config.seed + k), strategy), seed_group=group)
        for k, name in enumerate(names)
    ]
    return plans


@dataclass(frozen=True)
class ResumePlan:
    """Going on with a run: from which checkpoint, with which schedule change, and where."""

    run: RunDir  # the run that will be written (a new one for --fork)
    source: RunDir  # the run the checkpoint comes from
    config: TrainConfig  # with the new segment, if any
    record: dict
    epoch: int  # the epoch of the checkpoint it starts from
    dataset: DatasetInfo
    strategy: str
    fork: str | None
    branches: bool  # epochs after ``epoch`` exist and will be kept as a branch
    segment: dict | None
    rules: dict  # the plateau and early-stopping rules as the checkpoint left them
    data_dir: object = None  # as given (--data-dir), for the commands printed

    @property
    def tracking_off(self) -> str:
        """This resume without MLflow, as a command (the hint when its store refuses)."""
        changed = self.segment or {}
        return "resume without tracking: " + command(
            "resume",
            "--run",
            self.source.path.resolve(),
            "--epoch",
            self.epoch,
            *(("--lr", changed["lr"]) if changed.get("lr") is not None else ()),
            *(("--epochs", changed["epochs"]) if changed.get("epochs") is not None else ()),
            *(("--fork", self.fork) if self.fork is not None else ()),
            *(("--data-dir", Path(self.data_dir).resolve()) if self.data_dir is not None else ()),
            *(("--strategy", self.strategy) if self.strategy != "auto" else ()),
            "--no-mlflow",
        )

    @property
    def mlflow_run(self) -> dict | None:
        """The MLflow run this line goes on with: the run's own, unless it branches or forks (the
        epochs left behind keep it; this line gets one of its own)."""
        return None if self.fork is not None or self.branches else tracking.mlflow_run_of(self.record)


def plan_resume(
    run: str | None = None,
    *,
    runs_dir=None,
    data_dir=None,
    epoch: int | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    fork: str | None = None,
    strategy: str = "auto",
    mlflow: bool | None = None,
) -> ResumePlan:
    """``mlflow``: turn MLflow tracking on or off from here (None: as the run had it)."""
    check_strategy(strategy)
    rd = find_run(run, runs_dir)
    record = rd.config()
    config = rd.options()
    if mlflow is not None:
        config = replace(config, mlflow=mlflow)
    config.validate()  # a damaged or edited config.json is answered here, before Keras
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise RunError(f"`lr` must be a finite number > 0. Received: lr={lr}")
    if epochs is not None and epochs < 1:
        raise RunError(f"`epochs` must be >= 1. Received: epochs={epochs}")
    info = open_run_dataset(record, data_dir)
    checkpoints = rd.checkpoints()
    if not checkpoints:
        raise RunError(
            f"Run {rd.path} has no checkpoint: it stopped before its first epoch ended",
            hint=f"start it again with: {start_again_command(rd, info.path)}",
        )
    epoch = max(checkpoints) if epoch is None else epoch
    rd.checkpoint(epoch)  # an epoch without a checkpoint: the error lists those that have one
    later = any(e > epoch for e in checkpoints) or any(r["epoch"] > epoch for r in rd.history())
    # a change made at this very epoch belongs to the line being continued, unless epochs after it
    # exist (then it was that later line's, which goes to a branch): a resume stopped before its
    # first epoch ended keeps its --lr/--epochs when resumed again
    prior = config.segments_before(epoch, inclusive=not later)
    segment = None
    if lr is not None or (epochs is not None and epochs != replace(config, segments=prior).total_epochs()):
        segment = {"from_epoch": epoch, "lr": lr, "epochs": epochs}
        prior = (*config.segments_before(epoch), segment)
    config = replace(config, segments=prior)
    total = config.total_epochs()
    if epoch >= total:
        raise RunError(
            f"Run {rd.name} has done epoch {epoch} of {total}",
            hint=f"train it further with: {command('resume', '--run', rd.path.resolve(), '--epochs', total + 10)}",
        )
    if fork is not None:
        paths.check_name(fork, "Run")
        target = RunDir(rd.path.with_name(fork))
        if target.path.exists() or target.path.is_symlink():
            raise RunError(f"--fork {fork}: {target.path} already exists", hint="pick another name")
    else:
        target = rd
    from resnetctl.checkpoints import checkpoint_info
    from resnetctl.training.monitors import saved_rules

    rules = saved_rules(config, checkpoint_info(rd.checkpoint(epoch)), epoch, lr, epochs is not None, rd)
    plan = ResumePlan(
        target, rd, config, record, epoch, info, strategy, fork, later and fork is None, segment, rules, data_dir
    )
    if config.mlflow:  # the store answers and still holds the MLflow run, before Keras and any write
        tracking.check_store(plan.mlflow_run, plan.tracking_off)
    return plan


@dataclass(frozen=True)
class ModelSource:
    """What evaluate, predict and export use: a model file, what its outputs mean, and its run.

    The file is opened when it is resolved, before the seconds a backend takes to import, so a
    run that trains meanwhile and prunes or replaces that checkpoint cannot take it away:
    :meth:`snapshot` copies what was opened."""

    model_path: Path
    label: str  # best, last, epochNNNN, or the file's stem
    run: RunDir | None
    classes: list[str] | None  # None: a bare --model file without --dataset
    image_size: int | None
    dataset: DatasetInfo | None  # opened when asked for (need_dataset) or named
    opened: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.opened is None:
            try:
                object.__setattr__(self, "opened", open(self.model_path, "rb"))  # noqa: SIM115 (held on purpose)
            except OSError as exc:
                raise RunError(f"Cannot read {self.model_path} ({exc.strerror or exc})") from None

    @contextmanager
    def snapshot(self) -> Iterator[Path]:
        """A private copy of the model file as it was when it was resolved."""
        with snapshot_file(self.model_path, self.opened) as copy:
            yield copy


def resolve_model(
    run=None,
    *,
    runs_dir=None,
    checkpoint: str = "best",
    model_path=None,
    dataset=None,
    data_dir=None,
    need_dataset: bool = False,
    need_classes: bool = False,
) -> ModelSource:
    """The one answer to "which checkpoint, and which dataset" for evaluate, predict and export.
    A run's config.json records its classes and image size, so predict works after its dataset
    is gone; evaluate (``need_dataset``) opens the dataset itself."""
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise RunError(f"No model file at {model_path}")
        if model_path.stat().st_size == 0:
            raise RunError(f"{model_path} is empty (0 bytes): not a model file")
        if need_dataset and dataset is None:
            raise RunError("--model needs --dataset NAME to know what to score it on")
        if need_classes and dataset is None:
            raise RunError("--model needs --dataset NAME: the export carries the class names")
        info = open_dataset(dataset, data_dir) if dataset else None
        return ModelSource(
            model_path, model_path.stem, None, info.classes if info else None, info.image_size if info else None, info
        )
    rd = find_run(run, runs_dir)
    config = rd.config()
    path, label = rd.named_checkpoint(checkpoint)
    recorded = config.get("dataset_info") if isinstance(config.get("dataset_info"), dict) else {}
    if dataset or need_dataset or not recorded.get("classes"):
        info = open_dataset(dataset, data_dir) if dataset else open_run_dataset(config, data_dir)
        return ModelSource(path, label, rd, info.classes, info.image_size, info)
    classes = recorded["classes"]
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise RunError(f"{rd.config_path}: dataset_info.classes is not a list of names")
    return ModelSource(path, label, rd, list(classes), int(recorded["image_size"]), None)


def running_note(run: RunDir | None) -> str | None:
    """A reader's note when the run it reads is being trained right now."""
    if run is None:
        return None
    if run.state().get("state") != "running":
        return None
    try:
        done = run.history()[-1]["epoch"] if run.history() else 0
    except RunError:
        done = "?"
    return f"run {run.name} is still training ({done} epochs done when it was read)"


@dataclass(frozen=True)
class EvaluationPlan:
    source: ModelSource
    split: str
    k: int
    tta: str | None
    predictions: object | None  # an outputs.Output for --predict


def plan_evaluate(
    source: ModelSource,
    split: str,
    topk: int | None,
    tta: str | None,
    predict=None,
    force: bool = False,
    as_json: bool = False,
) -> EvaluationPlan:
    """Everything ``evaluate`` can refuse, refused before a model is loaded."""
    from resnetctl.outputs import check_stdout_once, claim

    info = source.dataset
    info.split_path(split)  # an unknown split: one line, with the near miss (validation -> val)
    k = check_topk(topk, info.num_classes)
    check_tta(tta)
    if not info.is_labelled(split) and predict is None:
        raise RunError(
            f"Split {split!r} has no labels to score", hint="write its predictions with --predict FILE instead"
        )
    output = claim(predict, "--predict", force=force, stdout=True) if predict is not None else None
    check_stdout_once(output, as_json)
    return EvaluationPlan(source, split, k, tta, output)


@dataclass(frozen=True)
class PredictPlan:
    source: ModelSource
    files: list[str]
    problems: list[dict]  # paths that matched nothing or can't be opened: reported, not fatal
    topk: int | None
    batch_size: int
    csv: object | None  # an outputs.Output for --csv


def plan_predict(resolve_source, paths: list[str], topk, batch_size: int, csv_path=None, force=False, as_json=False):
    """``predict``: the CSV claimed (first: a CSV that can't be written is the first answer), the
    model resolved (``resolve_source()`` gives its :class:`ModelSource`) and the files found, all
    before a model is loaded."""
    from resnetctl.outputs import check_stdout_once, claim
    from resnetctl.prediction import find_images

    output = claim(csv_path, "--csv", force=force, stdout=True) if csv_path is not None else None
    check_stdout_once(output, as_json)
    source = resolve_source()
    files, problems = find_images(paths)
    if source.classes:
        check_topk(topk, len(source.classes))
    return PredictPlan(source, files, problems, topk, batch_size, output)


@dataclass(frozen=True)
class BuildPlan:
    spec: object  # models.specs.ResNetSpec
    profile: object  # models.profile.Profile
    dataset: DatasetInfo | None
    save: object | None  # an outputs.Output for --save
    options: dict  # what create_model_for gets for --save


def plan_build(
    model: str,
    dataset: str | None = None,
    data_dir=None,
    input_size: int | None = None,
    num_classes: int | None = None,
    shortcut: str | None = None,
    save: Path | None = None,
    force: bool = False,
    **options,
) -> BuildPlan:
    """``build``: the architecture counted from its spec, and ``--save`` claimed (Keras only builds
    the model to save it)."""
    from resnetctl.errors import ModelError
    from resnetctl.models.profile import profile_spec
    from resnetctl.models.specs import spec_with
    from resnetctl.outputs import claim

    spec = spec_with(model, shortcut=shortcut, shortcut_bn=options.get("shortcut_bn"))
    target = None
    if save is not None:
        if save.suffix != ".keras":
            raise ModelError(f"--save must end in .keras. Received: {save}")
        target = claim(save, "--save", force=force)
    info = open_dataset(dataset, data_dir) if dataset else None
    if info is not None:
        input_size, num_classes = info.image_size, info.num_classes
    sizes = {} if info else {"input_size": input_size, "num_classes": num_classes}
    return BuildPlan(
        spec,
        profile_spec(spec, input_size, num_classes),
        info,
        target,
        {"name": model, "shortcut": shortcut, **sizes, **options},
    )


@dataclass(frozen=True)
class SummaryPlan:
    runs: list[RunDir]
    named: bool  # runs were named: one that can't be read is an error, not a skipped line
    plot: object | None  # an outputs.Output for --plot
    runs_dir: Path | None
    study: Path | None = None  # a tune study's folder was named: its trials, best first


def plan_summary(runs: list[str] | None, runs_dir=None, plot: Path | None = None, force: bool = False) -> SummaryPlan:
    """The runs named (or every run of the runs dir). A folder that is not a run but holds runs
    (a ``tune`` study's, RUNS/STUDY/tNNNN) stands for its runs: its trials, ranked best first."""
    from resnetctl.plots import check_plot_path
    from resnetctl.runs import list_runs

    output = check_plot_path(plot, force) if plot is not None else None
    if not runs:
        return SummaryPlan(list_runs(runs_dir), False, output, runs_dir)
    study, trials = _study_trials(runs[0], runs_dir) if len(runs) == 1 else (None, [])
    found = trials or [find_run(r, runs_dir) for r in runs]
    return SummaryPlan(found, True, output, runs_dir, study)


def _study_trials(name: str, runs_dir) -> tuple[Path | None, list[RunDir]]:
    """``name`` as a folder (a path, or a name under the runs dir) that is not a run, and the runs
    in it; (None, []) when there is no such folder or it holds no run."""
    from resnetctl.runs import list_runs

    for candidate in (Path(name).expanduser(), paths.runs_dir(runs_dir) / name):
        if candidate.is_dir() and not RunDir(candidate).is_run():
            trials = list_runs(candidate)
            if trials:
                return candidate, trials
    return None, []


@dataclass(frozen=True)
class LrFindPlan:
    """``lr-find``: the run's settings as ``train`` would resolve them (the same model, augmentation,
    optimizer and loss), the sweep, the picture it draws, and the ``train`` command it hands back."""

    config: TrainConfig  # resolved as train resolves it; one optimizer step per compiled call
    dataset: DatasetInfo
    steps: int
    start_lr: float
    end_lr: float
    plot: object | None  # an outputs.Output for --plot
    train_words: tuple[str, ...]  # train's arguments as given here (no --lr)
    rule: str = LR_FIND_RULE

    def train_command(self, lr: float) -> str:
        """The ``train`` command that uses rate ``lr`` with every setting given to ``lr-find``."""
        return command("train", *self.train_words, "--lr", f"{lr:.3g}")


def plan_lr_find(
    model: str | None,
    config_file=None,
    recipe: str | None = None,
    flags: dict | None = None,
    *,
    steps: int = LR_FIND_STEPS,
    start_lr: float = LR_FIND_START,
    end_lr: float = LR_FIND_END,
    plot=None,
    force: bool = False,
    rule: str = LR_FIND_RULE,
) -> LrFindPlan:
    """Everything ``lr-find`` can refuse, refused before Keras: the train options (as ``train``
    checks them), the sweep's range and length, the dataset, the picture's path."""
    from resnetctl.training.config import flag_words
    from resnetctl.training.settings import config_from_flags

    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    if "lr" in flags:
        raise RunError("lr-find sweeps the rate itself: leave out --lr", hint="set the sweep with --start-lr/--end-lr")
    if not (math.isfinite(start_lr) and math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise RunError(f"--start-lr and --end-lr must satisfy 0 < start < end. Received: {start_lr}, {end_lr}")
    if steps < 10:
        raise RunError(f"--steps must be >= 10 (the smoothing needs a few). Received: steps={steps}")
    if rule not in LR_FIND_RULES:
        raise RunError(f"Unknown rule {rule!r}", hint=f"use one of {', '.join(LR_FIND_RULES)}")
    output = None
    if plot is not None:
        from resnetctl.plots import check_plot_path

        output = check_plot_path(Path(plot), force)
    config = config_from_flags(model, config_file, flags, recipe)
    if config.batch_size == AUTO:
        raise RunError(
            "lr-find sweeps at one batch size: give --batch-size N",
            hint="`resnetctl train ... --batch-size auto --dry-run` shows the batch auto finds",
        )
    info = open_dataset(config.dataset, config.data_dir)
    resolved = replace(config.resolved(info), steps_per_execution=1)
    words = (
        *((model,) if model else ()),
        *(("--recipe", recipe) if recipe else ()),
        *(("--config", str(Path(config_file).resolve())) if config_file is not None else ()),
        *flag_words(flags),
    )
    return LrFindPlan(resolved, info, steps, start_lr, end_lr, output, words, rule)

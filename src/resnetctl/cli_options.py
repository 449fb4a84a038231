"""The command line's option groups, declared once: the folders, the model a reader reads
(evaluate, predict and export share six options), the output switches, and train's options,
generated from :class:`~resnetctl.training.config.TrainConfig`'s declarations."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from resnetctl.paths import DATA_DIR_ENV, DEFAULT_RUNS_DIR, RUNS_DIR_ENV

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        show_envvar=True,
        show_default="the per-user data folder",
        help="Where datasets live.",
    ),
]
RunsDir = Annotated[
    Path | None,
    typer.Option(
        "--runs-dir",
        envvar=RUNS_DIR_ENV,
        show_envvar=True,
        show_default=f"./{DEFAULT_RUNS_DIR}",
        help="Where runs live.",
    ),
]
RunOpt = Annotated[str | None, typer.Option("--run", show_default="the latest run", help="Run name or path.")]
CheckpointOpt = Annotated[str, typer.Option(help="best | last | an epoch number.")]
ModelFileOpt = Annotated[
    Path | None,
    typer.Option("--model", help="Any .keras file from this tool instead of a run (--dataset says what it was for)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, nothing else (docs/json.md).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file of that name.")]
StrategyOpt = Annotated[
    str,
    typer.Option(
        help="auto | none | mirrored | multi-worker. auto: multi-worker when TF_CONFIG names several workers "
        "(JAX: KERAS_DISTRIBUTION_NUM_PROCESSES > 1), else every local GPU (mirrored) when there are several, "
        "else one device."
    ),
]


ModelArg = Annotated[
    str | None,
    typer.Argument(help="Model name, e.g. resnet56 (see `build --list`).", show_default="--recipe's or --config's"),
]
# train's own options (every other one is generated from TrainConfig: see with_train_options)
RecipeOpt = Annotated[
    str | None,
    typer.Option(
        help="A published recipe by name: fills every setting; --config and flags override it "
        "(`--recipe list` shows them).",
        show_default="none",
    ),
]
ConfigFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A run's config.json (or a JSON object of its keys) to train again, its resume changes "
        "included; flags given here override it.",
    ),
]
# build's architecture flags (train's come from TrainConfig)
ShortcutOpt = Annotated[
    str | None, typer.Option(help="A | B | avgpool.", show_default="the model's (CIFAR ResNets: A)")
]
ShortcutBnOpt = Annotated[
    bool | None, typer.Option("--shortcut-bn/--no-shortcut-bn", help="A BN after a projection shortcut.")
]
ZeroInitLastOpt = Annotated[bool, typer.Option("--zero-init-last", help="Start each residual branch at zero (--save).")]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the plan (every setting resolved), the model and the dataset; train nothing."
    ),
]


ResumeMlflowOpt = Annotated[
    bool | None,
    typer.Option(
        "--mlflow/--no-mlflow",
        help="Log to MLflow from here on, or go on without it (its MLflow run is kept in config.json).",
        show_default="as the run did",
    ),
]

# lr-find, tune and train --seeds
SeedsOpt = Annotated[
    int | None,
    typer.Option(
        help="Train N sibling runs RUN-sS with seeds S = --seed .. --seed+N-1; summary shows their mean and "
        "95% interval.",
        show_default="one run",
    ),
]
SweepStepsOpt = Annotated[int, typer.Option(help="Optimizer steps of the sweep at most (fastai's num_it).")]
SweepStartOpt = Annotated[float, typer.Option(help="The rate of the first step.")]
SweepEndOpt = Annotated[float, typer.Option(help="The rate of the last step.")]
SweepPlotOpt = Annotated[
    Path | None,
    typer.Option(help="Draw the loss against the rate (log scale) with the suggestion (.png, .svg, .pdf)."),
]
SweepRuleOpt = Annotated[
    str,
    typer.Option(
        help="peak: half the rate at the lowest smoothed loss | valley: fastai's default | minimum/10: fastai's "
        "lr_min (docs/training.md)."
    ),
]
PrunerOpt = Annotated[str, typer.Option(help="median (stop a trial below the median at an epoch) | none.")]
StudyOpt = Annotated[
    str | None, typer.Option(help="The study's name; its trials are the runs RUNS/STUDY/t0000, t0001, ...")
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        help="Optuna's storage, any SQLAlchemy URL: processes (and hosts) naming one storage and study share "
        "its trials.",
        show_default="sqlite:///RUNS/STUDY/optuna.db",
    ),
]
TrialsOpt = Annotated[
    int | None,
    typer.Option(help="Trials of the study in all (every process together).", show_default="the study's"),
]
SpaceOpt = Annotated[
    Path | None,
    typer.Option(help='A JSON file of the space: {"lr": "0.01:1", "schedule": ["poly", "cosine"], "epochs": 5}.'),
]
TuneResumeOpt = Annotated[
    bool,
    typer.Option("--resume", help="Continue the study with its own settings, taking over trials whose process died."),
]
TuneFromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Start every trial as a fork of this run (its model and settings) at --epoch, so a trial trains only "
        "the epochs after it; searches --lr and --epochs.",
        show_default="trials from scratch",
    ),
]
TuneEpochOpt = Annotated[
    int | None,
    typer.Option("--epoch", help="The epoch of --from's checkpoint the trials fork at.", show_default="its latest"),
]
ShowStudyOpt = Annotated[
    bool, typer.Option("--show", help="List the study's trials best first, and the train command of the best.")
]


@dataclass(frozen=True)
class ModelChoice:
    """The model a reader command reads, as its options named it (resolved by
    :func:`resnetctl.plan.resolve_model`)."""

    run: str | None
    runs_dir: Path | None
    checkpoint: str
    model: Path | None
    dataset: str | None
    data_dir: Path | None

    def resolve(self, **needs):
        from resnetctl.plan import resolve_model

        return resolve_model(
            self.run,
            runs_dir=self.runs_dir,
            checkpoint=self.checkpoint,
            model_path=self.model,
            dataset=self.dataset,
            data_dir=self.data_dir,
            **needs,
        )


def _model_parameters(dataset_help: str) -> list[inspect.Parameter]:
    """The six options that name the model a reader command reads."""

    def option(name, default, annotation):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    dataset = Annotated[str | None, typer.Option(help=dataset_help, show_default="the run's")]
    return [
        option("run", None, RunOpt),
        option("runs_dir", None, RunsDir),
        option("checkpoint", "best", CheckpointOpt),
        option("model", None, ModelFileOpt),
        option("dataset", None, dataset),
        option("data_dir", None, DataDir),
    ]


def with_model_choice(dataset_help: str):
    """Give a command the six model options (``--run``, ``--runs-dir``, ``--checkpoint``,
    ``--model``, ``--dataset`` with ``dataset_help``, ``--data-dir``); it receives them as one
    ``source: ModelChoice`` parameter."""

    def decorate(command):
        own = [p for name, p in inspect.signature(command, eval_str=True).parameters.items() if name != "source"]
        shared = _model_parameters(dataset_help)
        names = [p.name for p in shared]

        def wrapper(**kwargs):
            return command(source=ModelChoice(*(kwargs.pop(n) for n in names)), **kwargs)

        parameters = [*shared, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own)]
        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        wrapper.__doc__, wrapper.__name__ = command.__doc__, command.__name__
        return wrapper

    return decorate


def _train_option(f, searched: frozenset = frozenset()) -> inspect.Parameter:
    """A Typer option made from a TrainConfig field's declaration (its help, default, flag); one of
    ``searched`` takes text (tune: a value, a range or a list, read by ``resnetctl.tuning``)."""
    from resnetctl.training.config import option_flag, option_kind

    meta = f.metadata
    base, _ = option_kind(f)
    decls = [option_flag(f)]
    if base is bool:
        kind = bool
    elif typing.get_origin(base) is tuple or f.name in searched or meta.get("words"):
        kind = str  # a list, a number or a word (auto): parsed by config_from_flags; tune's text by tuning
    else:
        kind = base
    default = f.default
    shown = meta.get("show_default") or (
        ("on" if default else "off") if isinstance(default, bool) else str(default) if default is not None else None
    )
    option = typer.Option(
        *decls,
        help=meta["help"],
        show_default=shown if shown is not None else False,
        envvar=meta.get("envvar"),
        show_envvar=bool(meta.get("envvar")),
    )
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def with_train_options(command, searched: frozenset = frozenset(), without: frozenset = frozenset()):
    """Give ``command`` one option per TrainConfig field declared for the command line (those of
    ``searched`` as text, none of ``without``: lr-find sets the rate itself); it receives them in
    ``**options``."""
    from resnetctl.training.config import cli_options

    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = [_train_option(f, searched) for f in cli_options() if f.name not in without]
    command.__signature__ = signature.replace(parameters=fixed + generated)
    command.__annotations__ = {p.name: p.annotation for p in fixed + generated}
    return command

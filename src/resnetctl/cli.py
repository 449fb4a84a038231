"""The ``resnetctl`` command line: parse, call the library, render with ``resnetctl.ui``.

Every mistake that needs no Keras is answered before a backend is imported; heavy imports
happen inside the commands, so ``--help`` and errors are instant.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import os
import sys
import typing
from pathlib import Path
from typing import Annotated

import typer

from resnetctl import __version__, ui
from resnetctl.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, Diverged, ResnetctlError, Stopped
from resnetctl.paths import DATA_DIR_ENV, DEFAULT_RUNS_DIR, RUNS_DIR_ENV
from resnetctl.training.config import LR_FIND_END, LR_FIND_RULE, LR_FIND_START, LR_FIND_STEPS

app = typer.Typer(
    name="resnetctl",
    help="Train the ResNets of the papers from scratch: prepare data, build, train, resume, evaluate, summarise.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # so "[default: ...]" and "[30]" are shown, not eaten as markup
)
console = ui.make_console()
err_console = ui.make_console(stderr=True)
STATE = {"verbose": False}

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
StrategyOpt = Annotated[
    str,
    typer.Option(
        help="auto | none | mirrored | multi-worker. auto: multi-worker when TF_CONFIG names several workers "
        "(JAX: KERAS_DISTRIBUTION_NUM_PROCESSES > 1), else every local GPU (mirrored) when there are several, "
        "else one device."
    ),
]


def _version(value: bool):
    if value:
        console.print(f"resnetctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and backend logs (accepted anywhere on the line).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
):
    STATE["verbose"] = STATE["verbose"] or verbose
    if not STATE["verbose"]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_backend_quietly() -> None:
    """Import Keras (and TensorFlow, which ``keras.utils.set_random_seed`` imports on every backend
    when it is installed) with fd 2 sent to /dev/null: TensorFlow's C++ libraries print start-up
    lines before their logging is set up, which TF_CPP_MIN_LOG_LEVEL can't silence. ``--verbose``
    keeps them; Python errors still show."""
    if STATE["verbose"] or "keras" in sys.modules:
        return
    import importlib.util

    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        if importlib.util.find_spec("tensorflow"):
            import tensorflow  # noqa: F401
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- prepare
@app.command()
def prepare(
    kind: Annotated[str | None, typer.Argument(help="shapes | cifar10 | cifar100 | tiny-imagenet | folder")] = None,
    source: Annotated[Path | None, typer.Option(help="Local archive or folder (no download).")] = None,
    name: Annotated[
        str | None, typer.Option(help="Store under this plain name.", show_default="the kind, or the folder's name")
    ] = None,
    data_dir: DataDir = None,
    val_split: Annotated[float, typer.Option(help="Share of train carved out as a stratified val split.")] = 0.1,
    test_split: Annotated[
        float, typer.Option(help="folder only: share carved out as test when there is no test/.")
    ] = 0.1,
    size: Annotated[
        int | None, typer.Option(help="Resize to NxN (shorter side + centre crop).", show_default="the source's size")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="folder only: a CSV with a file,label header naming the class of each image of --source."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a dataset of that name made by resnetctl.")] = False,
    checksum: Annotated[str | None, typer.Option(help="Expected md5 or sha256 of --source.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of the shapes demo.")] = 0,
    list_: Annotated[bool, typer.Option("--list", help="List prepared datasets.")] = False,
    as_json: JsonOpt = False,
):
    """Turn an official archive, a folder of images, or the built-in demo into HDF5.

    A folder may hold class folders, split folders (train/ val|validation/ test/, each with class
    folders), the unpacked Tiny ImageNet tree, or flat images with --labels FILE.csv."""
    if list_ or kind is None:
        from resnetctl.data.store import list_datasets

        rows = [
            {
                "name": d.name,
                "splits": d.splits,
                "image_size": d.image_size,
                "classes": d.num_classes,
                "path": str(d.path),
            }
            for d in list_datasets(data_dir)
        ]
        return _print_json(rows) if as_json else ui.show_datasets(console, rows)
    from resnetctl.data.prepare import prepare_dataset

    with ui.PrepareBar(err_console if as_json else console) as bar:
        info = prepare_dataset(
            kind,
            source,
            name=name,
            data_dir=data_dir,
            val_split=val_split,
            test_split=test_split,
            size=size,
            force=force,
            seed=seed,
            checksum=checksum,
            progress=bar,
            labels=labels,
        )
    return (
        _print_json({"name": info.name, "path": str(info.path), **info.meta})
        if as_json
        else ui.show_prepared(console, info)
    )


# --------------------------------------------------------------------------- build
@app.command()
def build(
    model: Annotated[str | None, typer.Argument(help="Model name, e.g. resnet56.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Take input size and classes from a prepared dataset.")] = None,
    data_dir: DataDir = None,
    input_size: Annotated[int | None, typer.Option(help="Input height = width.", show_default="the model's")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Number of classes.", show_default="the model's")] = None,
    shortcut: Annotated[
        str | None, typer.Option(help="A | B | avgpool.", show_default="the model's (CIFAR ResNets: A)")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="Decay coefficient on conv/dense kernels (--save).")] = 0.0,
    zero_init_last: Annotated[
        bool, typer.Option("--zero-init-last", help="Start each residual branch at zero (--save).")
    ] = False,
    save: Annotated[Path | None, typer.Option(help="Save the untrained model to PATH.keras.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file at --save.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List every model with depth, parameters, MACs.")] = False,
    as_json: JsonOpt = False,
):
    """Show an architecture by stage with parameters and multiply-accumulates (from the spec;
    Keras is loaded only to --save)."""
    from resnetctl.models import get_spec
    from resnetctl.models.profile import profile_spec, profile_zoo

    if list_ or model is None:
        rows = profile_zoo()
        return _print_json(rows) if as_json else ui.show_zoo(console, rows)
    spec = get_spec(model)
    target = None
    if save is not None:
        from resnetctl.errors import ModelError
        from resnetctl.outputs import claim

        if save.suffix != ".keras":
            raise ModelError(f"--save must end in .keras. Received: {save}")
        target = claim(save, "--save", force=force)
    if shortcut:
        spec = spec.replace(shortcut=shortcut)
    info = None
    if dataset:
        from resnetctl.data.store import open_dataset

        info = open_dataset(dataset, data_dir)
        input_size, num_classes = info.image_size, info.num_classes
    profile = profile_spec(spec, input_size, num_classes)
    if target is not None:
        _save_untrained(target, model, info, input_size, num_classes, shortcut, weight_decay, zero_init_last)
    if as_json:
        return _print_json({**profile.to_dict(), "saved": str(save) if save else None})
    ui.show_model(console, spec, profile, saved=save)


def _save_untrained(target, model, info, input_size, num_classes, shortcut, weight_decay, zero_init_last):
    _import_backend_quietly()
    from resnetctl.models import create_model_for
    from resnetctl.outputs import written

    keras_model = create_model_for(
        model,
        info,
        input_size=None if info else input_size,
        num_classes=None if info else num_classes,
        shortcut=shortcut,
        weight_decay=weight_decay,
        zero_init_last=zero_init_last,
    )
    with written(target, suffix=".keras") as tmp:
        keras_model.save(tmp)


# --------------------------------------------------------------------------- train / resume
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
        kind = str  # a comma-separated list, or a number or a word (auto), parsed by config_from_flags; tune's text
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


def _train(
    model: Annotated[
        str | None,
        typer.Argument(help="Model name, e.g. resnet56 (see `build --list`).", show_default="--recipe's or --config's"),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="A published recipe by name: fills every setting; --config and flags override it "
            "(`--recipe list` shows them).",
            show_default="none",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A run's config.json (or a JSON object of its keys) to train again, its resume changes "
            "included; flags given here override it.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the plan (every setting resolved), the model and the dataset; train nothing."
        ),
    ] = False,
    strategy: StrategyOpt = "auto",
    seeds: Annotated[
        int | None,
        typer.Option(
            help="Train N sibling runs RUN-sS with seeds S = --seed .. --seed+N-1; summary shows their mean and "
            "95% interval.",
            show_default="one run",
        ),
    ] = None,
    **options,
):
    """Train MODEL on a prepared dataset; the run stays resumable at every epoch."""
    from resnetctl.plan import plan_seeds, plan_train
    from resnetctl.training.config import config_from_flags

    if recipe == "list":
        from resnetctl.training.recipes import recipe_rows

        return ui.show_recipes(console, recipe_rows())
    config = config_from_flags(model, config_file, options, recipe)
    if seeds is not None:
        plans = plan_seeds(config, seeds, strategy)
        if dry_run:
            console.print("runs: " + ", ".join(p.run.name for p in plans), highlight=False, markup=False)
        else:
            return _train_seeds(plans)
    plan = plans[0] if seeds is not None else plan_train(config, strategy)
    if dry_run and plan.auto_batch:  # measured now, as train would
        _import_backend_quietly()
        from resnetctl.training.trainer import set_up_backend, settle_batch_size

        set_up_backend(plan.config)
        plan = settle_batch_size(plan)
    if dry_run:
        from resnetctl.models.profile import profile_spec
        from resnetctl.training.recipes import recipe_report

        spec, info = plan.spec(), plan.dataset
        profile = profile_spec(spec, info.image_size, info.num_classes)
        return ui.show_dry_run(console, plan.describe(), spec, profile, info, *recipe_report(plan.config))
    _import_backend_quietly()
    from resnetctl.training.trainer import train as run_training

    ui.show_trained(console, run_training(plan, ui.TrainingDisplay(console)))


def _train_seeds(plans) -> None:
    """``train --seeds N``: the sibling runs one after the other, then what they make together."""
    _import_backend_quietly()
    from resnetctl.reports import run_summary
    from resnetctl.training.trainer import train as run_training

    for plan in plans:
        ui.show_trained(console, run_training(plan, ui.TrainingDisplay(console)))
    ui.show_seed_groups(console, [run_summary(plans[0].run)])


def _with_train_options(command, searched: frozenset = frozenset()):
    """Give ``command`` one option per TrainConfig field declared for the command line (those of
    ``searched`` as text)."""
    from resnetctl.training.config import cli_options

    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = [_train_option(f, searched) for f in cli_options()]
    command.__signature__ = signature.replace(parameters=fixed + generated)
    command.__annotations__ = {p.name: p.annotation for p in fixed + generated}
    return command


app.command("train")(_with_train_options(_train))


def _lr_find(
    model: Annotated[
        str | None,
        typer.Argument(help="Model name, e.g. resnet56 (see `build --list`).", show_default="--recipe's or --config's"),
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="A published recipe by name, as for train.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="A run's config.json (or a JSON object of its keys), as for train.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps of the sweep at most (fastai's num_it).")] = LR_FIND_STEPS,
    start_lr: Annotated[float, typer.Option(help="The rate of the first step.")] = LR_FIND_START,
    end_lr: Annotated[float, typer.Option(help="The rate of the last step.")] = LR_FIND_END,
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw the loss against the rate (log scale) with the suggestion (.png, .svg, .pdf)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --plot replace an existing file.")] = False,
    rule: Annotated[
        str,
        typer.Option(
            help="peak: half the rate at the lowest smoothed loss | valley: fastai's default | minimum/10: fastai's "
            "lr_min (docs/training.md)."
        ),
    ] = LR_FIND_RULE,
    as_json: JsonOpt = False,
    **options,
):
    """Sweep the learning rate exponentially over a fresh model (train's model, augmentation and
    compiled step; no run is made) and suggest one, with the train command that uses it. Takes
    train's options: the command it prints repeats them."""
    from resnetctl.plan import plan_lr_find

    plan = plan_lr_find(
        model,
        config_file,
        recipe,
        options,
        steps=steps,
        start_lr=start_lr,
        end_lr=end_lr,
        plot=plot,
        force=force,
        rule=rule,
    )
    _import_backend_quietly()
    from resnetctl.training.lr_find import lr_find

    with ui.SweepBar(err_console) as bar:
        result = lr_find(plan, bar)
    return _print_json(result) if as_json else ui.show_lr_find(console, result)


app.command("lr-find")(_with_train_options(_lr_find))


def _tune(
    model: Annotated[
        str | None,
        typer.Argument(help="Model name, e.g. resnet20.", show_default="the study's (--resume, --show)"),
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="A published recipe by name: the base the search starts from.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="A run's config.json (or a JSON object of its keys) as the base.")
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="The study's name; its trials are the runs RUNS/STUDY/t0000, t0001, ...")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna's storage, any SQLAlchemy URL: processes (and hosts) naming one storage and study share "
            "its trials.",
            show_default="sqlite:///RUNS/STUDY/optuna.db",
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(help="Trials of the study in all (every process together).", show_default="the study's"),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(help='A JSON file of the space: {"lr": "0.01:1", "schedule": ["poly", "cosine"], "epochs": 5}.'),
    ] = None,
    pruner: Annotated[str, typer.Option(help="median (stop a trial below the median at an epoch) | none.")] = "median",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the study with its own settings, taking over trials whose process died."
        ),
    ] = False,
    show: Annotated[
        bool, typer.Option("--show", help="List the study's trials best first, and the train command of the best.")
    ] = False,
    as_json: JsonOpt = False,
    **options,
):
    """Search hyperparameters on Optuna: each train option given a range (--lr 0.01:1) or a list
    (--schedule poly,cosine) is searched, a plain value is fixed; each trial is a run of its own,
    and Optuna's pruner stops the trials that lag at an epoch."""
    from resnetctl.tuning import plan_tune, show_study

    if show:
        report = show_study(study, storage, options.get("runs_dir"))
        return _print_json(report) if as_json else ui.show_study(console, report)
    plan = plan_tune(
        model,
        config_file,
        recipe,
        options,
        study=study,
        storage=storage,
        trials=trials,
        space_file=space,
        pruner=pruner,
        resume=resume,
    )
    _import_backend_quietly()
    from resnetctl.tuning import run_study

    report = run_study(plan, ui.TuneDisplay(err_console if as_json else console))
    return _print_json(report) if as_json else ui.show_study(console, report)


def _searched_options() -> frozenset:
    from resnetctl.training.config import searchable

    return frozenset(searchable())


app.command("tune")(_with_train_options(_tune, _searched_options()))


@app.command()
def resume(
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where the run's dataset is now.", show_default="where the run found it"),
    ] = None,
    epoch: Annotated[
        int | None,
        typer.Option(
            help="Go back to this epoch's checkpoint; the epochs after it are kept as a branch (a run of their own).",
            show_default="the latest",
        ),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Continue with this constant learning rate.", show_default="the run's schedule")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Change the total number of epochs.", show_default="the run's")
    ] = None,
    fork: Annotated[
        str | None,
        typer.Option(help="Start a new run NAME from the checkpoint instead, leaving this run as it is."),
    ] = None,
    strategy: StrategyOpt = "auto",
):
    """Continue a run from a checkpoint, optionally with a new learning rate or length."""
    from resnetctl.plan import plan_resume

    plan = plan_resume(
        run, runs_dir=runs_dir, data_dir=data_dir, epoch=epoch, lr=lr, epochs=epochs, fork=fork, strategy=strategy
    )
    _import_backend_quietly()
    from resnetctl.training.trainer import resume as resume_training

    ui.show_trained(console, resume_training(plan, ui.TrainingDisplay(console)))


# --------------------------------------------------------------------------- evaluate / summary
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file of that name.")]


def _reading(source) -> None:
    """A reader of a run that is training says so (it reads the last finished checkpoint)."""
    from resnetctl.plan import running_note

    note = running_note(source.run)
    if note:
        ui.print_note(err_console, f"{note}; using {source.label} ({source.model_path.name})")


def _console_beside(output, as_json: bool):
    """Where a command renders: stderr when its ``output`` is stdout (``-``), so stdout holds
    that output alone (``| head`` gets pure CSV); ``--json`` can't share stdout with it."""
    if output is None or not output.stdout:
        return console
    if as_json:
        raise ResnetctlError(
            f"{output.what} - and --json would both write to stdout",
            hint=f"give {output.what} a file name, or leave out --json",
        )
    return err_console


def _model_source(ctx: typer.Context, **needs):
    """The model evaluate, predict and export read, from the options they share (``--run``,
    ``--runs-dir``, ``--checkpoint``, ``--model``, ``--dataset``, ``--data-dir``) as parsed."""
    from resnetctl.plan import resolve_model

    p = ctx.params
    return resolve_model(
        p["run"],
        runs_dir=p["runs_dir"],
        checkpoint=p["checkpoint"],
        model_path=p["model"],
        dataset=p["dataset"],
        data_dir=p["data_dir"],
        **needs,
    )


@app.command()
def evaluate(
    ctx: typer.Context,
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    checkpoint: CheckpointOpt = "best",
    model: ModelFileOpt = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset.", show_default="the run's")] = None,
    data_dir: DataDir = None,
    split: Annotated[str, typer.Option(help="test | val | train | unlabelled.")] = "test",
    topk: Annotated[int | None, typer.Option(help="K of rank-K accuracy.", show_default="min(5, classes)")] = None,
    tta: Annotated[str | None, typer.Option(help="Test-time augmentation: flip.")] = None,
    predict: Annotated[
        Path | None,
        typer.Option(
            help="Write top-K predictions per image (Tiny ImageNet challenge format); - writes them to stdout "
            "(the report then goes to stderr)."
        ),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Rank-1 and rank-K accuracy, loss, per-class accuracy and the confusion matrix."""
    from resnetctl.plan import plan_evaluate

    source = _model_source(ctx, need_dataset=True)
    request = plan_evaluate(source, split, topk, tta, predict, force)
    out = _console_beside(request.predictions, as_json)
    _reading(source)
    _import_backend_quietly()
    from resnetctl.evaluation import evaluate as run_evaluation

    r = run_evaluation(request)
    return _print_json(r) if as_json else ui.show_evaluation(out, r)


@app.command()
def predict(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or globs.")],
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    checkpoint: CheckpointOpt = "best",
    model: ModelFileOpt = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset whose classes and size to use.", show_default="the run's")
    ] = None,
    data_dir: DataDir = None,
    topk: Annotated[int | None, typer.Option(help="Classes shown per image.", show_default="min(5, classes)")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.", min=1)] = 64,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Also write a CSV row per image to FILE; - writes it to stdout (the table then goes to stderr).",
        ),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Classify image files, decoded and resized exactly as prepare did for the model's dataset."""
    import logging

    from resnetctl.errors import RunError
    from resnetctl.outputs import claim
    from resnetctl.prediction import classify, find_images, load, write_csv

    csv_output = claim(csv_path, "--csv", force=force, stdout=True) if csv_path is not None else None
    out = _console_beside(csv_output, as_json)
    source = _model_source(ctx)
    files, problems = find_images(paths)
    _reading(source)
    _import_backend_quietly()
    keras_model, classes = load(source)
    results = problems + list(classify(keras_model, classes, files, topk, batch_size))
    classified = [r for r in results if "predictions" in r]
    if csv_output is not None and classified:
        write_csv(csv_output, results, len(classified[0]["predictions"]))
    if as_json:
        _print_json(results)
    else:
        ui.show_predictions(out, results, source.label)
    skipped = len(results) - len(classified)
    if skipped:
        logging.getLogger("resnetctl").warning(
            "%d of %d skipped (%s)", skipped, len(results), '"error" in the JSON' if as_json else "listed above"
        )
    if not classified:
        raise RunError("No image could be classified")


@app.command("export")
def export_model(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="File to write (a folder for saved-model).")],
    fmt: Annotated[str, typer.Option("--format", help="keras | saved-model | tflite | onnx.")] = "keras",
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    checkpoint: CheckpointOpt = "best",
    model: ModelFileOpt = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset whose classes and test images to use.", show_default="the run's")
    ] = None,
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export at --out.")] = False,
    as_json: JsonOpt = False,
):
    """Export for deployment (uint8 RGB in, probabilities out, labels beside), checked by its own runtime."""
    from resnetctl.export import check_request

    request = check_request(fmt, out, force)
    source = _model_source(ctx, need_classes=True)
    _reading(source)
    _import_backend_quietly()
    from resnetctl.export import check_images, export

    images, checked_on = check_images(source, dataset, data_dir)
    result = {"checkpoint": str(source.model_path), "checked_on": checked_on, **export(source, request, images)}
    return _print_json(result) if as_json else ui.show_export(console, result)


@app.command()
def summary(
    runs: Annotated[list[str] | None, typer.Argument(help="Run names or paths.", show_default="every run")] = None,
    runs_dir: RunsDir = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show a run's epochs as they finish, until it stops.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also draw the runs' curves in one picture (.png, .svg, .pdf): loss (log scale), accuracy and "
            "learning rate, a colour a run, train solid, validation dashed."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --plot replace an existing file.")] = False,
    as_json: JsonOpt = False,
):
    """One run in depth (with its lineage), or several side by side (--json: always a list)."""
    import logging

    from resnetctl.errors import RunError
    from resnetctl.reports import follow_run, run_summary
    from resnetctl.runs import find_run, list_runs

    if plot is not None:
        from resnetctl.plots import check_plot_path

        plot = check_plot_path(plot, force)
    if follow:
        found = find_run(runs[0] if runs else None, runs_dir)
        for row in follow_run(found):
            if as_json:
                sys.stdout.write(json.dumps(row) + "\n")
                sys.stdout.flush()
            else:
                ui.show_followed(console, row)
        return None
    found = [find_run(r, runs_dir) for r in runs] if runs else list_runs(runs_dir)
    rows, found_ok = [], []
    for r in found:
        try:
            rows.append(run_summary(r))
            found_ok.append(r)
        except RunError as exc:
            if runs:
                raise
            logging.getLogger("resnetctl").warning("skipped %s", exc.message)
    if not rows:
        from resnetctl.paths import runs_dir as runs_root
        from resnetctl.runs import command

        hint = "start one, e.g.: " + command("train", "resnet20", "--runs-dir", runs_root(runs_dir).resolve())
        raise RunError("No runs to summarise", hint=hint)
    if plot is not None:
        from resnetctl.plots import plot_runs

        plot_runs([(row["run"], run.history()) for row, run in zip(rows, found_ok, strict=True)], plot)
    if as_json:
        return _print_json(rows)
    if plot is not None:
        console.print(f"curves of {len(rows)} run(s): {plot.path}", highlight=False)
    return ui.show_run(console, rows[0]) if len(rows) == 1 else ui.show_runs(console, rows)


@app.command()
def diagnose(
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    as_json: JsonOpt = False,
):
    """Read a run's history and say what it sees (diverging, over-fitting, on a plateau, still
    improving), with the resume, fork or train command that acts on it."""
    from resnetctl.diagnose import diagnose_run

    result = diagnose_run(run, runs_dir)
    return _print_json(result) if as_json else ui.show_diagnosis(console, result)


def _take_verbose(argv: list[str]) -> list[str]:
    """``--verbose``/``-v`` anywhere before ``--`` counts, not only before the command."""
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut:]
    else:
        head, tail = argv, []
    kept = [a for a in head if a not in ("--verbose", "-v")]
    if len(kept) != len(head):
        STATE["verbose"] = True
    return kept + tail


def _exit(code: int) -> None:
    """Exit with ``code``. When a command failed with worker threads still alive (the streamed
    HDF5 readers of an interrupted epoch, TensorFlow's pools), skip the interpreter's teardown:
    a daemon thread frozen while holding h5py's lock made that teardown hang forever."""
    import threading

    if code and threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _closed_pipe() -> None:
    """End quietly with 0: what was printed reached a reader that stopped reading (``| head``)."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    os._exit(0)


def main() -> None:
    """Entry point: every failure becomes one line and a documented exit code (docs/training.md)."""
    from resnetctl.signals import RECEIVED, raise_on_signals

    ui.show_library_warnings(err_console)
    raise_on_signals()
    args = _take_verbose(sys.argv[1:])
    try:
        code = app(args=args, standalone_mode=False)  # Typer returns Exit codes here
        if code == EXIT_INTERRUPTED:  # Typer's answer to a KeyboardInterrupt: exit 130, silently
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            _exit(code)
    except Stopped as exc:  # a stop asked for (Ctrl+C, SIGTERM) is not an error; divergence is
        (ui.print_error if isinstance(exc, Diverged) else ui.print_stopped)(err_console, exc.message, exc.hint)
        _exit(exc.exit_code)
    except ResnetctlError as exc:
        if STATE["verbose"]:
            err_console.print_exception()
        ui.print_error(err_console, exc.message, exc.hint)
        _exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        name = getattr(exc, "signal_name", None) or RECEIVED["signal"] or "SIGINT"
        ui.print_stopped(err_console, f"stopped by {name}; nothing half-written was kept")
        _exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # `resnetctl summary | head`: the reader has all it wanted
        _closed_pipe()
    except SystemExit as exc:  # Typer turns a closed pipe into exit 1 itself
        if isinstance(exc.__context__, OSError) and exc.__context__.errno == errno.EPIPE:
            _closed_pipe()
        raise
    except Exception as exc:
        # usage errors; matched by shape, as Typer >= 0.29 vendors Click and older Typer uses Click's own
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        if STATE["verbose"]:
            err_console.print_exception()
        if isinstance(exc, OSError):
            ui.print_error(
                err_console,
                f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                "check the path and its permissions; --verbose shows where it happened",
            )
            _exit(1)
        ui.print_error(
            err_console,
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in resnetctl; please report it with the output of --verbose",
        )
        _exit(EXIT_INTERNAL)

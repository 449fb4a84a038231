"""The ``resnetctl`` command line: each command parses its options, makes its plan (no Keras:
every mistake is answered before a backend is imported), runs it in the library and renders
the result with :mod:`resnetctl.ui`. Shared options are declared in :mod:`resnetctl.cli_options`;
the process around a command (consoles, ``--verbose``, exit codes) is :mod:`resnetctl.cli_runtime`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from resnetctl import __version__, ui
from resnetctl.cli_options import (
    ConfigFileOpt,
    DataDir,
    DryRunOpt,
    ForceOpt,
    JsonOpt,
    ModelArg,
    ModelChoice,
    PrunerOpt,
    RecipeOpt,
    ResumeMlflowOpt,
    RunOpt,
    RunsDir,
    SeedsOpt,
    ShortcutBnOpt,
    ShortcutOpt,
    ShowStudyOpt,
    SpaceOpt,
    StorageOpt,
    StrategyOpt,
    StudyOpt,
    SweepEndOpt,
    SweepPlotOpt,
    SweepRuleOpt,
    SweepStartOpt,
    SweepStepsOpt,
    TrialsOpt,
    TuneEpochOpt,
    TuneFromOpt,
    TuneResumeOpt,
    ZeroInitLastOpt,
    with_model_choice,
    with_train_options,
)
from resnetctl.cli_runtime import (
    console,
    console_beside,
    err_console,
    import_backend_quietly,
    print_json,
    reading_note,
    set_verbose,
)
from resnetctl.training.config import LR_FIND_END, LR_FIND_RULE, LR_FIND_START, LR_FIND_STEPS

app = typer.Typer(
    name="resnetctl",
    help="Train the ResNets of the papers from scratch: prepare data, build, train, resume, evaluate, summarise.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # so "[default: ...]" and "[30]" are shown, not eaten as markup
)


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
    set_verbose(verbose)


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
        from resnetctl.data.store import dataset_rows

        rows = dataset_rows(data_dir)
        return print_json(rows) if as_json else ui.show_datasets(console, rows)
    from resnetctl.data.prepare import prepare_dataset

    with ui.PrepareBar(err_console if as_json else console) as bar:
        info = prepare_dataset(
            kind, source, name=name, data_dir=data_dir, val_split=val_split, test_split=test_split, size=size,
            force=force, seed=seed, checksum=checksum, progress=bar, labels=labels,
        )  # fmt: skip
    if as_json:
        return print_json({"name": info.name, "path": str(info.path), **info.meta})
    ui.show_prepared(console, info)


@app.command()
def build(
    model: Annotated[str | None, typer.Argument(help="Model name, e.g. resnet56.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Take input size and classes from a prepared dataset.")] = None,
    data_dir: DataDir = None,
    input_size: Annotated[int | None, typer.Option(help="Input height = width.", show_default="the model's")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Number of classes.", show_default="the model's")] = None,
    shortcut: ShortcutOpt = None,
    shortcut_bn: ShortcutBnOpt = None,
    weight_decay: Annotated[float, typer.Option(help="Decay coefficient on conv/dense kernels (--save).")] = 0.0,
    zero_init_last: ZeroInitLastOpt = False,
    save: Annotated[Path | None, typer.Option(help="Save the untrained model to PATH.keras.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file at --save.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List every model with depth, parameters, MACs.")] = False,
    as_json: JsonOpt = False,
):
    """Show an architecture by stage with parameters and multiply-accumulates (from the spec;
    Keras is loaded only to --save)."""
    if list_ or model is None:
        from resnetctl.models.profile import profile_zoo

        rows = profile_zoo()
        return print_json(rows) if as_json else ui.show_zoo(console, rows)
    from resnetctl.plan import plan_build

    plan = plan_build(
        model, dataset, data_dir, input_size, num_classes, shortcut, save, force,
        weight_decay=weight_decay, zero_init_last=zero_init_last, shortcut_bn=shortcut_bn,
    )  # fmt: skip
    if plan.save is not None:
        import_backend_quietly()
        from resnetctl.export import save_untrained

        save_untrained(plan)
    if as_json:
        return print_json({**plan.profile.to_dict(), "saved": str(save) if save else None})
    ui.show_model(console, plan.spec, plan.profile, saved=save)


@with_train_options
def _train(
    model: ModelArg = None,
    recipe: RecipeOpt = None,
    config_file: ConfigFileOpt = None,
    dry_run: DryRunOpt = False,
    strategy: StrategyOpt = "auto",
    seeds: SeedsOpt = None,
    **options,
):
    """Train MODEL on a prepared dataset; the run stays resumable at every epoch."""
    from resnetctl.plan import plan_seeds, plan_train
    from resnetctl.training.settings import config_from_flags

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
        import_backend_quietly()
        from resnetctl.training.trainer import set_up_backend, settle_batch_size

        set_up_backend(plan.config)
        plan = settle_batch_size(plan)
    if dry_run:
        from resnetctl.training.recipes import recipe_report

        return ui.show_dry_run(console, plan.describe(), *plan.model_profile(), *recipe_report(plan.config))
    import_backend_quietly()
    from resnetctl.training.trainer import train

    ui.show_trained(console, train(plan, ui.TrainingDisplay(console)))


def _train_seeds(plans) -> None:
    """``train --seeds N``: the sibling runs one after the other, then what they make together."""
    import_backend_quietly()
    from resnetctl.reports import run_summary
    from resnetctl.training.trainer import train as run_training

    for plan in plans:
        ui.show_trained(console, run_training(plan, ui.TrainingDisplay(console)))
    ui.show_seed_groups(console, [run_summary(plans[0].run)])


app.command("train")(_train)


def _lr_find(
    model: ModelArg = None,
    recipe: RecipeOpt = None,
    config_file: ConfigFileOpt = None,
    steps: SweepStepsOpt = LR_FIND_STEPS,
    start_lr: SweepStartOpt = LR_FIND_START,
    end_lr: SweepEndOpt = LR_FIND_END,
    plot: SweepPlotOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Let --plot replace an existing file.")] = False,
    rule: SweepRuleOpt = LR_FIND_RULE,
    as_json: JsonOpt = False,
    **options,
):
    """Sweep the learning rate exponentially over a fresh model (train's model, augmentation and
    compiled step; no run is made) and suggest one, with the train command that uses it. Takes
    train's options: the command it prints repeats them."""
    from resnetctl.plan import plan_lr_find

    plan = plan_lr_find(
        model, config_file, recipe, options, steps=steps, start_lr=start_lr, end_lr=end_lr, plot=plot, force=force,
        rule=rule,
    )  # fmt: skip
    import_backend_quietly()
    from resnetctl.training.lr_find import lr_find

    with ui.SweepBar(err_console) as bar:
        result = lr_find(plan, bar)
    return print_json(result) if as_json else ui.show_lr_find(console, result)


app.command("lr-find")(with_train_options(_lr_find, without=frozenset({"lr"})))


def _tune(
    model: Annotated[
        str | None,
        typer.Argument(help="Model name, e.g. resnet20.", show_default="the study's (--resume, --show)"),
    ] = None,
    recipe: RecipeOpt = None,
    config_file: ConfigFileOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    trials: TrialsOpt = None,
    space: SpaceOpt = None,
    pruner: PrunerOpt = "median",
    resume: TuneResumeOpt = False,
    from_run: TuneFromOpt = None,
    epoch: TuneEpochOpt = None,
    show: ShowStudyOpt = False,
    as_json: JsonOpt = False,
    **options,
):
    """Search hyperparameters on Optuna: each train option given a range (--lr 0.01:1) or a list
    (--schedule poly,cosine) is searched, a plain value is fixed; each trial is a run of its own,
    and Optuna's pruner stops the trials that lag at an epoch. With --from RUN --epoch N each trial
    forks RUN at epoch N instead (the babysitter's "which rate from here?")."""
    from resnetctl.tuning import plan_tune, show_study

    if show:
        report = show_study(study, storage, options.get("runs_dir"), forking=from_run is not None or epoch is not None)
        return print_json(report) if as_json else ui.show_study(console, report)
    plan = plan_tune(
        model, config_file, recipe, options, study=study, storage=storage, trials=trials, space_file=space,
        pruner=pruner, resume=resume, from_run=from_run, from_epoch=epoch,
    )  # fmt: skip
    import_backend_quietly()
    from resnetctl.tuning import run_study

    report = run_study(plan, ui.TuneDisplay(err_console if as_json else console))
    return print_json(report) if as_json else ui.show_study(console, report)


def _searched_options() -> frozenset:
    from resnetctl.training.config import searchable

    return frozenset(searchable())


app.command("tune")(with_train_options(_tune, _searched_options()))


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
    mlflow: ResumeMlflowOpt = None,
):
    """Continue a run from a checkpoint, optionally with a new learning rate or length."""
    from resnetctl.plan import plan_resume

    plan = plan_resume(
        run, runs_dir=runs_dir, data_dir=data_dir, epoch=epoch, lr=lr, epochs=epochs, fork=fork, strategy=strategy,
        mlflow=mlflow,
    )  # fmt: skip
    import_backend_quietly()
    from resnetctl.training.trainer import resume as resume_training

    ui.show_trained(console, resume_training(plan, ui.TrainingDisplay(console)))


@app.command()
@with_model_choice("Dataset.")
def evaluate(
    source: ModelChoice,
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

    model = source.resolve(need_dataset=True)
    plan = plan_evaluate(model, split, topk, tta, predict, force, as_json)
    out = console_beside(plan.predictions)
    reading_note(model)
    import_backend_quietly()
    from resnetctl.evaluation import evaluate as run_evaluation

    result = run_evaluation(plan)
    return print_json(result) if as_json else ui.show_evaluation(out, result)


@app.command()
@with_model_choice("Dataset whose classes and size to use.")
def predict(
    source: ModelChoice,
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or globs.")],
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
    from resnetctl.plan import plan_predict

    plan = plan_predict(source.resolve, paths, topk, batch_size, csv_path, force, as_json)
    out = console_beside(plan.csv)
    reading_note(plan.source)
    import_backend_quietly()
    from resnetctl.prediction import check_classified
    from resnetctl.prediction import predict as run_prediction

    results = run_prediction(plan)
    print_json(results) if as_json else ui.show_predictions(out, results, plan.source.label)
    check_classified(results, '"error" in the JSON' if as_json else "listed above")


@app.command("export")
@with_model_choice("Dataset whose classes and test images to use.")
def export_model(
    source: ModelChoice,
    out: Annotated[Path, typer.Option("--out", help="File to write (a folder for saved-model).")],
    fmt: Annotated[str, typer.Option("--format", help="keras | saved-model | tflite | onnx.")] = "keras",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export at --out.")] = False,
    as_json: JsonOpt = False,
):
    """Export for deployment (uint8 RGB in, probabilities out, labels beside), checked by its own runtime."""
    from resnetctl.export import check_request

    request = check_request(fmt, out, force)
    model = source.resolve(need_classes=True)
    request = request.with_classes(model.classes)
    reading_note(model)
    import_backend_quietly()
    from resnetctl.export import check_images, export

    images, checked_on = check_images(model, source.dataset, source.data_dir)
    result = {"checkpoint": str(model.model_path), "checked_on": checked_on, **export(model, request, images)}
    return print_json(result) if as_json else ui.show_export(console, result)


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
    from resnetctl.reports import follow_run, summarise

    if follow:
        from resnetctl.runs import find_run

        for row in follow_run(find_run(runs[0] if runs else None, runs_dir)):
            if as_json:
                sys.stdout.write(json.dumps(row) + "\n")
                sys.stdout.flush()
            else:
                ui.show_followed(console, row)
        return None
    from resnetctl.plan import plan_summary

    plan = plan_summary(runs, runs_dir, plot, force)
    rows = summarise(plan)
    if as_json:
        return print_json(rows)
    if plan.plot is not None:
        console.print(f"curves of {len(rows)} run(s): {plan.plot.path}", highlight=False)
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
    return print_json(result) if as_json else ui.show_diagnosis(console, result)


def main() -> None:
    """Entry point: every failure becomes one line and a documented exit code (docs/training.md)."""
    from resnetctl.cli_runtime import run

    run(app)

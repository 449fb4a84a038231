"""The ``resnetctl`` command line: parse, call the library, render with ``resnetctl.ui``.

Every mistake that needs no Keras is answered before a backend is imported; heavy imports
happen inside the commands, so ``--help`` and errors are instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from resnetctl import __version__, ui
from resnetctl.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, ResnetctlError
from resnetctl.paths import DATA_DIR_ENV, DEFAULT_RUNS_DIR, RUNS_DIR_ENV
from resnetctl.training.config import DEFAULT_BATCH_SIZE_RULE, DEFAULTS, PRECISIONS, SCHEDULES

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
        help="auto | none | mirrored | multi-worker. auto: multi-worker when TF_CONFIG names several workers, "
        "else every local GPU (mirrored) when there are several, else one device."
    ),
]


def _default(field: str) -> str:
    """The help's default for a train option, read from the one place defaults are written."""
    return str(getattr(DEFAULTS, field))


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
    force: Annotated[bool, typer.Option("--force", help="Replace a dataset of that name made by resnetctl.")] = False,
    checksum: Annotated[str | None, typer.Option(help="Expected md5 or sha256 of --source.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of the shapes demo.")] = 0,
    list_: Annotated[bool, typer.Option("--list", help="List prepared datasets.")] = False,
    as_json: JsonOpt = False,
):
    """Turn an official archive, a folder of images, or the built-in demo into HDF5."""
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
    if shortcut:
        spec = spec.replace(shortcut=shortcut)
    info = None
    if dataset:
        from resnetctl.data.store import open_dataset

        info = open_dataset(dataset, data_dir)
        input_size, num_classes = info.image_size, info.num_classes
    profile = profile_spec(spec, input_size, num_classes)
    if save:
        _save_untrained(save, model, info, input_size, num_classes, shortcut, weight_decay, zero_init_last)
    if as_json:
        return _print_json({**profile.to_dict(), "saved": str(save) if save else None})
    ui.show_model(console, spec, profile, saved=save)


def _save_untrained(save: Path, model, info, input_size, num_classes, shortcut, weight_decay, zero_init_last):
    from resnetctl.errors import ModelError
    from resnetctl.paths import check_output_parent

    if save.suffix != ".keras":
        raise ModelError(f"--save must end in .keras. Received: {save}")
    check_output_parent(save, "--save")
    _import_backend_quietly()
    from resnetctl import atomic
    from resnetctl.models import create_model_for

    keras_model = create_model_for(
        model,
        info,
        input_size=None if info else input_size,
        num_classes=None if info else num_classes,
        shortcut=shortcut,
        weight_decay=weight_decay,
        zero_init_last=zero_init_last,
    )
    with atomic.atomic_path(save, suffix=".keras") as tmp:
        keras_model.save(tmp)


# --------------------------------------------------------------------------- train / resume
@app.command()
def train(
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
            help="A run's config.json (or a JSON object of its keys) to train again; flags given here override it.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the resolved config, the model and the dataset; train nothing."),
    ] = False,
    dataset: Annotated[
        str | None, typer.Option(help="Prepared dataset name or path.", show_default=DEFAULTS.dataset)
    ] = None,
    data_dir: DataDir = None,
    epochs: Annotated[int | None, typer.Option(help="Total epochs.", show_default=_default("epochs"))] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Global batch size.", show_default=DEFAULT_BATCH_SIZE_RULE),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.", show_default=_default("lr"))] = None,
    schedule: Annotated[
        str | None, typer.Option(help=" | ".join(SCHEDULES) + ".", show_default=_default("schedule"))
    ] = None,
    power: Annotated[
        float | None, typer.Option(help="poly: lr * (1 - epoch/epochs) ** power.", show_default=_default("power"))
    ] = None,
    milestones: Annotated[str | None, typer.Option(help="step: epochs where lr drops 10x, e.g. 82,123.")] = None,
    warmup_epochs: Annotated[
        float | None, typer.Option(help="Linear warmup from 0 to --lr.", show_default="2, a tenth of shorter runs")
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd (Nesterov momentum 0.9) | adamw.", show_default=_default("optimizer"))
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="Decay coefficient.", show_default=_default("weight_decay"))
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option(show_default=_default("label_smoothing"))] = None,
    augmentation: Annotated[
        str | None,
        typer.Option(
            help="crop-flip | resized-crop-flip | none.", show_default="crop-flip up to 64px, else resized-crop-flip"
        ),
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help=" | ".join(PRECISIONS) + ".", show_default=_default("precision"))
    ] = None,
    jit: Annotated[
        bool | None, typer.Option("--jit/--no-jit", help="XLA compilation.", show_default="Keras decides")
    ] = None,
    seed: Annotated[int | None, typer.Option(show_default=_default("seed"))] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            help="Keep checkpoints/epoch_NNNN.keras every N epochs.", show_default=_default("checkpoint_every")
        ),
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(
            help="Keep only the N newest epoch checkpoints (best.keras and last.keras always stay).",
            show_default="keep all",
        ),
    ] = None,
    clip_norm: Annotated[
        float | None, typer.Option(help="Clip gradients to this global norm.", show_default="no clipping")
    ] = None,
    ema: Annotated[
        float | None,
        typer.Option(
            help="Keep an exponential moving average of the weights with this decay per step (0: off); it is "
            "what validation, the checkpoints, evaluate, predict and export use.",
            show_default="off",
        ),
    ] = None,
    mixup: Annotated[
        float | None,
        typer.Option(help="MixUp with this Beta alpha (e.g. 0.2), in the train step.", show_default="off"),
    ] = None,
    cutmix: Annotated[
        float | None,
        typer.Option(help="CutMix with this Beta alpha (e.g. 1.0), in the train step.", show_default="off"),
    ] = None,
    mix_prob: Annotated[
        float | None,
        typer.Option(help="Share of batches mixed by --mixup/--cutmix.", show_default=_default("mix_prob")),
    ] = None,
    mix_switch_prob: Annotated[
        float | None,
        typer.Option(
            help="With --mixup and --cutmix, the share of mixed batches that get CutMix.",
            show_default=_default("mix_switch_prob"),
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Start from a run's best weights (or a .keras file): layers that match are loaded, a classifier "
            "for another class count starts fresh.",
            show_default="random init",
        ),
    ] = None,
    runs_dir: RunsDir = None,
    run: Annotated[str | None, typer.Option(help="Run name.", show_default="MODEL-DATASET-TIMESTAMP")] = None,
    zero_init_last: Annotated[
        bool, typer.Option("--zero-init-last", help="Start each residual branch at zero (timm's zero_init_last).")
    ] = False,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write history.csv's numbers as TensorBoard scalars (needs the tensorboard extra).",
        ),
    ] = False,
    in_memory: Annotated[
        bool | None,
        typer.Option(
            "--in-memory/--stream",
            help="Hold train in memory or stream it from HDF5.",
            show_default="in memory when it fits",
        ),
    ] = None,
    shortcut: Annotated[
        str | None,
        typer.Option(help="A | B | avgpool: the projection between stages.", show_default="the model's"),
    ] = None,
    plateau_monitor: Annotated[
        str | None,
        typer.Option(
            help="plateau: the metric watched (loss, accuracy, val_loss, val_accuracy, ...).",
            show_default=_default("plateau_monitor"),
        ),
    ] = None,
    plateau_factor: Annotated[
        float | None,
        typer.Option(help="plateau: multiply the rate by this at each cut.", show_default="sqrt(0.1) = 0.3162"),
    ] = None,
    plateau_patience: Annotated[
        int | None,
        typer.Option(
            help="plateau: epochs without improvement before a cut.", show_default=_default("plateau_patience")
        ),
    ] = None,
    plateau_min_delta: Annotated[
        float | None,
        typer.Option(help="plateau: a smaller change is no improvement.", show_default=_default("plateau_min_delta")),
    ] = None,
    plateau_cooldown: Annotated[
        int | None,
        typer.Option(
            help="plateau: epochs after a cut before counting again.", show_default=_default("plateau_cooldown")
        ),
    ] = None,
    plateau_min_lr: Annotated[
        float | None,
        typer.Option(help="plateau: the rate is never cut below this.", show_default=_default("plateau_min_lr")),
    ] = None,
    early_stopping: Annotated[
        int | None,
        typer.Option(
            metavar="PATIENCE",
            help="End the run (finished) PATIENCE epochs after the best epoch of --early-stopping-monitor.",
            show_default="off",
        ),
    ] = None,
    early_stopping_monitor: Annotated[
        str | None,
        typer.Option(help="The metric early stopping watches.", show_default=_default("early_stopping_monitor")),
    ] = None,
    early_stopping_min_delta: Annotated[
        float | None,
        typer.Option(
            help="Early stopping: a smaller change is no improvement.",
            show_default=_default("early_stopping_min_delta"),
        ),
    ] = None,
    strategy: StrategyOpt = "auto",
):
    """Train MODEL on a prepared dataset; the run stays resumable at every epoch."""
    from resnetctl.data.store import open_dataset
    from resnetctl.errors import RunError
    from resnetctl.paths import check_folder
    from resnetctl.paths import runs_dir as resolve_runs_dir
    from resnetctl.training.config import check_strategy
    from resnetctl.training.recipes import build_config, recipe_rows

    if recipe == "list":
        return ui.show_recipes(console, recipe_rows())
    try:
        parsed = tuple(int(m) for m in milestones.split(",") if m.strip()) if milestones else None
    except ValueError:
        raise RunError(f"--milestones must be epochs separated by commas. Received: {milestones!r}") from None
    flags = dict(
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        power=power,
        milestones=parsed,
        warmup_epochs=warmup_epochs,
        optimizer=optimizer,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        augmentation=augmentation,
        precision=precision,
        jit=jit,
        seed=seed,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        clip_norm=clip_norm,
        ema=ema,
        mixup=mixup,
        cutmix=cutmix,
        mix_prob=mix_prob,
        mix_switch_prob=mix_switch_prob,
        init_from=init_from,
        runs_dir=str(runs_dir) if runs_dir else None,
        run=run,
        tensorboard=tensorboard or None,
        in_memory=in_memory,
        zero_init_last=zero_init_last or None,
        shortcut=shortcut,
        plateau_monitor=plateau_monitor,
        plateau_factor=plateau_factor,
        plateau_patience=plateau_patience,
        plateau_min_delta=plateau_min_delta,
        plateau_cooldown=plateau_cooldown,
        plateau_min_lr=plateau_min_lr,
        early_stopping=early_stopping,
        early_stopping_monitor=early_stopping_monitor,
        early_stopping_min_delta=early_stopping_min_delta,
    )
    config = build_config(model, recipe, config_file, flags)
    check_strategy(strategy)
    info = open_dataset(config.dataset, config.data_dir)
    check_folder(resolve_runs_dir(config.runs_dir), "Runs dir")
    if config.init_from:
        from resnetctl.runs import init_source

        init_source(config.init_from, config.runs_dir)  # a missing source is a mistake to answer now
    if dry_run:
        from resnetctl.models import get_spec
        from resnetctl.models.profile import profile_spec

        spec = get_spec(config.model)
        if config.shortcut:
            spec = spec.replace(shortcut=config.shortcut)
        return ui.show_dry_run(
            console, config.resolved(info).to_dict(), spec, profile_spec(spec, info.image_size, info.num_classes), info
        )
    _import_backend_quietly()
    from resnetctl.training.trainer import train as run_training

    ui.show_trained(console, run_training(config, ui.TrainingDisplay(console), strategy=strategy))


@app.command()
def resume(
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where the run's dataset is now.", show_default="where the run found it"),
    ] = None,
    epoch: Annotated[
        int | None, typer.Option(help="Restart from this epoch's checkpoint.", show_default="the latest")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Continue with this constant learning rate.", show_default="the run's schedule")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Change the total number of epochs.", show_default="the run's")
    ] = None,
    strategy: StrategyOpt = "auto",
):
    """Continue a run from a checkpoint, optionally with a new learning rate."""
    from resnetctl.data.store import open_run_dataset
    from resnetctl.runs import find_run
    from resnetctl.training.config import check_strategy

    check_strategy(strategy)
    found = find_run(run, runs_dir)  # the mistakes Keras is not needed for, answered first
    record = found.config()
    if epoch is not None:
        found.checkpoint(epoch)
    open_run_dataset(record, data_dir)
    _import_backend_quietly()
    from resnetctl.training.trainer import resume as resume_training

    ui.show_trained(
        console,
        resume_training(
            str(found.path),
            data_dir=data_dir,
            epoch=epoch,
            lr=lr,
            epochs=epochs,
            progress=ui.TrainingDisplay(console),
            strategy=strategy,
        ),
    )


# --------------------------------------------------------------------------- evaluate / summary
@app.command()
def evaluate(
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
        Path | None, typer.Option(help="Write top-K predictions per image (Tiny ImageNet challenge format).")
    ] = None,
    as_json: JsonOpt = False,
):
    """Rank-1 and rank-K accuracy, loss, per-class accuracy and the confusion matrix."""
    from resnetctl.evaluation import evaluate as run_evaluation
    from resnetctl.evaluation import resolve_target

    resolve_target(
        run, runs_dir=runs_dir, checkpoint=checkpoint, model_path=model, dataset=dataset, data_dir=data_dir
    )  # mistakes first, before Keras
    _import_backend_quietly()
    r = run_evaluation(
        run,
        runs_dir=runs_dir,
        checkpoint=checkpoint,
        model_path=model,
        dataset=dataset,
        data_dir=data_dir,
        split=split,
        topk=topk,
        tta=tta,
        predict_path=predict,
    )
    return _print_json(r) if as_json else ui.show_evaluation(console, r)


@app.command()
def predict(
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
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 64,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write a CSV row per image to FILE.")] = None,
    as_json: JsonOpt = False,
):
    """Classify image files, decoded and resized exactly as prepare did for the model's dataset."""
    import logging

    from resnetctl.errors import RunError
    from resnetctl.prediction import check_output_file, classify, find_images, load, resolve_classifier, write_csv

    if batch_size < 1:
        raise RunError(f"--batch-size must be >= 1. Received: {batch_size}")
    check_output_file(csv_path, "--csv")
    classifier = resolve_classifier(
        run, runs_dir=runs_dir, checkpoint=checkpoint, model_path=model, dataset=dataset, data_dir=data_dir
    )
    files, problems = find_images(paths)
    if not files:
        raise RunError(
            "No image files found in " + ", ".join(f"{p['file']} ({p['error']})" for p in problems)
            if problems
            else "No image files found",
            hint="give image files, folders or globs",
        )
    _import_backend_quietly()
    keras_model, classes = load(classifier)
    results = problems + list(classify(keras_model, classes, files, topk, batch_size))
    classified = [r for r in results if "predictions" in r]
    if csv_path is not None and classified:
        write_csv(csv_path, results, len(classified[0]["predictions"]))
    if as_json:
        _print_json(results)
    else:
        ui.show_predictions(console, results, classifier.label)
    skipped = len(results) - len(classified)
    if skipped:
        logging.getLogger("resnetctl").warning(
            "%d of %d skipped (%s)", skipped, len(results), '"error" in the JSON' if as_json else "listed above"
        )
    if not classified:
        raise RunError("No image could be classified")


@app.command("export")
def export_model(
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
    from resnetctl.errors import RunError
    from resnetctl.export import check_images, check_request, export
    from resnetctl.prediction import resolve_classifier

    out = check_request(fmt, out, force)
    classifier = resolve_classifier(
        run, runs_dir=runs_dir, checkpoint=checkpoint, model_path=model, dataset=dataset, data_dir=data_dir
    )
    if classifier.classes is None:
        raise RunError("--model needs --dataset NAME: the export carries the class names")
    _import_backend_quietly()
    images, source = check_images(classifier, dataset, data_dir)
    result = {
        "checkpoint": str(classifier.model_path),
        "checked_on": source,
        **export(classifier.model_path, fmt, out, classifier.classes, images, force),
    }
    return _print_json(result) if as_json else ui.show_export(console, result)


@app.command()
def summary(
    runs: Annotated[list[str] | None, typer.Argument(help="Run names or paths.", show_default="every run")] = None,
    runs_dir: RunsDir = None,
    as_json: JsonOpt = False,
):
    """One run in depth, or several side by side (--json: always a list)."""
    import logging

    from resnetctl.errors import RunError
    from resnetctl.reports import run_summary
    from resnetctl.runs import find_run, list_runs

    found = [find_run(r, runs_dir) for r in runs] if runs else list_runs(runs_dir)
    rows = []
    for r in found:
        try:
            rows.append(run_summary(r))
        except RunError as exc:
            if runs:
                raise
            logging.getLogger("resnetctl").warning("skipped %s", exc.message)
    if not rows:
        raise RunError("No runs to summarise", hint="start one with `resnetctl train MODEL`")
    if as_json:
        return _print_json(rows)
    return ui.show_run(console, rows[0]) if len(rows) == 1 else ui.show_runs(console, rows)


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


def main() -> None:
    """Entry point: every failure becomes one line and a documented exit code (docs/training.md)."""
    ui.show_library_warnings(err_console)
    args = _take_verbose(sys.argv[1:])
    try:
        code = app(args=args, standalone_mode=False)  # Typer returns Exit codes here
        if isinstance(code, int) and code:
            _exit(code)
    except ResnetctlError as exc:
        if STATE["verbose"]:
            err_console.print_exception()
        ui.print_error(err_console, exc.message, exc.hint)
        _exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.print_error(err_console, "interrupted")
        _exit(EXIT_INTERRUPTED)
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

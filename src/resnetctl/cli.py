"""The ``resnetctl`` command line: parse, call the library, render with rich. No ML here.

Heavy imports (Keras, TensorFlow, h5py) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from resnetctl import __version__
from resnetctl.errors import ResnetctlError

app = typer.Typer(
    name="resnetctl",
    help="Train the ResNets of the papers from scratch: prepare data, build, train, resume, evaluate, summarise.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
STATE = {"verbose": False}

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where datasets live [default: $RESNETCTL_DATA_DIR or the per-user data folder]."),
]
RunsDir = Annotated[
    Path | None, typer.Option("--runs-dir", help="Where runs live [default: $RESNETCTL_RUNS_DIR or ./runs].")
]
RunOpt = Annotated[str | None, typer.Option("--run", help="Run name or path [default: the latest run].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]
StrategyOpt = Annotated[
    str,
    typer.Option(
        help="auto | none | mirrored | multi-worker. auto: multi-worker when TF_CONFIG names several workers, "
        "else every local GPU (mirrored) when there are several, else one device."
    ),
]


def _version(value: bool):
    if value:
        console.print(f"resnetctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and backend logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
):
    STATE["verbose"] = verbose
    if not verbose:
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
    name: Annotated[str | None, typer.Option(help="Store under this name [default: the kind].")] = None,
    data_dir: DataDir = None,
    val_split: Annotated[float, typer.Option(help="Share of train carved out as a stratified val split.")] = 0.1,
    test_split: Annotated[
        float, typer.Option(help="folder only: share carved out as test when there is no test/.")
    ] = 0.1,
    size: Annotated[int | None, typer.Option(help="Resize to NxN (shorter side + centre crop).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing dataset of that name.")] = False,
    checksum: Annotated[str | None, typer.Option(help="Expected md5 or sha256 of --source.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of the shapes demo.")] = 0,
    list_: Annotated[bool, typer.Option("--list", help="List prepared datasets.")] = False,
    as_json: JsonOpt = False,
):
    """Turn an official archive, a folder of images, or the built-in demo into HDF5."""
    from resnetctl.data.store import list_datasets

    if list_ or kind is None:
        found = list_datasets(data_dir)
        rows = [
            {
                "name": d.name,
                "splits": d.splits,
                "image_size": d.image_size,
                "classes": d.num_classes,
                "path": str(d.path),
            }
            for d in found
        ]
        if as_json:
            return _print_json(rows)
        table = Table("name", "splits", "size", "classes", "path", title="prepared datasets")
        for r in rows:
            table.add_row(
                r["name"],
                ", ".join(f"{k} {v}" for k, v in r["splits"].items()),
                f"{r['image_size']}px",
                str(r["classes"]),
                r["path"],
            )
        console.print(table if rows else "No datasets prepared yet: try `resnetctl prepare shapes`.")
        return
    from resnetctl.data.prepare import prepare_dataset
    from resnetctl.ui import PrepareBar

    with PrepareBar(err_console if as_json else console) as bar:
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
    if as_json:
        return _print_json({"name": info.name, "path": str(info.path), **info.meta})
    skipped = info.meta["skipped"]
    console.print(
        f"[green]Prepared[/] {info.name} at {info.path}: "
        + ", ".join(f"{k} {v}" for k, v in info.splits.items())
        + f"; {info.num_classes} classes, {info.image_size}px"
    )
    if skipped:
        console.print(f"[yellow]Skipped {len(skipped)} unusable image(s)[/] (listed in meta.json):")
        for s in skipped[:10]:
            console.print(f"  {s['file']}: {s['reason']}", highlight=False)


# --------------------------------------------------------------------------- build
@app.command()
def build(
    model: Annotated[str | None, typer.Argument(help="Model name, e.g. resnet56.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Take input size and classes from a prepared dataset.")] = None,
    data_dir: DataDir = None,
    input_size: Annotated[int | None, typer.Option(help="Input height = width.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Number of classes.")] = None,
    shortcut: Annotated[str | None, typer.Option(help="A | B | avgpool (CIFAR ResNets default to A).")] = None,
    weight_decay: Annotated[float, typer.Option(help="Decay coefficient on conv/dense kernels.")] = 0.0,
    zero_init_last: Annotated[bool, typer.Option(help="Start each residual branch at zero.")] = False,
    save: Annotated[Path | None, typer.Option(help="Save the untrained model to PATH.keras.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List every model with depth, parameters, MACs.")] = False,
    as_json: JsonOpt = False,
):
    """Show an architecture by stage with parameters and multiply-accumulates."""
    _import_backend_quietly()
    from resnetctl.models import get_spec, list_models

    if list_ or model is None:
        from resnetctl.models.builder import build_from_spec
        from resnetctl.models.profile import profile_model

        rows = []
        for n in list_models():
            spec = get_spec(n)
            p = profile_model(build_from_spec(spec), spec)
            rows.append(
                {
                    "name": n,
                    "depth": spec.depth,
                    "block": spec.block,
                    "input": spec.input_size,
                    "params": p.params,
                    "trainable_params": p.trainable_params,
                    "macs": p.macs,
                }
            )
        if as_json:
            return _print_json(rows)
        table = Table("model", "depth", "block", "input", "params", "MACs", title="models")
        for r in rows:
            table.add_row(
                r["name"],
                str(r["depth"]),
                r["block"],
                f"{r['input']}px",
                f"{r['trainable_params'] / 1e6:.2f}M",
                f"{r['macs'] / 1e6:,.1f}M",
            )
        console.print(table)
        return
    spec = get_spec(model)
    if shortcut:
        spec = spec.replace(shortcut=shortcut)
    mean = std = None
    if dataset:
        from resnetctl.data.store import open_dataset

        info = open_dataset(dataset, data_dir)
        input_size, num_classes, mean, std = info.image_size, info.num_classes, info.mean, info.std
    from resnetctl.models.builder import build_from_spec
    from resnetctl.models.profile import profile_model

    keras_model = build_from_spec(
        spec, input_size=input_size, num_classes=num_classes, mean=mean, std=std, weight_decay=weight_decay
    )
    profile = profile_model(keras_model, spec)
    if save:
        from resnetctl import atomic
        from resnetctl.errors import ModelError

        if save.suffix != ".keras":
            raise ModelError(f"--save must end in .keras. Received: {save}")
        with atomic.atomic_path(save, suffix=".keras") as tmp:
            keras_model.save(tmp)
    if as_json:
        return _print_json({**profile.to_dict(), "saved": str(save) if save else None})
    table = Table(
        "stage",
        "output",
        "layout",
        "repeats",
        title=f"{spec.name} ({spec.depth} layers, {spec.block}, shortcut {spec.shortcut})",
    )
    for row in profile.stages:
        table.add_row(row.name, row.output_size, row.layout, f"x{row.repeats}")
    console.print(table)
    console.print(
        f"input {profile.input_shape}, {profile.num_classes} classes; "
        f"params {profile.params:,} (trainable {profile.trainable_params:,}); "
        f"MACs per image {profile.macs:,} ({profile.macs / 1e6:,.1f}M)"
    )
    if save:
        console.print(f"saved {save}")


# --------------------------------------------------------------------------- train / resume
@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model name, e.g. resnet56 (see `build --list`).")],
    dataset: Annotated[str, typer.Option(help="Prepared dataset name or path.")] = "shapes",
    data_dir: DataDir = None,
    epochs: Annotated[int | None, typer.Option(help="Total epochs [30].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size [128].")] = None,
    lr: Annotated[float | None, typer.Option(help="Initial learning rate [0.1].")] = None,
    schedule: Annotated[str | None, typer.Option(help="poly | step | cosine | constant [poly].")] = None,
    power: Annotated[float | None, typer.Option(help="poly: lr0 * (1 - epoch/epochs) ** power [1.0].")] = None,
    milestones: Annotated[str | None, typer.Option(help="step: epochs where lr drops 10x, e.g. 82,123.")] = None,
    warmup_epochs: Annotated[
        float | None, typer.Option(help="Linear warmup from 0 to --lr [2 epochs, a tenth of shorter runs].")
    ] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd (momentum 0.9, Nesterov) | adamw [sgd].")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Decay coefficient [5e-4].")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="[0.1]")] = None,
    augmentation: Annotated[
        str | None, typer.Option(help="crop-flip | resized-crop-flip | none [by image size].")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="float32 | mixed_float16 | mixed_bfloat16.")] = None,
    jit: Annotated[bool | None, typer.Option("--jit/--no-jit", help="XLA compilation [Keras decides].")] = None,
    seed: Annotated[int | None, typer.Option(help="[0]")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Keep checkpoints/epoch_NNNN.keras every N epochs [5].")
    ] = None,
    runs_dir: RunsDir = None,
    run: Annotated[str | None, typer.Option(help="Run name [model-dataset-timestamp].")] = None,
    zero_init_last: Annotated[
        bool, typer.Option(help="Start each residual branch at zero (timm's zero_init_last).")
    ] = False,
    tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard logs.")] = False,
    in_memory: Annotated[
        bool | None, typer.Option("--in-memory/--stream", help="Hold train in memory or stream it from HDF5 [by size].")
    ] = None,
    strategy: StrategyOpt = "auto",
):
    """Train MODEL on a prepared dataset; the run stays resumable at every epoch."""
    _import_backend_quietly()
    from resnetctl.training.config import TrainConfig
    from resnetctl.training.trainer import train as run_training

    config = TrainConfig(model=model).with_overrides(
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        power=power,
        milestones=_parse_milestones(milestones),
        warmup_epochs=warmup_epochs,
        optimizer=optimizer,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        augmentation=augmentation,
        precision=precision,
        jit=jit,
        seed=seed,
        checkpoint_every=checkpoint_every,
        runs_dir=str(runs_dir) if runs_dir else None,
        run=run,
        tensorboard=tensorboard or None,
        in_memory=in_memory,
        zero_init_last=zero_init_last or None,
    )
    _report(run_training(config, console, strategy=strategy))


@app.command()
def resume(
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    epoch: Annotated[int | None, typer.Option(help="Restart from this epoch's checkpoint [latest].")] = None,
    lr: Annotated[float | None, typer.Option(help="Continue with this constant learning rate.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Change the total number of epochs.")] = None,
    strategy: StrategyOpt = "auto",
):
    """Continue a run from a checkpoint, optionally with a new learning rate."""
    _import_backend_quietly()
    from resnetctl.training.trainer import resume as resume_training

    _report(
        resume_training(run, runs_dir=runs_dir, epoch=epoch, lr=lr, epochs=epochs, console=console, strategy=strategy)
    )


def _parse_milestones(text: str | None):
    if not text:
        return None
    from resnetctl.errors import RunError

    try:
        return tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise RunError(f"--milestones must be epochs separated by commas. Received: {text!r}") from None


def _report(result) -> None:
    if result.placement and not result.placement.chief:
        console.print(f"[green]Done[/]: worker {result.placement.worker}; the chief worker wrote run {result.run.name}")
    elif result.history:
        last = result.history[-1]
        console.print(
            f"[green]Done[/]: {result.run.path} at epoch {last['epoch']}; "
            f"evaluate with `resnetctl evaluate --run {result.run.path}`"
        )


# --------------------------------------------------------------------------- evaluate / summary
@app.command()
def evaluate(
    run: RunOpt = None,
    runs_dir: RunsDir = None,
    checkpoint: Annotated[str, typer.Option(help="best | last | an epoch number.")] = "best",
    model: Annotated[
        Path | None, typer.Option("--model", help="Any .keras file from this tool (needs --dataset).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset [the run's].")] = None,
    data_dir: DataDir = None,
    split: Annotated[str, typer.Option(help="test | val | train | unlabelled.")] = "test",
    topk: Annotated[int, typer.Option(help="K of rank-K accuracy.")] = 5,
    tta: Annotated[str | None, typer.Option(help="Test-time augmentation: flip.")] = None,
    predict: Annotated[
        Path | None, typer.Option(help="Write top-K predictions per image (Tiny ImageNet challenge format).")
    ] = None,
    as_json: JsonOpt = False,
):
    """Rank-1 and rank-K accuracy, loss, per-class accuracy and the confusion matrix."""
    _import_backend_quietly()
    from resnetctl.evaluation import evaluate as run_evaluation

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
    if as_json:
        return _print_json(r)
    head = f"{r['model']} on {r['dataset']}/{r['split']} ({r['images']} images)"
    console.print(head, highlight=False)
    if "rank_1" in r:
        console.print(
            f"rank-1 [bold]{r['rank_1']:.4f}[/]  rank-{topk} [bold]{r[f'rank_{topk}']:.4f}[/]  loss {r['loss']:.4f}"
        )
        table = Table("class", "accuracy", "images", title="per class")
        for c in r["per_class"]:
            table.add_row(c["class"], f"{c['accuracy']:.3f}", str(c["images"]))
        console.print(table)
        if r.get("top_confusions"):
            conf = Table("true", "predicted", "images", title="top confusions")
            for c in r["top_confusions"]:
                conf.add_row(c["true"], c["predicted"], str(c["images"]))
            console.print(conf)
        if r.get("confusion_png"):
            console.print(f"confusion matrix: {r['confusion_png']}")
    if r.get("predictions"):
        console.print(f"predictions: {r['predictions']}")


@app.command()
def summary(
    runs: Annotated[list[str] | None, typer.Argument(help="Run names or paths [every run].")] = None,
    runs_dir: RunsDir = None,
    as_json: JsonOpt = False,
):
    """One run in depth, or several side by side."""
    from resnetctl.errors import RunError
    from resnetctl.reports import run_summary
    from resnetctl.runs import find_run, list_runs

    found = [find_run(r, runs_dir) for r in runs] if runs else list_runs(runs_dir)
    if not found:
        raise RunError("No runs to summarise", hint="start one with `resnetctl train MODEL`")
    rows = [run_summary(r) for r in found]
    if as_json:
        return _print_json(rows if len(rows) > 1 or not runs else rows[0])
    if len(rows) == 1:
        s = rows[0]
        table = Table(show_header=False, title=f"run {s['run']}")
        ev = s["latest_evaluation"]
        for key, value in [
            ("model", s["model"]),
            ("dataset", s["dataset"]),
            ("recipe", ", ".join(f"{k}={v}" for k, v in s["recipe"].items())),
            ("lr changes", ", ".join(f"epoch {g['from_epoch']}: {g['lr']}" for g in s["segments"]) or "-"),
            ("epochs", f"{s['epochs_done']} of {s['epochs']}"),
            (
                "best",
                f"{s['curve']} {s['best_val_accuracy']:.4f} at epoch {s['best_epoch']}" if s["best_epoch"] else "-",
            ),
            ("curve", s["sparkline"] or "-"),
            ("evaluation", f"{ev['split']} rank-1 {ev['rank_1']:.4f} ({ev['checkpoint']})" if ev else "-"),
            ("time", f"{s['seconds']:.0f}s, {s['images_per_second']} images/s"),
            ("checkpoints", ", ".join(map(str, s["checkpoints"])) or "-"),
            ("files", s["path"]),
            ("monitor", s["monitor"] or "-"),
            ("resume", s["resume_command"] or "finished"),
        ]:
            table.add_row(key, str(value))
        console.print(table)
        return
    table = Table("run", "model", "dataset", "epochs", "best val", "test rank-1", "img/s", "curve")
    for s in rows:
        ev = s["latest_evaluation"]
        table.add_row(
            s["run"],
            s["model"],
            s["dataset"],
            f"{s['epochs_done']}/{s['epochs']}",
            f"{s['best_val_accuracy']:.4f}" if s["best_epoch"] else "-",
            f"{ev['rank_1']:.4f}" if ev else "-",
            str(s["images_per_second"] or "-"),
            s["sparkline"],
        )
    console.print(table)


def main() -> None:
    """Entry point: user errors become one red line and a non-zero exit code."""
    try:
        code = app(standalone_mode=False)  # Typer returns Exit codes here (130 for Ctrl+C)
        if isinstance(code, int) and code:
            if code == 130:
                err_console.print("[bold red]interrupted[/]")
            sys.exit(code)
    except ResnetctlError as exc:
        if STATE["verbose"]:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            err_console.print(f"  {exc.hint}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:
        # usage errors; matched by shape, as Typer >= 0.29 vendors Click and older Typer uses Click's own
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise

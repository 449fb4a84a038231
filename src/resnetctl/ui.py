"""Everything the user sees, drawn with rich: consoles, warnings, progress, tables.

The library reports through hooks (``PrepareProgress``, ``TrainingProgress``) and logging; this
module renders them. Not on a terminal (a log file, a pipe), nothing is wrapped or cut and
progress comes as plain lines.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from resnetctl.hooks import PrepareProgress, TrainingProgress

LOG_EVERY_SECONDS = 30.0


def make_console(stderr: bool = False) -> Console:
    """A terminal gets rich's layout; a file or pipe gets long lines that are never wrapped."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, soft_wrap=True, width=400)


def _table(*columns: str, title: str | None = None, console: Console | None = None) -> Table:
    table = Table(*columns, title=title)
    if console is not None and not console.is_terminal:
        for column in table.columns:
            column.no_wrap = True
            column.overflow = "ignore"
    return table


class WarningLines(logging.Handler):
    """The library's warnings (logger ``resnetctl``) as one yellow line each."""

    def __init__(self, console: Console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/] {record.getMessage()}", highlight=False)


def show_library_warnings(console: Console) -> None:
    logger = logging.getLogger("resnetctl")
    logger.handlers[:] = [WarningLines(console)]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def print_error(console: Console, message: str, hint: str | None = None) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        console.print(f"  {hint}", highlight=False)


# --------------------------------------------------------------------------- prepare
class PrepareBar(PrepareProgress):
    """A bar per split with images/s and ETA; a line per split when not on a terminal."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start_split(self, split, total):
        self.task = self.progress.add_task(split, total=total, rate="")

    def advance(self, count):
        self.progress.advance(self.task, count)
        speed = self.progress.tasks[self.task].speed
        if speed:
            self.progress.update(self.task, rate=f"{speed:,.0f} img/s")

    def end_split(self, split, written, skipped):
        if not self.console.is_terminal:
            note = f", skipped {skipped}" if skipped else ""
            self.console.print(f"{split}: {written} images{note}", highlight=False)


def show_prepared(console: Console, info) -> None:
    splits = ", ".join(f"{k} {v}" for k, v in info.splits.items())
    console.print(
        f"[green]Prepared[/] {info.name} at {info.path}: {splits}; {info.num_classes} classes, {info.image_size}px",
        highlight=False,
    )
    skipped = info.meta["skipped"]
    if skipped:
        console.print(f"[yellow]Skipped {len(skipped)} unusable image(s)[/] (listed in meta.json):")
        for s in skipped[:10]:
            console.print(f"  {s['file']}: {s['reason']}", highlight=False)


def show_datasets(console: Console, rows: list[dict]) -> None:
    if not rows:
        console.print("No datasets prepared yet: try `resnetctl prepare shapes`.")
        return
    table = _table("name", "splits", "size", "classes", "path", title="prepared datasets", console=console)
    for r in rows:
        table.add_row(
            r["name"],
            ", ".join(f"{k} {v}" for k, v in r["splits"].items()),
            f"{r['image_size']}px",
            str(r["classes"]),
            r["path"],
        )
    console.print(table)


# --------------------------------------------------------------------------- build
def show_zoo(console: Console, rows: list[dict]) -> None:
    table = _table("model", "depth", "block", "input", "params", "MACs", title="models", console=console)
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


def show_model(console: Console, spec, profile, saved=None) -> None:
    table = _table(
        "stage",
        "output",
        "layout",
        "repeats",
        console=console,
        title=f"{spec.name} ({spec.depth} layers, {spec.block}, shortcut {spec.shortcut})",
    )
    for row in profile.stages:
        table.add_row(row.name, row.output_size, row.layout, f"x{row.repeats}")
    console.print(table)
    console.print(
        f"input {profile.input_shape}, {profile.num_classes} classes; params {profile.params:,} "
        f"(trainable {profile.trainable_params:,}); MACs per image {profile.macs:,} "
        f"({profile.macs / 1e6:,.1f}M)",
        highlight=False,
    )
    if saved:
        console.print(f"saved {saved}", highlight=False)


def show_dry_run(console: Console, config: dict, spec, profile, info) -> None:
    """``train --dry-run``: what would be trained, on what, and how, without training."""
    recipe = f" (recipe {config['recipe']})" if config.get("recipe") else ""
    table = Table(show_header=False, title=f"train --dry-run: the resolved config{recipe}")
    for key, value in config.items():
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    show_model(console, spec, profile)
    splits = ", ".join(f"{name} {count:,}" for name, count in info.splits.items())
    console.print(
        f"dataset {info.name} at {info.path}: {info.image_size}px, {info.num_classes} classes; {splits}",
        highlight=False,
    )
    console.print("nothing was trained (--dry-run)", highlight=False)


def show_recipes(console: Console, rows: list[dict]) -> None:
    table = _table("recipe", "model", "schedule", "epochs", "reported", "source", title="recipes", console=console)
    for r in rows:
        table.add_row(r["name"], r["model"], r["schedule"], str(r["epochs"]), r["reported"] or "-", r["source"])
    console.print(table)
    console.print(
        "use: resnetctl train [MODEL] --recipe NAME --dataset DATASET [flags that override it]", highlight=False
    )


# --------------------------------------------------------------------------- train
def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "-".rjust(int(spec.split(".")[0] or 1))


class TrainingDisplay(TrainingProgress):
    """A live bar (images/s, loss, accuracy, the current step's lr, ETA of the epoch and of the
    run) and a row per epoch on a terminal; plain lines otherwise, at least every 30 s and at
    every 10% of a long epoch."""

    HEADER = (
        f"{'epoch':>9} {'lr':>9} {'loss':>8} {'acc':>7} {'top5':>7} {'val_loss':>8} {'val_acc':>7} "
        f"{'val_top5':>8} {'img/s':>8} {'time':>7}"
    )

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.task = None
        self.epoch_seconds: list[float] = []

    def start(self, plan: dict) -> None:
        self.plan = plan
        self.console.print(
            f"[dim]{plan['model']} on {plan['dataset']}, {plan['placement']}; run {plan['path']}[/]", highlight=False
        )
        self.console.print(self.HEADER, style="bold", highlight=False)
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
                transient=True,
            )
            self.progress.start()
        self.epoch = None

    def _eta_run(self, epoch: int, fraction: float, elapsed: float) -> float:
        per_epoch = elapsed / max(fraction, 1e-9)
        left = self.plan["epochs"] - epoch - fraction
        return per_epoch * left

    def batch(self, epoch: int, step: int, logs: dict, lr: float) -> None:
        now = time.perf_counter()
        steps = self.plan["steps"]
        if epoch != self.epoch:
            self.epoch, self.started, self.last_line, self.last_tenth = epoch, now, now, 0
            if self.progress is not None:
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.plan['epochs']}", total=steps, stats="")
        elapsed = max(now - self.started, 1e-9)
        fraction = step / steps
        rate = step * self.plan["batch_size"] / elapsed
        loss, accuracy = float(logs.get("loss", float("nan"))), float(logs.get("accuracy", float("nan")))
        stats = (
            f"loss {loss:.4f} acc {accuracy:.4f} "
            f"lr {lr:.2e} {rate:,.0f} img/s  epoch ETA {_duration(elapsed / fraction - elapsed)}  "
            f"run ETA {_duration(self._eta_run(epoch, fraction, elapsed))}"
        )
        if self.progress is not None:
            self.progress.update(self.task, completed=step, stats=stats)
            return
        tenth = int(fraction * 10)
        long_epoch = elapsed / fraction >= LOG_EVERY_SECONDS
        if step < steps and (now - self.last_line >= LOG_EVERY_SECONDS or (long_epoch and tenth > self.last_tenth)):
            self.console.print(f"  epoch {epoch + 1} step {step}/{steps} ({fraction:.0%}): {stats}", highlight=False)
            self.last_line, self.last_tenth = now, tenth

    def epoch_end(self, row: dict) -> None:
        line = (
            f"{row['epoch']:>4}/{self.plan['epochs']:<4} {_fmt(row, 'lr', '9.2e')} {_fmt(row, 'loss', '8.4f')} "
            f"{_fmt(row, 'accuracy', '7.4f')} {_fmt(row, 'top5', '7.4f')} {_fmt(row, 'val_loss', '8.4f')} "
            f"{_fmt(row, 'val_accuracy', '7.4f')} {_fmt(row, 'val_top5', '8.4f')} "
            f"{_fmt(row, 'images_per_second', '8.1f')} {row['seconds']:6.1f}s"
        )
        self.console.print(line, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def show_trained(console: Console, result) -> None:
    if result.placement and not result.placement.chief:
        console.print(f"[green]Done[/]: worker {result.placement.worker}; the chief worker wrote run {result.run.name}")
    elif result.history:
        if result.stopped_early:
            console.print(
                f"Stopped early at epoch {result.stopped_early['stopped_epoch']}: {result.stopped_early['reason']} "
                f"(best epoch {result.stopped_early['best_epoch']})",
                highlight=False,
            )
        console.print(
            f"[green]Done[/]: {result.run.path} at epoch {result.history[-1]['epoch']}; "
            f"evaluate with: resnetctl evaluate --run {result.run.path.resolve()}",
            highlight=False,
        )


# --------------------------------------------------------------------------- evaluate / summary
def show_evaluation(console: Console, r: dict) -> None:
    epoch = f", epoch {r['epoch']}" if r.get("epoch") is not None else ""
    console.print(
        f"{r['model']} ({r['checkpoint']}{epoch}) on {r['dataset']}/{r['split']} ({r['images']} images)",
        highlight=False,
    )
    if r.get("rank_1") is not None:
        console.print(
            f"rank-1 [bold]{r['rank_1']:.4f}[/]  rank-{r['k']} [bold]{r['rank_k']:.4f}[/]  loss {r['loss']:.4f}"
        )
        table = _table("class", "accuracy", "images", title="per class", console=console)
        for c in r["per_class"]:
            table.add_row(c["class"], f"{c['accuracy']:.3f}", str(c["images"]))
        console.print(table)
        if r.get("top_confusions"):
            conf = _table("true", "predicted", "images", title="top confusions", console=console)
            for c in r["top_confusions"]:
                conf.add_row(c["true"], c["predicted"], str(c["images"]))
            console.print(conf)
        if r.get("confusion_png"):
            console.print(f"confusion matrix: {r['confusion_png']}", highlight=False)
    if r.get("predictions"):
        console.print(f"predictions: {r['predictions']}", highlight=False)


def show_predictions(console: Console, results: list[dict], label: str) -> None:
    """One row per image: its top-k classes with probabilities, best first; skipped files say why."""
    k = max((len(r.get("predictions", [])) for r in results), default=1)
    table = _table("file", *(f"#{i}" for i in range(1, k + 1)), title=f"predictions ({label})", console=console)
    for r in results:
        if "predictions" in r:
            table.add_row(r["file"], *(f"{p['class']} {p['probability']:.3f}" for p in r["predictions"]))
        else:
            table.add_row(r["file"], f"[yellow]skipped: {r['error']}[/]", *[""] * (k - 1))
    console.print(table)


def show_export(console: Console, r: dict) -> None:
    console.print(f"Exported {r['checkpoint']} as {r['format']}: {r['path']}", highlight=False)
    console.print(f"  input {r['input']}; output {r['output']}; class names in {r['labels']}", highlight=False)
    console.print(
        f"  checked on {r['checked_images']} images of {r['checked_on']}: largest difference in "
        f"probability {r['max_abs_difference']:.2e}, top-1 agreement {r['top1_agreement']:.1%}",
        highlight=False,
    )


def _evaluation_text(ev: dict | None) -> str:
    if not ev:
        return "-"
    epoch = f" epoch {ev['epoch']}" if ev.get("epoch") is not None else ""
    stale = " [stale: checkpoint changed since]" if ev.get("stale") else ""
    return f"{ev['split']} rank-1 {ev['rank_1']:.4f} ({ev['checkpoint']}{epoch}){stale}"


def _stopped_early_text(stopped: dict | None) -> str:
    if not stopped:
        return ""
    return f" (stopped early at epoch {stopped.get('stopped_epoch')}; best epoch {stopped.get('best_epoch')})"


def show_run(console: Console, s: dict) -> None:
    table = Table(show_header=False, title=f"run {s['run']}")
    best = f"{s['curve']} {s['best_score']:.4f} at epoch {s['best_epoch']}" if s["best_epoch"] else "-"
    state = s["state"] + (f" ({s['reason']})" if s.get("reason") else "")
    for key, value in [
        ("state", state),
        ("model", s["model"]),
        ("dataset", s["dataset"]),
        (
            "recipe",
            (f"{s['recipe_name']}: " if s.get("recipe_name") else "")
            + ", ".join(f"{k}={v}" for k, v in s["recipe"].items()),
        ),
        ("lr changes", ", ".join(f"epoch {g['from_epoch']}: {g['lr']}" for g in s["segments"]) or "-"),
        ("epochs", f"{s['epochs_done']} of {s['epochs']}" + _stopped_early_text(s.get("stopped_early"))),
        ("best", best),
        ("curve", s["sparkline"] or "-"),
        ("evaluation", _evaluation_text(s["latest_evaluation"])),
        ("time", f"{s['seconds']:.0f}s, {s['images_per_second']} images/s"),
        ("checkpoints", ", ".join(map(str, s["checkpoints"])) or "-"),
        ("files", s["path"]),
        ("monitor", s["monitor"] or "-"),
        ("next", s["next_command"] or "-"),
    ]:
        table.add_row(key, str(value))
    console.print(table)


def show_runs(console: Console, rows: list[dict]) -> None:
    table = _table(
        "run", "state", "model", "dataset", "epochs", "best", "test rank-1", "img/s", "curve", console=console
    )
    for s in rows:
        ev = s["latest_evaluation"]
        table.add_row(
            s["run"],
            s["state"],
            s["model"],
            s["dataset"],
            f"{s['epochs_done']}/{s['epochs']}",
            f"{s['best_score']:.4f}" if s["best_epoch"] else "-",
            (f"{ev['rank_1']:.4f}" + ("*" if ev.get("stale") else "")) if ev else "-",
            str(s["images_per_second"] or "-"),
            s["sparkline"],
        )
    console.print(table)

"""Everything the user sees, drawn with rich: consoles, warnings, progress, tables.

The library reports through hooks (``PrepareProgress``, ``TrainingProgress``) and logging; this
module renders them. Not on a terminal (a log file, a pipe), nothing is wrapped or cut and
progress comes as plain lines.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from resnetctl.hooks import PrepareProgress, TrainingProgress
from resnetctl.scoring import describe_tta

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


def _plain(*values) -> list[Text]:
    """Table cells shown as they are: a file, class or run name may hold ``[`` (rich markup)."""
    return [Text(str(v)) for v in values]


class WarningLines(logging.Handler):
    """The library's warnings (logger ``resnetctl``) as one yellow line each."""

    def __init__(self, console: Console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True)


def show_library_warnings(console: Console) -> None:
    logger = logging.getLogger("resnetctl")
    logger.handlers[:] = [WarningLines(console)]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _say(console: Console, label: str, message: str, hint: str | None) -> None:
    """One line (and a hint line), never wrapped: a command in it works when selected and pasted.
    The text is escaped, so a path with ``[/`` or a ``pip install 'x[extra]'`` is shown as is."""
    console.print(f"{label} {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        console.print(f"  {escape(hint)}", highlight=False, soft_wrap=True)


def print_error(console: Console, message: str, hint: str | None = None) -> None:
    _say(console, "[bold red]error:[/]", message, hint)


def print_stopped(console: Console, message: str, hint: str | None = None) -> None:
    """A stop the user asked for (Ctrl+C, SIGTERM): what was kept and how to go on, not an error."""
    _say(console, "[bold yellow]stopped:[/]", message, hint)


def print_note(console: Console, message: str) -> None:
    _say(console, "[cyan]note:[/]", message, None)


# --------------------------------------------------------------------------- prepare
class _LiveBar:
    """A rich progress bar (``self.progress``) shown while the ``with`` block runs."""

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()


class PrepareBar(_LiveBar, PrepareProgress):
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
    layout = info.meta.get("layout")
    console.print(
        f"[green]Prepared[/] {escape(f'{info.name} at {info.path}')}: {splits}; {info.num_classes} classes, "
        f"{info.image_size}px" + (f" (layout: {layout})" if layout else ""),
        highlight=False,
    )
    skipped = info.meta["skipped"]
    if skipped:
        console.print(f"[yellow]Skipped {len(skipped)} image(s)[/] (each with its reason in meta.json):")
        for s in skipped[:10]:
            console.print(f"  {s['file']}: {s['reason']}", highlight=False, markup=False)


def show_datasets(console: Console, rows: list[dict]) -> None:
    if not rows:
        console.print("No datasets prepared yet: try `resnetctl prepare shapes`.")
        return
    table = _table("name", "splits", "size", "classes", "path", title="prepared datasets", console=console)
    for r in rows:
        table.add_row(
            *_plain(
                r["name"],
                ", ".join(f"{k} {v}" for k, v in r["splits"].items()),
                f"{r['image_size']}px",
                r["classes"],
                r["path"],
            )
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


def show_dry_run(
    console: Console, config: dict, spec, profile, info, sources: dict | None = None, notes: tuple[str, ...] = ()
) -> None:
    """``train --dry-run``: what would be trained, on what, and how, without training; with a
    recipe, where each of its settings comes from (``sources``) and its ``notes``."""
    recipe = f" (recipe {config['recipe']})" if config.get("recipe") else ""
    table = Table(show_header=False, title=f"train --dry-run: the resolved config{recipe}")
    for key, value in config.items():
        cells = _plain(key, "-" if value is None else value)
        table.add_row(*cells, *((Text(sources.get(key, "")),) if sources else ()))
    console.print(table)
    for note in notes:
        console.print(Text(note))
    show_model(console, spec, profile)
    splits = ", ".join(f"{name} {count:,}" for name, count in info.splits.items())
    console.print(
        f"dataset {info.name} at {info.path}: {info.image_size}px, {info.num_classes} classes; {splits}",
        highlight=False,
        markup=False,
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


COLUMNS = (  # (history key, label, format): one epoch row fits 80 columns with all of them
    ("lr", "lr", "8.2e"),
    ("loss", "loss", "6.3f"),
    ("accuracy", "acc", "6.4f"),
    ("top5", "top5", "6.4f"),
    ("val_loss", "val_loss", "8.3f"),
    ("val_accuracy", "val_acc", "7.4f"),
    ("val_top5", "val_top5", "8.4f"),
    ("images_per_second", "img/s", "5.0f"),
)


class TrainingDisplay(TrainingProgress):
    """A live bar (images/s, loss, accuracy, the current step's lr, ETA of the epoch and of the
    run) and a row per epoch that fits 80 columns (columns that do not apply, such as top-5 of a
    dataset of 5 classes, are left out), the best epoch so far marked; plain lines when not on a
    terminal, at least every 30 s and at every 10% of a long epoch."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.task = None
        self.epoch_seconds: list[float] = []

    def start(self, plan: dict) -> None:
        from resnetctl.runs import score

        self.plan = plan
        self.score = score
        self.best = plan.get("best_score", float("-inf"))
        self.t0 = time.perf_counter()
        wanted = {"top5", "val_top5"} if plan.get("num_classes", 0) > 5 else set()
        has_val = plan.get("validation", True)
        self.columns = [
            c
            for c in COLUMNS
            if (c[0] not in ("top5", "val_top5") or c[0] in wanted) and (has_val or not c[0].startswith("val_"))
        ]
        self.console.print(
            f"[dim]{escape(plan['model'])} on {escape(plan['dataset'])}, {escape(plan['placement'])}; "
            f"run {escape(plan['path'])}[/]",
            highlight=False,
            soft_wrap=True,
        )
        if plan.get("batch_search"):
            self.console.print(f"batch size auto: {escape(plan['batch_search'])}", highlight=False, soft_wrap=True)
        resumed = plan.get("resumed")
        if resumed:
            self._show_resumed(resumed)
        self.console.print(
            "[dim]img/s: training images per second; elapsed: since this command started; "
            "* best so far (val_acc, else acc)[/]",
            highlight=False,
            soft_wrap=True,
        )
        header = f"{'epoch':>9}" + "".join(f" {label:>{int(fmt.split('.')[0])}}" for _, label, fmt in self.columns)
        self.console.print(header + f" {'elapsed':>7}", style="bold", highlight=False)
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

    def _show_resumed(self, r: dict) -> None:
        line = f"resumed after epoch {r['from_epoch']} at lr {r['lr']:.3g}"
        if r.get("fork_of"):
            line = f"forked from run {r['fork_of']} at epoch {r['from_epoch']}, lr {r['lr']:.3g}"
        planned = r.get("planned_lr")
        if planned is not None and abs(planned - r["lr"]) > 1e-9 * max(abs(planned), 1e-12):
            ratio = f" (x{r['lr'] / planned:.3g})" if planned else ""  # a finished poly schedule planned 0
            line += f"; the schedule before this resume had {planned:.3g} here{ratio}"
        self.console.print(f"[bold]{escape(line)}[/]", highlight=False, soft_wrap=True)
        if r.get("branch"):
            self.console.print(
                f"the epochs after {r['from_epoch']} are kept as a branch: {escape(r['branch'])}",
                highlight=False,
                soft_wrap=True,
            )

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
        best = self.score(row) > self.best
        self.best = max(self.best, self.score(row))
        cells = "".join(f" {_fmt(row, key, fmt)}" for key, _, fmt in self.columns)
        epoch = f"{row['epoch']:>4}/{self.plan['epochs']:<4}"
        elapsed = _duration(time.perf_counter() - self.t0)
        self.console.print(f"{epoch}{cells} {elapsed:>7}{'*' if best else ''}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def show_trained(console: Console, result) -> None:
    from resnetctl.commands import command

    if result.placement and not result.placement.chief:
        console.print(
            f"[green]Done[/]: worker {result.placement.worker}; the chief worker wrote run {escape(result.run.name)}"
        )
    elif result.history:
        if result.stopped_early:
            console.print(
                f"Stopped early at epoch {result.stopped_early['stopped_epoch']}: {result.stopped_early['reason']} "
                f"(best epoch {result.stopped_early['best_epoch']})",
                highlight=False,
            )
        console.print(
            f"[green]Done[/]: {escape(str(result.run.path))} at epoch {result.history[-1]['epoch']}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            "  evaluate with: " + escape(command("evaluate", "--run", result.run.path.resolve())),
            highlight=False,
            soft_wrap=True,
        )


# --------------------------------------------------------------------------- evaluate / summary
def show_evaluation(console: Console, r: dict) -> None:
    epoch = f", epoch {r['epoch']}" if r.get("epoch") is not None else ""
    console.print(
        f"{r['model']} ({r['checkpoint']}{epoch}) on {r['dataset']}/{r['split']} ({r['images']} images), "
        f"{describe_tta(r.get('tta'))}",
        highlight=False,
        markup=False,
    )
    if r.get("rank_1") is not None:
        console.print(
            f"rank-1 [bold]{r['rank_1']:.4f}[/]  rank-{r['k']} [bold]{r['rank_k']:.4f}[/]  loss {r['loss']:.4f}  "
            f"macro precision {r['macro_precision']:.4f}  recall {r['macro_recall']:.4f}  "
            f"F1 [bold]{r['macro_f1']:.4f}[/]  ({describe_tta(r.get('tta'))})"
        )
        table = _table("class", "precision", "recall", "F1", "images", title="per class", console=console)
        for c in r["per_class"]:
            table.add_row(c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["images"]))
        table.add_section()
        table.add_row(
            "macro mean", f"{r['macro_precision']:.3f}", f"{r['macro_recall']:.3f}", f"{r['macro_f1']:.3f}", ""
        )
        console.print(table)
        if r.get("top_confusions"):
            conf = _table("true", "predicted", "images", title="top confusions", console=console)
            for c in r["top_confusions"]:
                conf.add_row(*_plain(c["true"], c["predicted"], c["images"]))
            console.print(conf)
        for key, what in (
            ("confusion_png", "confusion matrix"),
            ("confusion_csv", "its counts"),
            ("per_class_csv", "per class"),
        ):
            if r.get(key):
                console.print(f"{what}: {r[key]}", highlight=False)
    if r.get("predictions"):
        console.print(f"predictions: {r['predictions']}", highlight=False, markup=False)


def show_predictions(console: Console, results: list[dict], label: str) -> None:
    """One row per image: its top-k classes with probabilities, best first; skipped files say why."""
    k = max((len(r.get("predictions", [])) for r in results), default=1)
    table = _table("file", *(f"#{i}" for i in range(1, k + 1)), title=f"predictions ({label})", console=console)
    for r in results:
        if "predictions" in r:
            table.add_row(*_plain(r["file"], *(f"{p['class']} {p['probability']:.3f}" for p in r["predictions"])))
        else:
            table.add_row(Text(r["file"]), Text(f"skipped: {r['error']}", style="yellow"), *[""] * (k - 1))
    console.print(table)


def show_export(console: Console, r: dict) -> None:
    console.print(f"Exported {r['checkpoint']} as {r['format']}: {r['path']}", highlight=False, markup=False)
    console.print(
        f"  input {r['input']}; output {r['output']}; class names in {r['labels']}", highlight=False, markup=False
    )
    console.print(
        f"  checked on {r['checked_images']} images of {r['checked_on']}: largest difference in "
        f"probability {r['max_abs_difference']:.2e}, top-1 agreement {r['top1_agreement']:.1%}",
        markup=False,
        highlight=False,
    )


def _evaluation_text(ev: dict | None) -> str:
    if not ev:
        return "-"
    epoch = f" epoch {ev['epoch']}" if ev.get("epoch") is not None else ""
    tta = f", TTA {ev['tta']}" if ev.get("tta") else ", no TTA"
    stale = " [stale: checkpoint changed since]" if ev.get("stale") else ""
    when = f" at {ev['evaluated']}" if ev.get("evaluated") else ""
    return f"{ev['split']} rank-1 {ev['rank_1']:.4f} ({ev['checkpoint']}{epoch}{tta}){when}{stale}"


def _segment_text(g: dict) -> str:
    parts = [f"lr {g['lr']}" if g.get("lr") is not None else "", f"to epoch {g['epochs']}" if g.get("epochs") else ""]
    return f"epoch {g['from_epoch']}: " + ", ".join(p for p in parts if p)


def _lineage_text(s: dict) -> str:
    up = [f"{p['kind']} of {p['run']} at epoch {p['epoch']}" for p in s.get("lineage", [])]
    down = [f"{b['run']} ({b['kind']} at epoch {b['epoch']})" for b in s.get("branches", [])]
    text = "; ".join(up) or "-"
    return text + (f"; branches: {', '.join(down)}" if down else "")


def _stopped_early_text(stopped: dict | None) -> str:
    if not stopped:
        return ""
    return f" (stopped early at epoch {stopped.get('stopped_epoch')}; best epoch {stopped.get('best_epoch')})"


def show_run(console: Console, s: dict) -> None:
    table = Table(show_header=False, title=f"run {escape(s['run'])}")
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
        ("schedule changes", ", ".join(_segment_text(g) for g in s["segments"]) or "-"),
        ("lineage", _lineage_text(s)),
        ("epochs", f"{s['epochs_done']} of {s['epochs']}" + _stopped_early_text(s.get("stopped_early"))),
        ("best", best),
        ("curve", s["sparkline"] or "-"),
        ("evaluation", _evaluation_text(s["latest_evaluation"])),
        ("time", f"{s['seconds']:.0f}s, {s['images_per_second']} train images/s"),
        ("checkpoints", ", ".join(map(str, s["checkpoints"])) or "-"),
        ("files", s["path"]),
        ("monitor", s["monitor"] or "-"),
        ("mlflow", f"run {s['mlflow_run']['id']} at {s['mlflow_run']['tracking_uri']}" if s.get("mlflow_run") else "-"),
    ]:
        table.add_row(key, escape(str(value)))
    console.print(table)
    show_seed_groups(console, [s])
    if s["next_command"]:  # outside the table, unwrapped: it works when selected and pasted
        console.print("next: " + escape(s["next_command"]), highlight=False, soft_wrap=True)


def _interval_text(stats: dict | None) -> str:
    if not stats:
        return "-"
    if stats["ci95"] is None:
        return f"{stats['mean']:.4f} (1 run)"
    return f"{stats['mean']:.4f} ± {stats['ci95']:.4f} (95% CI, {stats['n']} runs, sd {stats['std']:.4f})"


def show_seed_groups(console: Console, rows: list[dict]) -> None:
    """``train --seeds`` groups among ``rows``: the mean and 95% interval of the best score and of the test rank-1."""
    seen = set()
    for s in rows:
        g = s.get("seed_group")
        if not g or g["name"] in seen:
            continue
        seen.add(g["name"])
        console.print(
            f"seeds {escape(str(g['name']))} ({g['found']} of {len(g['runs'])} runs): best {s['curve']} "
            f"{_interval_text(g['best_score'])}; test rank-1 {_interval_text(g['test_rank_1'])}",
            highlight=False,
            soft_wrap=True,
        )


def show_runs(console: Console, rows: list[dict]) -> None:
    table = _table(
        "run", "state", "model", "dataset", "epochs", "best", "test rank-1", "from", "curve", console=console
    )
    for s in rows:
        ev = s["latest_evaluation"]
        parent = s["lineage"][0] if s.get("lineage") else None
        table.add_row(
            escape(s["run"]),
            s["state"],
            s["model"],
            escape(str(s["dataset"])),
            f"{s['epochs_done']}/{s['epochs']}",
            f"{s['best_score']:.4f}" if s["best_epoch"] else "-",
            (f"{ev['rank_1']:.4f}" + (f" ({ev['tta']})" if ev.get("tta") else "") + ("*" if ev.get("stale") else ""))
            if ev
            else "-",
            escape(f"{parent['run']}@{parent['epoch']}") if parent else "-",
            s["sparkline"],
        )
    console.print(table)
    if "settings" in rows[0]:  # a study's trials, best first
        for s in rows:
            if s["settings"]:
                settings = ", ".join(f"{k} {v}" for k, v in s["settings"].items())
                console.print(f"  {escape(s['run'])}: {escape(settings)}", highlight=False)
        best = rows[0]
        if best.get("train_command"):
            line = f"best: {best['run']}; train it again with: {best['train_command']}"
            console.print(escape(line), highlight=False)
    show_seed_groups(console, rows)


def show_followed(console: Console, row: dict) -> None:
    """``summary --follow``: one line per finished epoch, then the run's state."""
    if "state" in row:
        reason = f" ({row['reason']})" if row.get("reason") else ""
        console.print(f"run is {row['state']}{escape(reason)} after {row['epochs_done']} epochs", highlight=False)
        return
    cells = " ".join(f"{label} {_fmt(row, key, fmt).strip()}" for key, label, fmt in COLUMNS if key in row)
    console.print(f"epoch {row['epoch']}: {cells}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- lr-find
class SweepBar(_LiveBar):
    """``lr-find``'s progress: a bar with the rate and smoothed loss on a terminal, nothing elsewhere."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]lr-find"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task = None

    def __call__(self, step: int, steps: int, lr: float, smoothed: float) -> None:
        if self.task is None:
            self.task = self.progress.add_task("", total=steps, stats="")
        self.progress.update(self.task, completed=step, stats=f"lr {lr:.2e} smoothed loss {smoothed:.4f}")


def show_lr_find(console: Console, r: dict, rows: int = 12) -> None:
    """The sweep as a short table (rate, smoothed loss), why it stopped, the suggestion with its
    rule, and the ``train`` command that uses it (on a line of its own: it works when pasted)."""
    console.print(
        f"lr-find: {r['model']} on {r['dataset']} ({r['backend']}), batch {r['batch_size']}, "
        f"{r['augmentation']}, {r['optimizer']}; {r['steps_run']} of {r['steps']} steps from lr "
        f"{r['start_lr']:.3g} to {r['end_lr']:.3g}",
        highlight=False,
        markup=False,
    )
    table = _table("lr", "smoothed loss", console=console)
    points = r["points"]
    stride = max(1, len(points) // rows)
    for p in points[::stride]:
        table.add_row(f"{p['lr']:.3g}", f"{p['smoothed']:.4f}")
    console.print(table)
    console.print(f"stopped: {r['stopped']}", highlight=False, markup=False)
    console.print(f"lowest smoothed loss {r['minimum_loss']:.4f} at lr {r['minimum_lr']:.3g}", highlight=False)
    console.print(f"[bold]suggested lr {r['suggested_lr']:.3g}[/] by {escape(r['rule'])}", highlight=False)
    others = [f"{k} {v:.3g}" for k, v in r["candidates"].items() if k != r["rule_name"] and v]
    if others:
        console.print("other rules (--rule): " + ", ".join(others), highlight=False)
    if r.get("plot"):
        console.print(f"plot: {r['plot']}", highlight=False, markup=False)
    console.print("train with: " + escape(r["train_command"]), highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- diagnose
def show_diagnosis(console: Console, d: dict) -> None:
    """The verdict first, the other findings under it, each command on a line of its own."""
    best = f"best {d['curve']} {d['best_score']:.4f} at epoch {d['best_epoch']}" if d.get("best_epoch") else "no best"
    console.print(
        f"run {escape(d['run'])}: {d['state']}, {d['epochs_done']} of {d['epochs']} epochs, {best}",
        highlight=False,
        soft_wrap=True,
    )
    for i, f in enumerate(d["findings"]):
        style = "bold" if i == 0 else "dim"
        console.print(f"[{style}]{escape(f['text'])}[/]", highlight=False, soft_wrap=True)
        if f.get("note"):
            console.print(f"  {escape(f['note'])}", highlight=False, soft_wrap=True)
        if f.get("command"):
            why = f" ({f['why']})" if f.get("why") else ""
            console.print(f"  next{escape(why)}: {escape(f['command'])}", highlight=False, soft_wrap=True)
        if f.get("also"):
            console.print(f"  or: {escape(f['also'])}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- tune
def _params_text(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class TuneDisplay:
    """``tune``'s progress: a line as each trial starts and ends, the trial's training as train shows it."""

    def __init__(self, console: Console):
        self.console = console

    def trial_start(self, info: dict) -> None:
        going_on = " (going on from its checkpoint)" if info.get("resumed") else ""
        self.console.print(
            f"[bold]trial {info['number']}[/] of {info['trials']}{going_on}: {escape(_params_text(info['params']))}",
            highlight=False,
            soft_wrap=True,
        )

    def training(self):
        return TrainingDisplay(self.console)

    def trial_end(self, info: dict) -> None:
        value = f" {info['value']:.4f}" if info.get("value") is not None else ""
        epochs = f" after {info['epochs']} epochs" if info.get("epochs") is not None else ""
        self.console.print(f"trial {info['number']}: {info['state']}{value}{epochs}", highlight=False)


def show_study(console: Console, r: dict) -> None:
    """``tune --show`` (and the end of ``tune``): the trials best first, the epochs spent, the best
    and the train command that repeats it."""
    console.print(
        f"study {escape(r['study'])}: {r['model']} on {r['dataset']}; searches "
        + escape("; ".join(r["space"].values()) or "nothing")
        + f"; pruner {r['pruner']}",
        highlight=False,
        soft_wrap=True,
    )
    table = _table("trial", "state", "score", "epochs", "settings", "run", console=console)
    for t in r["trials"]:
        table.add_row(
            *_plain(
                t["number"],
                t["state"],
                f"{t['value']:.4f}" if t["value"] is not None else "-",
                f"{t['epochs_done']}/{t['epochs']}" if t.get("epochs") else t["epochs_done"],
                _params_text(t["params"]),
                t["run"] or "-",
            )
        )
    console.print(table)
    console.print(
        f"{len(r['trials'])} of {r['trials_planned']} trials; {r['epochs_spent']} epochs trained "
        f"({r['epochs_without_pruning']} without pruning)",
        highlight=False,
    )
    for note in r["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if r["best"]:
        b = r["best"]
        console.print(
            f"[bold]best: trial {b['number']}[/], score {b['value']:.4f}: {escape(_params_text(b['params']))}",
            highlight=False,
            soft_wrap=True,
        )
    if r.get("train_command"):
        console.print("repeat it with: " + escape(r["train_command"]), highlight=False, soft_wrap=True)

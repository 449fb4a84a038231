"""The pictures a run writes: training curves (monitor.png) and confusion matrices (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from resnetctl import atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_monitor(
    rows: list[dict],
    path: Path,
    title: str,
    rate: list[tuple[float, float]] | None = None,
    marks: list[tuple[int, str]] | None = None,
) -> None:
    """Loss (log scale: epoch 1's large loss must not flatten the rest), accuracy (and top-5) and
    the learning rate against epochs, from the whole history. ``rate``: (epoch, lr) samples of
    every few steps, so warmup and drops show as they happened; ``marks``: epochs where a resume
    or a rate change happened; the best epoch is marked on every panel. Uses a bare ``Figure``,
    not pyplot's global state, so that training can draw it in a background thread."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from resnetctl.runs import best_row

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    marker = "o" if len(rows) <= 40 else None
    panels = (("loss", ("loss",)), ("accuracy", ("accuracy", "top5")), ("learning rate", ("lr",)))
    best = best_row(rows)
    for ax, (panel, keys) in zip(axes, panels, strict=True):
        if panel == "learning rate" and rate:
            ax.plot([x for x, _ in rate], [y for _, y in rate], label="lr per step")
        else:
            for key in keys:
                for prefix in ("", "val_") if key != "lr" else ("",):
                    name = prefix + key
                    if any(name in r for r in rows):
                        label = "lr" if key == "lr" else f"{'val' if prefix else 'train'} {key}"
                        values = [r.get(name, math.nan) for r in rows]
                        ax.plot(epochs, values, marker=marker, markersize=3, label=label)
        if panel == "loss" and any(r.get("loss", 0) > 0 for r in rows):
            ax.set_yscale("log")
        for epoch, text in marks or []:
            ax.axvline(epoch, color="grey", linestyle=":", linewidth=1)
            if panel == "learning rate":
                ax.annotate(text, (epoch, 1), xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="top")
        if best is not None:
            ax.axvline(best["epoch"], color="green", alpha=0.3, linewidth=3, label=f"best (epoch {best['epoch']})")
        ax.set_xlabel("epoch")
        ax.set_title(panel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 1, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)


def rate_samples(schedule, steps_per_epoch: int, last_epoch: int, per_epoch: int = 25) -> list[tuple[float, float]]:
    """(epoch, lr) of every few optimizer steps up to ``last_epoch``, for monitor.png."""
    stride = max(1, steps_per_epoch // per_epoch)
    return [(step / steps_per_epoch, schedule.at_step(step)) for step in range(0, last_epoch * steps_per_epoch, stride)]


# classes up to which a confusion matrix shows each cell's count and every class name
CONFUSION_TEXT_MAX = 30
CONFUSION_NAMES_MAX = 60


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """Rows normalised for the colour (recall on the diagonal), counts in the cells.

    Sized for the class count: up to 30 classes every cell shows its count and class names are
    large; up to 60 names are small and cells bare; beyond, the axes show class indices every
    few classes (the names and counts are in the CSVs beside it)."""
    plt = _pyplot()
    n = len(classes)
    side = min(14.0, max(6.0, 0.45 * n + 3)) if n <= CONFUSION_NAMES_MAX else 14.0
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    from matplotlib.colors import Normalize, PowerNorm

    # many classes: a square-root scale, so the few-image confusions of 200 classes still show
    scale = Normalize(0, 1) if n <= CONFUSION_NAMES_MAX else PowerNorm(0.5, 0, 1)
    im = ax.imshow(normalised, cmap="Blues", norm=scale, interpolation="nearest")
    if n <= CONFUSION_NAMES_MAX:
        size = 12 if n <= 10 else 9 if n <= CONFUSION_TEXT_MAX else 6
        ax.set_xticks(range(n), classes, rotation=45 if n <= 10 else 90, ha="right" if n <= 10 else "center")
        ax.set_yticks(range(n), classes)
        ax.tick_params(labelsize=size)
        ax.set_xlabel("predicted", fontsize=size + 1)
        ax.set_ylabel("true", fontsize=size + 1)
    else:
        step = max(1, round(n / 10, -1) if n >= 100 else 10)
        ticks = list(range(0, n, int(step)))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_yticks(ticks, [str(t) for t in ticks])
        ax.tick_params(labelsize=8, length=2)
        ax.set_xlabel("predicted class (index; names in the CSV)", fontsize=10)
        ax.set_ylabel("true class (index)", fontsize=10)
    if n <= CONFUSION_TEXT_MAX:
        cell = 11 if n <= 10 else 8 if n <= 20 else 6
        for t in range(n):
            for p in range(n):
                if matrix[t, p]:
                    dark = normalised[t, p] > 0.55
                    ax.text(
                        p,
                        t,
                        str(int(matrix[t, p])),
                        ha="center",
                        va="center",
                        fontsize=cell,
                        color="white" if dark else "black",
                    )
    if title:
        ax.set_title(title, fontsize=11)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_path(path: Path, force: bool):
    """``summary --plot OUT``: claimed under the one output policy (refused now, before any work,
    when it can't be written; an existing file is replaced only with ``--force``)."""
    from resnetctl.errors import RunError
    from resnetctl.outputs import claim

    if Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise RunError(f"--plot must end in {', '.join(PLOT_SUFFIXES)}. Received: {path}")
    return claim(path, "--plot", force=force)


def plot_runs(curves: list[tuple[str, list[dict]]], output) -> None:
    """Several runs (or branches) side by side in one picture (:func:`runs_figure`)."""
    from resnetctl.outputs import written

    plt = _pyplot()
    fig = runs_figure(curves)
    with written(output, suffix=output.path.suffix) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def runs_figure(curves: list[tuple[str, list[dict]]]):
    """Loss (log scale), accuracy and learning rate against epochs of ``(label, history)``
    pairs: one colour a run, train solid and validation dashed."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(curves) > len(colours):
        colours = [plt.get_cmap("turbo")(i / max(1, len(curves) - 1)) for i in range(len(curves))]
    panels = (("loss (log scale)", "loss", True), ("accuracy", "accuracy", True), ("learning rate", "lr", False))
    for (label, rows), colour in zip(curves, colours, strict=False):
        epochs = [r["epoch"] for r in rows]
        marker = "o" if len(rows) <= 40 else None
        for ax, (_, key, has_val) in zip(axes, panels, strict=True):
            for prefix, style in (("", "-"), ("val_", "--")) if has_val else (("", "-"),):
                if any(prefix + key in r for r in rows):
                    values = [r.get(prefix + key, math.nan) for r in rows]
                    ax.plot(epochs, values, style, color=colour, marker=marker, markersize=3, label=label)
    for ax, (title, key, _) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "loss" and ax.lines:
            ax.set_yscale("log")
    runs = [Line2D([], [], color=c, label=label) for (label, _), c in zip(curves, colours, strict=False)]
    styles = [
        Line2D([], [], color="grey", linestyle="-", label="train"),
        Line2D([], [], color="grey", linestyle="--", label="validation"),
    ]
    axes[0].legend(handles=runs + styles, fontsize=8)
    fig.suptitle(", ".join(label for label, _ in curves) if len(curves) <= 4 else f"{len(curves)} runs")
    fig.tight_layout()
    return fig


def plot_lr_find(result: dict, output) -> None:
    """``lr-find --plot``: the loss of each step (faint) and its smoothed curve against the rate
    (log scale), the suggested rate and the lowest smoothed loss marked. Written through the output
    policy (``outputs.written``: a temporary name, then a rename)."""
    from resnetctl.outputs import written

    plt = _pyplot()
    points = result["points"]
    rates = [p["lr"] for p in points]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(rates, [p["loss"] for p in points], color="grey", alpha=0.35, linewidth=1, label="loss per step")
    ax.plot(rates, [p["smoothed"] for p in points], linewidth=2, label="smoothed loss")
    ax.axvline(result["suggested_lr"], color="red", linestyle="--", label=f"suggested {result['suggested_lr']:.3g}")
    ax.axvline(result["minimum_lr"], color="green", linestyle=":", label=f"lowest at {result['minimum_lr']:.3g}")
    ax.set_xscale("log")
    finite = [p["smoothed"] for p in points if math.isfinite(p["smoothed"])]
    if finite:  # the divergence at the end must not flatten the valley
        ax.set_ylim(min(finite) - 0.1 * abs(min(finite)), min(max(finite), 4 * min(finite)) * 1.05)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(
        f"lr-find: {result['model']} on {result['dataset']}, batch {result['batch_size']}, {result['steps_run']} steps"
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with written(output, suffix=output.path.suffix) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)

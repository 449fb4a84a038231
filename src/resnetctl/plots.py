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
    or a rate change happened; the best epoch is marked on every panel."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    from resnetctl.runs import best_row

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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
    plt.close(fig)


def rate_samples(schedule, steps_per_epoch: int, last_epoch: int, per_epoch: int = 25) -> list[tuple[float, float]]:
    """(epoch, lr) of every few optimizer steps up to ``last_epoch``, for monitor.png."""
    stride = max(1, steps_per_epoch // per_epoch)
    return [(step / steps_per_epoch, schedule.at_step(step)) for step in range(0, last_epoch * steps_per_epoch, stride)]


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    plt = _pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, n * 0.35 + 2), max(4, n * 0.35 + 1.5)))
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

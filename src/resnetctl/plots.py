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


def plot_monitor(rows: list[dict], path: Path, title: str) -> None:
    """Loss, accuracy (and top-5) and learning rate against whole epochs, from the whole history.

    Markers make a one-epoch run readable; ticks are integer epochs. Uses a bare ``Figure``,
    not pyplot's global state, so that training can draw it in a background thread."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    marker = "o" if len(rows) <= 40 else None
    panels = (("loss", ("loss",)), ("accuracy", ("accuracy", "top5")), ("learning rate", ("lr",)))
    for ax, (panel, keys) in zip(axes, panels, strict=True):
        for key in keys:
            for prefix in ("", "val_") if key != "lr" else ("",):
                name = prefix + key
                if any(name in r for r in rows):
                    label = "lr" if key == "lr" else f"{'val' if prefix else 'train'} {key}"
                    ax.plot(epochs, [r.get(name, math.nan) for r in rows], marker=marker, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(panel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)


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

"""Rank-1 / rank-k accuracy, loss, per-class precision, recall and F1 (and their macro means) and
the confusion matrix of a checkpoint; the files it writes into the run, named by split, checkpoint
and TTA: ``eval-<split>-<checkpoint>[-<tta>].json``, ``-per-class.csv``, ``-confusion.csv`` and
``-confusion.png``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from resnetctl import atomic
from resnetctl.data.store import read_filenames, read_split
from resnetctl.errors import RunError
from resnetctl.models import check_model_fits
from resnetctl.plots import plot_confusion
from resnetctl.runs import RunDir, checkpoint_info, load_model
from resnetctl.scoring import check_tta, describe_tta

CONFUSION_IMAGE_MAX_CLASSES = 1000  # a figure up to Tiny ImageNet's 200 classes and beyond (plots.py)


def predict(model, images: np.ndarray, batch_size: int = 256, tta: str | None = None) -> np.ndarray:
    probs = model.predict(images, batch_size=batch_size, verbose=0)
    if check_tta(tta) == "flip":
        probs = (probs + model.predict(images[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    return np.asarray(probs, dtype=np.float64)


def rank_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of images whose label is among the ``k`` highest probabilities."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per class: precision (of the images predicted as it, the share that are), recall (of its
    images, the share found: per-class accuracy) and F1. A class never predicted has precision
    0 (scikit-learn's ``zero_division=0``); F1 is 0 where precision and recall both are."""
    hits = matrix.diagonal().astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = hits / np.maximum(predicted, 1)
    recall = hits / np.maximum(actual, 1)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=precision + recall > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "images": actual}


def write_class_csvs(stem: Path, result: dict, classes: list[str]) -> list[Path]:
    """``<stem>-per-class.csv`` (class, precision, recall, f1, images) and ``<stem>-confusion.csv``
    (a row per true class, a column per predicted class, counts)."""
    import csv
    import io

    per_class, confusion = Path(f"{stem}-per-class.csv"), Path(f"{stem}-confusion.csv")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["class", "precision", "recall", "f1", "images"])
    for row in result["per_class"]:
        writer.writerow(
            [row["class"], f"{row['precision']:.6f}", f"{row['recall']:.6f}", f"{row['f1']:.6f}", row["images"]]
        )
    atomic.write_text(per_class, text.getvalue())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, counts in zip(classes, result["confusion_matrix"], strict=True):
        writer.writerow([name, *counts])
    atomic.write_text(confusion, text.getvalue())
    return [per_class, confusion]


def write_predictions(output, names: list[str], probs: np.ndarray, class_ids: list[str], k: int):
    """One line per image, ``<file> <class> ... <class>`` best first: the Tiny ImageNet
    challenge's submission format (written through the output policy)."""
    from resnetctl.outputs import write_text

    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    lines = [" ".join([Path(n).name, *(class_ids[c] for c in row)]) for n, row in zip(names, top, strict=True)]
    write_text(output, "\n".join(lines) + "\n")


def evaluate(request, batch_size: int = 256) -> dict:
    """Score the checkpoint of an :class:`resnetctl.plan.EvaluationPlan`; a run's result is
    recorded in it (``RunDir.write_evaluation``). The checkpoint is read from a private snapshot
    and no lock is taken, so a run can be evaluated while it trains.

    The result always has ``rank_1``, ``k`` and ``rank_k`` (and ``rank_5`` when k >= 5) for a
    labelled split; ``k`` defaults to min(5, classes). See docs/json.md.
    """
    with request.source.snapshot() as copy:
        return _evaluate(request, copy, batch_size)


def _evaluate(request, model_file: Path, batch_size: int) -> dict:
    source, info, split, k, tta = request.source, request.source.dataset, request.split, request.k, request.tta
    model = load_model(model_file, compile=False)
    check_model_fits(model, source.model_path, info.num_classes, info.image_size, f"dataset {info.name!r}")
    images, labels = read_split(info, split)
    probs = predict(model, images, batch_size, tta)
    result: dict = {
        "split": split,
        "checkpoint": source.label,
        "model": str(source.model_path),
        "dataset": info.name,
        "images": int(len(images)),
        "k": k,
        "tta": tta,
        "run": source.run.name if source.run is not None else None,
        "epoch": None,
        "checkpoint_id": None,
    }
    with contextlib.suppress(RunError):  # a .keras file not written by train has no epoch
        meta = checkpoint_info(model_file)
        result.update(epoch=meta.get("epoch"), checkpoint_id=meta.get("id"))
    if request.predictions is not None:
        names = read_filenames(info, split) or [f"{split}_{i}" for i in range(len(images))]
        write_predictions(request.predictions, names, probs, info.meta.get("class_ids") or info.classes, k)
        result["predictions"] = str(request.predictions.path)
    if not info.is_labelled(split):
        return result

    labels = labels.astype(np.int64)
    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, info.num_classes)
    scores = class_scores(matrix)
    present = scores["images"] > 0  # macro means over the classes the split has
    result.update(
        {
            "rank_1": rank_k_accuracy(probs, labels, 1),
            "rank_k": rank_k_accuracy(probs, labels, k),
            **({"rank_5": rank_k_accuracy(probs, labels, 5)} if k >= 5 else {}),
            "loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)))),
            **{f"macro_{key}": float(np.mean(scores[key][present])) for key in ("precision", "recall", "f1")},
            "per_class": [
                {
                    "class": c,
                    "accuracy": float(r),  # = recall; kept under its old name
                    "precision": float(p),
                    "recall": float(r),
                    "f1": float(f),
                    "images": int(n),
                }
                for c, p, r, f, n in zip(
                    info.classes, scores["precision"], scores["recall"], scores["f1"], scores["images"], strict=True
                )
            ],
            "confusion_matrix": matrix.tolist(),
        }
    )
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    worst = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:10], off.shape))[0]
    result["top_confusions"] = [
        {"true": info.classes[t], "predicted": info.classes[p], "images": int(off[t, p])}
        for t, p in worst
        if off[t, p] > 0
    ]
    if source.run is not None:
        record = source.run.evaluation_path(split, source.label, tta)
        stem = record.with_suffix("")
        files = write_class_csvs(stem, result, info.classes)
        result["per_class_csv"], result["confusion_csv"] = map(str, files)
        if info.num_classes <= CONFUSION_IMAGE_MAX_CLASSES:
            png = Path(f"{stem}-confusion.png")
            epoch = f" epoch {result['epoch']}" if result["epoch"] is not None else ""
            title = (
                f"{source.run.name}: {info.name}/{split}, {source.label}{epoch}, {describe_tta(tta)}\n"
                f"accuracy {result['rank_1']:.2%} ({int(matrix.trace())}/{int(matrix.sum())}), "
                f"macro F1 {result['macro_f1']:.3f}"
            )
            plot_confusion(matrix, info.classes, png, title=title)
            result["confusion_png"] = str(png)
            files.append(png)
        source.run.write_evaluation(result)
        _log_to_mlflow(source.run, result, [record, *files])
    return result


def _log_to_mlflow(run: RunDir, result: dict, files: list[Path]) -> None:
    """A run that logs to MLflow gets its evaluation there too (``resnetctl.tracking``)."""
    from resnetctl.tracking import log_evaluation

    name = f"eval_{result['split']}_{result['checkpoint']}" + (f"_{result['tta']}" if result["tta"] else "")
    metrics = {f"{name}_{k}": result[k] for k in ("rank_1", "rank_k", "loss", "macro_f1")}
    log_evaluation(run.config(), files, metrics, result["epoch"])

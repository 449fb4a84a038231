"""Classifying image files with a trained model.

Files are decoded and resized by the function ``prepare`` used for the model's dataset
(:func:`resnetctl.data.images.decode_image`: same interpolation, grey/RGBA/16-bit to RGB), in
worker processes that decode the next batches while the model runs on the current one
(:func:`resnetctl.data.decode.decode_blocks`). So a prediction equals what ``evaluate`` gives
for the same image in a prepared split. A file that can't be read or decoded is reported and
skipped, never fatal.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator

import numpy as np

from resnetctl.data.archive import walk_folder
from resnetctl.data.images import BadImage, is_image_file, read_file
from resnetctl.data.records import FileRecords
from resnetctl.errors import RunError
from resnetctl.scoring import check_topk

GLOB_CHARACTERS = frozenset("*?[")


def find_images(arguments: list[str]) -> tuple[list[str], list[dict]]:
    """Image files named by ``arguments``: files as given, folders searched recursively for
    image extensions, globs expanded (``**`` included). Returns (files, problems), in order,
    without repeats; a missing path or an empty glob is a problem, not an error (finding no
    file at all is)."""
    files, problems, seen = [], [], set()

    def add(path: str):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for argument in map(str, arguments):
        if os.path.isdir(argument):
            found, special = walk_folder(argument, prune_hidden=True)
            for name in found:
                if is_image_file(name):
                    add(os.path.join(argument, name))
            problems += [
                {"file": os.path.join(argument, s["file"]), "error": s["reason"]}
                for s in special
                if is_image_file(s["file"])
            ]
        elif os.path.exists(argument):
            add(argument)  # a file named explicitly: its content decides, not its extension
        elif GLOB_CHARACTERS & set(argument):
            matches = [m for m in sorted(glob.glob(argument, recursive=True)) if os.path.isfile(m)]
            if not matches:
                problems.append({"file": argument, "error": "matches no file"})
            for match in matches:
                add(match)
        else:
            problems.append({"file": argument, "error": "no such file or folder"})
    if not files:
        raise RunError(
            "No image files found in " + ", ".join(f"{p['file']} ({p['error']})" for p in problems)
            if problems
            else "No image files found",
            hint="give image files, folders or globs",
        )
    return files, problems


def read_image_file(path: str) -> bytes:
    """:func:`read_file`, with an unreadable file (permissions, a folder, gone) as a bad image."""
    try:
        return read_file(path)
    except OSError as exc:
        raise BadImage(f"cannot read it ({exc.strerror or exc})") from None


def load(source):
    """The Keras model of a :class:`resnetctl.plan.ModelSource` (read from a private snapshot,
    so a run that is training can be used) and its class names, checked against each other."""
    from resnetctl.checkpoints import load_model
    from resnetctl.models import check_model_fits

    with source.snapshot() as copy:
        model = load_model(copy, compile=False)
    known = len(source.classes) if source.classes else None
    check_model_fits(model, source.model_path, known, source.image_size, "its dataset")
    return model, source.classes or [str(i) for i in range(int(model.output_shape[-1]))]


def classify(
    model,
    classes: list[str],
    files: list[str],
    topk: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
) -> Iterator[dict]:
    """Yield, in the order of ``files``, ``{"file", "predictions": [{"class", "index",
    "probability"}, ...]}`` best first, or ``{"file", "error"}`` for a file that was skipped."""
    from resnetctl.data.decode import decode_blocks

    size = int(model.input_shape[1])
    k = check_topk(topk, len(classes))
    records = FileRecords(list(files), np.zeros(len(files), np.int32), read_image_file)
    blocks = [np.arange(i, min(i + batch_size, len(files))) for i in range(0, len(files), batch_size)]
    with contextlib.closing(decode_blocks(records, blocks, size, workers)) as decoded:
        for index, (images, kept, skipped, _) in zip(blocks, decoded, strict=True):
            errors = {s["file"]: s["reason"] for s in skipped}
            probs = np.asarray(model.predict_on_batch(images), np.float64) if len(kept) else None
            row_of = {int(i): row for row, i in enumerate(kept)}
            for i in index:
                if int(i) not in row_of:
                    yield {"file": files[i], "error": errors[files[i]]}
                    continue
                p = probs[row_of[int(i)]]
                top = np.argsort(-p, kind="stable")[:k]
                yield {
                    "file": files[i],
                    "predictions": [{"class": classes[c], "index": int(c), "probability": float(p[c])} for c in top],
                }


def predict(plan) -> list[dict]:
    """``predict`` as planned by :func:`resnetctl.plan.plan_predict`: every file classified or
    reported, in order; the CSV written when asked."""
    model, classes = load(plan.source)
    results = plan.problems + list(classify(model, classes, plan.files, plan.topk, plan.batch_size))
    classified = [r for r in results if "predictions" in r]
    if plan.csv is not None and classified:
        write_csv(plan.csv, results, len(classified[0]["predictions"]))
    return results


def check_classified(results: list[dict], where: str) -> None:
    """After the results are shown: a warning naming how many were skipped (``where`` they are
    listed), and a refusal when none could be classified."""
    import logging

    classified = sum("predictions" in r for r in results)
    skipped = len(results) - classified
    if skipped:
        logging.getLogger("resnetctl").warning("%d of %d skipped (%s)", skipped, len(results), where)
    if not classified:
        raise RunError("No image could be classified")


def write_csv(output, results: list[dict], k: int) -> None:
    """One row per image: ``file,class_1,probability_1,...`` (skipped files: ``error`` set)."""
    import csv
    import io

    from resnetctl.outputs import write_text

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", *(f"{c}_{r}" for r in range(1, k + 1) for c in ("class", "probability")), "error"])
    for row in results:
        cells = [row["file"]]
        for p in row.get("predictions", []):
            cells += [p["class"], f"{p['probability']:.6f}"]
        cells += [""] * (1 + 2 * k - len(cells))
        writer.writerow([*cells, row.get("error", "")])
    write_text(output, out.getvalue())

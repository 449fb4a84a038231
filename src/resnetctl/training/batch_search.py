"""``--batch-size auto``: the largest batch, a power of two capped by the dataset, that fits the
accelerator's memory for a model and precision, found by short real train steps.

Starting from the default rule's batch, each candidate builds and compiles the run's model and
takes :data:`STEPS` real optimizer steps on random images of the dataset's size; the doubling stops
at the first that runs out of memory or whose measured peak passes ``1 - MARGIN`` of the device's
memory, and where the default batch itself does not fit, the search halves down instead. The batch
kept is the largest within that margin; where the backend does not report the device's memory
(TensorFlow's allocator), the largest that ran, halved: memory fragments over a long run (what makes
Ultralytics' ``batch=-1`` run out of memory after some epochs), so the search never takes the last
batch that fitted. On a CPU memory is not what limits the batch, and the default rule is kept. What
was measured is returned, for config.json and the output.
"""

from __future__ import annotations

import gc
import math

import keras
import numpy as np

from resnetctl.errors import ModelError
from resnetctl.training import distribute
from resnetctl.training.config import DEFAULT_BATCH_SIZE_RULE, default_batch_size

STEPS = 3  # the first compiles; the peak is that of real steps
MARGIN = 0.2


def largest_power_of_two(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def search(build, image_size: int, num_classes: int, train_images: int) -> dict:
    """The batch to train with and what was measured. ``build()`` returns the run's compiled model."""
    default = default_batch_size(train_images)
    device = distribute.accelerator()
    if device is None:
        return {
            "batch_size": default,
            "device": "cpu",
            "rule": f"on a CPU the default rule is kept ({DEFAULT_BATCH_SIZE_RULE}): {default}",
            "measured": [],
        }
    rng = np.random.default_rng(0)

    def probe(batch: int) -> dict:
        images = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
        labels = rng.integers(0, num_classes, (batch,))
        model = None
        try:
            distribute.reset_peak_memory()
            model = build()
            for _ in range(STEPS):
                model.train_on_batch(images, labels)
            return {"batch_size": batch, "peak_bytes": distribute.peak_memory()}
        except Exception as exc:
            if not distribute.is_out_of_memory(exc):
                raise
            return {"batch_size": batch, "out_of_memory": True}
        finally:
            del model
            keras.backend.clear_session()
            gc.collect()

    cap, limit = largest_power_of_two(train_images), device["limit_bytes"]
    return choose(probe, default, cap, limit, device["device"], peak_resets=distribute.peak_resets())


def choose(probe, default: int, cap: int, limit: int | None, device: str, peak_resets: bool = True) -> dict:
    """The search itself, over ``probe(batch)`` (a measured row: ``peak_bytes``, or ``out_of_memory``).

    Up by doubling from the default batch while a batch fits (ran, and within the margin where the
    device's memory is known), down by halving where the default itself does not. A batch that fits
    nowhere, down to 1, is a :class:`ModelError`, not a batch that fails later in training. Where
    the peak only grows (``peak_resets=False``: JAX), it is this batch's own only while every batch
    before it was smaller and ran; after a larger one or one out of memory it is unknown."""
    measured = []

    def fits(batch: int) -> bool:
        row = probe(batch)
        grew = all(m["batch_size"] < batch and not m.get("out_of_memory") for m in measured)
        if not peak_resets and not grew and not row.get("out_of_memory"):
            row = {**row, "peak_bytes": None}  # the peak of an earlier, larger attempt
        measured.append(row)
        if row.get("out_of_memory"):
            return False
        return not (limit and row["peak_bytes"] and row["peak_bytes"] > (1 - MARGIN) * limit)

    start = min(default, cap)
    largest, batch = None, start
    if fits(batch):
        largest = batch
        while largest * 2 <= cap and fits(largest * 2):
            largest *= 2
    else:
        while batch > 1 and largest is None:
            batch //= 2
            largest = batch if fits(batch) else None
    gib = ", ".join(f"{m['batch_size']}: {_what_ran(m)}" for m in measured)
    if largest is None:
        raise ModelError(
            f"no batch fits on {device}: down to a batch of 1, each ran out of memory"
            + (f" or passed {1 - MARGIN:.0%} of its {limit / 2**30:.1f} GiB" if limit else "")
            + f" ({gib})",
            hint="a smaller model, or --precision mixed_bfloat16",
        )
    peaks_known = limit and all(m.get("peak_bytes") for m in measured if not m.get("out_of_memory"))
    if peaks_known:
        chosen, how = largest, f"the largest within {1 - MARGIN:.0%} of {limit / 2**30:.1f} GiB"
    else:
        # memory fragments over a long run: never the last batch that fitted, unless it is the start's
        floor = start if largest >= start else 1
        why = "the device's memory is not reported" if not limit else "its own peak is not known"
        how = f"the largest that ran, halved ({why})"
        chosen = max(floor, largest // 2)
    if largest < start:
        how += f"; the default {start} did not fit"
    return {
        "batch_size": int(chosen),
        "device": device,
        "limit_bytes": limit,
        "rule": f"{how} on {device} ({gib}; capped at {cap}, the dataset's power of two)",
        "measured": measured,
    }


def _what_ran(row: dict) -> str:
    if row.get("out_of_memory"):
        return "out of memory"
    return "ran" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**30:.2f} GiB"


def scaled_lr(lr: float, batch: int, default: int) -> float:
    """The linear scaling rule train documents (docs/distributed.md): the rate given is the rate of
    the default batch."""
    return lr * batch / default if math.isfinite(lr) else lr

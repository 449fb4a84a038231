"""The checkpoint file: a ``.keras`` file (model + optimizer state) plus our ``resnetctl.json``.

The extra zip member says which epoch the file holds, with an id that changes on every save,
so an evaluation can tell whether the checkpoint it scored has since been replaced. Files are
written to a hidden temp name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import uuid
import zipfile
from pathlib import Path

from resnetctl import atomic
from resnetctl.errors import RunError

CHECKPOINT_FORMAT = 1
CHECKPOINT_META = "resnetctl.json"


def save_checkpoint(model, path: Path, info: dict) -> dict:
    """``model.save`` (weights, optimizer state, compile config) + our metadata, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": CHECKPOINT_FORMAT, "id": uuid.uuid4().hex, **info}
    with atomic.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(CHECKPOINT_META, json.dumps(meta))
    return meta


def checkpoint_info(path: Path) -> dict:
    """Our metadata of a checkpoint; a RunError for a file that is missing, damaged or foreign."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(CHECKPOINT_META))
    except KeyError:
        raise RunError(f"{path} was not written by resnetctl (no {CHECKPOINT_META})") from None
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise RunError(f"{path} is not a readable checkpoint ({exc})") from None


@contextlib.contextmanager
def deep_graph_recursion(limit: int = 30_000):
    """Keras maps a functional graph recursively, one Python frame per layer: ResNet1202
    (about 4,000 layers) needs more than Python's default limit of 1,000."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def load_model(path: str | Path, compile: bool = True):
    """Load a ``.keras`` file written by resnetctl (or any Keras model file)."""
    import keras

    import resnetctl

    resnetctl.register_keras_objects()
    path = Path(path)
    if not path.is_file():
        raise RunError(f"No model file at {path}")
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):  # Keras says "File not found" for both
        what = "empty (0 bytes)" if path.stat().st_size == 0 else "not a .keras file (not a zip archive)"
        raise RunError(f"Cannot load {path}: it is {what}", hint="use another checkpoint (--epoch / --checkpoint)")
    try:
        with deep_graph_recursion():
            return keras.saving.load_model(path, compile=compile)
    except Exception as exc:  # Keras raises many kinds for a damaged file
        raise RunError(f"Cannot load {path}: {exc}", hint="use another checkpoint (--epoch / --checkpoint)") from None


def saved_variables(model) -> list:
    """Every variable a checkpoint holds (the model's, then the optimizer's), in a fixed order."""
    return [*model.variables, *(model.optimizer.variables if getattr(model, "optimizer", None) else [])]


def variable_layout(model) -> list:
    """Each saved variable's path (without the ``_N`` Keras appends to a repeated name: a seed
    generator's), shape and dtype."""
    return [(re.sub(r"_\d+(?=/|$)", "", v.path), tuple(v.shape), v.dtype) for v in saved_variables(model)]


def host_copy(model) -> list:
    """The state a checkpoint of ``model`` holds, as NumPy arrays of its own (a few milliseconds:
    the only part of a background save that runs on the training thread)."""
    import keras
    import numpy as np

    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in saved_variables(model)]


class CheckpointTwin:
    """A second copy of the model, loaded from one of its checkpoints, that writes checkpoints
    from a :func:`host_copy` so the save (config JSON, HDF5, zip: about a second for ResNet56)
    overlaps the next epoch instead of stopping it. Keras saves from a model's live variables,
    so the state has to be put into a model that training does not touch; this one is only
    used by the thread that writes. ``layout`` is :func:`variable_layout` of the live model, taken
    on the training thread: on JAX, Keras' ``Callback.model`` syncs the training state whenever it
    is read, and a sync from another thread mid-epoch puts back buffers a step has donated."""

    def __init__(self, source: Path, layout: list):
        self.model = load_model(source)
        self.variables = saved_variables(self.model)
        if variable_layout(self.model) != layout:
            raise RunError(f"{source} does not load as the model that wrote it")

    def save(self, state: list, path: Path, info: dict) -> dict:
        for variable, value in zip(self.variables, state, strict=True):
            variable.assign(value)
        return save_checkpoint(self.model, path, info)

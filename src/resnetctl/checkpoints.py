"""The checkpoint file: a ``.keras`` file (model + optimizer state) plus our ``resnetctl.json``.

The extra zip member says which epoch the file holds, with an id that changes on every save,
so an evaluation can tell whether the checkpoint it scored has since been replaced. Files are
written to a hidden temp name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import json
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

"""Files and folders that appear complete or not at all (temp name in the same folder + rename)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"
TEMP_SUFFIXES = r"(?:\.keras|\.png|\.old|\.tflite|\.onnx)?"  # what writers append for their libraries


def temp_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden name beside ``path`` that no reader mistakes for the real thing."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename.

    ``suffix`` keeps writers happy that insist on an extension (Keras wants ``.keras``).
    On any error the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    tmp = temp_sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def temp_pattern(name: str | None = None) -> re.Pattern:
    """The names :func:`temp_sibling` (and prepare's ``old-PID``) give ``name``'s temporaries,
    exactly: ``.x.tmp-1.tmp-77`` is a temporary of ``x.tmp-1``, never of ``x``."""
    stem = re.escape(name) if name is not None else r"[^/]+?"
    return re.compile(rf"\.{stem}{re.escape(TEMP_MARK)}(?:old-)?\d+{TEMP_SUFFIXES}")


def remove_stale_temps(folder: Path, name: str | None = None) -> None:
    """Delete what an interrupted writer of ``folder/name`` (of any file in ``folder`` when
    ``name`` is None) left behind. Call it only while holding the lock of what is cleaned: then
    the writer of any such temporary is gone."""
    pattern = temp_pattern(name)
    if folder.is_dir():
        for leftover in folder.iterdir():
            if not pattern.fullmatch(leftover.name):
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

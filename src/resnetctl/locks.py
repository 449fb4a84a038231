"""One writer at a time for a run or a dataset: an OS lock that dies with its process.

The lock is ``flock`` on a hidden file beside the thing it guards (``.<name>.lock``), so the
kernel releases it when the holder exits or is killed: a crash never leaves a stale lock. The
holder writes its pid into the file, so a refused second writer can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from resnetctl.errors import Busy


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def holder(target: Path) -> int | None:
    """The pid holding ``target``'s lock, or None when nobody does (checked, not guessed)."""
    path = lock_path(target)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def exclusive(target: Path, what: str):
    """Hold ``target``'s lock for the block, or raise :class:`Busy` naming the holder's pid."""
    return exclusive_file(lock_path(target), f"{what} {target}")


@contextlib.contextmanager
def exclusive_file(path: Path, label: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the block (``label`` names what it guards in the error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f"pid {text}" if text.isdigit() else "another process"
            raise Busy(
                f"{label} is in use by {pid}", hint="wait for it to finish, or stop it first (Ctrl+C or kill)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock

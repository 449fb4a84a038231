"""One writer at a time for a run or a dataset: an OS lock that dies with its process.

The lock is ``flock`` on a hidden file beside the thing it guards (``.<name>.lock``), so the
kernel releases it when the holder exits or is killed: a crash never leaves a stale lock. The
holder writes its pid into the file, so a refused second writer can say who holds it.

The lock is keyed on the real path (symlinks resolved), so two names of one run share one lock;
the lock file is opened without following a symlink and must be a plain file of its own (not a
hard link to someone's file): the pid written into it never lands in a file the user owns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from resnetctl.errors import Busy, ResnetctlError

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def lock_path(target: Path) -> Path:
    real = Path(os.path.realpath(target))
    return real.parent / f".{real.name}.lock"


def _check_lock_file(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        raise ResnetctlError(
            f"The lock file {path} is not a plain file of its own (a hard link or a special file); it was left as is",
            hint="remove it if no resnetctl command is running there",
        )


def _open(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | _OPEN_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise ResnetctlError(
                f"The lock file {path} is a symbolic link; resnetctl does not follow it (nothing was written)",
                hint="remove the link if no resnetctl command is running there",
            ) from None
        raise


def holder(target: Path) -> int | None:
    """The pid holding ``target``'s lock, or None when nobody does (checked, not guessed)."""
    path = lock_path(target)
    try:
        fd = _open(path, os.O_RDONLY)
    except (OSError, ResnetctlError):
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


def exclusive(target: Path, what: str, wait: float = 0.0):
    """Hold ``target``'s lock for the block, or raise :class:`Busy` naming the holder's pid."""
    return exclusive_file(lock_path(target), f"{what} {target}", wait)


@contextlib.contextmanager
def exclusive_file(path: Path, label: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock file ``path`` for the block (``label`` names what it guards in the error);
    ``wait``: seconds to keep trying while another process holds it (for holders of a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open(path, os.O_RDWR | os.O_CREAT)
    try:
        _check_lock_file(fd, path)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
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

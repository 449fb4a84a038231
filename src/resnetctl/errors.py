"""One exception family for everything a user can get wrong, and the exit codes.

The CLI turns a :class:`ResnetctlError` into one red line (what, where, what to do) and its
``exit_code``; anything else is a bug, reported in one line with :data:`EXIT_INTERNAL`.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_USER_ERROR = 1  # a user mistake or a bad file
EXIT_USAGE = 2  # the command line itself is wrong (Typer's usage errors)
EXIT_DIVERGED = 3  # training stopped because the loss became NaN or inf
EXIT_INTERNAL = 70  # a bug in resnetctl (sysexits' EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # Ctrl+C or SIGTERM, stopped cleanly


class ResnetctlError(Exception):
    """A user mistake or a bad file: the message is shown as is, with an optional hint."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str, hint: str | None = None):
        # one line, whatever a library's text held (tarfile lists each method it tried on a line)
        message = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
        super().__init__(message, hint)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DatasetError(ResnetctlError):
    """A source archive, folder or prepared dataset that cannot be used."""


class ModelError(ResnetctlError):
    """An unknown model name or a bad architecture option."""


class RunError(ResnetctlError):
    """A run directory, checkpoint or training option that cannot be used."""


class Busy(ResnetctlError):
    """Another process holds the lock of the run or dataset this command would write."""


class Stopped(ResnetctlError):
    """Stopped early on purpose (a signal); nothing half-written is left."""

    exit_code = EXIT_INTERRUPTED


class Diverged(Stopped):
    """The loss became non-finite; the last good epoch is kept."""

    exit_code = EXIT_DIVERGED


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC and its kin; h5py reports a failed flush as a RuntimeError with the errno only in its text."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return isinstance(exc, OSError | RuntimeError) and any(
        marker in text for marker in ("No space left", "errno = 28", "Disk quota exceeded", "File too large")
    )

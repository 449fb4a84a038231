"""One exception family for everything a user can get wrong.

The CLI turns a :class:`ResnetctlError` into one red line (what, where, what to do) and exit code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ResnetctlError(Exception):
    """A user mistake or a bad file: the message is shown as is, with an optional hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
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


class Stopped(ResnetctlError):
    """Stopped early on purpose (a signal, a non-finite loss); nothing half-written is left."""

    exit_code = 130

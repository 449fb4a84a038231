"""Ctrl+C and SIGTERM as a flag that long loops check at safe points.

A ``KeyboardInterrupt`` can land anywhere, including inside a finaliser where Python swallows
it; a flag checked between batches (training) or blocks (prepare) stops deterministically.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

RECEIVED: dict = {"signal": None}  # the last signal raise_on_signals turned into an exception


class SignalInterrupt(KeyboardInterrupt):
    """SIGINT or SIGTERM raised as Ctrl+C is, where no loop polls a flag: ``finally`` blocks run
    (temporary files removed, ``subprocess.run`` kills its child) and the CLI prints one line."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal_name = name


def raise_on_signals() -> None:
    """For the whole command. SIGTERM's default ends the process at once, leaving temporary files
    in the user's folder and export's checking subprocess running; the signal's name is kept in
    :data:`RECEIVED`, as Typer turns a KeyboardInterrupt into a bare exit code 130."""

    def handler(signum, frame):
        RECEIVED["signal"] = signal.Signals(signum).name
        raise SignalInterrupt(RECEIVED["signal"])

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


@contextmanager
def stop_on_signals():
    """Yield a dict whose ``"signal"`` becomes the signal's name; a second Ctrl+C aborts at once."""
    state = {"signal": None}

    def handler(signum, frame):
        if state["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        state["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

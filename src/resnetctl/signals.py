"""Ctrl+C and SIGTERM as a flag that long loops check at safe points.

A ``KeyboardInterrupt`` can land anywhere, including inside a finaliser where Python swallows
it; a flag checked between batches (training) or blocks (prepare) stops deterministically.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager


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

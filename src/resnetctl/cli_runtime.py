"""The process around a command: where it draws (stdout, or stderr when stdout carries the
output), ``--verbose`` anywhere on the line, the quiet backend import, JSON on stdout, and the one
mapping from every failure to a line and a documented exit code (docs/training.md)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys

from resnetctl import ui
from resnetctl.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, Diverged, ResnetctlError, Stopped

console = ui.make_console()
err_console = ui.make_console(stderr=True)
STATE = {"verbose": False}


def set_verbose(verbose: bool) -> None:
    STATE["verbose"] = STATE["verbose"] or verbose
    if not STATE["verbose"]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_backend_quietly() -> None:
    """Import Keras (and TensorFlow, which ``keras.utils.set_random_seed`` imports on every backend
    when it is installed) with fd 2 sent to /dev/null: TensorFlow's C++ libraries print start-up
    lines before their logging is set up, which TF_CPP_MIN_LOG_LEVEL can't silence. ``--verbose``
    keeps them; Python errors still show."""
    if STATE["verbose"] or "keras" in sys.modules:
        return
    import importlib.util

    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        if importlib.util.find_spec("tensorflow"):
            import tensorflow  # noqa: F401
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def console_beside(output):
    """Where a command renders: stderr when its ``output`` is stdout (``-``), so stdout holds
    that output alone (``| head`` gets pure CSV; the plan refused ``--json`` beside it)."""
    return err_console if output is not None and output.stdout else console


def reading_note(source) -> None:
    """A reader of a run that is training says so (it reads the last finished checkpoint)."""
    from resnetctl.plan import running_note

    note = running_note(source.run)
    if note:
        ui.print_note(err_console, f"{note}; using {source.label} ({source.model_path.name})")


def _take_verbose(argv: list[str]) -> list[str]:
    """``--verbose``/``-v`` anywhere before ``--`` counts, not only before the command."""
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut:]
    else:
        head, tail = argv, []
    kept = [a for a in head if a not in ("--verbose", "-v")]
    if len(kept) != len(head):
        STATE["verbose"] = True
    return kept + tail


def _exit(code: int) -> None:
    """Exit with ``code``. When a command failed with worker threads still alive (the streamed
    HDF5 readers of an interrupted epoch, TensorFlow's pools), skip the interpreter's teardown:
    a daemon thread frozen while holding h5py's lock made that teardown hang forever."""
    import threading

    if code and threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _closed_pipe() -> None:
    """End quietly with 0: what was printed reached a reader that stopped reading (``| head``)."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    os._exit(0)


def run(app) -> None:
    """Run the Typer ``app`` on this process's argv and exit with its code."""
    from resnetctl.signals import raise_on_signals

    raise_on_signals()
    try:
        code = execute(app, sys.argv[1:])
    except BrokenPipeError:  # `resnetctl summary | head`: the reader has all it wanted
        _closed_pipe()
    _exit(code)


def execute(app, argv: list[str]) -> int:
    """Run the Typer ``app`` on ``argv`` and return its exit code: every failure becomes one line
    and a documented code. A closed stdout (``| head``) is raised as ``BrokenPipeError`` for the
    caller to end on; nothing else leaves the process (the tests run commands in process)."""
    from resnetctl.signals import RECEIVED

    ui.show_library_warnings(err_console)
    args = _take_verbose(argv)
    try:
        code = app(args=args, standalone_mode=False)  # Typer returns Exit codes here
        if code == EXIT_INTERRUPTED:  # Typer's answer to a KeyboardInterrupt: exit 130, silently
            raise KeyboardInterrupt
        return code if isinstance(code, int) else 0
    except Stopped as exc:  # a stop asked for (Ctrl+C, SIGTERM) is not an error; divergence is
        (ui.print_error if isinstance(exc, Diverged) else ui.print_stopped)(err_console, exc.message, exc.hint)
        return exc.exit_code
    except ResnetctlError as exc:
        if STATE["verbose"]:
            err_console.print_exception()
        ui.print_error(err_console, exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        name = getattr(exc, "signal_name", None) or RECEIVED["signal"] or "SIGINT"
        ui.print_stopped(err_console, f"stopped by {name}; nothing half-written was kept")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except SystemExit as exc:  # Typer turns a closed pipe into exit 1 itself
        if isinstance(exc.__context__, OSError) and exc.__context__.errno == errno.EPIPE:
            raise BrokenPipeError(errno.EPIPE, "stdout was closed") from exc
        if isinstance(exc.code, str):  # sys.exit("text"): Python would print the text and exit 1
            ui.print_error(err_console, exc.code)
            return 1
        return 0 if exc.code is None else exc.code
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    """A usage error (Typer's own message and code), an OS error (one line), or a bug (exit 70)."""
    # usage errors; matched by shape, as Typer >= 0.29 vendors Click and older Typer uses Click's own
    if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
        exc.show()
        return exc.exit_code
    if type(exc).__name__ == "Abort":
        return 1
    if STATE["verbose"]:
        err_console.print_exception()
    if isinstance(exc, OSError):
        ui.print_error(
            err_console,
            f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            "check the path and its permissions; --verbose shows where it happened",
        )
        return 1
    ui.print_error(
        err_console,
        f"internal error: {type(exc).__name__}: {exc}",
        "this is a bug in resnetctl; please report it with the output of --verbose",
    )
    return EXIT_INTERNAL

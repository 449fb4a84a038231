"""Where datasets and runs live: platformdirs defaults, environment overrides, explicit flags;
and what a dataset or run *name* may be."""

from __future__ import annotations

import os
import re
from pathlib import Path

DATA_DIR_ENV = "RESNETCTL_DATA_DIR"
RUNS_DIR_ENV = "RESNETCTL_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"
# a plain name: no separators, no leading dot (so never "." or ".."), no glob characters
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,127}")  # fullmatch: "$" would let "x\n" pass


def check_name(name: str, what: str) -> str:
    """``name`` if it is a plain file name that stays inside its parent folder, else an error."""
    from resnetctl.errors import ResnetctlError

    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        raise ResnetctlError(
            f"{what} name {name!r} is not a plain name",
            hint="use letters, digits and _ . + = @ - (no '/', no leading '.', at most 128 characters)",
        )
    return name


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Root that holds one folder per prepared dataset.

    Order: the explicit flag, then ``$RESNETCTL_DATA_DIR``, then the per-user data directory.
    """
    if override:
        return Path(override).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("resnetctl")) / "datasets"


def runs_dir(override: str | os.PathLike | None = None) -> Path:
    """Root that holds one folder per training run (default ``./runs``)."""
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR).expanduser()


def check_folder(path: Path, what: str) -> Path:
    """``path`` if it is a folder or does not exist yet; a file there is a clear error."""
    from resnetctl.errors import ResnetctlError

    if path.exists() and not path.is_dir():
        raise ResnetctlError(f"{what} {path} is a file, not a folder", hint="give a folder path")
    return path


def download_cache_dir() -> Path:
    """Where downloaded archives are kept, so a second ``prepare`` does not fetch them again."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("resnetctl"))

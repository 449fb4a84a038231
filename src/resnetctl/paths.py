"""Where datasets and runs live: platformdirs defaults, environment overrides, explicit flags."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "RESNETCTL_DATA_DIR"
RUNS_DIR_ENV = "RESNETCTL_RUNS_DIR"


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
    return Path(os.environ.get(RUNS_DIR_ENV, "runs")).expanduser()


def download_cache_dir() -> Path:
    """Where downloaded archives are kept, so a second ``prepare`` does not fetch them again."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("resnetctl"))

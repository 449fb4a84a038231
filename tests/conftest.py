"""Shared fixtures: the real-format datasets in ../shared/datasets and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CIFAR_SUBSET = SHARED / "cifar-10-python-subset.tar.gz"
TINY_MINI = SHARED / "tiny-imagenet-200-mini.zip"


def run_cli(*args, env_extra=None, timeout=600, check=True,
            launcher=("-m", "resnetctl")) -> subprocess.CompletedProcess:
    """``resnetctl ARGS`` as a real subprocess (``python -m resnetctl``, or ``python LAUNCHER``)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    proc = subprocess.run([sys.executable, *launcher, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def invoke(*args):
    """``resnetctl ARGS`` in process through Typer's CliRunner, errors handled as ``main`` does."""
    from typer.testing import CliRunner

    from resnetctl.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def cifar(data_dir) -> Path:
    """The shared CIFAR-10 subset, prepared once through the CLI."""
    assert CIFAR_SUBSET.exists(), f"missing fixture {CIFAR_SUBSET}"
    run_cli("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", data_dir)
    return data_dir / "cifar10"


@pytest.fixture(scope="session")
def cifar_small(data_dir) -> Path:
    """The same real images with 80% carved off as val: 900 train images keep training tests short."""
    run_cli("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", data_dir,
            "--name", "cifar-small", "--val-split", "0.8")
    return data_dir / "cifar-small"

"""What the tests share: where the real-format fixtures are, and two ways to run the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CIFAR_SUBSET = SHARED / "cifar-10-python-subset.tar.gz"
TINY_MINI = SHARED / "tiny-imagenet-200-mini.zip"


def run_cli(
    *args, env_extra=None, timeout=600, check=True, launcher=("-m", "resnetctl"), cwd=None
) -> subprocess.CompletedProcess:
    """``resnetctl ARGS`` as a real subprocess (``python -m resnetctl``, or ``python LAUNCHER``)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, *launcher, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )
    if check:
        assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def cli_command(*args) -> list[str]:
    """The argv of ``resnetctl ARGS`` for a Popen the test controls (signals, concurrency)."""
    return [sys.executable, "-m", "resnetctl", *map(str, args)]


def invoke(*args):
    """``resnetctl ARGS`` in process through Typer's CliRunner (errors land in ``result.exception``)."""
    from typer.testing import CliRunner

    from resnetctl.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def steps_per_epoch(dataset_dir, batch_size=64) -> int:
    meta = json.loads((Path(dataset_dir) / "meta.json").read_text())
    return math.ceil(meta["splits"]["train"]["count"] / batch_size)


def needs(module: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"{module} not installed (pip install '.[{module}]')"
    )


def one_line_error(proc, code=1, text=""):
    """The fault contract: the exit code, the message, and no traceback."""
    assert proc.returncode == code, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert text in proc.stderr, proc.stderr

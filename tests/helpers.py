"""What the tests share: where the real-format fixtures are, the ways to run the CLI (one process,
in process, several processes of one cluster), and what a trained run is read back with."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CIFAR_SUBSET = SHARED / "cifar-10-python-subset.tar.gz"
TINY_MINI = SHARED / "tiny-imagenet-200-mini.zip"
# the session's shared run (conftest's ``small_run``): resnet8 on cifar-small with these options
SMALL_RUN = ("--epochs", 3, "--batch-size", 64, "--checkpoint-every", 1, "--warmup-epochs", 0)


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


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_together(args, envs: list[dict], timeout=420) -> list[subprocess.CompletedProcess]:
    """``resnetctl ARGS`` in one process per entry of ``envs`` at once (the processes of one
    cluster: TF_CONFIG or Keras' distribution variables), each with its own environment."""
    procs = []
    for extra in envs:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
        procs.append(
            subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            p.kill()
    for r in results:
        assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return results


def run_workers(args, ports, timeout=420) -> list[subprocess.CompletedProcess]:
    """TensorFlow's MultiWorkerMirroredStrategy: one process per port, each with its own TF_CONFIG."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    tasks = [{"cluster": cluster, "task": {"type": "worker", "index": index}} for index in range(len(ports))]
    return run_together(args, [{"TF_CONFIG": json.dumps(task)} for task in tasks], timeout=timeout)


def run_jax_processes(args, count=2, timeout=420) -> list[subprocess.CompletedProcess]:
    """JAX across processes: ``count`` processes, each with Keras' cluster variables."""
    (port,) = free_ports(1)
    envs = [
        {
            "KERAS_BACKEND": "jax",
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(count),
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
        }
        for index in range(count)
    ]
    return run_together(args, envs, timeout=timeout)


def iterations(path) -> int:
    """The optimizer steps a checkpoint has taken."""
    import resnetctl

    return int(resnetctl.load_model(path).optimizer.iterations.numpy())


def placements(run) -> list[dict]:
    """Where the run trained: at train, then at each resume."""
    config = run.config()
    return [config["placement"]] + [r["placement"] for r in config.get("resumes", [])]


def copy_run(run, runs_dir, name=None):
    """A copy of a finished run in ``runs_dir`` (as ``name``), for a test that changes it."""
    from resnetctl.runs import RunDir

    target = Path(runs_dir) / (name or run.path.name)
    shutil.copytree(run.path, target)
    return RunDir(target)


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


def pets_world(root: Path) -> tuple[Path, Path]:
    """A 16-image two-class folder ``root/pets`` prepared as dataset ``pets`` (4 test images) in
    ``root/data``, and an untrained resnet8 for it at ``root/m.keras``: the data dir and model."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / "pets" / cls).mkdir(parents=True)
        for i in range(8):
            cv2.imwrite(str(root / "pets" / cls / f"{i}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    data = root / "data"
    run_cli("prepare", "folder", "--source", root / "pets", "--data-dir", data, "--size", 16,
            "--val-split", 0, "--test-split", 0.25)  # fmt: skip
    run_cli("build", "resnet8", "--dataset", "pets", "--data-dir", data, "--save", root / "m.keras")
    return data, root / "m.keras"

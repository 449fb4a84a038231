"""JAX across processes (``--strategy multi-worker``): two real processes on 127.0.0.1, on the CPU.

Each process has one CPU device and feeds its half of every global batch; the run must be the
one a single process with two devices trains (the same numbers, bit for bit), the chief alone
writes the run, and a resume of both processes redoes an epoch exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resnetctl.runs import RunDir
from tests.helpers import needs, one_line_error, run_cli, steps_per_epoch
from tests.test_distributed import free_ports, iterations, placements

pytestmark = [pytest.mark.e2e, needs("jax")]

JAX = {"KERAS_BACKEND": "jax"}


def run_processes(args, count=2, timeout=420) -> list[subprocess.CompletedProcess]:
    """The same command in ``count`` processes, each with Keras' cluster variables."""
    (port,) = free_ports(1)
    procs = []
    for index in range(count):
        env = {
            **os.environ,
            **JAX,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(count),
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "resnetctl", *map(str, args)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
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


def numbers(run: RunDir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in run.history()]


def test_two_processes_train_and_resume_the_run_of_one_process_with_two_devices(data_dir, cifar_small, tmp_path):
    common = ["--data-dir", data_dir, "--runs-dir", tmp_path]
    train = ["train", "resnet8", "--dataset", "cifar-small", *common, "--batch-size", 64, "--epochs", 2]
    chief, worker = run_processes([*train, "--run", "two", "--checkpoint-every", 1])
    assert "keras.distribution.DataParallel, worker 0 of 2" in chief.stdout
    assert "worker 1; the chief worker wrote run two" in worker.stdout
    run = RunDir(tmp_path / "two")
    straight = numbers(run)
    assert [r["epoch"] for r in straight] == [1, 2]
    run_processes(["resume", "--run", "two", "--epoch", 1, "--strategy", "multi-worker", *common])
    assert numbers(run) == straight  # epoch 2 again, exactly

    assert [(p["strategy"], p["backend"], p["workers"], p["replicas"]) for p in placements(run)] == [
        ("multi-worker", "jax", 2, 2)
    ] * 2
    assert [r["epoch"] for r in run.history()] == [1, 2]
    assert iterations(run.last_path) == 2 * steps_per_epoch(cifar_small)
    assert not list(tmp_path.glob("*/.*.tmp-*"))

    # one process, two devices, no resume: the same global batches, so the same numbers
    env = {**JAX, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    one = run_cli(*train, "--run", "one", env_extra=env).stdout
    assert "2 replicas, keras.distribution.DataParallel (" in one
    assert numbers(run) == numbers(RunDir(tmp_path / "one"))


def test_jax_multi_worker_without_its_variables_is_one_line(data_dir, cifar_small, tmp_path):
    train = ["train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", tmp_path]
    proc = run_cli(*train, "--strategy", "multi-worker", env_extra=JAX, check=False)
    one_line_error(proc, 1, "KERAS_DISTRIBUTION_JOB_ADDRESSES")
    assert "docs/distributed.md" in proc.stderr
    half = {**JAX, "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "two"}
    proc = run_cli(*train, env_extra={**half, "KERAS_DISTRIBUTION_JOB_ADDRESSES": "127.0.0.1:1"}, check=False)
    one_line_error(proc, 1, "must be whole numbers")
    assert not list(tmp_path.iterdir())

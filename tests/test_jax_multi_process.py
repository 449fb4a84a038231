"""JAX across processes (``--strategy multi-worker``): two real processes on 127.0.0.1, on the CPU.

Each process has one CPU device and feeds its half of every global batch; the run must be the
one a single process with two devices trains (the same numbers, bit for bit), the chief alone
writes the run, and a resume of both processes redoes an epoch exactly.
"""

from __future__ import annotations

import pytest

from resnetctl.runs import RunDir
from tests.helpers import iterations, needs, one_line_error, placements, run_cli, run_jax_processes, steps_per_epoch

pytestmark = [pytest.mark.e2e, needs("jax")]

JAX = {"KERAS_BACKEND": "jax"}


def numbers(run: RunDir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in run.history()]


def test_two_processes_train_and_resume_the_run_of_one_process_with_two_devices(data_dir, cifar_small, tmp_path):
    """Also keras.distribution.DataParallel on 2 host devices of one process: its placement, its
    backend versions, one optimizer step per global batch, and a batch that does not split.
    (Resume under DataParallel is the two processes' resume here.)"""
    common = ["--data-dir", data_dir, "--runs-dir", tmp_path]
    train = ["train", "resnet8", "--dataset", "cifar-small", *common, "--batch-size", 64, "--epochs", 2]
    chief, worker = run_jax_processes([*train, "--run", "two", "--checkpoint-every", 1])
    assert "keras.distribution.DataParallel, worker 0 of 2" in chief.stdout
    assert "worker 1; the chief worker wrote run two" in worker.stdout
    run = RunDir(tmp_path / "two")
    straight = numbers(run)
    assert [r["epoch"] for r in straight] == [1, 2]
    run_jax_processes(["resume", "--run", "two", "--epoch", 1, "--strategy", "multi-worker", *common])
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
    single = RunDir(tmp_path / "one")
    assert [(p["backend"], p["replicas"]) for p in placements(single)] == [("jax", 2)]
    assert single.config()["versions"]["backend"] == "jax" and "jax" in single.config()["versions"]
    assert iterations(single.last_path) == 2 * steps_per_epoch(cifar_small)

    odd = run_cli(*train[:4], *common, "--batch-size", 63, "--run", "odd", env_extra=env, check=False)
    one_line_error(odd, 1, "does not split over 2 replicas")


def test_jax_multi_worker_without_its_variables_is_one_line(data_dir, cifar_small, tmp_path):
    train = ["train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", tmp_path]
    proc = run_cli(*train, "--strategy", "multi-worker", env_extra=JAX, check=False)
    one_line_error(proc, 1, "KERAS_DISTRIBUTION_JOB_ADDRESSES")
    assert "docs/distributed.md" in proc.stderr
    half = {**JAX, "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "two"}
    proc = run_cli(*train, env_extra={**half, "KERAS_DISTRIBUTION_JOB_ADDRESSES": "127.0.0.1:1"}, check=False)
    one_line_error(proc, 1, "must be whole numbers")
    assert not list(tmp_path.iterdir())

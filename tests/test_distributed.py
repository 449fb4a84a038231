"""Several devices, several workers, other backends: real subprocesses on the CPU.

- TensorFlow MirroredStrategy over 2 logical CPU devices, resumed on 1 device and back;
- MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 with a real TF_CONFIG;
- PyTorch train + resume + evaluate (JAX's DataParallel, on 2 host devices of one process and in
  two processes, is tests/test_jax_multi_process.py).
"""

from __future__ import annotations

import json

import pytest

from resnetctl.runs import RunDir
from tests.helpers import (
    free_ports,
    iterations,
    needs,
    placements,
    run_cli,
    run_in_process,
    run_two_cpus,
    run_workers,
    steps_per_epoch,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def common(tmp_path):
    return ["--runs-dir", tmp_path]


@pytest.fixture
def train_small(data_dir, cifar_small):
    """The start of every train command here."""
    return ["train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir]


def test_mirrored_over_two_devices_resumes_on_one_and_back(train_small, common, tmp_path, cifar_small):
    out = run_two_cpus(
        *train_small, "--epochs", 1, "--batch-size", 64, "--strategy", "mirrored", "--run", "mirrored", *common
    ).stdout
    assert "2 replicas, MirroredStrategy" in out
    run_in_process("resume", "--run", "mirrored", "--epochs", 2, "--strategy", "none", *common)
    run_two_cpus("resume", "--run", "mirrored", "--epochs", 3, "--strategy", "mirrored", *common)

    run = RunDir(tmp_path / "mirrored")
    assert [p["replicas"] for p in placements(run)] == [2, 1, 2]
    assert [p["strategy"] for p in placements(run)] == ["mirrored", "none", "mirrored"]
    assert [r["epoch"] for r in run.history()] == [1, 2, 3]
    assert iterations(run.last_path) == 3 * steps_per_epoch(cifar_small)


def test_multi_worker_train_and_resume_with_tf_config_one_step_per_call(train_small, common, tmp_path, cifar_small):
    """Also --steps-per-execution 4 (from test_steps_per_execution): Keras' multi-step call fails
    under a tf.distribute strategy ("You must feed a value for placeholder tensor" with two
    workers), so K is recorded as asked and run as 1 there, at train and at resume."""
    train = [*train_small, "--epochs", 2, "--batch-size", 64, "--run", "two-workers", *common]
    train += ["--steps-per-execution", 4]
    chief, worker = run_workers(train, free_ports(2))  # --strategy auto: TF_CONFIG names two workers
    assert "MultiWorkerMirroredStrategy, worker 0 of 2" in chief.stdout
    assert "worker 1; the chief worker wrote run two-workers" in worker.stdout
    run_workers(["resume", "--run", "two-workers", "--epochs", 3, "--strategy", "multi-worker", *common], free_ports(2))

    run = RunDir(tmp_path / "two-workers")
    assert run.config()["steps_per_execution"] == 4
    assert [(p["strategy"], p["workers"], p["replicas"]) for p in placements(run)] == [("multi-worker", 2, 2)] * 2
    history = run.history()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    # one optimizer step per global batch, shared by both workers
    assert iterations(run.last_path) == 3 * steps_per_epoch(cifar_small)
    assert not list(tmp_path.glob("*/.*.tmp-*"))


def test_multi_worker_needs_tf_config(train_small, common, cifar_small):
    proc = run_cli(*train_small, "--strategy", "multi-worker", *common, env_extra={"TF_CONFIG": ""}, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "needs TF_CONFIG" in proc.stderr and "docs/distributed.md" in proc.stderr


@needs("torch")
def test_torch_backend_trains_resumes_and_evaluates(train_small, common, tmp_path, cifar_small):
    env = {"KERAS_BACKEND": "torch"}
    run_cli(
        *train_small, "--epochs", 1, "--batch-size", 64, "--warmup-epochs", 0, "--run", "torch", *common, env_extra=env
    )
    run_cli("resume", "--run", "torch", "--epochs", 2, "--lr", 0.01, *common, env_extra=env)
    run = RunDir(tmp_path / "torch")
    assert run.config()["versions"]["backend"] == "torch"
    assert iterations(run.last_path) == 2 * steps_per_epoch(cifar_small)
    # a torch checkpoint names torch's optimizer class; the state still moves to TensorFlow
    run_in_process("resume", "--run", "torch", "--epochs", 3, *common)
    assert run.config()["versions"]["backend"] == "tensorflow"
    assert [r["epoch"] for r in run.history()] == [1, 2, 3]
    steps = steps_per_epoch(cifar_small)  # lr: the rate of each epoch's last step
    assert [r["lr"] for r in run.history()] == pytest.approx([0.1 / steps, 0.01, 0.01])
    assert iterations(run.last_path) == 3 * steps_per_epoch(cifar_small)
    result = json.loads(
        run_cli("evaluate", "--run", "torch", "--checkpoint", "last", "--json", *common, env_extra=env).stdout
    )
    on_tensorflow = json.loads(
        run_in_process("evaluate", "--run", "torch", "--checkpoint", "last", "--json", *common).stdout
    )
    assert result["images"] == on_tensorflow["images"] == 1000
    assert result["rank_1"] == pytest.approx(on_tensorflow["rank_1"], abs=0.002)  # same weights, other backend

    refused = run_cli(*train_small, "--strategy", "mirrored", *common, env_extra=env, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "torch backend trains on one device" in refused.stderr

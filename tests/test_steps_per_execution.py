"""Several optimizer steps per compiled call (``--steps-per-execution``): the run is the same run.

16 steps an epoch at batch 64 on the 1,000 training images, in calls of 5: three full calls and
a last one of a single step. Checkpoints, the schedule, resume, a non-finite loss and Ctrl+C keep
working at that granularity (test_train's SIGINT test and its non-finite loss test run in calls).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import resnetctl
from resnetctl.runs import RunDir, checkpoint_info
from resnetctl.training.config import TrainConfig, default_steps_per_execution
from tests.helpers import invoke, needs, run_cli, run_in_process, steps_per_epoch


def test_the_default_keeps_twenty_progress_updates_an_epoch_and_at_most_sixteen_steps():
    assert [default_steps_per_execution(s) for s in (1, 16, 39, 40, 79, 80, 391, 10_000)] == [1, 1, 1, 2, 3, 4, 16, 16]
    with pytest.raises(Exception, match="steps_per_execution"):
        TrainConfig(model="resnet8", steps_per_execution=0).validate()


def weights(path) -> list[np.ndarray]:
    return [np.asarray(w) for w in resnetctl.load_model(path).get_weights()]


def numbers(run: RunDir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in run.history()]


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=needs("jax"))])
def test_calls_of_five_steps_resume_exactly_on_tf_and_equal_single_steps_on_jax(
    backend, cifar_small, data_dir, tmp_path
):
    env = {"KERAS_BACKEND": backend}
    common = ["--data-dir", data_dir, "--runs-dir", tmp_path]
    train = ["train", "resnet8", "--dataset", "cifar-small", *common, "--epochs", 2, "--batch-size", 64]
    run_in_process(*train, "--run", "k5", "--steps-per-execution", 5, "--checkpoint-every", 1, env_extra=env)
    run = RunDir(tmp_path / "k5")
    steps = steps_per_epoch(cifar_small)
    assert steps == 16 and run.config()["steps_per_execution"] == 5
    assert int(resnetctl.load_model(run.epoch_path(1)).optimizer.iterations.numpy()) == steps  # the remainder ran
    assert int(resnetctl.load_model(run.last_path).optimizer.iterations.numpy()) == 2 * steps
    history = run.history()
    assert [r["lr"] for r in history] == pytest.approx(
        [0.1 * (1 - (e * steps - 1) / (2 * steps)) for e in (1, 2)], rel=1e-5
    )  # warmup of 0.2 epochs is over; the rate of each epoch's last step
    straight, trained = numbers(run), weights(run.last_path)
    if backend == "jax":  # JAX runs the same compiled step K times: K changes nothing but the speed
        run_in_process(*train, "--run", "k1", "--steps-per-execution", 1, env_extra=env)
        assert numbers(RunDir(tmp_path / "k1")) == straight
        # so its resume is a resume at K=1, exact on JAX in test_train's ema test, test_recipe_runs'
        # plateau test and test_jax_multi_process; the K=5 resume itself is the TensorFlow case below
        return
    run_cli("resume", "--run", "k5", "--epoch", 1, *common, env_extra=env)
    assert numbers(run) == straight
    assert all(np.array_equal(a, b) for a, b in zip(weights(run.last_path), trained, strict=True))
    assert checkpoint_info(run.last_path)["epoch"] == 2


# A non-finite loss within a call of 4 steps: test_train's test_a_non_finite_loss_stops_within_a_call...
# Ctrl+C within a call of 8 steps: test_train's test_sigint_stops_a_streaming_run_within_a_call_of_8_steps...


def test_dry_run_shows_the_resolved_steps_per_execution(cifar_small, data_dir):
    def shown(*args) -> int:
        result = invoke("train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, *args, "--dry-run")
        assert result.exit_code == 0, result.output
        return int(re.search(r"│ steps_per_execution\s+│ (\d+)", result.output).group(1))

    assert shown("--batch-size", 8) == 6  # 1,000 images at batch 8: 125 steps an epoch
    assert shown() == 1  # at the default batch, 32: 32 steps an epoch
    assert shown("--steps-per-execution", 3) == 3


# Under a tf.distribute strategy K is recorded and run as 1: test_distributed's multi-worker test.

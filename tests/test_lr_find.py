"""``lr-find``: the rule on known curves, the divergence stop, and real sweeps through the CLI."""

from __future__ import annotations

import json
import math
import shlex

import pytest

from resnetctl.training.lr_find import DIVERGENCE, RULES, SHORT_VALLEY, SweepRecorder, longest_valley, smooth, suggest
from resnetctl.training.schedules import ExponentialSweep
from tests.helpers import needs, one_line_error, run_cli, run_in_process


def test_smoothing_is_debiased_and_the_valley_is_the_longest_fall():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    assert longest_valley([9, 3, 1, 2, 1.5, 1.2, 1.1, 5]) == (0, 6)  # 9 > 3 > 2 > 1.5 > 1.2 > 1.1: ends at 6, 6 long
    assert longest_valley([1, 2, 3]) == (0, 0)


def test_each_rule_on_a_known_curve():
    sweep = ExponentialSweep(1e-5, 10.0, 100)
    rates = [sweep.at_step(i) for i in range(100)]
    # flat, then falling from step 40 to 70, then rising steeply (the shape of a real sweep)
    losses = [2.3] * 40 + [2.3 - 0.04 * i for i in range(30)] + [1.1 * 1.15**i for i in range(30)]
    smoothed = smooth(losses)
    lowest = min(range(100), key=smoothed.__getitem__)
    peak = suggest(rates, smoothed)  # the default
    assert peak["rule_name"] == "peak" and peak["rule"] == RULES["peak"]
    assert peak["lr"] == pytest.approx(rates[lowest] / 2) and peak["minimum_lr"] == rates[lowest]
    valley = suggest(rates, smoothed, "valley")
    low, high = valley["valley"]
    assert valley["rule"] == RULES["valley"] and rates[37] <= low < valley["lr"] < high <= rates[lowest] * 1.01
    assert suggest(rates, smoothed, "minimum/10")["lr"] == pytest.approx(rates[lowest] / 10)
    assert peak["candidates"] == valley["candidates"]  # one sweep, every rule's answer
    # a sweep that never falls for long has no valley: minimum/10, and the rule says so
    short = suggest(rates[:8], [2.0, 1.9, 2.5, 2.4, 2.6, 2.3, 2.8, 3.0], "valley")
    assert short["rule"] == RULES["valley"] + SHORT_VALLEY and short["lr"] == pytest.approx(rates[1] / 10)


class _Model:  # what Keras gives a callback: a flag fit reads after every step
    stop_training = False


def _drive(recorder, step_losses, steps_per_epoch=1000):
    """Feed ``recorder`` what Keras logs (the epoch's running mean of the loss) step by step."""
    recorder.set_model(_Model())
    total = 0.0
    for i, loss in enumerate(step_losses):
        batch = i % steps_per_epoch
        if batch == 0:
            recorder.on_epoch_begin(i // steps_per_epoch)
            total = 0.0
        total += loss
        recorder.on_train_batch_end(batch, {"loss": total / (batch + 1)})
        if recorder.model.stop_training:
            return i + 1
    return len(step_losses)


def test_the_sweep_recovers_each_step_loss_and_stops_on_divergence():
    schedule = ExponentialSweep(1e-3, 1.0, 50)
    losses = [2.0 - 0.01 * i for i in range(30)] + [2.0 * 2**i for i in range(20)]
    recorder = SweepRecorder(schedule, 50, {"signal": None})
    stopped_after = _drive(recorder, losses, steps_per_epoch=7)  # across epoch starts too
    assert [p["loss"] for p in recorder.points] == pytest.approx(losses[:stopped_after], rel=1e-6)
    assert stopped_after < 50 and "passed 4x its lowest value" in recorder.stopped
    smoothed = [p["smoothed"] for p in recorder.points]
    assert smoothed[-1] > DIVERGENCE * min(smoothed) >= smoothed[-2]  # stopped at the first step past it

    nan = SweepRecorder(schedule, 50, {"signal": None})
    assert _drive(nan, [2.0, 1.9, math.nan, 1.0]) == 3 and "non-finite" in nan.stopped and len(nan.points) == 2
    done = SweepRecorder(schedule, 10, {"signal": None})
    assert _drive(done, [2.0] * 20) == 10 and done.stopped is None


@pytest.mark.e2e
def test_lr_find_sweeps_train_s_step_and_prints_a_train_command_that_works(cifar_small, data_dir, tmp_path):
    plot = tmp_path / "sweep.png"
    proc = run_in_process(
        "lr-find", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--steps", 20, "--batch-size", 32,
        "--weight-decay", 1e-4, "--mixup", 0.2, "--plot", plot, "--json", cwd=tmp_path,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["steps_run"] <= 20 and len(result["points"]) == result["steps_run"]
    assert result["batch_size"] == 32 and result["augmentation"] == "crop-flip"
    rates = [p["lr"] for p in result["points"]]
    assert rates == sorted(rates) and rates[0] == pytest.approx(1e-7)
    assert result["rule_name"] == "peak" and result["suggested_lr"] == float(f"{result['minimum_lr'] / 2:.3g}")
    assert set(result["candidates"]) == set(RULES) and rates[0] <= result["suggested_lr"] <= rates[-1]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [plot]  # no run, no runs folder, no temporary left
    words = shlex.split(result["train_command"])
    assert words[:3] == ["resnetctl", "train", "resnet8"]
    assert words[words.index("--lr") + 1] == f"{result['suggested_lr']:.3g}"
    assert words[words.index("--weight-decay") + 1] == "0.0001" and "--mixup" in words
    # pasted (with --dry-run added), it plans the run lr-find swept
    plan = run_in_process(*words[1:], "--dry-run", cwd=tmp_path).stdout
    assert f"{result['suggested_lr']:.3g}" in plan and "nothing was trained" in plan
    # the picture goes through the output policy: an existing file stays without --force
    again = run_in_process("lr-find", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--plot", plot,
                    check=False, cwd=tmp_path)  # fmt: skip
    one_line_error(again, 1, "already exists")


@pytest.mark.e2e
@pytest.mark.parametrize("backend", [pytest.param(b, marks=needs(b)) for b in ("jax", "torch")])
def test_lr_find_runs_on_every_backend(backend, cifar_small, data_dir):
    proc = run_cli("lr-find", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--steps", 12,
                   "--batch-size", 16, "--json", env_extra={"KERAS_BACKEND": backend})  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["backend"] == backend and result["steps_run"] == 12
    assert all(math.isfinite(p["smoothed"]) for p in result["points"])

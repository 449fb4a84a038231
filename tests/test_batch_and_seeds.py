"""``train --batch-size auto`` (on this CPU: the default rule, said and recorded) and ``train --seeds N``
(sibling runs, their mean and 95% interval in ``summary``)."""

from __future__ import annotations

import json
import math

import pytest

from resnetctl.errors import ModelError
from resnetctl.reports import mean_and_interval
from resnetctl.runs import RunDir, best_row, score
from resnetctl.training.batch_search import MARGIN, choose
from resnetctl.training.config import default_batch_size
from tests.helpers import one_line_error, run_in_process


def test_the_interval_is_student_s():
    stats = mean_and_interval([0.70, 0.72, 0.74])
    assert stats["mean"] == pytest.approx(0.72) and stats["std"] == pytest.approx(0.02)
    assert stats["ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3))
    assert mean_and_interval([0.5])["ci95"] is None and mean_and_interval([]) is None


GIB = 2**30


def linear_device(limit_gib: float, base_gib: float, per_image_mib: float, *, peak: str = "resets"):
    """The search's probe on a device whose memory grows with the batch as a real step's does
    (weights plus activations per image), out of memory past its limit, and the batches it was asked.
    ``peak``: ``resets`` (TensorFlow, torch: each probe's own), ``grows`` (JAX: the highest since the
    process began, an attempt out of memory included) or ``none`` (not reported)."""
    asked, highest = [], [0]

    def probe(batch: int) -> dict:
        asked.append(batch)
        need = int((base_gib + batch * per_image_mib / 1024) * GIB)
        highest[0] = max(highest[0], min(need, int(limit_gib * GIB)))
        if need > limit_gib * GIB:
            return {"batch_size": batch, "out_of_memory": True}
        return {"batch_size": batch, "peak_bytes": {"resets": need, "grows": highest[0], "none": None}[peak]}

    return probe, asked


@pytest.mark.parametrize("peak", ["resets", "grows"])
def test_the_batch_search_doubles_to_the_largest_batch_within_the_margin(peak):
    probe, asked = linear_device(10, 1, 20, peak=peak)  # 8 GiB within the margin: 358 images; out of memory past 460
    found = choose(probe, 128, 2**15, 10 * GIB, "gpu:0", peak_resets=peak == "resets")
    assert found["batch_size"] == 256 and asked == [128, 256, 512]
    assert found["measured"][-1] == {"batch_size": 512, "out_of_memory": True}
    assert "the largest within 80% of 10.0 GiB" in found["rule"] and "512: out of memory" in found["rule"]

    probe, asked = linear_device(10, 1, 15, peak=peak)  # 512 runs (8.5 GiB) but past the margin: not taken
    found = choose(probe, 128, 2**15, 10 * GIB, "gpu:0", peak_resets=peak == "resets")
    assert found["batch_size"] == 256 and asked == [128, 256, 512]
    assert found["measured"][-1]["peak_bytes"] > (1 - MARGIN) * 10 * GIB


def test_the_batch_search_goes_down_where_the_default_batch_does_not_fit():
    probe, asked = linear_device(2, 0.5, 20)  # 128 out of memory, 64 past the margin, 32 fits
    found = choose(probe, 128, 2**15, 2 * GIB, "gpu:0")
    assert found["batch_size"] == 32 and asked == [128, 64, 32]
    assert "the default 128 did not fit" in found["rule"]

    # JAX: after 128 ran out of memory the peak reads 2 GiB whatever runs next; 64 ran, its own
    # peak unknown, so not the margin but the halving rule decides
    probe, asked = linear_device(2, 0.5, 20, peak="grows")
    found = choose(probe, 128, 2**15, 2 * GIB, "gpu:0", peak_resets=False)
    assert asked == [128, 64] and found["batch_size"] == 32 and found["measured"][1]["peak_bytes"] is None
    assert "the largest that ran, halved (its own peak is not known)" in found["rule"]

    probe, asked = linear_device(0.4, 0.5, 20)  # the weights alone are past the memory
    with pytest.raises(ModelError, match="no batch fits on gpu:0: down to a batch of 1, each ran out of memory"):
        choose(probe, 128, 2**15, GIB // 2, "gpu:0")
    assert asked == [128, 64, 32, 16, 8, 4, 2, 1]


def test_the_batch_search_is_capped_by_the_dataset_and_halves_where_memory_is_not_reported():
    probe, asked = linear_device(80, 1, 1)
    assert choose(probe, 128, 64, 80 * GIB, "gpu:0")["batch_size"] == 64 and asked == [64]

    probe, asked = linear_device(10, 1, 20)  # TensorFlow: the peak is read, the device's memory is not
    found = choose(probe, 128, 2**15, None, "GPU:0")
    assert asked == [128, 256, 512] and found["batch_size"] == 128  # 256 ran last: halved, not below the default
    assert "the largest that ran, halved (the device's memory is not reported)" in found["rule"]
    probe, asked = linear_device(2.9, 0.5, 20, peak="none")  # 128 ran out of memory; 64 ran
    assert choose(probe, 128, 2**15, None, "GPU:0")["batch_size"] == 32 and asked == [128, 64]
    probe, asked = linear_device(10, 1, 20)  # a dataset of 40 images: the cap (32) ran, and is kept
    assert choose(probe, 128, 32, None, "GPU:0")["batch_size"] == 32 and asked == [32]


@pytest.mark.e2e
def test_seeds_make_sibling_runs_at_the_batch_auto_found(two_class_data, tmp_path):
    runs = tmp_path / "runs"
    common = ("--dataset", "tiny", "--data-dir", two_class_data, "--runs-dir", runs, "--epochs", 1,
              "--warmup-epochs", 0, "--batch-size", "auto")  # fmt: skip
    plan = run_in_process("train", "resnet8", *common, "--run", "g", "--seeds", 2, "--dry-run").stdout
    assert "runs: g-s0, g-s1" in plan and "on a CPU the default rule is kept" in plan and not runs.exists()

    proc = run_in_process("train", "resnet8", *common, "--run", "g", "--seeds", 2)
    assert proc.stdout.count("batch size auto: on a CPU the default rule is kept") == 2
    siblings = [RunDir(runs / "g-s0"), RunDir(runs / "g-s1")]
    for seed, run in enumerate(siblings):
        record = run.config()
        assert record["seed"] == seed and record["batch_size"] == default_batch_size(12) == 32
        assert record["batch_search"]["device"] == "cpu" and record["batch_search"]["lr"] == record["lr"] == 0.1
        assert record["seed_group"] == {"name": "g", "seeds": [0, 1], "runs": ["g-s0", "g-s1"]}
    assert siblings[0].history()[0]["loss"] != siblings[1].history()[0]["loss"]  # two seeds, two runs

    tests = [json.loads(run_in_process("evaluate", "--run", r.path, "--json").stdout)["rank_1"] for r in siblings]
    rows = json.loads(run_in_process("summary", "--runs-dir", runs, "--json").stdout)
    group = rows[0]["seed_group"]
    assert group["found"] == 2 and group == rows[1]["seed_group"]
    bests = [score(best_row(r.history())) for r in siblings]
    assert group["best_score"]["values"] == pytest.approx(bests)
    assert group["test_rank_1"]["mean"] == pytest.approx(sum(tests) / 2)
    assert group["test_rank_1"]["ci95"] == pytest.approx(12.706 * abs(tests[0] - tests[1]) / 2)
    assert "seeds g (2 of 2 runs): best val_accuracy" in run_in_process("summary", "--runs-dir", runs).stdout

    # resume keeps the batch config.json recorded: no search again
    resumed = run_in_process("resume", "--run", siblings[0].path, "--epochs", 2)
    assert "batch size auto" not in resumed.stdout and siblings[0].config()["steps_per_epoch"] == 1

    again = run_in_process("train", "resnet8", *common, "--run", "g", "--seeds", 2, check=False)
    one_line_error(again, 1, "g-s0 already exists")  # every sibling is checked before any trains
    bad = run_in_process("train", "resnet8", *common[:-1], "autoo", check=False)
    one_line_error(bad, 1, "`batch_size` must be a whole number")

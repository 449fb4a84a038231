"""train / resume / evaluate / summary on the real CIFAR subset, through the CLI: in process where the
subject is the run's files, as real subprocesses for signals, divergence and other backends."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile

import h5py
import numpy as np
import pytest

import resnetctl
from resnetctl.evaluation import rank_k_accuracy
from resnetctl.runs import RunDir, checkpoint_info
from tests.helpers import SMALL_RUN, copy_run, invoke, needs, one_line_error, run_cli, run_in_process, steps_per_epoch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def trained(small_run, runs):
    """The session's resnet8 run (3 epochs at batch 64, a checkpoint each epoch, no warmup; conftest's
    ``small_run``) copied here as e2e, then resumed from epoch 2 with a constant lr for a 4-epoch total."""
    run = copy_run(small_run, runs, "e2e")
    before = run.history()
    run_in_process("resume", "--run", "e2e", "--epoch", 2, "--lr", 0.005, "--epochs", 4, "--runs-dir", runs)
    return run, before


def test_train_writes_the_run_dir_contract(trained, cifar_small):
    run, before = trained
    config = json.loads(run.config_path.read_text())
    assert config["model"] == "resnet8" and config["steps_per_epoch"] == steps_per_epoch(cifar_small)
    assert {"keras", "backend", "numpy", "python", "resnetctl"} <= set(config["versions"])
    assert config["dataset_info"]["mean"] and config["augmentation"] == "crop-flip"
    with open(run.history_path) as f:
        header = next(csv.reader(f))
    assert header == [
        "epoch",
        "lr",
        "loss",
        "accuracy",
        "top5",
        "val_loss",
        "val_accuracy",
        "val_top5",
        "seconds",
        "images_per_second",
    ]
    assert [r["epoch"] for r in before] == [1, 2, 3]
    assert all(0 < r["top5"] <= 1 and r["accuracy"] <= r["top5"] for r in before)
    steps = steps_per_epoch(cifar_small)  # lr is the rate of each epoch's last step
    assert [r["lr"] for r in before] == pytest.approx(
        [0.1 * (1 - (e * steps - 1) / (3 * steps)) for e in (1, 2, 3)], rel=1e-5
    )
    assert json.loads(run.state_path.read_text())["state"] == "finished"
    assert run.monitor_path.stat().st_size > 10_000
    assert run.best_path.exists() and run.last_path.exists()
    assert not list(run.path.rglob(".*.tmp-*"))


def test_resume_continues_where_it_stopped(trained, cifar_small):
    run, before = trained
    steps = steps_per_epoch(cifar_small)
    history = run.history()
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # each epoch exactly once
    assert history[:2] == before[:2]  # kept rows are untouched
    assert [r["lr"] for r in history[2:]] == pytest.approx([0.005, 0.005])
    # the first resumed epoch continues the curve instead of starting over
    assert history[2]["loss"] < history[0]["loss"]
    assert sorted(run.checkpoints()) == [1, 2, 3, 4]
    assert checkpoint_info(run.epoch_path(3))["epoch"] == 3

    resumed_from = resnetctl.load_model(run.epoch_path(2))
    assert int(resumed_from.optimizer.iterations.numpy()) == 2 * steps
    lr = float(np.asarray(resumed_from.optimizer.learning_rate))
    assert lr == pytest.approx(0.1 * (1 - 2 / 3), rel=1e-5)  # schedule position restored
    last = resnetctl.load_model(run.last_path)
    assert int(last.optimizer.iterations.numpy()) == 4 * steps
    assert float(np.asarray(last.optimizer.learning_rate)) == pytest.approx(0.005)
    config = json.loads(run.config_path.read_text())
    # what train was asked (3 epochs) stays; the resume is a segment of the schedule
    assert config["epochs"] == 3 and config["segments"] == [{"from_epoch": 2, "lr": 0.005, "epochs": 4}]
    assert sorted(RunDir(run.path.with_name("e2e.b1")).checkpoints()) == [3]  # the epoch 3 it left behind


def test_resume_errors_are_clear(trained, runs, tmp_path):
    proc = run_in_process("resume", "--run", "e2e", "--epoch", 99, "--runs-dir", runs, check=False)
    assert proc.returncode == 1 and "No checkpoint of epoch 99" in proc.stderr
    assert "1, 2, 3, 4" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_in_process("resume", "--run", "e2e", "--runs-dir", runs, check=False)
    assert proc.returncode == 1 and "--epochs" in proc.stderr  # already finished
    proc = run_in_process("resume", "--runs-dir", tmp_path, check=False)
    assert proc.returncode == 1 and "No runs" in proc.stderr


def test_evaluate_matches_a_direct_recomputation(trained, runs, data_dir):
    run, _ = trained
    proc = run_in_process("evaluate", "--run", run.path, "--json", "--data-dir", data_dir)
    result = json.loads(proc.stdout)  # nothing but JSON on stdout
    assert result["split"] == "test" and result["checkpoint"] == "best" and result["images"] == 1000
    assert result["k"] == 5 and result["rank_k"] == result["rank_5"]
    assert result["epoch"] == checkpoint_info(run.best_path)["epoch"]
    model = resnetctl.load_model(run.best_path, compile=False)
    images, labels = resnetctl.load_dataset("cifar-small", "test", data_dir)
    probs = model.predict(images, batch_size=256, verbose=0)
    assert result["rank_1"] == pytest.approx(float(np.mean(probs.argmax(1) == labels)))
    top5 = np.argsort(-probs, axis=1)[:, :5]
    assert result["rank_5"] == pytest.approx(float(np.mean((top5 == labels[:, None]).any(1))))
    ranks = [rank_k_accuracy(probs.astype(np.float64), labels, k) for k in range(1, 11)]
    assert ranks == sorted(ranks) and ranks[-1] == 1.0
    assert np.asarray(result["confusion_matrix"]).sum() == 1000
    assert (run.path / "eval-test-best.json").exists()
    assert (run.path / "eval-test-best-confusion.png").exists()
    three = json.loads(
        run_in_process(
            "evaluate", "--run", run.path, "--topk", 3, "--checkpoint", "1", "--json", "--data-dir", data_dir
        ).stdout
    )
    assert three["checkpoint"] == "epoch0001" and three["epoch"] == 1
    matrix = np.asarray(three["confusion_matrix"])
    assert three["rank_1"] == pytest.approx(np.trace(matrix) / matrix.sum()) and three["rank_1"] <= three["rank_k"]
    assert three["k"] == 3 and "rank_5" not in three
    flip = json.loads(
        run_in_process("evaluate", "--run", run.path, "--tta", "flip", "--json", "--data-dir", data_dir).stdout
    )
    assert (run.path / "eval-test-best-flip.json").exists()  # the plain evaluation is kept
    assert json.loads((run.path / "eval-test-best.json").read_text())["tta"] is None and flip["tta"] == "flip"


def test_evaluate_bad_input(trained, runs, data_dir):
    run, _ = trained
    for args, message in (
        (["--split", "holdout"], "no split 'holdout'"),
        (["--topk", 11], "--topk must be between 1 and the 10 classes"),
        (["--checkpoint", 7], "No checkpoint of epoch 7"),
    ):
        proc = run_in_process("evaluate", "--run", run.path, "--data-dir", data_dir, *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    result = invoke("evaluate", "--runs-dir", data_dir / "nowhere")
    assert result.exit_code != 0 and "No runs" in str(result.exception)


def test_summary_shows_train_and_resume(trained, runs):
    run, _ = trained
    (one,) = json.loads(run_in_process("summary", "e2e", "--runs-dir", runs, "--json").stdout)  # always a list
    assert one["state"] == "finished" and one["epochs_done"] == 4 and one["epochs"] == 4 and one["model"] == "resnet8"
    assert one["segments"] == [{"from_epoch": 2, "lr": 0.005, "epochs": 4}]
    assert one["branches"][0]["run"] == "e2e.b1" and one["branches"][0]["epoch"] == 2
    assert len(one["sparkline"]) == 4 and one["monitor"].endswith("monitor.png")
    text = run_in_process("summary", "e2e", "--runs-dir", runs).stdout
    assert "4 of 4" in text and "epoch 2: lr 0.005, to epoch 4" in text and "e2e.b1 (branch at epoch 2)" in text


def test_sigint_stops_a_streaming_run_within_a_call_of_8_steps_and_the_run_resumes(cifar_small, data_dir, runs):
    """Ctrl+C while training streams from disk in compiled calls of 8 steps (test_steps_per_execution
    relies on this test for the stop within a call): exit 130, the hint, the last epoch checkpointed."""
    cmd = [
        sys.executable,
        "-m",
        "resnetctl",
        "train",
        "resnet8",
        "--dataset",
        "cifar-small",
        "--data-dir",
        str(data_dir),
        "--runs-dir",
        str(runs),
        "--run",
        "interrupted",
        "--epochs",
        "50",
        "--batch-size",
        "64",
        "--stream",
        "--steps-per-execution",
        "8",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = runs / "interrupted" / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert time.time() - sent < 30
    assert proc.returncode == 130, err
    assert "resnetctl resume --run" in err and "Traceback" not in err
    run = RunDir(runs / "interrupted")
    assert run.state()["state"] == "stopped"
    assert not list(run.path.rglob(".*.tmp-*"))
    done = run.history()[-1]["epoch"]
    assert checkpoint_info(run.last_path)["epoch"] == done
    run_in_process("resume", "--run", run.path, "--epochs", done + 1)
    assert [r["epoch"] for r in run.history()] == list(range(1, done + 2))
    summary = json.loads(run_in_process("summary", "--runs-dir", runs, "--json").stdout)
    assert "interrupted" in {s["run"] for s in summary}  # beside whatever other tests left in runs/


def test_train_input_errors(trained, cifar_small, data_dir, runs):
    for args, message in (
        (["resnet8", "--dataset", "nope"], "No prepared dataset 'nope'"),
        (["resnet9"], "Unknown model 'resnet9'"),
        (["resnet8", "--schedule", "step"], "--milestones"),
        (["resnet8", "--dataset", "cifar-small", "--run", "e2e"], "already exists"),
    ):
        proc = run_in_process("train", *args, "--data-dir", data_dir, "--runs-dir", runs, check=False)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    usage = run_in_process("train", "resnet8", "--bogus", check=False)  # a usage error, reported by Typer
    assert usage.returncode == 2 and "No such option: --bogus" in usage.stderr
    assert "Traceback" not in usage.stderr
    strategy = run_in_process("train", "resnet8", "--strategy", "ring", "--data-dir", data_dir, check=False)
    assert strategy.returncode == 1 and "Unknown strategy 'ring'" in strategy.stderr


def test_a_non_finite_loss_stops_within_a_call_in_one_line_and_the_run_can_be_started_again(
    cifar_small, data_dir, runs
):
    """lr 1e12 diverges in the first epoch, inside a compiled call of 4 steps: exit 3 (its own code,
    not Ctrl+C's) with the options to change, the run marked diverged. With no checkpoint there is
    nothing to evaluate or resume, but the printed train command starts it again. (One run for
    what were three: this test, test_non_finite_loss_stops_with_a_clear_message and
    test_steps_per_execution's test_a_non_finite_loss_stops_within_a_call.)"""
    proc = run_cli(
        "train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", runs,
        "--run", "restart", "--epochs", 1, "--lr", "1e12", "--schedule", "constant", "--label-smoothing", 0,
        "--steps-per-execution", 4, check=False,
    )  # fmt: skip
    one_line_error(proc, 3, "non-finite")
    assert "--lr" in proc.stderr and f"--runs-dir {runs.resolve()}" in proc.stderr
    assert RunDir(runs / "restart").state()["state"] == "diverged"
    proc = run_in_process("evaluate", "--run", runs / "restart", "--data-dir", data_dir, check=False)
    one_line_error(proc, 1, "has no checkpoint")
    proc = run_in_process("resume", "--run", runs / "restart", check=False)
    one_line_error(proc, 1, "has no checkpoint")
    hint = shlex.split(proc.stderr.split("start it again with: ")[1].strip())
    assert hint[:3] == ["resnetctl", "train", "--config"] and "restart" in hint
    run_in_process(*hint[1:], "--lr", 0.05)  # the printed command, with a rate that does not diverge
    assert [r["epoch"] for r in RunDir(runs / "restart").history()] == [1]


def test_predictions_for_unlabelled_tiny_imagenet_images(tiny, tmp_path):
    data_dir = tiny.parent
    model = tmp_path / "tiny.keras"
    run_in_process("build", "resnet8", "--dataset", "tiny-imagenet", "--data-dir", data_dir, "--save", model)
    out = tmp_path / "predictions.csv"
    proc = run_in_process(
        "evaluate",
        "--model",
        model,
        "--dataset",
        "tiny-imagenet",
        "--data-dir",
        data_dir,
        "--split",
        "unlabelled",
        "--predict",
        out,
        "--json",
    )
    result = json.loads(proc.stdout)
    assert result["images"] == 100 and "rank_1" not in result
    meta = json.loads((data_dir / "tiny-imagenet" / "meta.json").read_text())
    lines = out.read_text().splitlines()
    assert len(lines) == 100
    for line in lines:
        name, *classes = line.split(" ")
        assert name.startswith("test_") and name.endswith(".JPEG")
        assert len(classes) == 5 == len(set(classes)) and set(classes) <= set(meta["class_ids"])
    proc = run_in_process(
        "evaluate",
        "--model",
        model,
        "--dataset",
        "tiny-imagenet",
        "--data-dir",
        data_dir,
        "--split",
        "unlabelled",
        check=False,
    )
    assert proc.returncode == 1 and "--predict" in proc.stderr


def _trainable_weights(path):
    import keras

    resnetctl.register_keras_objects()
    model = keras.saving.load_model(path, compile=False)
    return [np.asarray(w) for w in model.trainable_weights]


def test_clip_norm_bounds_each_step_and_keep_checkpoints_keeps_the_newest(small_run, data_dir, runs):
    """One epoch with gradients clipped to 1e-6 barely moves the weights, one without moves them;
    --keep-checkpoints 2 leaves the two newest epoch files and best/last. ``--ema 0`` (off, as by
    default) is accepted and recorded as 0. The run without clipping is the session's ``small_run``:
    the same options but for the clipping, and every epoch file kept (the default)."""
    common = ["resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", runs, "--ema", 0]
    common += [*SMALL_RUN]
    run_in_process("train", *common, "--run", "clipped", "--clip-norm", 1e-6, "--keep-checkpoints", 2)

    clipped = RunDir(runs / "clipped")
    assert json.loads((clipped.path / "config.json").read_text())["ema"] == 0
    assert [e for e, _ in clipped.epoch_files()] == [2, 3]
    assert clipped.best_path.exists() and clipped.last_path.exists()
    assert [e for e, _ in small_run.epoch_files()] == [1, 2, 3]

    def moved(run):
        before, after = (_trainable_weights(run.epoch_path(e)) for e in (2, 3))
        return max(float(np.max(np.abs(a - b))) for a, b in zip(before, after, strict=True))

    # 16 steps of lr <= 0.1 with momentum 0.9: at most 16 * 0.1 * 1e-6 * 10 per weight
    assert moved(clipped) < 2e-5
    assert moved(small_run) > 1e-3
    one_line_error(run_in_process("train", *common, "--run", "bad", "--clip-norm", 0, check=False), 1, "clip_norm")


def test_a_run_recreated_from_its_config_has_the_same_history(cifar_small, data_dir, runs):
    common = ["--data-dir", data_dir, "--runs-dir", runs]
    run_in_process(
        "train",
        "resnet8",
        "--dataset",
        "cifar-small",
        *common,
        "--run",
        "original",
        "--epochs",
        2,
        "--batch-size",
        64,
        "--lr",
        0.05,
        "--seed",
        3,
    )
    config = runs / "original" / "config.json"
    proc = run_in_process("train", "--config", config, "--epochs", 5, "--dry-run", *common)
    assert "nothing was trained" in proc.stdout and re.search(r"│ epochs\s+│ 5\s", proc.stdout)
    assert re.search(r"│ lr\s+│ 0.05\s", proc.stdout) and "resnet8 (8 layers" in proc.stdout
    assert sorted(p.name for p in runs.iterdir() if p.name.startswith("original")) == ["original"]

    run_in_process("train", "--config", config, "--run", "again", *common)
    recorded = json.loads((runs / "again" / "config.json").read_text())
    assert recorded["seed"] == 3 and recorded["lr"] == 0.05 and recorded["epochs"] == 2

    def numbers(run):
        return [
            {k: v for k, v in row.items() if k not in ("seconds", "images_per_second")}
            for row in RunDir(runs / run).history()
        ]

    assert numbers("again") == numbers("original") and len(numbers("again")) == 2
    (runs / "typo.json").write_text(json.dumps({"model": "resnet8", "learning_rate": 0.1}))
    one_line_error(
        run_in_process("train", "--config", runs / "typo.json", *common, check=False), 1, "Unknown keys in --config"
    )


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=needs("jax"))])
def test_ema_with_mixup_and_cutmix_survives_a_resume_exactly(backend, cifar_small, data_dir, runs):
    """Compiled MixUp/CutMix and an EMA of the weights: resuming at epoch 1 redoes epoch 2 exactly
    (the average comes back from the checkpoint); the checkpoint holds the average, which is what
    validation scored (evaluate gives the same val accuracy), and the raw weights beside it."""
    env = {"KERAS_BACKEND": backend}
    name = f"ema-{backend}"
    common = ["--data-dir", data_dir, "--runs-dir", runs]
    run_in_process(
        "train", "resnet8", "--dataset", "cifar-small", *common, "--run", name, "--epochs", 2,
        "--batch-size", 100, "--checkpoint-every", 1, "--ema", 0.9, "--mixup", 0.4, "--cutmix", 1.0,
        "--jit", env_extra=env,
    )  # fmt: skip
    run = RunDir(runs / name)
    config = run.config()
    assert (config["ema"], config["mixup"], config["cutmix"]) == (0.9, 0.4, 1.0)
    straight = run.history()
    weights = _trainable_weights(run.last_path)
    run_in_process("resume", "--run", name, "--epoch", 1, *common, env_extra=env)
    again = run.history()
    assert [{k: r[k] for k in ("loss", "val_loss", "val_accuracy")} for r in again] == [
        {k: r[k] for k in ("loss", "val_loss", "val_accuracy")} for r in straight
    ]
    assert all(np.array_equal(a, b) for a, b in zip(_trainable_weights(run.last_path), weights, strict=True))

    scored = json.loads(
        run_in_process(
            "evaluate", "--run", name, "--checkpoint", "last", "--split", "val", "--json", *common, env_extra=env
        ).stdout
    )
    assert scored["rank_1"] == pytest.approx(again[-1]["val_accuracy"], abs=0.0015)  # 1,000 images: 1 may flip
    with zipfile.ZipFile(run.last_path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        slots = [np.asarray(f[f"optimizer/vars/{i}"]) for i in range(len(f["optimizer/vars"]))]
    assert len(slots) == 1 + 2 * len(weights)  # iterations, an average and a momentum per weight
    raw = slots[1 : 1 + len(weights)]
    assert all(r.shape == w.shape for r, w in zip(raw, weights, strict=True))
    assert any(not np.allclose(r, w) for r, w in zip(raw, weights, strict=True))


FAULTS_SCRIPT = """
import resource, sys
import keras
from resnetctl.data.pipeline import EpochStart, train_batches
from resnetctl.data.store import open_dataset
from resnetctl.models import create_model_for
from resnetctl.training.config import TrainConfig
from resnetctl.plan import plan_train
from resnetctl.training.trainer import compile_model, make_schedule, train

data_dir, runs_dir, train_first = sys.argv[1], sys.argv[2], sys.argv[3] == "yes"
config = TrainConfig(model="resnet8", dataset="cifar-small", data_dir=data_dir, runs_dir=runs_dir,
                     run="faults", epochs=1, batch_size=64)
if train_first:
    train(plan_train(config))
info = open_dataset("cifar-small", data_dir)
batches = train_batches(info, 64, None, 0)
model = create_model_for("resnet8", info, weight_decay=5e-4, seed=0)
compile_model(model, config, make_schedule(config, len(batches)), info.num_classes)
faults = []
def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
count = keras.callbacks.LambdaCallback(
    on_epoch_begin=lambda e, logs: faults.append(-minor_faults()),
    on_epoch_end=lambda e, logs: faults.__setitem__(-1, faults[-1] + minor_faults()),
)
model.fit(batches, epochs=3, shuffle=False, verbose=0, callbacks=[EpochStart(batches), count])
print(min(faults[1:]) / info.splits["train"])
"""


def test_training_keeps_freed_memory_after_tensorflow_pins_the_mmap_threshold(cifar_small, data_dir, tmp_path):
    """TensorFlow's generator op pins glibc's mmap threshold at 128 KiB once per process, so every
    large buffer is mapped and faulted in again each step (src/resnetctl/heap.py). ``train`` undoes
    it: a plain fit on ``Batches`` after ``train`` in the same process faults a fraction as often
    as one in a fresh process."""

    def faults_per_image(train_first: str) -> float:
        proc = subprocess.run(
            [sys.executable, "-c", FAULTS_SCRIPT, str(data_dir), str(tmp_path / train_first), train_first],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
        )
        assert proc.returncode == 0, proc.stderr
        return float(proc.stdout.split()[-1])

    fresh = faults_per_image("no")
    if fresh < 2:
        pytest.skip(f"this TensorFlow leaves the mmap threshold alone ({fresh:.1f} faults per image)")
    assert faults_per_image("yes") < fresh / 4

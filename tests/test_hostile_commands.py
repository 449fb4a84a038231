"""Hostile inputs at the commands, as real subprocesses: FIFOs and bombs given to predict, models
that are not one-image classifiers, odd paths, signals outside training, a full disk in prepare.

Each case ends in one line and its documented exit code (docs/reliability.md), within a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import (
    CIFAR_SUBSET,
    cli_command,
    one_line_error,
    pets_world,
    png_bomb,
    run_cli,
    run_in_process,
    tmpfs,
)

pytestmark = pytest.mark.e2e

ODD_MODELS = """
import sys, keras
image = keras.Input((16, 16, 3))
other = keras.Input((16, 16, 3))
flat = keras.layers.Flatten()(image)
first, second = keras.layers.Dense(2, activation="softmax")(flat), keras.layers.Dense(2, activation="softmax")(flat)
keras.Model(image, [first, second]).save(sys.argv[1] + "/two-outputs.keras")
both = keras.layers.Concatenate()([keras.layers.Flatten()(other), flat])
keras.Model([image, other], keras.layers.Dense(2, activation="softmax")(both)).save(sys.argv[1] + "/two-inputs.keras")
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small folder dataset, an untrained resnet8 for it, and two models of the wrong shape."""
    root = tmp_path_factory.mktemp("hostile")
    pets_world(root)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", ODD_MODELS, str(root)], check=True, env=env, capture_output=True)
    return root


def test_predict_never_opens_a_fifo_and_skips_bombs(world, tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    (tmp_path / "bomb.png").write_bytes(png_bomb(60000, 60000))
    good = world / "pets" / "cat" / "0.png"
    args = ("predict", fifo, tmp_path / "bomb.png", "/dev/zero", good, "--model", world / "m.keras", "--json")
    proc = run_cli(*args, timeout=300)  # blocked in open() forever before
    results = {r["file"]: r for r in json.loads(proc.stdout)}
    assert results[str(fifo)]["error"] == "a FIFO, not an image file; not opened"
    assert results[str(tmp_path / "bomb.png")]["error"].startswith("60000x60000 pixels is over the limit")
    assert results["/dev/zero"]["error"] == "a character device, not an image file; not opened"
    assert len(results[str(good)]["predictions"]) == 2
    one_line_error(run_cli("predict", tmp_path, "--model", world / "m.keras", check=False, timeout=300), 1, "")


def test_models_that_are_not_one_image_classifiers_get_one_line(world, tmp_path):
    image = world / "pets" / "cat" / "0.png"
    data = world / "data"
    two_outputs, text = world / "two-outputs.keras", "has 1 inputs and 2 outputs"
    one_line_error(run_cli("predict", image, "--model", two_outputs, check=False), 1, text)
    out = tmp_path / "export.keras"
    args = ("export", "--model", two_outputs, "--dataset", "pets", "--data-dir", data, "--out", out)
    one_line_error(run_cli(*args, check=False), 1, text)
    assert not out.exists()
    args = ("evaluate", "--model", world / "two-inputs.keras", "--dataset", "pets", "--data-dir", data)
    one_line_error(run_cli(*args, check=False), 1, "has 2 inputs and 1 outputs")
    (tmp_path / "empty.keras").write_bytes(b"")
    one_line_error(run_cli("predict", image, "--model", tmp_path / "empty.keras", check=False), 1, "empty (0 bytes)")
    odd = tmp_path / "a[/b]"  # rich read "[/" as markup and crashed with a MarkupError traceback
    odd.mkdir(parents=True)
    proc = run_cli("predict", image, "--model", odd / "m.keras", check=False)
    one_line_error(proc, 1, f"No model file at {odd / 'm.keras'}")


def _interrupt(args, signum, after: float):
    """``resnetctl ARGS``, sent ``signum`` once it has run ``after`` seconds."""
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _running(pid: int) -> bool:
    """The process exists and has not ended (a zombie has ended: in a container whose first process
    reaps late, a killed child can sit in the table after its parent is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_signals_outside_training_end_in_one_line(world, tmp_path):
    data = world / "data"
    for signum, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
        args = ("evaluate", "--model", world / "m.keras", "--dataset", "pets", "--data-dir", data)
        one_line_error(_interrupt(args, signum, after=2.0), 130, f"stopped by {name}")  # was: 130 with no line

    # export: SIGTERM while its checking subprocess runs; neither it nor a temporary file outlives it
    out = tmp_path / "out" / "m.keras"
    out.parent.mkdir()
    args = ("export", "--model", world / "m.keras", "--dataset", "pets", "--data-dir", data, "--out", out)
    holder = {}

    def checking():  # the checking subprocess runs (its inputs are in a scratch folder, not beside --out)
        return "pid" in holder and bool(_children_of(holder["pid"]))

    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder["pid"] = proc.pid
    deadline = time.time() + 300
    while not checking() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    children = _children_of(proc.pid)
    assert children and proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), 130, "stopped by SIGTERM")
    deadline = time.time() + 10  # killed children end within moments; a zombie awaits only its reaper
    while [c for c in children if _running(c)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if _running(c)], "the checking subprocess outlived export"
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("size", ["4m", "7m"])
def test_a_full_disk_in_prepare_is_one_line_at_any_size(tmp_path, size):
    """At these sizes the disk filled while HDF5 closed train.h5: two h5py __dealloc__ tracebacks
    and a segfault (139) before the handles were closed in order."""
    with tmpfs(tmp_path / "small", size) as small:
        proc = run_cli("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", small, check=False)
        one_line_error(proc, 1, "Disk full while writing cifar10")
        assert "dealloc" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2
        assert sorted(p.name for p in small.iterdir()) == [".cifar10.lock"]


SWAPPED_CHECKPOINTS = """
import sys, zipfile, keras, resnetctl
from resnetctl.models import create_model_for
resnetctl.register_keras_objects()
good, uncompiled, other = sys.argv[1:4]
meta = zipfile.ZipFile(good).read("resnetctl.json")
keras.saving.load_model(good, compile=False).save(uncompiled)  # what `model.save` of an uncompiled model gives
create_model_for("resnet20", input_size=16, num_classes=2).save(other)  # another run's architecture
for path in (uncompiled, other):
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("resnetctl.json", meta)
"""


def test_a_checkpoint_that_is_not_the_runs_model_is_not_resumed(world, tmp_path):
    runs = tmp_path / "runs"
    data = world / "data"
    run_in_process("train", "resnet8", "--dataset", "pets", "--data-dir", data, "--runs-dir", runs, "--run", "r",
                   "--epochs", 3, "--checkpoint-every", 1, "--batch-size", 8)  # fmt: skip
    epoch1 = runs / "r" / "checkpoints" / "epoch_0001.keras"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = [sys.executable, "-c", SWAPPED_CHECKPOINTS, epoch1, tmp_path / "u.keras", tmp_path / "o.keras"]
    subprocess.run(script, check=True, env=env, capture_output=True)
    for swapped, text in (("u.keras", "without its optimizer state"), ("o.keras", "holds a 'resnet20' model")):
        os.replace(tmp_path / swapped, epoch1)
        history = (runs / "r" / "history.csv").read_text()
        one_line_error(run_cli("resume", "--run", runs / "r", "--epoch", 1, check=False), 1, text)
        assert (runs / "r" / "history.csv").read_text() == history

"""Per-epoch writes off the critical path keep the fault contract: checkpoints after the first
and monitor.png are written on a background thread while the next epoch trains, what they write
is what a foreground save writes, and a failure is still one line with what was kept."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from resnetctl.runs import RunDir, checkpoint_info
from tests.helpers import one_line_error, run_cli, run_in_process

pytestmark = pytest.mark.e2e


def test_a_plot_that_cannot_be_written_fails_the_run_in_one_line(cifar_small, data_dir, tmp_path):
    common = ["--data-dir", data_dir, "--runs-dir", tmp_path]
    run_in_process(
        "train", "resnet8", "--dataset", "cifar-small", *common, "--run", "plot", "--epochs", 1, "--batch-size", 64
    )
    run = RunDir(tmp_path / "plot")
    assert run.monitor_path.stat().st_size > 10_000  # written in the background, there at the end
    run.monitor_path.unlink()
    run.monitor_path.mkdir()  # a folder where the plot goes: its atomic rename fails
    proc = run_cli("resume", "--run", "plot", "--epochs", 2, *common, check=False)
    one_line_error(proc, 1, "Cannot write")
    assert "resnetctl resume --run" in proc.stderr
    assert [r["epoch"] for r in run.history()] == [1, 2]  # the epoch's checkpoint and row were kept
    assert checkpoint_info(run.last_path)["epoch"] == 2
    assert run.state()["state"] == "failed"
    assert not list(run.path.glob(".*.tmp-*"))


# --------------------------------------------------------------------------- checkpoints off the training thread
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_a_checkpoint_written_from_the_host_copy_is_the_checkpoint_of_the_live_model(tmp_path, precision):
    """The twin, made and used on another thread as in training, saves exactly what
    ``model.save`` of the live model saves: every weight, the optimizer's slots and its EMA, the
    step counter, the config (the layers' precision policy included)."""
    from concurrent.futures import ThreadPoolExecutor

    import keras

    from resnetctl.checkpoints import CheckpointTwin, host_copy, save_checkpoint, variable_layout
    from resnetctl.models import create_model_for
    from resnetctl.training.config import TrainConfig
    from resnetctl.training.trainer import compile_model, make_schedule

    config = TrainConfig(model="resnet8", ema=0.9, batch_size=8, precision=precision)
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = create_model_for("resnet8", input_size=16, num_classes=10, augmentation="crop-flip", seed=0)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    compile_model(model, config, make_schedule(config, 4), 10)
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(32) % 10
    writer = ThreadPoolExecutor(max_workers=1)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    save_checkpoint(model, tmp_path / "first.keras", {"epoch": 1})
    twin = writer.submit(CheckpointTwin, tmp_path / "first.keras", variable_layout(model)).result()
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)  # the state moves on: 4 more steps
    saving = writer.submit(twin.save, host_copy(model), tmp_path / "twin.keras", {"epoch": 2})
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)  # and on, while the copy is saved
    saving.result()
    assert int(keras.saving.load_model(tmp_path / "twin.keras").optimizer.iterations.numpy()) == 8
    save_checkpoint(model, tmp_path / "live.keras", {"epoch": 3})
    writer.submit(twin.save, host_copy(model), tmp_path / "twin.keras", {"epoch": 3}).result()
    assert _saved_arrays(tmp_path / "twin.keras") == _saved_arrays(tmp_path / "live.keras")
    with zipfile.ZipFile(tmp_path / "twin.keras") as a, zipfile.ZipFile(tmp_path / "live.keras") as b:
        # the same config; the live model's layers share one dtype policy object, which Keras
        # records as a shared_object_id, and a loaded model's do not: both load the same
        twin_config, live_config = (_unshared(json.loads(z.read("config.json"))) for z in (a, b))
    assert twin_config == live_config
    assert precision in json.dumps(live_config)


def _unshared(config):
    if isinstance(config, dict):
        return {k: _unshared(v) for k, v in config.items() if k != "shared_object_id"}
    return [_unshared(v) for v in config] if isinstance(config, list) else config


def _saved_arrays(path) -> dict:
    """Every array in a .keras file's weights, by its HDF5 path, as bytes."""
    import h5py

    arrays = {}
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        f.visititems(
            lambda name, obj: arrays.update({name: obj[()].tobytes()}) if isinstance(obj, h5py.Dataset) else None
        )
    assert len(arrays) > 50
    return arrays


SPY_ON_SAVES = """
import json, sys, threading, keras
from resnetctl.cli import main
log, save = sys.argv[1], keras.Model.save
def spy(self, path, *args, **kwargs):  # records which thread saved, then saves
    with open(log, "a") as f:
        f.write(json.dumps({"thread": threading.current_thread().name, "model": id(self)}) + "\\n")
    return save(self, path, *args, **kwargs)
keras.Model.save = spy
sys.argv = ["resnetctl", *sys.argv[2:]]
main()
"""


def test_checkpoints_after_the_first_are_saved_while_the_next_epoch_trains(cifar_small, data_dir, tmp_path):
    """Epoch 1's checkpoint is saved by the training thread; every later one by the writer thread
    from a twin, and the run is complete and resumes from each of them."""
    log = tmp_path / "saves.jsonl"
    common = ["--data-dir", data_dir, "--runs-dir", tmp_path / "runs"]
    train = ["train", "resnet8", "--dataset", "cifar-small", *common, "--run", "w", "--epochs", 4,
             "--batch-size", 64, "--checkpoint-every", 1]  # fmt: skip
    run_cli(*train, launcher=("-c", SPY_ON_SAVES, log))
    saves = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["thread"].split("_")[0] for s in saves] == ["MainThread"] + ["resnetctl-writes"] * 3
    assert len({s["model"] for s in saves[1:]}) == 1 and saves[1]["model"] != saves[0]["model"]
    run = RunDir(tmp_path / "runs" / "w")
    assert [r["epoch"] for r in run.history()] == [1, 2, 3, 4]
    assert checkpoint_info(run.last_path)["epoch"] == 4
    assert [checkpoint_info(p)["epoch"] for p in sorted(run.checkpoint_dir.glob("epoch_*.keras"))] == [1, 2, 3, 4]
    assert run.monitor_path.stat().st_size > 10_000
    # the twin's epoch-3 file holds the state the live model had: going back to it and training
    # epoch 4 again gives epoch 4's numbers
    run_in_process("resume", "--run", "w", "--epoch", 3, "--fork", "again", *common)
    again = RunDir(tmp_path / "runs" / "again").history()
    assert again[-1]["epoch"] == 4 and again[-1]["loss"] == run.history()[-1]["loss"]


SPY_ON_JAX_SYNCS = """
import json, sys, threading
from keras.src.backend.jax.trainer import JAXTrainer
from resnetctl.cli import main
log, sync = sys.argv[1], JAXTrainer.jax_state_sync
def spy(self):  # records the thread of every sync, then syncs
    with open(log, "a") as f:
        f.write(json.dumps({"thread": threading.current_thread().name}) + "\\n")
    return sync(self)
JAXTrainer.jax_state_sync = spy
sys.argv = ["resnetctl", *sys.argv[2:]]
main()
"""


def test_on_jax_only_the_training_thread_syncs_the_model_state(cifar_small, data_dir, tmp_path):
    """Keras' ``Callback.model`` puts JAX's training state back into the model (``jax_state_sync``)
    whenever it is read. Read from the writer thread while the next epoch trains, it put back a
    state whose buffers the step had already donated, and the next step failed with "Buffer has
    been deleted or donated" (seen in CI, in a resume's second epoch, when the twin was made)."""
    log = tmp_path / "syncs.jsonl"
    common = ["--data-dir", data_dir, "--runs-dir", tmp_path / "runs"]
    train = ["train", "resnet8", "--dataset", "cifar-small", *common, "--run", "j", "--epochs", 3, "--batch-size", 64]
    run_cli(*train, launcher=("-c", SPY_ON_JAX_SYNCS, log), env_extra={"KERAS_BACKEND": "jax"})
    threads = {json.loads(line)["thread"] for line in log.read_text().splitlines()}
    assert threads == {"MainThread"}, threads
    assert [r["epoch"] for r in RunDir(tmp_path / "runs" / "j").history()] == [1, 2, 3]

"""What the tests share: where the real-format fixtures are, the ways to run the CLI (one process,
in process, several processes of one cluster), and what a trained run is read back with."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import h5py
import numpy as np
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


# read when a module is imported or a backend starts: a command run in process can't change them
_IMPORT_TIME_ENV = (
    "RESNETCTL_MAX_IMAGE_PIXELS", "TF_CONFIG", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "COLUMNS",
    "KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID",
)  # fmt: skip


def _backend_here() -> str:
    if "keras" in sys.modules:
        return sys.modules["keras"].config.backend()
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


def run_in_process(*args, env_extra=None, check=True, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """``resnetctl ARGS`` through the console script's own parse, plan, run and error mapping
    (``cli_runtime.execute``) in this process, without a new interpreter importing TensorFlow
    (7-13 s a process on 2 cores): its exit code and what it printed through ``sys.stdout`` and
    ``sys.stderr``. For the tests whose subject is what a command does to files and runs. What
    only a process shows stays on ``run_cli``: signals, kills, concurrent processes, output at the
    fd level (stdout alone for ``-``), tracebacks from threads, children and shutdown (the
    one-line answers to hostile input), help from a cold start, and a resume in a new interpreter.
    An ``env_extra`` that only a new process can take (another ``KERAS_BACKEND``, a setting read
    at import) runs there, through ``run_cli``. The environment's changed keys, the working
    folder, the signal handlers, the ``resnetctl`` logger and ``--verbose`` are put back; a
    command still running after ``timeout`` seconds ends the worker with every thread's stack."""
    env_extra = {k: str(v) for k, v in (env_extra or {}).items()}
    backend = env_extra.get("KERAS_BACKEND", _backend_here())
    if backend != _backend_here() or any(os.environ.get(k) != env_extra[k] for k in _IMPORT_TIME_ENV if k in env_extra):
        return run_cli(*args, env_extra=env_extra, check=check, cwd=cwd, timeout=timeout)
    import faulthandler
    import logging

    from resnetctl import cli_runtime
    from resnetctl.cli import app

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    logger = logging.getLogger("resnetctl")
    saved_logger = (list(logger.handlers), logger.level, logger.propagate)
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    os.environ.update(env_extra)
    cli_runtime.STATE["verbose"] = False
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_runtime.execute(app, [str(a) for a in args])
    finally:
        faulthandler.cancel_dump_traceback_later()
        if "keras" in sys.modules:  # a fresh process's layer names and global state, for the next command
            sys.modules["keras"].backend.clear_session()
        os.chdir(saved_cwd)
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        for key, value in saved_env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
        logger.handlers[:], logger.level, logger.propagate = saved_logger
        cli_runtime.STATE["verbose"] = False
    texts = []
    for stream in (out, err):
        stream.flush()
        texts.append(stream.buffer.getvalue().decode("utf-8"))
    proc = subprocess.CompletedProcess(["resnetctl", *map(str, args)], code, *texts)
    if check:
        assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


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


# ---------------------------------------------------------------- builders the test modules share
@contextlib.contextmanager
def tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fake_dataset(root: Path, name: str, train: int = 100) -> Path:
    """A prepared dataset's meta.json (enough for a plan; no images are read)."""
    folder = root / name
    folder.mkdir(parents=True)
    meta = {
        "format_version": 1,
        "image_size": 32,
        "classes": list("abcdefgh"),
        "splits": {"train": {"count": train}, "val": {"count": 10}, "test": {"count": 10}},
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (symlinks as their target), to compare byte for byte."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def fake_run_record(tmp_path, **changes):
    """A run folder holding only a config.json: TrainConfig's defaults with ``changes``."""
    from resnetctl.runs import RunDir
    from resnetctl.training.config import TrainConfig

    run = RunDir(tmp_path / "r")
    run.path.mkdir(exist_ok=True)
    record = {
        **TrainConfig(model="resnet8", batch_size=32, augmentation="crop-flip").to_dict(),
        "segments": [],
        "dataset_info": {"classes": ["a", "b"], "image_size": 8},
        **changes,
    }
    run.config_path.write_text(json.dumps(record))
    return run


def cifar_members(rows: int = 4) -> dict[str, object]:
    """The official CIFAR-10 layout in small: five train batches, a test batch, the meta."""
    rng = np.random.default_rng(0)
    members = {
        name: {
            b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, rows)],
            b"batch_label": name.encode(),
        }
        for name in CIFAR_FILES
    }
    members["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    return members


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def make_dataset(root, classes=("a", "b"), labels=(0, 1, 1, 0)):
    """A dataset folder as prepare writes it, small: meta.json and train.h5."""
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "train.h5", "w") as f:
        f["images"] = np.zeros((len(labels), 8, 8, 3), np.uint8)
        f["labels"] = np.asarray(labels, np.int32)
    meta = {
        "format_version": 1,
        "resnetctl_version": "0.1.0",
        "name": root.name,
        "image_size": 8,
        "classes": list(classes),
        "mean": [1.0, 2.0, 3.0],
        "std": [4.0, 5.0, 6.0],
        "splits": {"train": {"count": len(labels), "labelled": True}},
        "skipped": [],
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return meta


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature, IHDR and IEND, no pixels: a few dozen bytes that claim any size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def cifar100_archive(path):
    rng = np.random.default_rng(0)

    def batch(n):
        return {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": list(rng.permutation(np.arange(n) % 100)),  # every class has images
            b"coarse_labels": [0] * n,
        }

    with tarfile.open(path, "w:gz") as tar:
        for name, obj in (
            ("train", batch(300)),
            ("test", batch(50)),
            ("meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}),
        ):
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def run_two_cpus(*args):
    return run_cli(*args, launcher=("-c", TWO_CPUS))


# Splits this process's CPU into two logical devices before TensorFlow starts, then runs the CLI.
TWO_CPUS = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from resnetctl.cli import main
sys.argv[0] = "resnetctl"
main()
"""


# Runs the CLI in this process and reports, after it exits, whether Keras was imported.
PROBE = """
import sys
from resnetctl.cli import main
sys.argv[0] = "resnetctl"
try:
    main()
finally:
    print("KERAS-IMPORTED" if "keras" in sys.modules else "NO-KERAS", file=sys.stderr)
"""

"""Faults made for real: concurrent writers, killed processes, damaged archives, full disks, junk.

Each case ends in one line and a documented exit code, and nothing the user owns is touched
(docs/reliability.md lists them all).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import zipfile
import zlib

import h5py
import numpy as np
import pytest

from resnetctl.runs import RunDir, checkpoint_info
from tests.helpers import (
    CIFAR_SUBSET,
    SMALL_RUN,
    TINY_MINI,
    cli_command,
    copy_run,
    one_line_error,
    run_cli,
    run_in_process,
    tmpfs,
)


@pytest.fixture
def small(cifar_small, data_dir, tmp_path):
    """The start of a short train command on 1,000 real CIFAR images, in a fresh runs dir."""
    return [
        "train",
        "resnet8",
        "--dataset",
        "cifar-small",
        "--data-dir",
        data_dir,
        "--runs-dir",
        tmp_path / "runs",
        "--batch-size",
        64,
    ]


def _wait_for(predicate, timeout=240, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError("timed out")


def _rows(run: RunDir) -> list[dict]:
    """History rows without the wall-clock columns."""
    with open(run.history_path) as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in csv.DictReader(f)]


def _weights(path) -> dict:
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
        return out


# --------------------------------------------------------------------------- one truth per run
@pytest.mark.e2e
def test_a_resumed_run_is_the_run_that_was_never_stopped(small, small_run, tmp_path):
    """Bit-identical history and weights: resume --epoch back into a finished run, and SIGTERM.
    The run that never stopped is the session's shared ``small_run`` (trained with ``SMALL_RUN``)."""
    runs = tmp_path / "runs"
    rows, weights = _rows(small_run), _weights(small_run.last_path)

    again = copy_run(small_run, runs, "again")
    run_cli("resume", "--run", again.path, "--epoch", 1)
    assert _rows(again) == rows
    after = _weights(again.last_path)
    assert set(after) == set(weights) and all(np.array_equal(after[k], weights[k]) for k in weights)

    proc = subprocess.Popen(
        cli_command(*small, *SMALL_RUN, "--run", "term"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    term = RunDir(runs / "term")
    _wait_for(lambda: term.history_path.exists() and len(term.history_path.read_text().splitlines()) >= 2, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 130, "received SIGTERM")
    assert term.state()["state"] == "stopped"
    run_in_process("resume", "--run", term.path)
    assert _rows(term) == rows
    assert all(np.array_equal(_weights(term.last_path)[k], weights[k]) for k in weights)


@pytest.mark.e2e
def test_resume_back_rebuilds_best_and_moves_later_evaluations_to_the_branch(small_run, tmp_path, data_dir):
    """A copy of the shared 3-epoch run, evaluated at epoch 3, resumed at epoch 2 with another rate:
    epoch 3 is trained again (and differs), best.keras is rebuilt from the epochs this line keeps,
    and the evaluation of the old epoch 3 goes to the branch with it."""
    runs = tmp_path / "runs"
    run = copy_run(small_run, runs, "back")
    first_best = checkpoint_info(run.best_path)["epoch"]
    run_in_process("evaluate", "--run", run.path, "--checkpoint", "last", "--data-dir", data_dir)
    (before,) = json.loads(run_in_process("summary", run.path, "--json").stdout)
    assert before["latest_evaluation"]["stale"] is False and before["latest_evaluation"]["epoch"] == 3
    run_in_process("resume", "--run", run.path, "--epoch", 2, "--lr", 0.02)
    scores = {r["epoch"]: r["val_accuracy"] for r in run.history()}
    assert [r["lr"] for r in run.history()][2:] == pytest.approx([0.02])
    candidates = {2, 3} | ({first_best} if first_best <= 2 else set())
    best = checkpoint_info(run.best_path)["epoch"]
    assert best in candidates and scores[best] == max(scores[e] for e in candidates)
    (after,) = json.loads(run_in_process("summary", run.path, "--json").stdout)
    assert after["latest_evaluation"] is None and after["state"] == "finished"  # the old epoch 3 is not in this line
    (branch,) = json.loads(run_in_process("summary", runs / "back.b1", "--json").stdout)
    assert branch["latest_evaluation"]["epoch"] == 3 and branch["latest_evaluation"]["stale"] is False
    assert branch["checkpoints"] == [3] and branch["lineage"][0]["epoch"] == 2


@pytest.mark.e2e
def test_a_row_and_a_best_lost_between_the_epochs_writes_are_put_back_by_resume(small_run, tmp_path):
    """What a kill -9 or a full disk between an epoch's writes can leave: epoch 3's checkpoint
    (last.keras) without its history row or its epoch file, and best.keras still holding a worse
    epoch. resume puts the row back from the checkpoint's metadata, relinks the file, and makes
    the best epoch best.keras again; nothing is lost or invented."""
    from resnetctl.runs import best_row, score

    run = copy_run(small_run, tmp_path / "runs", "lost")
    rows = run.history()
    run.write_history(rows[:2])
    run.epoch_path(3).unlink()
    worst = min(rows, key=score)["epoch"]
    best = best_row(rows)["epoch"]
    if worst == best:
        pytest.skip("all three epochs scored the same")
    shutil.copyfile(run.epoch_path(worst) if worst != 3 else run.last_path, run.best_path)
    run_in_process("resume", "--run", run.path, "--epochs", 4)
    after = run.history()
    assert after[:3] == rows and [r["epoch"] for r in after] == [1, 2, 3, 4]
    assert checkpoint_info(run.epoch_path(3))["epoch"] == 3
    assert checkpoint_info(run.best_path)["epoch"] == best_row(after)["epoch"]


# --------------------------------------------------------------------------- one writer at a time
@pytest.mark.e2e
def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(small, tmp_path, data_dir):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        cli_command(*small, "--epochs", 40, "--run", "busy"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run = RunDir(runs / "busy")
    _wait_for(lambda: run.history_path.exists() and len(run.history_path.read_text().splitlines()) >= 2, proc=proc)
    for args in (["resume", "--run", run.path, "--epochs", 50], [*small, "--run", "busy"]):
        second = run_cli(*args, check=False)
        one_line_error(second, 1, f"in use by pid {proc.pid}")
    reader = run_in_process("evaluate", "--run", run.path, "--data-dir", data_dir, "--json")  # readers never wait
    assert "still training" in reader.stderr and json.loads(reader.stdout)["epoch"] >= 1
    (state,) = json.loads(run_in_process("summary", run.path, "--json").stdout)
    assert state["state"] == "running"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (state,) = json.loads(run_in_process("summary", run.path, "--json").stdout)
    assert state["state"] == "failed"  # the kernel released the lock; the run says what happened
    done = run.history()[-1]["epoch"]
    run_in_process("resume", "--run", run.path, "--epochs", done + 1)
    assert run.history()[-1]["epoch"] == done + 1 and run.state()["state"] == "finished"


@pytest.mark.slow
def test_two_prepares_of_one_name(tmp_path):
    out = tmp_path / "d"
    first = subprocess.Popen(
        cli_command("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(
        lambda: (out / ".cifar10.lock").exists() and (out / ".cifar10.lock").read_text().strip() != "", proc=first
    )
    first.send_signal(signal.SIGSTOP)  # holding its lock, however fast this machine prepares
    try:
        second = run_cli("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", out, "--force", check=False)
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=300)
    assert first.returncode == 0
    one_line_error(second, 1, f"in use by pid {first.pid}")
    assert json.loads((out / "cifar10" / "meta.json").read_text())["splits"]["train"]["count"] == 4499


# --------------------------------------------------------------------------- the user's files
@pytest.mark.slow
def test_prepare_never_touches_what_it_did_not_make(tmp_path):
    data = tmp_path / "data"
    pets = data / "pets"
    for cls in ("cat", "dog"):
        (pets / cls).mkdir(parents=True)
        for i in range(3):
            (pets / cls / f"{i}.png").write_bytes(_png(i))
    before = sorted(p.relative_to(pets) for p in pets.rglob("*"))
    one_line_error(
        run_cli("prepare", "folder", "--source", pets, "--data-dir", data, "--size", 16, check=False),
        1,
        "overlaps the source",
    )
    one_line_error(
        run_cli("prepare", "folder", "--source", pets, "--data-dir", data, "--size", 16, "--force", check=False),
        1,
        "overlaps the source",
    )
    for name in (".", "..", "../x", "/abs", "*", ".hidden", "a/b"):
        one_line_error(
            run_cli("prepare", "shapes", "--name", name, "--data-dir", data, check=False), 1, "is not a plain name"
        )
    (data / "mine").mkdir()
    (data / "mine" / "notes.txt").write_text("keep me")
    one_line_error(
        run_cli("prepare", "shapes", "--name", "mine", "--data-dir", data, "--force", check=False),
        1,
        "is not a dataset made by resnetctl",
    )
    assert (data / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.relative_to(pets) for p in pets.rglob("*")) == before
    one_line_error(
        run_cli(
            "train", "resnet8", "--run", "../escape", "--runs-dir", tmp_path / "runs", "--data-dir", data, check=False
        ),
        1,
        "is not a plain name",
    )


def _png(seed: int) -> bytes:
    import cv2

    image = np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _zip_with_a_bad_member(path):
    with zipfile.ZipFile(TINY_MINI) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(".JPEG") and "/train/" in i.filename)
    raw = bytearray(TINY_MINI.read_bytes())
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    raw[at] ^= 0xFF  # inside the member's data: its CRC no longer matches
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "kind,name,damage",
    [
        ("cifar10", "flipped.tar.gz", lambda p: p.write_bytes(_flip(CIFAR_SUBSET.read_bytes(), 9_000_000))),
        ("cifar10", "no-trailer.tar.gz", lambda p: p.write_bytes(CIFAR_SUBSET.read_bytes()[:-8])),
        ("tiny-imagenet", "bad-member.zip", _zip_with_a_bad_member),
    ],
)
@pytest.mark.slow
def test_damaged_archives_are_refused_whole(tmp_path, kind, name, damage):
    source = tmp_path / name
    damage(source)
    out = tmp_path / "d"
    proc = run_cli("prepare", kind, "--source", source, "--data-dir", out, check=False)
    one_line_error(proc, 1, "damaged")
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left in ([], [f".{kind}.lock"])  # nothing published, no temp left


def test_damage_checks_are_real():
    """The damaged fixtures above really are damaged, and the originals are not."""
    with pytest.raises((gzip.BadGzipFile, zlib.error, EOFError, OSError)):
        gzip.decompress(_flip(CIFAR_SUBSET.read_bytes(), 9_000_000))
    with pytest.raises(EOFError):
        gzip.decompress(CIFAR_SUBSET.read_bytes()[:-8])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(CIFAR_SUBSET.read_bytes()))) as tar:
        names = {m.name.rsplit("/", 1)[-1] for m in tar.getmembers()}
    assert {"batches.meta", "data_batch_1", "data_batch_5", "test_batch"} <= names


# --------------------------------------------------------------------------- full disks
@pytest.mark.slow
def test_a_full_disk_in_prepare_publishes_nothing(tmp_path):
    with tmpfs(tmp_path / "small", "2m") as small:
        proc = run_cli("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", small, check=False)
        one_line_error(proc, 1, "Disk full")
        assert [p.name for p in small.iterdir()] == [".cifar10.lock"]


@pytest.mark.e2e
def test_a_full_disk_in_train_names_the_last_good_checkpoint(cifar_small, data_dir, tmp_path):
    with tmpfs(tmp_path / "small", "2m") as small:
        proc = run_cli(
            "train",
            "resnet8",
            "--dataset",
            "cifar-small",
            "--data-dir",
            data_dir,
            "--runs-dir",
            small,
            "--run",
            "full",
            "--epochs",
            4,
            "--batch-size",
            64,
            "--checkpoint-every",
            100,
            check=False,
        )
        one_line_error(proc, 1, "Disk full")
        run = RunDir(small / "full")
        done = run.history()[-1]["epoch"]
        assert done >= 1 and f"epoch {done}" in proc.stderr and "resnetctl resume --run" in proc.stderr
        assert checkpoint_info(run.last_path)["epoch"] == done
        assert not list(small.rglob(".*.tmp-*"))
        assert run.state()["state"] == "failed"


# --------------------------------------------------------------------------- junk and bad input
@pytest.mark.e2e
def test_junk_in_the_runs_and_data_dirs_is_skipped(small_run, tmp_path, data_dir):
    runs = tmp_path / "runs"
    good = copy_run(small_run, runs, "good")  # a real finished run (3 epochs)
    (runs / "junk").mkdir()
    (runs / "junk" / "config.json").write_text("{not json")  # not a run: no marker
    (runs / "damaged").mkdir()
    (runs / "damaged" / ".resnetctl-run").write_text("{}")  # a run of ours whose config.json is damaged
    (runs / "damaged" / "config.json").write_text("{not json")
    (runs / "stray.txt").write_text("x")
    proc = run_in_process("summary", "--runs-dir", runs, "--json")
    assert [r["run"] for r in json.loads(proc.stdout)] == ["good"]
    assert "warning:" in proc.stderr and "runs/damaged" in proc.stderr and "runs/junk" not in proc.stderr
    run_in_process("evaluate", "--runs-dir", runs, "--data-dir", data_dir)  # the latest *readable* run
    good.best_path.write_bytes(b"corrupt")  # only best.keras is damaged: resume still works
    run_in_process("resume", "--runs-dir", runs, "--epochs", 4)
    assert good.history()[-1]["epoch"] == 4

    other = tmp_path / "data"
    shutil.copytree(data_dir / "cifar-small", other / "ok")
    (other / "broken").mkdir()
    (other / "broken" / "meta.json").write_text("[]")
    proc = run_cli("prepare", "--list", "--json", "--data-dir", other)
    assert [d["name"] for d in json.loads(proc.stdout)] == ["ok"] and "warning:" in proc.stderr


@pytest.mark.e2e
def test_bad_input_gets_one_line(small, tmp_path, data_dir, cifar_small):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, text in (
        (["prepare", "shapes", "--data-dir", a_file], "is a file"),
        (["prepare", "shapes", "--size", 100000, "--data-dir", tmp_path / "d"], "--size"),
        (
            ["prepare", "cifar10", "--source", CIFAR_SUBSET, "--val-split", 0.999, "--data-dir", tmp_path / "d"],
            "No usable training image",
        ),
        (["train", "resnet8", "--data-dir", a_file], "is a file"),
        (["train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", a_file], "is a file"),
        (["build", "resnet8", "--save", tmp_path / "missing" / "m.keras"], "does not exist"),
        (["summary", "--runs-dir", a_file], "is a file"),
    ):
        one_line_error(run_cli(*args, check=False), 1, text)
    assert not (tmp_path / "d" / "cifar10").exists()

    edited = tmp_path / "edited"
    shutil.copytree(cifar_small, edited / "cifar-small")
    meta = json.loads((edited / "cifar-small" / "meta.json").read_text())
    meta["image_size"] = 64
    (edited / "cifar-small" / "meta.json").write_text(json.dumps(meta))
    one_line_error(
        run_cli(*small[:4], "--data-dir", edited, "--runs-dir", tmp_path / "r", check=False), 1, "but meta.json says"
    )
    assert not (tmp_path / "r").exists() or not [p for p in (tmp_path / "r").iterdir() if p.name[0] != "."]

    tiny_model = tmp_path / "tiny.keras"
    run_in_process("build", "resnet8", "--input-size", 64, "--num-classes", 20, "--save", tiny_model)
    one_line_error(
        run_cli("evaluate", "--model", tiny_model, "--dataset", "cifar-small", "--data-dir", data_dir, check=False),
        1,
        "images into 20 classes",
    )


@pytest.mark.e2e
def test_a_failing_train_leaves_no_run_behind(cifar_small, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(cifar_small, broken / "cifar-small")
    with open(broken / "cifar-small" / "train.h5", "r+b") as f:
        f.truncate(os.path.getsize(broken / "cifar-small" / "train.h5") // 2)
    runs = tmp_path / "runs"
    for mode in ("--in-memory", "--stream"):
        proc = run_cli(
            "train",
            "resnet8",
            "--dataset",
            "cifar-small",
            "--data-dir",
            broken,
            "--runs-dir",
            runs,
            mode,
            "--epochs",
            1,
            check=False,
            timeout=300,
        )
        one_line_error(proc, 1, "train.h5")
        assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]

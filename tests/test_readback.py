"""The read-back refactors: one helper per concept, the parsed config cached, ``--csv -``."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from resnetctl.lineage import fork
from resnetctl.outputs import claim
from resnetctl.runs import RunDir
from resnetctl.training.config import TrainConfig
from tests.helpers import cli_command, invoke, pets_world, run_cli, run_in_process

_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
_PIPES = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": _ENV}


def test_segments_before_an_epoch_and_at_it():
    segments = (
        {"from_epoch": 2, "lr": 0.01, "epochs": None},
        {"from_epoch": 4, "lr": None, "epochs": 8},
        {"from_epoch": 6, "lr": 0.001, "epochs": None},
    )
    config = TrainConfig(model="resnet20", segments=segments)
    assert config.segments_before(4) == segments[:1]
    assert config.segments_before(4, inclusive=True) == segments[:2]
    assert config.segments_before(0, inclusive=True) == ()
    assert config.segments_before(7) == segments
    config.segments_before(7)[0]["lr"] = 1.0  # copies: the config's own segments stay as they were
    assert config.segments[0]["lr"] == 0.01


def test_a_fork_keeps_the_schedule_changes_made_before_its_epoch(tmp_path):
    run = RunDir(tmp_path / "r")
    run.create()
    segments = [{"from_epoch": 2, "lr": 0.01, "epochs": None}, {"from_epoch": 3, "lr": None, "epochs": 8}]
    options = TrainConfig(model="resnet8", dataset="shapes", epochs=4, batch_size=64, augmentation="crop-flip")
    run.write_config({**options.to_dict(), "segments": segments})
    run.checkpoint_dir.mkdir()
    with zipfile.ZipFile(run.epoch_path(3), "w") as z:  # the checkpoint format, without a model
        z.writestr("resnetctl.json", json.dumps({"format_version": 1, "id": "x", "epoch": 3, "model": "resnet8"}))
    child = fork(run, 3, "f")
    assert child.config()["segments"] == segments[:1] and run.config()["segments"] == segments


RESOLVED_RECIPES = Path(__file__).with_name("readback_recipes.json")


def _resolved_recipes() -> dict:
    """Every recipe as ``train --recipe NAME`` resolves it, on 45,000 and on 1,000 train images
    (a recipe written in steps gives other epochs for each)."""
    from resnetctl.training.recipes import RECIPES
    from resnetctl.training.settings import build_config

    def sized(train: int):
        return lambda dataset, data_dir: SimpleNamespace(splits={"train": train, "val": 500, "test": 100})

    return {
        f"{name}@{train}": asdict(build_config(None, name, flags={"dataset": "cifar10"}, open_info=sized(train)))
        for name in RECIPES
        for train in (45_000, 1_000)
    }


def test_every_recipe_resolves_to_the_values_it_always_had():
    """Pinned in readback_recipes.json (written before the recipes became shared data); a recipe
    changed on purpose is rewritten there with ``python -m tests.test_readback``."""
    assert json.loads(json.dumps(_resolved_recipes())) == json.loads(RESOLVED_RECIPES.read_text())


def test_a_run_parses_its_config_once_and_sees_it_change(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "r")
    run.create()
    options = TrainConfig(model="resnet8", dataset="shapes", epochs=4, batch_size=64, augmentation="crop-flip")
    run.write_config(options.to_dict())
    parses = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda text, **kw: parses.append(1) or loads(text, **kw))

    first = run.config()
    first["epochs"] = 99  # each caller's own copy
    assert run.config()["epochs"] == 4 and run.options() == options and len(parses) == 1

    run.write_config({**first, "epochs": 6})  # resume rewrites it (a rename)
    assert run.config()["epochs"] == 6 and run.options().epochs == 6 and len(parses) == 2

    stat = run.config_path.stat()  # edited in place to the same size, even within one clock tick
    run.config_path.write_text(run.config_path.read_text().replace('"epochs": 6', '"epochs": 7'))
    os.utime(run.config_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert run.config_path.stat().st_size == stat.st_size
    assert run.options().epochs == 7 and len(parses) == 3


# ------------------------------------------------------------------ "-" is stdout
def test_dash_names_stdout_only_where_a_command_allows_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert claim("-", "--csv", stdout=True).stdout
    assert claim("-", "--out").path == tmp_path / "-"  # elsewhere "-" is a file name as any other
    result = invoke("predict", "photo.jpg", "--csv", "-", "--json")
    assert "--csv - and --json would both write to stdout" in result.exception.message


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    """A 16-image folder dataset (4 test images) and an untrained resnet8 for it."""
    root = tmp_path_factory.mktemp("dash")
    data, _ = pets_world(root)
    return root, ("--model", root / "m.keras", "--dataset", "pets", "--data-dir", data)


@pytest.mark.e2e
def test_predict_csv_dash_writes_the_csv_alone_to_stdout(pets):
    root, model = pets
    run_in_process("predict", "pets", *model, "--csv", "file.csv", cwd=root)
    piped = run_cli("predict", "pets", *model, "--csv", "-", cwd=root)
    assert piped.stdout == (root / "file.csv").read_text()  # exactly the CSV, nothing else
    assert "predictions (m)" in piped.stderr and not (root / "-").exists()

    # a reader that stops reading (| head -1): a quiet exit 0
    proc = subprocess.Popen(cli_command("predict", "pets", *model, "--csv", "-"), cwd=root, **_PIPES)
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0 and "Traceback" not in proc.stderr.read()
    head = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | head -1', "-", *cli_command("predict", "pets", *model, "--csv", "-")],
        cwd=root, capture_output=True, text=True, timeout=300, env=_ENV,
    )  # fmt: skip
    assert head.returncode == 0 and head.stdout == piped.stdout.splitlines(keepends=True)[0], head.stderr


@pytest.mark.e2e
def test_evaluate_predict_dash_writes_the_predictions_alone_to_stdout(pets):
    root, model = pets
    run_in_process("evaluate", *model, "--predict", "file.txt", cwd=root)
    piped = run_cli("evaluate", *model, "--predict", "-", cwd=root)
    assert piped.stdout == (root / "file.txt").read_text() and len(piped.stdout.splitlines()) == 4
    assert "rank-1" in piped.stderr and not (root / "-").exists()


if __name__ == "__main__":
    RESOLVED_RECIPES.write_text(json.dumps(_resolved_recipes(), indent=1, sort_keys=True) + "\n")


def test_dash_with_stdout_closed_is_one_line_before_any_work(monkeypatch):
    import sys

    from resnetctl.errors import ResnetctlError

    monkeypatch.setattr(sys, "stdout", None)  # what Python gives a process started with >&-
    with pytest.raises(ResnetctlError, match="--csv - writes to stdout, and stdout is closed"):
        claim("-", "--csv", stdout=True)

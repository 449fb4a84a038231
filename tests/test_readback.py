"""The read-back refactors: one helper per concept, the parsed config cached, ``--csv -``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from resnetctl.runs import RunDir
from resnetctl.training.config import TrainConfig


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


RESOLVED_RECIPES = Path(__file__).with_name("readback_recipes.json")


def _resolved_recipes() -> dict:
    """Every recipe as ``train --recipe NAME`` resolves it, on 45,000 and on 1,000 train images
    (a recipe written in steps gives other epochs for each)."""
    from resnetctl.training.recipes import RECIPES, build_config

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


if __name__ == "__main__":
    RESOLVED_RECIPES.write_text(json.dumps(_resolved_recipes(), indent=1, sort_keys=True) + "\n")

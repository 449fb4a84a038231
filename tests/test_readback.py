"""The read-back refactors: one helper per concept, the parsed config cached, ``--csv -``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

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


if __name__ == "__main__":
    RESOLVED_RECIPES.write_text(json.dumps(_resolved_recipes(), indent=1, sort_keys=True) + "\n")

"""The read-back refactors: one helper per concept, the parsed config cached, ``--csv -``."""

from __future__ import annotations

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

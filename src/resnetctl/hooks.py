"""The hooks through which long library calls report progress; front ends (``resnetctl.ui``)
implement them. The defaults show nothing. Pure Python, so importing them costs nothing."""

from __future__ import annotations


class PrepareProgress:
    """What ``prepare_dataset`` reports while it writes each split."""

    def start_split(self, split: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def end_split(self, split: str, written: int, skipped: int) -> None: ...


class TrainingProgress:
    """What ``train`` and ``resume`` report.

    ``plan`` has ``run``, ``path``, ``model``, ``dataset``, ``placement``, ``epochs``,
    ``initial_epoch``, ``steps`` (per epoch), ``batch_size`` and ``images``; ``row`` is the
    epoch's history.csv row; ``lr`` is the rate of the step just taken.
    """

    def start(self, plan: dict) -> None: ...

    def batch(self, epoch: int, step: int, logs: dict, lr: float) -> None: ...

    def epoch_end(self, row: dict) -> None: ...

    def close(self) -> None: ...


class TuneProgress:
    """What ``tune`` reports: each trial's start (``number``, ``trials``, ``params``, ``run``,
    ``resumed``) and end (``number``, ``state``, ``value``, ``epochs`` or ``reason``), and the
    :class:`TrainingProgress` each trial's training reports through."""

    def trial_start(self, info: dict) -> None: ...

    def training(self) -> TrainingProgress:
        return TrainingProgress()

    def trial_end(self, info: dict) -> None: ...

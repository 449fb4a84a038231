"""Defaults in a frozen dataclass, overridden by flags, written resolved to config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    model: str
    dataset: str = "shapes"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "poly"
    power: float = 1.0
    milestones: tuple[int, ...] = ()
    warmup_epochs: float | None = None  # None: default_warmup(epochs)
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    zero_init_last: bool = False
    augmentation: str | None = None  # None: chosen from the image size
    precision: str = "float32"
    jit: bool | None = None  # None: Keras decides ("auto")
    seed: int = 0
    checkpoint_every: int = 5
    runs_dir: str | None = None
    run: str | None = None
    tensorboard: bool = False
    in_memory: bool | None = None  # None: in memory when the train split fits comfortably

    def warmup(self) -> float:
        """Warmup epochs; by default 2, or a tenth of a shorter run. Without warmup, lr 0.1 from the
        first step made one seed in three diverge early on the CIFAR subset (docs/benchmarks.md)."""
        return min(2.0, self.epochs / 10) if self.warmup_epochs is None else self.warmup_epochs

    def with_overrides(self, **overrides) -> TrainConfig:
        """Apply the flags a user actually gave (``None`` keeps the default)."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if v is not None and k in known})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["milestones"] = tuple(d.get("milestones") or ())
        return cls(**d)

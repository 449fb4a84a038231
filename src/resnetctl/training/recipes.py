"""Published recipes as named data: ``train --recipe NAME`` fills every setting of one.

Pure Python (no Keras). A recipe is a dict of :class:`TrainConfig` settings with its source and
the accuracy it reported. Settings are layered, each over the one before:

    TrainConfig's defaults < the recipe < a --config file < the flags given

A recipe written in optimizer steps (He et al. 2015: 64k iterations, /10 at 32k and 48k) is
converted to epochs for the dataset in use, at the recipe's own batch size: the paper's number
of passes over the data stays the same whatever ``--batch-size`` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resnetctl.errors import RunError
from resnetctl.training.config import TrainConfig, config_file_options


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str  # the default model; `train MODEL --recipe NAME` may name another
    source: str
    reported: dict[str, str]  # model -> what the source reported
    settings: dict
    iterations: dict | None = None  # {"total": steps, "milestones": [steps, ...]} at settings' batch_size
    notes: str = ""

    def reported_for(self, model: str) -> str | None:
        return self.reported.get(model)

    def epochs_for(self, train_images: int, epochs: int | None = None) -> dict:
        """``epochs`` and ``milestones`` of a recipe written in steps, for ``train_images``;
        with ``epochs`` given, the milestones at the same shares of the run."""
        if not self.iterations:
            return {}
        if epochs is None:
            steps = math.ceil(train_images / self.settings["batch_size"])
            epochs = max(3, round(self.iterations["total"] / steps))
        milestones: list[int] = []
        for m in self.iterations["milestones"]:
            epoch = max(1, round(epochs * m / self.iterations["total"]), milestones[-1] + 1 if milestones else 1)
            milestones.append(epoch)
        return {"epochs": max(epochs, milestones[-1] + 1), "milestones": tuple(milestones)}


# What every recipe here shares: Nesterov SGD (as every sgd run here) at 0.1 with momentum 0.9,
# pad-crop-and-flip augmentation, and none of the extras added since the papers.
_SHARED = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "augmentation": "crop-flip",  # 4-pixel padding, random crop, horizontal flip
    "label_smoothing": 0.0,
    "warmup_epochs": 0.0,
    "zero_init_last": False,
    "ema": 0.0,
    "mixup": 0.0,
}
# The from-scratch project this tool reproduces: a linear (power 1) poly decay, Keras' l2(0.0005)
# on the kernels (weight decay 1e-3).
_PROJECT = "the from-scratch project this tool reproduces"
_PROJECT_POLY = {"schedule": "poly", "power": 1.0, "weight_decay": 1e-3}


def _recipe(*, model: str, reported: str | dict[str, str], settings: dict, **fields) -> Recipe:
    """A :class:`Recipe` over the shared settings; a ``reported`` string is its own model's."""
    reported = {model: reported} if isinstance(reported, str) else reported
    return Recipe(model=model, reported=reported, settings={**_SHARED, **settings}, **fields)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _recipe(
            name="keras-resnet20",
            model="resnet20",
            source="the seed Keras ResNet20 CIFAR-10 notebook (ReduceLROnPlateau + EarlyStopping)",
            reported="91.0% test, CIFAR-10",
            settings={
                "batch_size": 64,
                "epochs": 200,
                "shortcut": "avgpool",  # 2x2 average pool + 1x1 convolution between stages
                "weight_decay": 2e-4,  # Keras' l2(1e-4) on the kernels
                "schedule": "plateau",
                "plateau_monitor": "loss",
                "plateau_factor": math.sqrt(0.1),
                "plateau_patience": 5,
                "plateau_min_delta": 0.01,
                "plateau_cooldown": 0,
                "plateau_min_lr": 1e-6,
                "early_stopping": 20,
                "early_stopping_monitor": "val_accuracy",
                "early_stopping_min_delta": 0.0,
            },
            notes="best.keras is the best val accuracy, as the notebook's ModelCheckpoint(save_best_only)",
        ),
        _recipe(
            name="he2015-cifar",
            model="resnet20",
            source="He et al. 2015, Deep Residual Learning, sec. 4.2 and table 6",
            reported={
                "resnet20": "91.25% test, CIFAR-10",
                "resnet32": "92.49% test, CIFAR-10",
                "resnet44": "92.83% test, CIFAR-10",
                "resnet56": "93.03% test, CIFAR-10",
                "resnet110": "93.57% test, CIFAR-10 (best of 5; mean 93.39%)",
                "resnet1202": "92.07% test, CIFAR-10",
            },
            settings={"batch_size": 128, "weight_decay": 1e-4, "schedule": "step"},
            iterations={"total": 64_000, "milestones": [32_000, 48_000]},
            notes="64k iterations, lr /10 at 32k and 48k (45k/5k train/val split: 182 epochs, /10 at 91 "
            "and 136); ResNet110 warmed up at 0.01 for about 400 iterations (--warmup-epochs 1 is close)",
        ),
        _recipe(
            name="preact-resnet56-poly",
            model="preact-resnet56-wide",
            source=f"{_PROJECT} (pre-activation bottleneck ResNet56)",
            reported="93.79% test, CIFAR-10",
            settings={**_PROJECT_POLY, "batch_size": 128, "epochs": 150},
        ),
        _recipe(
            name="tiny-imagenet-resnet41",
            model="tiny-imagenet-resnet41",
            source=f"{_PROJECT} (Tiny ImageNet ResNet41)",
            reported="57.93% rank-1, Tiny ImageNet val",
            settings={**_PROJECT_POLY, "batch_size": 64, "epochs": 75},
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise RunError(f"Unknown recipe {name!r}; the recipes are: {', '.join(RECIPES)} (or `--recipe list`)")
    return RECIPES[name]


def recipe_rows() -> list[dict]:
    """What ``train --recipe list`` shows."""
    return [
        {
            "name": r.name,
            "model": r.model,
            "source": r.source,
            "reported": r.reported_for(r.model),
            "schedule": r.settings["schedule"],
            "epochs": r.settings.get("epochs", f"{r.iterations['total']:,} steps" if r.iterations else None),
        }
        for r in RECIPES.values()
    ]


def build_config(
    model: str | None, recipe: str | None, config_file=None, flags: dict | None = None, open_info=None
) -> TrainConfig:
    """``train``'s settings: defaults < ``recipe`` < ``config_file`` < ``flags`` (``None``: not
    given), validated. ``open_info(dataset, data_dir)`` gives the ``DatasetInfo`` that a recipe
    written in steps is converted for (default: :func:`resnetctl.data.store.open_dataset`)."""
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    from_file = config_file_options(config_file) if config_file is not None else {}
    chosen = get_recipe(recipe) if recipe else None
    settings: dict = dict(chosen.settings) if chosen else {}
    if chosen:
        settings["recipe"] = chosen.name
    settings.update(from_file)
    settings.update(given)
    settings["model"] = model or from_file.get("model") or (chosen.model if chosen else None)
    if not settings["model"]:
        raise RunError(
            "Missing MODEL", hint="e.g. `resnetctl train resnet20`, --recipe NAME or --config RUN/config.json"
        )
    if chosen and chosen.iterations and not {"epochs", "milestones"} <= set(from_file) | set(given):
        if open_info is None:
            from resnetctl.data.store import open_dataset as open_info
        config = TrainConfig.from_dict(settings)
        info = open_info(config.dataset, config.data_dir)
        fixed = {**from_file, **given}
        converted = chosen.epochs_for(info.splits["train"], fixed.get("epochs"))
        settings.update({k: v for k, v in converted.items() if k not in fixed})
    try:
        config = TrainConfig.from_dict(settings)
    except TypeError as exc:
        raise RunError(f"Bad settings: {exc}") from None
    return config.validate()

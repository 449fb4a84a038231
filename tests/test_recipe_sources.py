"""Every named recipe is its source, setting by setting: a table written from the sources
(meng1994412/ResNet_from_scratch, the seed notebook, He et al. 2015), not from the recipes, and
each setting's citation as ``train --recipe NAME --dry-run`` shows it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from resnetctl.training.recipes import RECIPES, recipe_report
from resnetctl.training.settings import build_config
from tests.helpers import run_in_process

_OFF = {
    k: (v, "not in the source")
    for k, v in {
        "label_smoothing": 0.0,
        "warmup_epochs": 0.0,
        "zero_init_last": False,
        "ema": 0.0,
        "mixup": 0.0,
        "cutmix": 0.0,
    }.items()
}
# setting -> (the source's value, a piece of its citation)
SOURCES = {
    "preact-resnet56-poly": {
        "optimizer": ("sgd", "resnet_cifar10_decay.py:77"),
        "lr": (0.1, "resnet_cifar10_decay.py:20"),
        "momentum": (0.9, "resnet_cifar10_decay.py:77"),
        "nesterov": (False, "resnet_cifar10_decay.py:77"),  # SGD(lr, momentum=0.9): plain momentum
        "batch_size": (128, "resnet_cifar10_decay.py:84"),
        "epochs": (150, "resnet56_cifar10_5"),  # the logged run, not NUM_EPOCHS = 140
        "schedule": ("poly", "resnet_cifar10_decay.py:22-33"),
        "power": (1.0, "resnet_cifar10_decay.py:27"),
        "lr_update": ("epoch", "LearningRateScheduler"),
        "weight_decay": (2e-4, "resnet.py:19"),  # l2(0.0001) in every block: gradient 2e-4 * w
        "stem_weight_decay": (1e-3, "resnet.py:73-74"),  # l2(reg), reg=0.0005 at resnet_cifar10_decay.py:78
        "classifier_weight_decay": (1e-3, "resnet.py:97"),
        "normalization": ("pixel-mean", "resnet_cifar10_decay.py:50-51"),
        "augmentation": ("affine-flip", "fill_mode='nearest'"),
        "shift": (0.1, "width_shift_range=0.1"),
        "validation": ("test", "validation_data=(testX, testY)"),
        **_OFF,
    },
    "tiny-imagenet-resnet41": {
        "optimizer": ("sgd", "train_decay.py:71"),
        "lr": (0.1, "train_decay.py:22"),
        "momentum": (0.9, "train_decay.py:71"),
        "nesterov": (True, "nesterov=True"),
        "batch_size": (64, "train_decay.py:56"),
        "epochs": (75, "resnet_tinyimagenet_2.json"),
        "schedule": ("poly", "train_decay.py:24-35"),
        "power": (1.0, "train_decay.py:29"),
        "lr_update": ("epoch", "train_decay.py:64"),
        "weight_decay": (2e-4, "resnet.py:19"),
        "stem_weight_decay": (1e-3, "resnet_tinyimagenet_architecture.png"),
        "classifier_weight_decay": (1e-3, "resnet.py:97"),
        "normalization": ("channel-mean", "MeanPreprocessor"),
        "augmentation": ("affine-flip", "fill_mode='nearest'"),
        "rotation": (18.0, "rotation_range=18"),
        "zoom": (0.15, "zoom_range=0.15"),
        "shift": (0.2, "width_shift_range=0.2"),
        "shear": (math.degrees(0.15), "radians in the Keras 2.1.0"),
        "validation": ("test", "official val"),
        **_OFF,
    },
    "keras-resnet20": {
        "optimizer": ("sgd", "notebook"),
        "lr": (0.1, "learning_rate=0.1"),
        "momentum": (0.9, "momentum=0.9"),
        "nesterov": (True, "nesterov=True"),
        "batch_size": (64, "batch_size=64"),
        "epochs": (200, "EarlyStopping"),
        "shortcut": ("avgpool", "AveragePooling2D"),
        "shortcut_bn": (False, "no BatchNormalization"),
        "bn_epsilon": (1e-3, "epsilon=1e-3"),
        "bn_momentum": (0.99, "momentum=0.99"),
        "weight_decay": (2e-4, "l2(1e-4)"),
        "classifier_weight_decay": (0.0, "without a regularizer"),
        "normalization": ("pixel", "std(x_train, axis=0)"),
        "augmentation": ("affine-flip", "'nearest'"),
        "shift": (0.125, "4/32"),
        "schedule": ("plateau", "ReduceLROnPlateau"),
        "plateau_monitor": ("loss", "monitor='loss'"),
        "plateau_factor": (math.sqrt(0.1), "np.sqrt(0.1)"),
        "plateau_patience": (5, "patience=5"),
        "plateau_min_delta": (0.01, "min_delta=0.01"),
        "plateau_cooldown": (0, "cooldown=0"),
        "plateau_min_lr": (1e-6, "min_lr=1e-6"),
        "early_stopping": (20, "patience=20"),
        "early_stopping_monitor": ("val_accuracy", "val_accuracy"),
        "early_stopping_min_delta": (0.0, "min_delta=0"),
        **_OFF,
    },
    "he2015-cifar": {
        "optimizer": ("sgd", "sec. 3.4"),
        "lr": (0.1, "sec. 4.2"),
        "momentum": (0.9, "sec. 3.4"),
        "nesterov": (False, "plain momentum"),
        "batch_size": (128, "sec. 4.2"),
        "weight_decay": (1e-4, "0.0001"),
        "schedule": ("step", "32k and 48k"),
        "shortcut": ("A", "option A"),
        "normalization": ("pixel-mean", "per-pixel mean"),
        "augmentation": ("crop-flip", "4 pixels padded"),
        "shift": (0.125, "4 pixels"),
        "validation": ("val", "45k/5k"),
        **_OFF,
    },
}


def test_the_table_covers_every_recipe():
    assert set(SOURCES) == set(RECIPES)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_recipe_setting_is_its_source_and_cites_it(name):
    recipe, table = RECIPES[name], SOURCES[name]
    assert set(recipe.settings) == set(table), set(recipe.settings) ^ set(table)
    for key, (value, where) in table.items():
        assert (
            recipe.settings[key] == pytest.approx(value) if isinstance(value, float) else recipe.settings[key] == value
        ), key
        assert where in recipe.sources[key], (key, recipe.sources[key])
    config = build_config(None, name, flags={"dataset": "x"}, open_info=lambda d, dd: _info(45_000))
    cited, notes = recipe_report(config)
    assert set(table) <= set(cited) and all(cited[k] == recipe.sources[k] for k in table)
    assert notes[0].startswith(f"recipe {name}: ")


def _info(train: int):
    return SimpleNamespace(splits={"train": train, "val": 5000, "test": 10_000}, num_classes=10, image_size=32)


# What no source does, pinned on the resolved config of every recipe: a change of the tool's
# defaults must not reach a named recipe unseen.
_IN_NO_SOURCE = {"random_erasing": 0.0, "clip_norm": None, "precision": "float32"}
_NO_AFFINE = {"rotation": 0.0, "zoom": 0.0, "shear": 0.0}  # only the Tiny ImageNet script rotates, zooms, shears


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_what_no_source_does_stays_off_in_the_resolved_recipe(name):
    config = build_config(None, name, flags={"dataset": "x"}, open_info=lambda d, dd: _info(45_000))
    off = {**_IN_NO_SOURCE, **({} if name.startswith("tiny") else _NO_AFFINE)}
    assert {k: getattr(config, k) for k in off} == off


def test_the_papers_iterations_are_its_epochs_at_full_length():
    # 64k iterations of 128 on 45k images (352 steps an epoch): 182 epochs; the drops at 32k and 48k
    config = build_config(None, "he2015-cifar", flags={"dataset": "x"}, open_info=lambda d, dd: _info(45_000))
    assert (config.epochs, config.milestones, config.schedule) == (182, (91, 136), "step")


def test_a_flag_over_a_recipe_is_shown_as_a_change():
    config = build_config(None, "preact-resnet56-poly", flags={"nesterov": True, "lr": 0.05})
    cited, _ = recipe_report(config)
    assert cited["nesterov"].startswith("changed here (the recipe: False")
    assert cited["lr"].startswith("changed here (the recipe: 0.1")
    assert "changed" not in cited["momentum"]


@pytest.mark.parametrize(
    "epochs,milestones,schedule", [(1, (), "constant"), (2, (1,), "step"), (4, (2, 3), "step"), (20, (10, 15), "step")]
)
def test_a_short_run_of_the_papers_recipe_carries_its_drops_along(epochs, milestones, schedule):
    config = build_config(None, "he2015-cifar", flags={"epochs": epochs}, open_info=lambda d, dd: _info(45_000))
    assert (config.epochs, config.milestones, config.schedule) == (epochs, milestones, schedule)
    _, notes = recipe_report(config)
    assert any(("a constant rate" if schedule == "constant" else "0.5/0.75 of") in note for note in notes), notes


@pytest.mark.slow
def test_train_recipe_he2015_for_one_epoch_dry_runs(cifar_small, data_dir):
    proc = run_in_process(
        "train",
        "--recipe",
        "he2015-cifar",
        "--epochs",
        "1",
        "--dataset",
        "cifar-small",
        "--data-dir",
        data_dir,
        "--dry-run",
    )
    assert "resolved config (recipe he2015-cifar)" in proc.stdout
    assert "fall outside 1 epoch(s): a constant rate" in proc.stdout
    assert "sec. 4.2: a weight decay of 0.0001" in proc.stdout

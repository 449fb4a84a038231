"""The plateau rate cut, early stopping and named recipes: the rules against Keras' own callbacks,
the recipes' layering, and (e2e) real runs that cut, stop and resume exactly."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from resnetctl.errors import RunError
from resnetctl.training.config import DEFAULTS, TrainConfig
from resnetctl.training.monitors import EarlyStopping, Plateau
from resnetctl.training.recipes import RECIPES, get_recipe
from resnetctl.training.schedules import PlateauSchedule
from resnetctl.training.settings import build_config

# a loss that falls, stalls, creeps down by less than min_delta, falls again, stalls
LOSSES = [2.3, 2.0, 1.8, 1.795, 1.79, 1.789, 1.788, 1.787, 1.6, 1.599, 1.598, 1.597, 1.596, 1.595, 1.594, 1.593]
LOSSES += [1.593 - 0.001 * i for i in range(30)]


def _keras_model(lr: float):
    return SimpleNamespace(optimizer=keras.optimizers.SGD(learning_rate=lr), metrics=[], stop_training=False)


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the notebook's: factor sqrt(0.1), patience 5, min_delta 0.01, min_lr 1e-6
        {"patience": 2, "cooldown": 3, "min_lr": 0.01},
        {"patience": 1, "min_delta": 0.0, "factor": 0.5, "min_lr": 0.0},
    ],
)
def test_the_plateau_rule_cuts_exactly_where_keras_reduce_lr_on_plateau_does(settings):
    ours = Plateau(lr=0.1, **settings)
    theirs = keras.callbacks.ReduceLROnPlateau(
        monitor="loss",
        factor=ours.factor,
        patience=ours.patience,
        min_delta=ours.min_delta,
        cooldown=ours.cooldown,
        min_lr=ours.min_lr,
    )
    model = _keras_model(0.1)
    theirs.set_model(model)
    theirs.on_train_begin()
    cuts = []
    for epoch, loss in enumerate(LOSSES):
        if ours.update(loss):
            cuts.append(epoch + 1)
        theirs.on_epoch_end(epoch, {"loss": loss})
        assert ours.lr == float(np.asarray(model.optimizer.learning_rate)), epoch  # bit for bit
        assert (ours.wait, ours.cooldown_counter) == (theirs.wait, theirs.cooldown_counter)
    assert cuts and ours.reductions == len(cuts)
    if not settings:  # the notebook's rule: best 1.6 at epoch 9, then 5 epochs within 0.01 of it: a cut
        assert cuts[:2] == [14, 19]  # at the end of epoch 14, and 5 epochs later again
    # the state round-trips through a checkpoint's JSON and continues identically
    again = Plateau.from_state(json.loads(json.dumps(ours.state())))
    assert again == ours


@pytest.mark.parametrize(
    "monitor,values", [("loss", LOSSES), ("val_accuracy", [0.1, 0.3, 0.35, 0.351, 0.34, 0.36, 0.362, 0.35, 0.364, 0.4])]
)
def test_early_stopping_stops_where_keras_early_stopping_does(monitor, values):
    ours = EarlyStopping(patience=3, monitor=monitor, min_delta=0.005)
    # what Keras' "auto" makes of a compiled model's loss and accuracy metric
    mode = "max" if "acc" in monitor else "min"
    theirs = keras.callbacks.EarlyStopping(monitor=monitor, patience=3, min_delta=0.005, mode=mode)
    model = _keras_model(0.1)
    theirs.set_model(model)
    theirs.on_train_begin()
    stopped = None
    for epoch, value in enumerate(values):
        if ours.update(epoch + 1, value):
            stopped = epoch + 1
        theirs.on_epoch_end(epoch, {monitor: value})
        assert (stopped is not None) == model.stop_training, epoch
        if stopped:
            break
    assert stopped == ours.stopped_epoch and ours.best_epoch == theirs.best_epoch + 1
    assert stopped == ours.best_epoch + 3
    assert f"after epoch {ours.best_epoch}" in ours.reason()
    resumed = ours.continued()  # resume --epochs: best kept, count started again
    assert (resumed.best, resumed.best_epoch, resumed.wait, resumed.stopped_epoch) == (
        ours.best,
        ours.best_epoch,
        0,
        None,
    )


def test_the_plateau_schedule_is_the_held_rate_times_warmup_on_device_and_in_python():
    schedule = PlateauSchedule(0.1, steps_per_epoch=10, epochs=20, warmup_epochs=2)
    assert schedule.at_step(0) == pytest.approx(0.1 / 20) and schedule.at_step(19) == pytest.approx(0.1)
    for step in (0, 5, 9, 19, 25, 29):  # the device's value (the optimizer's) is Python's, bit for bit
        assert float(schedule(step)) == schedule.at_step(step)
    schedule.set_rate(3, 0.1 * math.sqrt(0.1))  # cut at the end of 0-based epoch 2
    for step in (30, 39, 40, 55):
        assert float(schedule(step)) == schedule.at_step(step)
    assert schedule.at_step(29) == pytest.approx(0.1) and schedule.at_step(30) == pytest.approx(0.0316227766)
    assert schedule.at_epoch_end(2) == pytest.approx(0.1) and schedule.at_epoch_end(3) == pytest.approx(0.0316227766)
    restored = PlateauSchedule.from_config(schedule.get_config())
    assert float(restored(55)) == float(schedule(55))


def _info(train: int, val: int = 500, classes: int = 10, size: int = 32):
    return SimpleNamespace(splits={"train": train, "val": val, "test": 100}, num_classes=classes, image_size=size)


def test_recipes_layer_under_a_config_file_and_flags(tmp_path):
    opened = []

    def open_info(dataset, data_dir):
        opened.append(dataset)
        return _info(45_000)

    notebook = build_config(None, "keras-resnet20", flags={"dataset": "cifar10"}, open_info=open_info)
    assert notebook.model == "resnet20" and notebook.recipe == "keras-resnet20" and not opened
    for key, value in RECIPES["keras-resnet20"].settings.items():
        assert getattr(notebook, key) == value, key
    assert (notebook.schedule, notebook.plateau_factor, notebook.early_stopping) == ("plateau", math.sqrt(0.1), 20)

    # He et al.: 64k iterations at batch 128 on 45k images = 182 epochs, /10 at 32k and 48k = epochs 91, 136
    he = build_config("resnet110", "he2015-cifar", flags={"dataset": "cifar10"}, open_info=open_info)
    assert (he.model, he.epochs, he.milestones, he.batch_size, he.weight_decay) == (
        "resnet110",
        182,
        (91, 136),
        128,
        1e-4,
    )
    assert get_recipe("he2015-cifar").reported_for("resnet110").startswith("93.57%")
    # a flag beats the recipe; the milestones stay at the paper's shares of the run
    short = build_config(None, "he2015-cifar", flags={"epochs": 100, "batch_size": 64}, open_info=open_info)
    assert (short.epochs, short.milestones, short.batch_size) == (100, (50, 75), 64)
    # on 1,000 images the same steps are many more epochs
    small = build_config(None, "he2015-cifar", open_info=lambda d, dd: _info(1_000))
    assert (small.epochs, small.milestones) == (8000, (4000, 6000))

    # a --config file lies over the recipe and under the flags
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({"model": "resnet8", "lr": 0.05, "epochs": 7, "plateau_patience": 2}))
    layered = build_config(None, "keras-resnet20", config_file, {"lr": 0.02}, open_info=open_info)
    assert (layered.model, layered.lr, layered.epochs, layered.plateau_patience) == ("resnet8", 0.02, 7, 2)
    assert (layered.batch_size, layered.shortcut, layered.recipe) == (64, "avgpool", "keras-resnet20")
    plain = build_config("resnet8", None, flags={"lr": 0.02})
    assert plain.recipe is None and plain == TrainConfig(model="resnet8", lr=0.02)


def test_an_unknown_recipe_is_one_line_naming_them_all():
    with pytest.raises(RunError) as info:
        build_config(None, "keras-resnet21")
    assert "Unknown recipe 'keras-resnet21'" in info.value.message
    assert all(name in info.value.message for name in RECIPES)


@pytest.mark.parametrize(
    "options,text",
    [
        ({"plateau_patience": 3}, "--plateau-patience apply only with --schedule plateau"),
        ({"schedule": "plateau", "plateau_factor": 1.0}, "`plateau_factor` must be in (0, 1)"),
        ({"schedule": "plateau", "plateau_monitor": "val_acc"}, "Unknown --plateau-monitor 'val_acc'"),
        ({"schedule": "plateau", "plateau_patience": 0}, "`plateau_patience` must be >= 1"),
        ({"schedule": "plateau", "plateau_min_lr": -1.0}, "`plateau_min_lr` must be a finite number >= 0"),
        ({"early_stopping": 0}, "`early_stopping` must be >= 1"),
        ({"early_stopping_monitor": "loss"}, "--early-stopping-monitor apply only with --early-stopping"),
        ({"schedule": "plateau", "milestones": (3,)}, "--milestones only apply to --schedule step"),
        ({"shortcut": "C"}, "Unknown shortcut 'C'"),
    ],
)
def test_plateau_and_early_stopping_settings_are_checked_before_keras(options, text):
    with pytest.raises(RunError) as info:
        TrainConfig(model="resnet8", **options).validate()
    assert text in info.value.message


def test_a_watched_val_or_top5_metric_needs_the_dataset_to_log_it():
    config = TrainConfig(model="resnet8", early_stopping=3).validate()
    with pytest.raises(RunError, match="needs a validation split"):
        config.resolved(_info(1000, val=0))
    plateau = TrainConfig(model="resnet8", schedule="plateau", plateau_monitor="top5").validate()
    with pytest.raises(RunError, match="more than 5 classes"):
        plateau.resolved(_info(1000, classes=5))
    assert plateau.resolved(_info(1000, classes=200)).plateau_monitor == "top5"


def test_every_recipe_is_valid_and_names_a_registered_model():
    from resnetctl.models import get_spec

    for recipe in RECIPES.values():
        get_spec(recipe.model)
        unknown = set(recipe.settings) - set(DEFAULTS.to_dict())
        assert not unknown, (recipe.name, unknown)
        assert recipe.reported_for(recipe.model) and recipe.source

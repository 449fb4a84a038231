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


@dataclass(frozen=True)
class Cited:
    """A recipe's setting with where its source says it (file and line, or the paper's section)."""

    value: object
    where: str


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str  # the default model; `train MODEL --recipe NAME` may name another
    source: str
    reported: dict[str, str]  # model -> what the source reported
    settings: dict
    iterations: dict | None = None  # {"total": steps, "milestones": [steps, ...]} at settings' batch_size
    notes: str = ""
    sources: dict[str, str] | None = None  # setting -> its citation
    protocol: str = ""  # how the source split its data, and how to reproduce that here

    def cited(self, config) -> list[tuple[str, str]]:
        """(setting, where it comes from) for ``--dry-run``: the citation where ``config`` keeps the
        recipe's value, else what overrode it (a flag or --config) beside the recipe's value."""
        rows = []
        for key, where in (self.sources or {}).items():
            ours = getattr(config, key)
            theirs = self.settings.get(key)
            if key in ("epochs", "milestones", "schedule") and self.iterations:
                theirs = ours  # carried to the run's length: see scaled_note
            rows.append((key, where if ours == theirs else f"changed here (the recipe: {theirs!r}, {where})"))
        return rows

    def reported_for(self, model: str) -> str | None:
        return self.reported.get(model)

    def epochs_for(self, train_images: int, epochs: int | None = None) -> dict:
        """``epochs`` and ``milestones`` of a recipe written in steps, for ``train_images``;
        with ``epochs`` given (a short try), the milestones at the same shares of that run,
        those that fall inside it (``--epochs 2``: one drop, at 1; ``--epochs 1``: none, so a
        constant rate), never a refusal."""
        if not self.iterations:
            return {}
        shares = [m / self.iterations["total"] for m in self.iterations["milestones"]]
        if epochs is None:
            steps = math.ceil(train_images / self.settings["batch_size"])
            epochs = max(len(shares) + 1, round(self.iterations["total"] / steps))
        milestones = tuple(sorted({m for m in (round(epochs * share) for share in shares) if 1 <= m < epochs}))
        if not milestones:
            return {"epochs": epochs, "milestones": (), "schedule": "constant"}
        return {"epochs": epochs, "milestones": milestones}

    def scaled_note(self, config) -> str | None:
        """What ``--dry-run`` says when the milestones were carried to a shorter or longer run."""
        if not self.iterations:
            return None
        shares = "/".join(f"{m / self.iterations['total']:.3g}" for m in self.iterations["milestones"])
        if config.schedule == "constant":
            return (
                f"the recipe's lr drops (at {shares} of the run) fall outside {config.epochs} epoch(s): a constant rate"
            )
        drops = ",".join(map(str, config.milestones))
        return f"lr /10 at epochs {drops}: {shares} of {config.epochs} epochs, as the source"


# What no source here used: the extras added since the papers, off in every recipe.
_NONE = "not in the source: off"
_SHARED = {
    key: Cited(value, _NONE)
    for key, value in {
        "label_smoothing": 0.0,
        "warmup_epochs": 0.0,
        "zero_init_last": False,
        "ema": 0.0,
        "mixup": 0.0,
        "cutmix": 0.0,
    }.items()
}


def _sgd(where: str, nesterov: bool, lr_where: str | None = None) -> dict:
    """SGD at 0.1 with momentum 0.9, as every source here, cited at ``where``."""
    return {
        "optimizer": Cited("sgd", where),
        "lr": Cited(0.1, lr_where or where),
        "momentum": Cited(0.9, where),
        "nesterov": Cited(nesterov, where),
    }


_NOTEBOOK = "the seed Keras ResNet20 CIFAR-10 notebook"
_HE = "He et al. 2015 (arXiv:1512.03385)"
_REPO = "meng1994412/ResNet_from_scratch@8c02640"
_CIFAR = f"{_REPO} resnet_cifar10_decay.py"
_TINY = f"{_REPO} train_decay.py"
_BUILDER = "meng1994412/ResNet_from_scratch@6343e70 pipeline/nn/conv/resnet.py"


# Keras' l2(c) adds c * sum(w**2) to the loss: a gradient of 2c * w, --weight-decay 2c here.
def _project_decay(build_call: str, stem: str) -> dict:
    """The from-scratch project's decay: build()'s ``reg`` (0.0005 at ``build_call``, the caller's
    line) reaches the stem conv and the classifier only; every block keeps residual_module's 0.0001."""
    return {
        "weight_decay": Cited(2e-4, f"{_BUILDER}:19 residual_module(reg=0.0001), which build() never passes"),
        "stem_weight_decay": Cited(1e-3, f"{stem}, l2(reg) with {build_call} reg=0.0005"),
        "classifier_weight_decay": Cited(1e-3, f"{_BUILDER}:97 Dense(classes, l2(reg)), {build_call} reg=0.0005"),
    }


def _project_poly(script: str, poly: str, power: int, scheduler: int) -> dict:
    """The from-scratch project's linear decay, cited at its lines in ``script``."""
    return {
        "schedule": Cited("poly", f"{script}:{poly} poly_decay(): baseLR * (1 - epoch / maxEpochs) ** power"),
        "power": Cited(1.0, f"{script}:{power} power = 1.0"),
        "lr_update": Cited("epoch", f"{script}:{scheduler} LearningRateScheduler(poly_decay), once an epoch"),
    }


def _recipe(
    *, model: str, reported: str | dict[str, str], settings: dict, citations: dict | None = None, **fields
) -> Recipe:
    """A :class:`Recipe` over the shared settings; a ``reported`` string is its own model's.
    Settings given as :class:`Cited` carry their citation into ``sources``; ``citations`` cites
    settings the recipe derives (epochs and milestones converted from iterations)."""
    reported = {model: reported} if isinstance(reported, str) else reported
    merged = {**_SHARED, **settings}
    sources = {k: v.where for k, v in merged.items() if isinstance(v, Cited)} | (citations or {})
    values = {k: v.value if isinstance(v, Cited) else v for k, v in merged.items()}
    return Recipe(model=model, reported=reported, settings=values, sources=sources, **fields)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _recipe(
            name="keras-resnet20",
            model="resnet20",
            source=f"{_NOTEBOOK} (ReduceLROnPlateau + EarlyStopping)",
            reported="91.0% test, CIFAR-10",
            settings={
                "batch_size": Cited(64, "notebook: model.fit(..., batch_size=64)"),
                "epochs": Cited(200, "notebook: epochs=200, cut short by EarlyStopping"),
                **_sgd("notebook: SGD(learning_rate=0.1, momentum=0.9, nesterov=True)", nesterov=True),
                "shortcut": Cited("avgpool", "notebook: AveragePooling2D(2) + 1x1 Conv2D between stages"),
                "shortcut_bn": Cited(False, "notebook: the pooled 1x1 Conv2D is added with no BatchNormalization"),
                "bn_epsilon": Cited(1e-3, "notebook: BatchNormalization() at Keras' defaults, epsilon=1e-3"),
                "bn_momentum": Cited(0.99, "notebook: BatchNormalization() at Keras' defaults, momentum=0.99"),
                "weight_decay": Cited(2e-4, "notebook: Conv2D(kernel_regularizer=l2(1e-4))"),
                "classifier_weight_decay": Cited(0.0, "notebook: Dense(num_classes) without a regularizer"),
                "normalization": Cited("pixel", "notebook: (x - mean(x_train, axis=0)) / std(x_train, axis=0)"),
                "augmentation": Cited(
                    "affine-flip", "notebook: ImageDataGenerator(horizontal_flip=True), fill_mode 'nearest'"
                ),
                "shift": Cited(0.125, "notebook: width_shift_range=4/32, height_shift_range=4/32"),
                "schedule": Cited("plateau", "notebook: ReduceLROnPlateau"),
                "plateau_monitor": Cited("loss", "notebook: ReduceLROnPlateau(monitor='loss')"),
                "plateau_factor": Cited(math.sqrt(0.1), "notebook: ReduceLROnPlateau(factor=np.sqrt(0.1))"),
                "plateau_patience": Cited(5, "notebook: ReduceLROnPlateau(patience=5)"),
                "plateau_min_delta": Cited(0.01, "notebook: ReduceLROnPlateau(min_delta=0.01)"),
                "plateau_cooldown": Cited(0, "notebook: ReduceLROnPlateau(cooldown=0)"),
                "plateau_min_lr": Cited(1e-6, "notebook: ReduceLROnPlateau(min_lr=1e-6)"),
                "early_stopping": Cited(20, "notebook: EarlyStopping(patience=20)"),
                "early_stopping_monitor": Cited("val_accuracy", "notebook: EarlyStopping(monitor='val_accuracy')"),
                "early_stopping_min_delta": Cited(0.0, "notebook: EarlyStopping(min_delta=0)"),
            },
            notes="best.keras is the best val accuracy, as the notebook's ModelCheckpoint(save_best_only); "
            "the notebook's 91.0% is on the original CIFAR-10 images after 88 epochs",
        ),
        _recipe(
            name="he2015-cifar",
            model="resnet20",
            source=f"{_HE}, sec. 4.2 and table 6",
            reported={
                "resnet20": "91.25% test, CIFAR-10",
                "resnet32": "92.49% test, CIFAR-10",
                "resnet44": "92.83% test, CIFAR-10",
                "resnet56": "93.03% test, CIFAR-10",
                "resnet110": "93.57% test, CIFAR-10 (best of 5; mean 93.39%)",
                "resnet1202": "92.07% test, CIFAR-10",
            },
            settings={
                "batch_size": Cited(128, "sec. 4.2: a mini-batch size of 128"),
                **_sgd(
                    "sec. 3.4: SGD with a momentum of 0.9 (plain momentum)",
                    False,
                    "sec. 4.2: we start with a learning rate of 0.1",
                ),
                "weight_decay": Cited(1e-4, "sec. 4.2: a weight decay of 0.0001"),
                "schedule": Cited("step", "sec. 4.2: divide it by 10 at 32k and 48k iterations"),
                "shortcut": Cited("A", "sec. 4.2: identity shortcuts in all cases (option A)"),
                "normalization": Cited("pixel-mean", "sec. 4.2: the per-pixel mean subtracted"),
                "augmentation": Cited("crop-flip", "sec. 4.2: 4 pixels padded, a 32x32 crop, horizontal flip"),
                "shift": Cited(0.125, "sec. 4.2: 4 pixels padded on each side"),
                "validation": Cited("val", "sec. 4.2: a 45k/5k train/val split"),
            },
            citations={
                "epochs": "sec. 4.2: terminate training at 64k iterations",
                "milestones": "sec. 4.2: divide it by 10 at 32k and 48k iterations",
            },
            iterations={"total": 64_000, "milestones": [32_000, 48_000]},
            notes="64k iterations, lr /10 at 32k and 48k (45k/5k train/val split: 182 epochs, /10 at 91 "
            "and 136); ResNet110 warmed up at 0.01 for about 400 iterations (--warmup-epochs 1 is close)",
        ),
        _recipe(
            name="preact-resnet56-poly",
            model="preact-resnet56-wide",
            source=f"{_REPO} (pre-activation bottleneck ResNet56, experiment 4)",
            reported="93.79% test, CIFAR-10",
            settings={
                **_project_poly(_CIFAR, poly="22-33", power=27, scheduler=72),
                "batch_size": Cited(128, f"{_CIFAR}:84 aug.flow(trainX, trainY, batch_size=128)"),
                "epochs": Cited(150, "README experiment 4 and output/resnet56_cifar10_5 (150 epochs)"),
                **_sgd(f"{_CIFAR}:77 SGD(lr=INIT_LR, momentum=0.9)", False, f"{_CIFAR}:20 INIT_LR = 1e-1"),
                **_project_decay(f"{_CIFAR}:78", f"{_BUILDER}:73-74 the 3x3 stem conv"),
                "normalization": Cited("pixel-mean", f"{_CIFAR}:50-51 mean = np.mean(trainX, axis=0); trainX -= mean"),
                "augmentation": Cited(
                    "affine-flip", f"{_CIFAR}:64-65 ImageDataGenerator(horizontal_flip=True, fill_mode='nearest')"
                ),
                "shift": Cited(0.1, f"{_CIFAR}:64 width_shift_range=0.1, height_shift_range=0.1"),
                "validation": Cited("test", f"{_CIFAR}:85 validation_data=(testX, testY)"),
            },
            protocol="the source trained on all 50,000 training images and watched the test set: prepare "
            "with `--val-split 0` to match (`validation: test` watches the test split; with a val split, "
            "its images are held out of training, the tool's default protocol)",
            notes="resnet_cifar10_decay.py says NUM_EPOCHS = 140 (line 19); its logged run, the 93.79%, "
            "ran 150, which this recipe follows",
        ),
        _recipe(
            name="tiny-imagenet-resnet41",
            model="tiny-imagenet-resnet41",
            source=f"{_REPO} (Tiny ImageNet ResNet41, experiment 2)",
            reported="57.93% rank-1, Tiny ImageNet (10,000 images held out of train)",
            settings={
                **_project_poly(_TINY, poly="24-35", power=29, scheduler=64),
                "batch_size": Cited(64, f"{_TINY}:56 HDF5DatasetGenerator(config.TRAIN_HDF5, 64)"),
                "epochs": Cited(75, f"{_TINY}:21 NUM_EPOCHS = 75 and output/resnet_tinyimagenet_2.json (75 epochs)"),
                **_sgd(f"{_TINY}:71 SGD(lr=INIT_LR, momentum=0.9, nesterov=True)", True, f"{_TINY}:22 INIT_LR = 1e-1"),
                **_project_decay(
                    f"{_TINY}:69-70",
                    "the 5x5 stem conv of the README's Tiny ImageNet network (resnet_tinyimagenet_architecture.png; "
                    "the stored resnet.py@6343e70 builds no stem for tiny_imagenet, the version that ran did)",
                ),
                "normalization": Cited(
                    "channel-mean", f"{_TINY}:52 MeanPreprocessor(means['R'], means['G'], means['B'])"
                ),
                "augmentation": Cited(
                    "affine-flip", f"{_TINY}:43-45 ImageDataGenerator(horizontal_flip=True, fill_mode='nearest')"
                ),
                "rotation": Cited(18.0, f"{_TINY}:43 rotation_range=18"),
                "zoom": Cited(0.15, f"{_TINY}:43 zoom_range=0.15"),
                "shift": Cited(0.2, f"{_TINY}:44 width_shift_range=0.2, height_shift_range=0.2"),
                "shear": Cited(
                    math.degrees(0.15),
                    f"{_TINY}:44 shear_range=0.15, radians in the Keras 2.1.0 it ran on (degrees from 2.1.3, "
                    "keras-team/keras#8868): 8.59 degrees",
                ),
                "validation": Cited("test", f"{_TINY}:58 validation on config.VAL_HDF5, the official val set"),
            },
            protocol="the source held 10,000 stratified images out of train as its test set "
            "(config/tiny_imagenet_config.py:20 NUM_TEST_IMAGES = 50 * NUM_CLASSES) and watched the official "
            "val set: `prepare tiny-imagenet` with the default --val-split 0.1 carves the same 10,000 (50 a "
            "class; its seed, not sklearn's random_state=42), the tool's test split is the official val set; "
            "compare 57.93% with `evaluate --split val`",
            notes="the committed train_decay.py said NUM_EPOCHS = 85 before 8c02640 set 75, the logged run",
        ),
    )
}


def recipe_report(config) -> tuple[dict[str, str], tuple[str, ...]]:
    """What ``train --dry-run`` adds for a run from a recipe: each setting's citation, and the
    notes (the source's protocol, milestones carried to another length, what differs)."""
    if not config.recipe:
        return {}, ()
    recipe = get_recipe(config.recipe)
    notes = [f"recipe {recipe.name}: {recipe.source}; reported {recipe.reported_for(config.model) or '-'}"]
    scaled = recipe.scaled_note(config)
    if scaled:
        notes.append(scaled)
    notes += [text for text in (recipe.protocol, recipe.notes) if text]
    return dict(recipe.cited(config)), tuple(notes)


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

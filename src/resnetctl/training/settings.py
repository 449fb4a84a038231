"""``train``'s settings, layered: TrainConfig's defaults < ``--recipe`` < a ``--config`` file <
the flags given; a recipe written in optimizer steps converted for the dataset in use. Pure
Python (no Keras): the plan layer's entry to :mod:`resnetctl.training.config` and
:mod:`resnetctl.training.recipes`, which import nothing of each other's."""

from __future__ import annotations

import typing

from resnetctl.errors import RunError
from resnetctl.training.config import TrainConfig, config_file_options, option_type, option_words, parse_option
from resnetctl.training.recipes import get_recipe


def config_from_flags(
    model: str | None, config_file=None, flags: dict | None = None, recipe: str | None = None
) -> TrainConfig:
    """``train``'s settings from its command line: a list option (``--milestones 82,123``) comes as
    text and is parsed here, then :func:`build_config` merges
    defaults < ``--recipe`` < ``--config`` file < flags (``None``: not given)."""
    flags = dict(flags or {})
    for name, value in list(flags.items()):
        if isinstance(value, str) and option_words(name):
            flags[name] = parse_option(name, value, "--" + name.replace("_", "-"))
        elif isinstance(value, str) and typing.get_origin(option_type(name)) is tuple:
            try:
                flags[name] = tuple(int(v) for v in value.split(",") if v.strip())
            except ValueError:
                raise RunError(
                    f"--{name.replace('_', '-')} must be whole numbers separated by commas. Received: {value!r}"
                ) from None
    return build_config(model, recipe, config_file, flags)


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

"""Model zoo: specs by name (no Keras needed) and the builder (imports Keras on first use)."""

from resnetctl.models.specs import ResNetSpec, get_spec, list_models, register

__all__ = ["ResNetSpec", "check_model_fits", "create_model", "create_model_for", "get_spec", "list_models", "register"]


def create_model(name: str, **overrides):
    from resnetctl.models.builder import create_model as _create

    return _create(name, **overrides)


def create_model_for(name: str, dataset=None, **options):
    """The one way to build a named model for a prepared dataset (build, train, evaluate, export):
    input size, classes and the training mean/std come from ``dataset`` (a ``DatasetInfo``);
    ``options`` (shortcut, weight_decay, augmentation, seed, zero_init_last, ...) go to the builder,
    ``None`` meaning the model's default."""
    options = {k: v for k, v in options.items() if v is not None}  # None: the default, never an override
    if dataset is not None:
        options = {
            "input_size": dataset.image_size,
            "num_classes": dataset.num_classes,
            "mean": dataset.mean,
            "std": dataset.std,
            **options,
        }
    return create_model(name, **options)


def check_model_fits(model, source, num_classes: int | None, image_size: int | None, where: str) -> None:
    """A model for other images or another class count than ``where`` has (a dataset, a run's
    record) is refused in one line; ``None`` leaves that side unchecked."""
    from resnetctl.errors import ModelError

    inputs, outputs = len(getattr(model, "inputs", None) or [None]), len(getattr(model, "outputs", None) or [None])
    if inputs != 1 or outputs != 1:
        raise ModelError(
            f"{source} has {inputs} inputs and {outputs} outputs; a classifier here takes one batch of images "
            "and gives one vector of class probabilities",
            hint="use a model trained by resnetctl",
        )
    if len(model.input_shape) != 4 or model.input_shape[-1] != 3 or len(model.output_shape) != 2:
        raise ModelError(
            f"{source} takes {model.input_shape} and gives {model.output_shape}; a classifier here takes "
            "(batch, size, size, 3) RGB images and gives (batch, classes)",
            hint="use a model trained by resnetctl",
        )
    have = tuple(model.input_shape[1:])
    want = have if image_size is None else (image_size, image_size, 3)
    classes = int(model.output_shape[-1])
    if have != want or (num_classes is not None and classes != num_classes):
        raise ModelError(
            f"{source} takes {have} images into {classes} classes, but {where} has {want} images in "
            f"{num_classes} classes",
            hint="use it with the dataset it was trained on (--dataset)",
        )

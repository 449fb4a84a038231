"""Model zoo: specs by name (no Keras needed) and the builder (imports Keras on first use)."""

from resnetctl.models.specs import ResNetSpec, get_spec, list_models, register

__all__ = ["ResNetSpec", "create_model", "get_spec", "list_models", "register"]


def create_model(name: str, **overrides):
    from resnetctl.models.builder import create_model as _create

    return _create(name, **overrides)

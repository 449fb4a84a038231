"""resnetctl: train the ResNets of the papers from the command line, or from Python.

``import resnetctl`` stays light (no Keras import) so the CLI starts instantly; the Keras
objects this package defines (layers, schedule, loss) are registered as soon as Keras is
imported, so ``keras.saving.load_model`` reads our ``.keras`` files after ``import resnetctl``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_KERAS_OBJECT_MODULES = (
    "resnetctl.models.layers",
    "resnetctl.training.schedules",
    "resnetctl.training.losses",
)


def register_keras_objects() -> None:
    """Import the modules whose classes are registered with ``keras.saving``."""
    for module in _KERAS_OBJECT_MODULES:
        importlib.import_module(module)


class _RegisterAfterKerasImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register_keras_objects` right after the first ``import keras`` finishes."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register_keras_objects()

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(f, _RegisterAfterKerasImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKerasImport())

_LAZY = {
    "create_model": "resnetctl.models",
    "get_spec": "resnetctl.models",
    "list_models": "resnetctl.models",
    "ResnetctlError": "resnetctl.errors",
    "prepare_dataset": "resnetctl.data.prepare",
    "load_dataset": "resnetctl.data.store",
    "TrainConfig": "resnetctl.training.config",
    "train": "resnetctl.training.trainer",
    "resume": "resnetctl.training.trainer",
    "evaluate": "resnetctl.evaluation",
    "lr_find": "resnetctl.training.lr_find",
    "diagnose_run": "resnetctl.diagnose",
    "plan_tune": "resnetctl.tuning",
    "run_study": "resnetctl.tuning",
    "load_model": "resnetctl.runs",
}

__all__ = ["__version__", "register_keras_objects", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnetctl' has no attribute {name!r}")

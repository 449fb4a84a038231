"""Exporting a trained model for deployment: uint8 RGB ``(N, H, W, 3)`` in, class probabilities out.

The exported model is the trained graph without its training-only layers (augmentation, MixUp/CutMix), at
float32, made of built-in Keras layers only (the option-A shortcut becomes a 1x1 max-pool, which
subsamples exactly, and a zero padding of the channels; the input normalisation a per-channel
``Rescaling``, whose constants every converter can freeze), so the ``keras`` format loads in a
Python that has Keras and not resnetctl. The other formats are Keras' own ``model.export``
(SavedModel, LiteRT/TFLite, ONNX). Every export is checked before it is published: the artifact
is run by its own runtime (LiteRT for .tflite) on the dataset's test images and must agree with the
trained model.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from resnetctl.errors import RunError, is_disk_full
from resnetctl.outputs import Output, claim, write_text, written

FORMATS = ("keras", "saved-model", "tflite", "onnx")
SUFFIXES = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx"}  # saved-model: a folder
# largest difference in probability an artifact may show against the trained model
TOLERANCE = 1e-4
CHECK_IMAGES = 64
NEEDS = {"onnx": ("tf2onnx", "onnxruntime")}


@dataclass(frozen=True)
class ExportRequest:
    fmt: str
    out: Output  # the artifact (a folder for saved-model)
    labels: Output | None = None  # the class names beside it (inside a SavedModel folder: written with it)

    def with_classes(self, classes: list[str]) -> ExportRequest:
        """The labels file claimed, now that the class names are known. It is a side file: exports
        of one model in several formats side by side (``m.onnx``, ``m.tflite``) share one
        ``m.labels.txt``, so one that already holds these names is kept, never a conflict."""
        path = labels_path(self.out.path, self.fmt)
        if self.fmt == "saved-model":
            return replace(self, labels=Output(path, "--out's labels", self.out.force))
        text = labels_text(classes)
        labels = claim(path, f"the labels file beside --out ({path.name})", force=self.out.force, same=text)
        return replace(self, labels=labels)


def _earlier_export(fmt: str):
    """What ``--force`` may replace at ``--out``: an earlier export of the same kind."""
    if fmt == "saved-model":
        return lambda path: (path / "saved_model.pb").is_file()
    return lambda path: path.is_file()


def check_request(fmt: str, out: Path, force: bool) -> ExportRequest:
    """Everything about the request that can be refused before Keras is imported: the format, its
    packages, and the output paths (both of them) under the one output policy."""
    if fmt not in FORMATS:
        raise RunError(f"Unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    suffix = SUFFIXES.get(fmt)
    if suffix and Path(out).suffix != suffix:
        raise RunError(f"--out for {fmt} must end in {suffix}. Received: {out}")
    missing = [m for m in NEEDS.get(fmt, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise RunError(f"{fmt} export needs {' and '.join(missing)}", hint="pip install 'resnetctl[export]'")
    target = claim(out, "--out", force=force, folder=fmt == "saved-model", replaceable=_earlier_export(fmt))
    return ExportRequest(fmt, target)


def check_images(source, dataset=None, data_dir=None, count: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """The first test images of the model's dataset (or of its first split), and where they came
    from; random images, said so, when the dataset is no longer there."""
    import logging

    from resnetctl.data.store import open_dataset, open_run_dataset, read_split
    from resnetctl.errors import DatasetError

    try:
        if source.dataset is not None:
            info = source.dataset
        elif dataset or source.run is None:
            info = open_dataset(dataset, data_dir)
        else:
            info = open_run_dataset(source.run.config(), data_dir)
        split = "test" if "test" in info.splits else next(iter(info.splits))
        images, _ = read_split(info, split)
        return np.ascontiguousarray(images[:count]), f"{info.name}/{split}"
    except (DatasetError, RunError, TypeError) as exc:
        size = source.image_size
        logging.getLogger("resnetctl").warning("checking the export on random images: %s", getattr(exc, "message", exc))
        return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8), "random"


def labels_path(out: Path, fmt: str) -> Path:
    """Class names, one per line in output order: inside a SavedModel folder, else beside the file."""
    return out / "labels.txt" if fmt == "saved-model" else out.with_suffix(".labels.txt")


def labels_text(classes: list[str]) -> str:
    return "\n".join(classes) + "\n"


ONNX_CLASSES_KEY = "classes"  # metadata_props: the class names as a JSON list, in output order


def _embed_classes(fmt: str, path: Path, classes: list[str]) -> str | None:
    """The class names inside the artifact, where its format holds metadata and its runtime reads
    it back (ONNX ``metadata_props``: onnxruntime's ``get_modelmeta().custom_metadata_map``).
    Returns where they went (None: in the labels file only)."""
    if fmt != "onnx":
        return None
    import json

    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_CLASSES_KEY, json.dumps(classes)
    onnx.save(model, str(path))
    return f"metadata_props[{ONNX_CLASSES_KEY!r}]"


def inference_model(model):
    """The trained graph without its training-only layers, at float32, in built-in layers, weights copied."""
    import keras

    from resnetctl.models.layers import BatchMix, ChannelZeroPad, KerasPolicy, RandomAffineFlip, RandomCropFlip

    training_only = (RandomCropFlip, RandomAffineFlip, KerasPolicy, BatchMix)

    def plain(layer):
        if isinstance(layer, training_only):
            return keras.layers.Identity(name=layer.name)
        if isinstance(layer, ChannelZeroPad):
            return _zero_pad_shortcut(layer)
        if isinstance(layer, keras.layers.Normalization):  # tf2onnx can't freeze its constants
            mean = np.asarray(layer.mean, np.float64)
            std = np.sqrt(np.asarray(layer.variance, np.float64))
            per_pixel = mean.size > mean.shape[-1]  # the seeds' mean image: keep its (H, W, 3) shape
            shape = mean.shape[1:] if per_pixel else (-1,)
            return keras.layers.Rescaling(
                scale=(1 / std).reshape(shape).tolist(),
                offset=(-mean / std).reshape(shape).tolist(),
                dtype="float32",
                name=layer.name,
            )
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=plain)
    for layer in model.layers:
        if layer.weights and not isinstance(layer, training_only):
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone


def _zero_pad_shortcut(layer):
    """:class:`ChannelZeroPad` in built-in layers: a 1x1 max-pool with its stride takes every
    stride-th pixel (exact), then the channels are zero-padded as a third spatial axis."""
    import keras

    height, width, channels = layer.input.shape[1:]
    out_height, out_width = -(-height // layer.stride), -(-width // layer.stride)
    missing = layer.out_channels - channels
    return keras.Sequential(
        [
            keras.layers.MaxPooling2D(pool_size=1, strides=layer.stride),
            keras.layers.Reshape((out_height, out_width, channels, 1)),
            keras.layers.ZeroPadding3D(((0, 0), (0, 0), (missing // 2, missing - missing // 2))),
            keras.layers.Reshape((out_height, out_width, layer.out_channels)),
        ],
        name=layer.name,
    )


def _write(model, fmt: str, path: Path) -> None:
    if fmt == "keras":
        model.save(path)
    else:
        kind = {"saved-model": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}[fmt]
        model.export(str(path), format=kind, verbose=False)


def run_artifact(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from the exported artifact, run by its own runtime (not by resnetctl)."""
    if fmt == "keras":  # a fresh Python that imports Keras, never resnetctl
        probe = (
            "import sys, numpy as np, keras; m = keras.saving.load_model(sys.argv[1]); "
            "np.save(sys.argv[3], np.asarray(m.predict(np.load(sys.argv[2]), verbose=0)))"
        )
        with tempfile.TemporaryDirectory(prefix="resnetctl-check-") as scratch:  # nothing in the user's folder
            inputs, outputs = Path(scratch) / "in.npy", Path(scratch) / "out.npy"
            np.save(inputs, images)
            proc = subprocess.run(
                [sys.executable, "-c", probe, str(Path(path).resolve()), str(inputs), str(outputs)],
                capture_output=True,
                text=True,
                cwd=scratch,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            if proc.returncode:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise RunError(f"The exported .keras file does not load with plain Keras: {last}")
            return np.load(outputs)
    if fmt == "saved-model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept: its functions need the object alive
        return loaded.serve(tf.constant(images)).numpy()
    if fmt == "tflite":
        interpreter = tflite_interpreter(path)
        entry = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(entry["index"], images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(entry["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def tflite_interpreter(path: Path):
    """The .tflite file in LiteRT's interpreter (``ai-edge-litert``, what deployers run and what
    TensorFlow's deprecated ``tf.lite.Interpreter`` points to); TensorFlow's only without it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    return Interpreter(model_path=str(path))


def export(source, request: ExportRequest, images: np.ndarray) -> dict:
    """Write the request's format (and the labels beside it) once the artifact, run by its own
    runtime on ``images``, agrees with the trained model; else nothing is published."""
    from resnetctl.prediction import load

    if request.labels is None:
        request = request.with_classes(source.classes)
    fmt, out, classes = request.fmt, request.out.path, source.classes
    model, _ = load(source)
    reference = np.asarray(model.predict(images, verbose=0), np.float64)
    plain = inference_model(model)
    plain.predict(images[:1], verbose=0)  # builds it; exporters want a model that was called
    with written(request.out, SUFFIXES.get(fmt, "")) as tmp:
        try:
            with warnings.catch_warnings():  # converters' deprecation notices are not the user's business
                warnings.simplefilter("ignore")
                _write(plain, fmt, tmp)
                inside = _embed_classes(fmt, tmp, classes)
        except ImportError as exc:
            raise RunError(
                f"{fmt} export on the {_backend()} backend needs a package that is missing ({exc})",
                hint="pip install 'resnetctl[export]', or export with KERAS_BACKEND=tensorflow",
            ) from None
        except Exception as exc:  # h5py and the converters report a full disk in their own words
            if not is_disk_full(exc) and "requested and" not in str(exc):
                raise
            raise RunError(
                f"Disk full while writing the {fmt} export beside {request.out.path}; nothing was published",
                hint="free some space and export again",
            ) from None
        got = np.asarray(run_artifact(fmt, tmp, images), np.float64)
        difference = float(np.max(np.abs(got - reference)))
        agreement = float(np.mean(got.argmax(1) == reference.argmax(1)))
        if not difference <= TOLERANCE or agreement < 1.0:
            raise RunError(
                f"The {fmt} export disagrees with the trained model on {len(images)} images "
                f"(largest difference in probability {difference:.2e}, top-1 agreement "
                f"{agreement:.1%}); nothing was written"
            )
        if fmt == "saved-model":  # the labels travel inside the folder
            (tmp / "labels.txt").write_text(labels_text(classes), encoding="utf-8")
            inside = "labels.txt in the folder"
        else:
            write_text(request.labels, labels_text(classes))
    return {
        "format": fmt,
        "path": str(out),
        "labels": str(request.labels.path),
        "labels_inside": inside,
        "input": f"uint8 (N, {images.shape[1]}, {images.shape[2]}, 3) RGB",
        "output": f"float32 (N, {len(classes)}) probabilities",
        "checked_images": int(len(images)),
        "max_abs_difference": difference,
        "top1_agreement": agreement,
    }


def _backend() -> str:
    import keras

    return keras.backend.backend()


def save_untrained(plan) -> None:
    """``build --save``: the model of a :class:`resnetctl.plan.BuildPlan`, untrained, written
    under the output policy."""
    from resnetctl.models import create_model_for

    options = dict(plan.options)
    model = create_model_for(options.pop("name"), plan.dataset, **options)
    with written(plan.save, suffix=".keras") as tmp:
        model.save(tmp)

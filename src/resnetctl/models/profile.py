"""What ``resnetctl build`` reports: parameters, multiply-accumulates and the stage table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras

from resnetctl.models.specs import ResNetSpec


@dataclass(frozen=True)
class StageRow:
    name: str
    output_size: str
    layout: str
    repeats: int


@dataclass(frozen=True)
class ModelProfile:
    name: str
    depth: int
    params: int
    trainable_params: int
    macs: int
    input_shape: tuple[int, int, int]
    num_classes: int
    stages: list[StageRow]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates per image of conv and dense layers, as published tables count them."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += h * w * kh * kw * cin * cout // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    return int(total)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _layout(spec: ResNetSpec, width: int) -> str:
    if spec.bottleneck:
        inner = width // spec.expansion
        return f"[1x1, {inner}; 3x3, {inner}; 1x1, {width}]"
    return f"[3x3, {width}; 3x3, {width}]"


def stage_rows(model: keras.Model, spec: ResNetSpec) -> list[StageRow]:
    """The architecture as the papers print it: one row per stage, with the output size."""

    def size_of(layer_name: str) -> str:
        shape = model.get_layer(layer_name).output.shape
        return f"{shape[1]}x{shape[2]}"

    stem_kernel = {"cifar": "3x3", "imagenet": "7x7, stride 2", "tiny_imagenet": "5x5"}[spec.stem]
    stem_out = "stem_pool" if spec.stem != "cifar" else "stem_conv"
    stem_layout = f"{stem_kernel}, {spec.stem_width}"
    if spec.stem != "cifar":
        stem_layout += "; 3x3 max pool, stride 2"
    rows = [StageRow("stem", size_of(stem_out), stem_layout, 1)]
    for s, (repeats, width) in enumerate(zip(spec.stages, spec.widths, strict=True), start=1):
        last = f"stage{s}_block{repeats}_add"
        rows.append(StageRow(f"stage{s}", size_of(last), _layout(spec, width), repeats))
    rows.append(StageRow("head", "1x1", f"global average pool, {model.output_shape[-1]}-d fc, softmax", 1))
    return rows


def profile_model(model: keras.Model, spec: ResNetSpec) -> ModelProfile:
    trainable = _numel_sum(model.trainable_weights)
    return ModelProfile(
        name=spec.name,
        depth=spec.depth,
        params=_numel_sum(model.weights),
        trainable_params=trainable,
        macs=count_macs(model),
        input_shape=tuple(int(d) for d in model.input_shape[1:]),
        num_classes=int(model.output_shape[-1]),
        stages=stage_rows(model, spec),
    )


def _numel_sum(weights) -> int:
    return sum(_numel(w.shape) for w in weights)

"""What ``resnetctl build`` reports, computed from the spec alone (no Keras): parameters,
multiply-accumulates and the stage table, layer by layer as the builder lays them out.

``build --list`` answers for the whole zoo in milliseconds this way; a test checks the counts
against built Keras models for every block kind, stem and shortcut.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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


@dataclass
class _Count:
    trainable: int = 0
    frozen: int = 0
    macs: int = 0
    sizes: dict = field(default_factory=dict)

    def conv(self, size: int, k: int, cin: int, cout: int) -> None:
        self.trainable += k * k * cin * cout
        self.macs += size * size * k * k * cin * cout

    def bn(self, channels: int) -> None:
        self.trainable += 2 * channels
        self.frozen += 2 * channels


def _down(size: int, stride: int) -> int:
    return -(-size // stride)  # "same" padding


def _block(c: _Count, spec: ResNetSpec, size: int, cin: int, width: int, stride: int, first: bool) -> int:
    out = _down(size, stride)
    inner = width // spec.expansion
    if spec.preact:
        c.bn(cin)
    if spec.bottleneck:
        c.conv(size, 1, cin, inner)
        c.bn(inner)
        c.conv(out, 3, inner, inner)
        c.bn(inner)
        c.conv(out, 1, inner, width)
    else:
        c.conv(out, 3, cin, width)
        c.bn(width)
        c.conv(out, 3, width, width)
    if not spec.preact:
        c.bn(width)
    if (stride != 1 or cin != width or (first and spec.project_first)) and spec.shortcut != "A":
        c.conv(out, 1, cin, width)
        if not spec.preact and spec.shortcut_bn:
            c.bn(width)
    return out


def _layout(spec: ResNetSpec, width: int) -> str:
    if spec.bottleneck:
        inner = width // spec.expansion
        return f"[1x1, {inner}; 3x3, {inner}; 1x1, {width}]"
    return f"[3x3, {width}; 3x3, {width}]"


def profile_spec(spec: ResNetSpec, input_size: int | None = None, num_classes: int | None = None) -> ModelProfile:
    size = int(input_size or spec.input_size)
    classes = int(num_classes or spec.num_classes)
    c = _Count()
    if spec.input_bn:
        c.bn(3)
    stem_kernel = {"cifar": 3, "imagenet": 7, "tiny_imagenet": 5}[spec.stem]
    stem_stride = 2 if spec.stem == "imagenet" else 1
    size = _down(size, stem_stride)
    c.conv(size, stem_kernel, 3, spec.stem_width)
    if not (spec.stem == "cifar" and spec.preact):
        c.bn(spec.stem_width)
    if spec.stem == "imagenet":
        size = _down(size, 2)
    elif spec.stem == "tiny_imagenet":
        size = (size + 2 - 3) // 2 + 1  # 1-pixel zero pad, 3x3 max pool at stride 2, valid
    layout = f"{stem_kernel}x{stem_kernel}{', stride 2' if stem_stride > 1 else ''}, {spec.stem_width}"
    if spec.stem != "cifar":
        layout += "; 3x3 max pool, stride 2"
    rows = [StageRow("stem", f"{size}x{size}", layout, 1)]
    channels = spec.stem_width
    for s, (repeats, width) in enumerate(zip(spec.stages, spec.widths, strict=True), start=1):
        for b in range(repeats):
            size = _block(c, spec, size, channels, width, 2 if (b == 0 and s > 1) else 1, first=b == 0)
            channels = width
        rows.append(StageRow(f"stage{s}", f"{size}x{size}", _layout(spec, width), repeats))
    if spec.preact:
        c.bn(channels)
    c.trainable += channels * classes + classes
    c.macs += channels * classes
    rows.append(StageRow("head", "1x1", f"global average pool, {classes}-d fc, softmax", 1))
    side = int(input_size or spec.input_size)
    return ModelProfile(
        name=spec.name,
        depth=spec.depth,
        params=c.trainable + c.frozen,
        trainable_params=c.trainable,
        macs=c.macs,
        input_shape=(side, side, 3),
        num_classes=classes,
        stages=rows,
    )


def profile_zoo() -> list[dict]:
    """One row per registered model at its default input size and class count (``build --list``)."""
    from resnetctl.models.specs import get_spec, list_models

    rows = []
    for name in list_models():
        spec = get_spec(name)
        p = profile_spec(spec)
        rows.append(
            {
                "name": name,
                "depth": spec.depth,
                "block": spec.block,
                "input": spec.input_size,
                "params": p.params,
                "trainable_params": p.trainable_params,
                "macs": p.macs,
            }
        )
    return rows

"""Architectures as data: a small spec per model name, one registry (no Keras import here).

Each variant is a few lines handed to :func:`resnetctl.models.builder.build_from_spec`,
the way timm registers its models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from resnetctl.errors import ModelError

BLOCKS = ("basic", "bottleneck", "preact_basic", "preact_bottleneck")
STEMS = ("cifar", "imagenet", "tiny_imagenet")
SHORTCUTS = ("A", "B", "avgpool")
# training-only, inside the model; "affine-flip" is Keras 2's ImageDataGenerator (shift, rotation,
# zoom, shear with edge-replicating "nearest" fill), the augmentation of the seed projects;
# "randaugment" is crop-flip followed by Keras' own keras.layers.RandAugment (models/layers.KerasPolicy)
AUGMENTATIONS = ("none", "crop-flip", "resized-crop-flip", "affine-flip", "randaugment")
KERNEL_INITS = ("he_normal", "glorot_uniform")
SHORTCUT_HELP = {
    "A": "zero-padded identity (He et al. 2015 option A)",
    "B": "1x1 convolution projection (option B)",
    "avgpool": "2x2 average pool + 1x1 projection",
}


@dataclass(frozen=True)
class ResNetSpec:
    """What one named architecture is made of.

    ``widths`` are the output channels of each stage; a bottleneck block's inner width is
    ``width // expansion``. The first stage keeps the stem's resolution, later ones halve it.
    """

    name: str
    block: str
    stages: tuple[int, ...]
    widths: tuple[int, ...]
    stem: str
    stem_width: int
    shortcut: str = "B"
    shortcut_bn: bool = True  # a BN after a post-activation block's projection shortcut
    input_size: int = 32
    num_classes: int = 10
    expansion: int = 4
    paper: str = ""
    # What the from-scratch project's Keras 2 code does differently from the papers (its
    # pipeline/nn/conv/resnet.py): BatchNormalization on the input before the stem, a 1x1
    # projection on the first block of every stage (stage 1 too), BN epsilon 2e-5, Keras'
    # default glorot-uniform kernels.
    input_bn: bool = False
    project_first: bool = False
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9
    kernel_init: str = "he_normal"

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ModelError(f"Unknown block kind. Received: block={self.block!r}; use {BLOCKS}")
        if self.stem not in STEMS:
            raise ModelError(f"Unknown stem. Received: stem={self.stem!r}; use {STEMS}")
        if self.shortcut not in SHORTCUTS:
            raise ModelError(f"Unknown shortcut. Received: shortcut={self.shortcut!r}; use {SHORTCUTS}")
        if self.kernel_init not in KERNEL_INITS:
            raise ModelError(f"Unknown kernel_init. Received: kernel_init={self.kernel_init!r}; use {KERNEL_INITS}")
        if len(self.stages) != len(self.widths) or not self.stages:
            raise ModelError(
                f"`stages` and `widths` must have the same non-zero length. "
                f"Received: stages={self.stages}, widths={self.widths}"
            )

    @property
    def bottleneck(self) -> bool:
        return self.block.endswith("bottleneck")

    @property
    def preact(self) -> bool:
        return self.block.startswith("preact")

    @property
    def depth(self) -> int:
        """Weighted layers on the main path, as the papers count them (stem + blocks + dense)."""
        per_block = 3 if self.bottleneck else 2
        return 1 + per_block * sum(self.stages) + 1

    def replace(self, **changes) -> ResNetSpec:
        return dataclasses.replace(self, **changes)


_REGISTRY: dict[str, ResNetSpec] = {}


def register(spec: ResNetSpec) -> ResNetSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def spec_with(name: str, **changes) -> ResNetSpec:
    """The model's spec with ``changes`` (shortcut, shortcut_bn, ...; ``None``: the model's own)."""
    return get_spec(name).replace(**{k: v for k, v in changes.items() if v is not None})


def get_spec(name: str) -> ResNetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `resnetctl build --list`"
        raise ModelError(f"Unknown model {name!r}", hint=hint) from None


def list_models() -> list[str]:
    return list(_REGISTRY)


# --- He et al. 2015, section 4.2: CIFAR ResNets of depth 6n+2 -------------------------------
# (resnet8, n=1, is not in the paper's table: it is there for smoke tests and quick demos.)
for _n in (1, 3, 5, 7, 9, 18, 200):
    register(
        ResNetSpec(
            name=f"resnet{6 * _n + 2}",
            block="basic",
            stages=(_n, _n, _n),
            widths=(16, 32, 64),
            stem="cifar",
            stem_width=16,
            shortcut="A",
            paper="He et al. 2015, Deep Residual Learning (CIFAR-10, sec. 4.2)",
        )
    )

# --- He et al. 2016: pre-activation ResNets for CIFAR ----------------------------------------
for _n in (3, 5, 7, 9, 18, 200):
    register(
        ResNetSpec(
            name=f"preact-resnet{6 * _n + 2}",
            block="preact_basic",
            stages=(_n, _n, _n),
            widths=(16, 32, 64),
            stem="cifar",
            stem_width=16,
            paper="He et al. 2016, Identity Mappings in Deep Residual Networks",
        )
    )
for _n in (18, 111):  # depth 9n+2: 164 and 1001
    register(
        ResNetSpec(
            name=f"preact-resnet{9 * _n + 2}",
            block="preact_bottleneck",
            stages=(_n, _n, _n),
            widths=(64, 128, 256),
            stem="cifar",
            stem_width=16,
            paper="He et al. 2016, Identity Mappings in Deep Residual Networks",
        )
    )

# --- The project this tool reproduces (pre-activation bottleneck ResNets) --------------------
# meng1994412/ResNet_from_scratch, pipeline/nn/conv/resnet.py: input BN, every stage's first block
# projects, BN epsilon 2e-5 / momentum 0.9, Keras' default glorot-uniform kernels.
_SEED_PROJECT = {"input_bn": True, "project_first": True, "bn_epsilon": 2e-5, "kernel_init": "glorot_uniform"}
register(
    ResNetSpec(
        name="preact-resnet56-wide",
        block="preact_bottleneck",
        stages=(9, 9, 9),
        widths=(64, 128, 256),
        stem="cifar",
        stem_width=64,
        paper="Pre-activation bottleneck ResNet56, 3x3x64 stem (93.79% on CIFAR-10, 150 epochs)",
        **_SEED_PROJECT,
    )
)
register(
    ResNetSpec(
        name="preact-resnet56-narrow",
        block="preact_bottleneck",
        stages=(9, 9, 9),
        widths=(16, 32, 64),
        stem="cifar",
        stem_width=16,
        paper="Pre-activation bottleneck ResNet56 with the narrow widths 16/32/64",
    )
)
register(
    ResNetSpec(
        name="tiny-imagenet-resnet41",
        block="preact_bottleneck",
        stages=(3, 4, 6),
        widths=(128, 256, 512),
        stem="tiny_imagenet",
        stem_width=64,
        input_size=64,
        num_classes=200,
        paper="Pre-activation bottleneck ResNet for Tiny ImageNet (57.93% rank-1)",
        **_SEED_PROJECT,
    )
)

# --- He et al. 2015: ImageNet ResNets (any input size) ---------------------------------------
for _depth, _block, _stages in (
    (18, "basic", (2, 2, 2, 2)),
    (34, "basic", (3, 4, 6, 3)),
    (50, "bottleneck", (3, 4, 6, 3)),
    (101, "bottleneck", (3, 4, 23, 3)),
    (152, "bottleneck", (3, 8, 36, 3)),
):
    _scale = 4 if _block == "bottleneck" else 1
    register(
        ResNetSpec(
            name=f"resnet{_depth}",
            block=_block,
            stages=_stages,
            widths=tuple(w * _scale for w in (64, 128, 256, 512)),
            stem="imagenet",
            stem_width=64,
            input_size=224,
            num_classes=1000,
            paper="He et al. 2015, Deep Residual Learning (ImageNet, table 1)",
        )
    )

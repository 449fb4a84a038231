"""One builder for every registered ResNet: blocks are functions tensor -> tensor.

Every layer is named from its place (``stage2_block1_conv2``), and every hyperparameter is
passed down explicitly through :class:`LayerFactory`, so weight decay cannot get lost between
the builder and a block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from resnetctl.checkpoints import deep_graph_recursion
from resnetctl.errors import ModelError
from resnetctl.models.layers import BatchMix, ChannelZeroPad, KerasPolicy, RandomAffineFlip, RandomCropFlip
from resnetctl.models.specs import AUGMENTATIONS, ResNetSpec, spec_with


@dataclass(frozen=True)
class LayerFactory:
    """Conv/BN/dense layers with the model-wide hyperparameters applied."""

    l2: float
    bn_momentum: float
    bn_epsilon: float
    zero_init_last: bool = False  # each residual branch starts at zero (timm's zero_init_last)
    kernel_init: str = "he_normal"
    stem_l2: float | None = None  # None: ``l2``
    classifier_l2: float | None = None  # None: ``l2``
    shortcut_bn: bool = True  # the spec's: a BN after a post-activation block's projection shortcut

    @staticmethod
    def _regularizer(l2: float):
        return keras.regularizers.L2(l2) if l2 > 0 else None

    def conv(self, x, filters, kernel, stride=1, name="", last=False, stem=False):
        """``last``: the final conv of a pre-activation residual branch; ``stem``: the stem's conv,
        with its own decay where a recipe sets one."""
        l2 = self.stem_l2 if stem and self.stem_l2 is not None else self.l2
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="zeros" if last and self.zero_init_last else self.kernel_init,
            kernel_regularizer=self._regularizer(l2),
            name=name,
        )(x)

    def bn(self, x, name, last=False):
        """``last``: the final BN of a post-activation residual branch."""
        return keras.layers.BatchNormalization(
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            gamma_initializer="zeros" if last and self.zero_init_last else "ones",
            name=name,
        )(x)

    def bn_relu(self, x, name):
        return keras.layers.Activation("relu", name=f"{name}_relu")(self.bn(x, f"{name}_bn"))

    def dense(self, x, units, name):
        return keras.layers.Dense(
            units,
            kernel_initializer=self.kernel_init,
            kernel_regularizer=self._regularizer(self.l2 if self.classifier_l2 is None else self.classifier_l2),
            name=name,
        )(x)


def _shortcut(f: LayerFactory, x, source, out_channels, stride, kind, prefix, normalise=False, project=False):
    """The residual branch's partner. ``source`` is what a projection reads (pre-activated);
    ``normalise`` puts a BN after a projection (post-activation blocks); ``project`` projects
    even where the identity would fit (the from-scratch project's first block of every stage)."""
    if stride == 1 and x.shape[-1] == out_channels and not project:
        return x
    if kind == "A":
        return ChannelZeroPad(out_channels, stride, name=f"{prefix}_shortcut_pad")(x)
    if kind == "avgpool" and stride > 1:
        source = keras.layers.AveragePooling2D(stride, strides=stride, padding="same", name=f"{prefix}_shortcut_pool")(
            source
        )
        stride = 1
    projected = f.conv(source, out_channels, 1, stride, name=f"{prefix}_shortcut_conv")
    return f.bn(projected, f"{prefix}_shortcut_bn") if normalise and f.shortcut_bn else projected


def basic_block(f, x, width, stride, shortcut, prefix, project=False, **_):
    """Two 3x3 convolutions, post-activation (He et al. 2015)."""
    y = f.conv(x, width, 3, stride, name=f"{prefix}_conv1")
    y = f.bn_relu(y, f"{prefix}_1")
    y = f.conv(y, width, 3, name=f"{prefix}_conv2")
    y = f.bn(y, f"{prefix}_2_bn", last=True)
    s = _shortcut(f, x, x, width, stride, shortcut, prefix, normalise=True, project=project)
    y = keras.layers.Add(name=f"{prefix}_add")([s, y])
    return keras.layers.Activation("relu", name=f"{prefix}_out")(y)


def bottleneck_block(f, x, width, stride, shortcut, prefix, expansion=4, project=False):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand; post-activation."""
    inner = width // expansion
    y = f.conv(x, inner, 1, name=f"{prefix}_conv1")
    y = f.bn_relu(y, f"{prefix}_1")
    y = f.conv(y, inner, 3, stride, name=f"{prefix}_conv2")
    y = f.bn_relu(y, f"{prefix}_2")
    y = f.conv(y, width, 1, name=f"{prefix}_conv3")
    y = f.bn(y, f"{prefix}_3_bn", last=True)
    s = _shortcut(f, x, x, width, stride, shortcut, prefix, normalise=True, project=project)
    y = keras.layers.Add(name=f"{prefix}_add")([s, y])
    return keras.layers.Activation("relu", name=f"{prefix}_out")(y)


def preact_basic_block(f, x, width, stride, shortcut, prefix, project=False, **_):
    """BN-ReLU before each 3x3 convolution (He et al. 2016); projections read the activation."""
    a = f.bn_relu(x, f"{prefix}_preact")
    y = f.conv(a, width, 3, stride, name=f"{prefix}_conv1")
    y = f.bn_relu(y, f"{prefix}_1")
    y = f.conv(y, width, 3, name=f"{prefix}_conv2", last=True)
    s = _shortcut(f, x, a, width, stride, shortcut, prefix, project=project)
    return keras.layers.Add(name=f"{prefix}_add")([s, y])


def preact_bottleneck_block(f, x, width, stride, shortcut, prefix, expansion=4, project=False):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3 (stride), BN-ReLU-1x1."""
    inner = width // expansion
    a = f.bn_relu(x, f"{prefix}_preact")
    y = f.conv(a, inner, 1, name=f"{prefix}_conv1")
    y = f.bn_relu(y, f"{prefix}_1")
    y = f.conv(y, inner, 3, stride, name=f"{prefix}_conv2")
    y = f.bn_relu(y, f"{prefix}_2")
    y = f.conv(y, width, 1, name=f"{prefix}_conv3", last=True)
    s = _shortcut(f, x, a, width, stride, shortcut, prefix, project=project)
    return keras.layers.Add(name=f"{prefix}_add")([s, y])


BLOCK_FUNCTIONS = {
    "basic": basic_block,
    "bottleneck": bottleneck_block,
    "preact_basic": preact_basic_block,
    "preact_bottleneck": preact_bottleneck_block,
}


def _stem(f: LayerFactory, x, spec: ResNetSpec):
    if spec.stem == "cifar":
        x = f.conv(x, spec.stem_width, 3, name="stem_conv", stem=True)
        # A pre-activation network activates at the start of its first block instead.
        return x if spec.preact else f.bn_relu(x, "stem")
    if spec.stem == "imagenet":
        x = f.conv(x, spec.stem_width, 7, 2, name="stem_conv", stem=True)
        x = f.bn_relu(x, "stem")
        return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    # tiny_imagenet: 5x5 at stride 1, 1-pixel zero padding, 3x3 max pool at stride 2.
    x = f.conv(x, spec.stem_width, 5, name="stem_conv", stem=True)
    x = f.bn_relu(x, "stem")
    x = keras.layers.ZeroPadding2D(1, name="stem_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def build_from_spec(
    spec: ResNetSpec,
    *,
    input_size: int | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weight_decay: float = 0.0,
    stem_weight_decay: float | None = None,
    classifier_weight_decay: float | None = None,
    bn_momentum: float | None = None,
    bn_epsilon: float | None = None,
    augmentation: str = "none",
    max_shift: int | None = None,
    affine: dict | None = None,
    seed: int | None = None,
    zero_init_last: bool = False,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    mix_prob: float = 1.0,
    mix_switch_prob: float = 0.5,
    erasing: float = 0.0,
    randaugment_magnitude: float = 0.1,
) -> keras.Model:
    """Build ``spec`` as a functional model: raw uint8 RGB in, class probabilities out.

    ``mean``/``std`` (per channel, or per pixel as ``(H, W, 3)`` arrays; 0-255 scale) become a
    Normalization layer, so a saved model needs nothing beside it to predict. ``weight_decay`` is
    the decay coefficient of the papers (gradient += wd * w), applied as an L2 penalty of ``wd / 2``
    on conv and dense kernels; ``stem_weight_decay``/``classifier_weight_decay`` (``None``: the same)
    set the stem's conv and the classifier apart, as the seeds did. BN momentum and epsilon default
    to the spec's. ``augmentation`` adds a training-only :class:`RandomCropFlip` (or, for
    ``affine-flip``, a :class:`RandomAffineFlip` with ``affine``'s shift/rotation/zoom/shear) after the input;
    ``mixup``/``cutmix`` (Beta alphas, 0: off) a training-only :class:`BatchMix` after it.
    ``randaugment`` is crop-flip followed by Keras' ``RandAugment`` at ``randaugment_magnitude``;
    ``erasing`` (a probability) adds Keras' ``RandomErasing`` after the augmentation (:class:`KerasPolicy`).
    ``zero_init_last`` starts every residual branch at zero (Goyal et al. 2017; timm's default):
    without it, an untrained 1000-layer network overflows in inference mode, where fresh
    batch-norm statistics do not rescale. The papers' initialisation is the default.
    """
    input_size = int(input_size or spec.input_size)
    num_classes = int(num_classes or spec.num_classes)
    if input_size < 8:
        raise ModelError(f"Input size must be at least 8 pixels. Received: input_size={input_size}")
    if num_classes < 2:
        raise ModelError(f"A classifier needs 2 or more classes. Received: num_classes={num_classes}")
    if augmentation not in AUGMENTATIONS:
        raise ModelError(f"Unknown augmentation {augmentation!r}", hint=f"use one of {AUGMENTATIONS}")
    half = lambda wd: None if wd is None else wd / 2.0  # noqa: E731
    f = LayerFactory(
        l2=weight_decay / 2.0,
        bn_momentum=spec.bn_momentum if bn_momentum is None else bn_momentum,
        bn_epsilon=spec.bn_epsilon if bn_epsilon is None else bn_epsilon,
        zero_init_last=zero_init_last,
        kernel_init=spec.kernel_init,
        stem_l2=half(stem_weight_decay),
        classifier_l2=half(classifier_weight_decay),
        shortcut_bn=spec.shortcut_bn,
    )

    inputs = keras.Input((input_size, input_size, 3), dtype="uint8", name="image")
    x = inputs
    if augmentation == "affine-flip":
        x = RandomAffineFlip(**(affine or {}), seed=seed, name="augment")(x)
    elif augmentation != "none":
        mode = "resized" if augmentation == "resized-crop-flip" else "translate"
        shift = max_shift if max_shift is not None else max(1, input_size // 8)
        x = RandomCropFlip(mode=mode, max_shift=shift, seed=seed, name="augment")(x)
    if augmentation == "randaugment" or erasing:
        randaugment = augmentation == "randaugment"
        x = KerasPolicy(randaugment, magnitude=randaugment_magnitude, erasing=erasing, seed=seed, name="policy")(x)
    if mixup or cutmix:
        x = BatchMix(mixup, cutmix, mix_prob, mix_switch_prob, seed=seed, name="mix")(x)
    mean = np.asarray(mean if mean is not None else (127.5,) * 3, dtype="float32")
    std = np.asarray(std if std is not None else (64.0,) * 3, dtype="float32")
    axis = -1 if mean.ndim == 1 else (1, 2, 3)  # per channel, or per pixel (the seeds' mean image)
    x = keras.layers.Normalization(axis=axis, mean=mean, variance=std**2, dtype="float32", name="normalize")(x)
    if spec.input_bn:
        x = f.bn(x, "input_bn")

    x = _stem(f, x, spec)
    block = BLOCK_FUNCTIONS[spec.block]
    for s, (repeats, width) in enumerate(zip(spec.stages, spec.widths, strict=True), start=1):
        for b in range(1, repeats + 1):
            stride = 2 if (b == 1 and s > 1) else 1
            x = block(
                f,
                x,
                width,
                stride,
                spec.shortcut,
                prefix=f"stage{s}_block{b}",
                expansion=spec.expansion,
                project=spec.project_first and b == 1,
            )
    if spec.preact:
        x = f.bn_relu(x, "final")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = f.dense(x, num_classes, name="logits")
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    with deep_graph_recursion():
        return keras.Model(inputs, outputs, name=spec.name)


def create_model(name: str, **overrides) -> keras.Model:
    """Build a registered model by name; ``None`` overrides fall back to the model's defaults.

    ``shortcut``, ``shortcut_bn``, ``stages`` and ``widths`` change the spec; the rest go to the builder.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    spec_changes = {k: overrides.pop(k) for k in ("shortcut", "shortcut_bn", "stages", "widths") if k in overrides}
    return build_from_spec(spec_with(name, **spec_changes), **overrides)

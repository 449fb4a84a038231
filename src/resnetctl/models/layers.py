"""The two layers Keras lacks: the paper's option-A shortcut and jit-friendly augmentation.

Both are registered serialisable, so a saved model reloads with ``keras.saving.load_model``
once ``resnetctl`` is imported.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="resnetctl")
class ChannelZeroPad(keras.layers.Layer):
    """Identity shortcut that subsamples by ``stride`` and zero-pads the channels (option A).

    It adds no parameters, which is why the 2015 paper's CIFAR counts (0.27M for ResNet20) hold.
    """

    def __init__(self, out_channels: int, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def call(self, x):
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        missing = self.out_channels - x.shape[-1]
        low = missing // 2
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [low, missing - low]])

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        shrink = lambda n: None if n is None else math.ceil(n / self.stride)  # noqa: E731
        return (batch, shrink(height), shrink(width), self.out_channels)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "stride": self.stride}


def _interpolation_matrix(positions, start, length, size_in: int, size_out: int, clip: bool):
    """Rows that resample one image axis: output ``i`` reads input ``start + (i+.5)*length/n - .5``.

    Integer coordinates give exact one-hot rows (a pure shift), fractional ones bilinear
    weights; coordinates outside the image give zero rows, which is zero padding.
    """
    coords = start + (positions + 0.5) * (length / size_out) - 0.5
    if clip:
        coords = ops.clip(coords, 0.0, size_in - 1.0)
    low = ops.floor(coords)
    frac = coords - low
    grid = ops.reshape(ops.arange(size_in, dtype="float32"), (1, 1, size_in))
    low = ops.expand_dims(low, -1)
    frac = ops.expand_dims(frac, -1)
    at_low = ops.cast(ops.equal(grid, low), "float32")
    at_high = ops.cast(ops.equal(grid, low + 1.0), "float32")
    return at_low * (1.0 - frac) + at_high * frac


@keras.saving.register_keras_serializable(package="resnetctl")
class RandomCropFlip(keras.layers.Layer):
    """Training-only augmentation that runs inside the model, on the accelerator.

    ``mode="translate"``: the CIFAR recipe, zero-pad by ``max_shift`` and crop back (a random
    integer shift per image). ``mode="resized"``: random-resized crop (area in ``scale``, aspect
    in ``ratio``) resampled bilinearly to the input size. Both with a random horizontal flip.

    Each crop is two small matrix products per image (rows, then columns), so it is exact for
    shifts, needs no backend-specific image op and compiles under XLA on every backend (Keras'
    ``RandomTranslation`` opts out of jit). At inference the layer only casts to float32.
    """

    def __init__(
        self,
        mode: str = "translate",
        max_shift: int = 4,
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in ("translate", "resized"):
            raise ValueError(f"`mode` must be 'translate' or 'resized'. Received: mode={mode!r}")
        self.mode = mode
        self.max_shift = int(max_shift)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.flip = bool(flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def reseed(self, epoch: int) -> None:
        """Make this epoch's random crops and flips a function of (seed, epoch) alone, so a run
        resumed at an epoch boundary draws exactly what the uninterrupted run drew."""
        state = self.seed_generator.state
        base = (int(self.seed or 0) * 1_000_003 + int(epoch) * 7919 + 1) % (2**31 - 1)
        state.assign(ops.convert_to_tensor(np.array([base, 0]), dtype=state.dtype))

    def _uniform(self, batch, low, high):
        return keras.random.uniform((batch, 1), low, high, seed=self.seed_generator)

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            return images
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        if self.mode == "translate":
            s = float(self.max_shift)
            start_y = ops.floor(self._uniform(batch, -s, s + 1.0))
            start_x = ops.floor(self._uniform(batch, -s, s + 1.0))
            len_y, len_x = float(height), float(width)
        else:
            area = self._uniform(batch, *self.scale) * (height * width)
            log_ratio = self._uniform(batch, math.log(self.ratio[0]), math.log(self.ratio[1]))
            aspect = ops.exp(log_ratio)
            len_y = ops.clip(ops.sqrt(area / aspect), 1.0, float(height))
            len_x = ops.clip(ops.sqrt(area * aspect), 1.0, float(width))
            start_y = self._uniform(batch, 0.0, 1.0) * (height - len_y)
            start_x = self._uniform(batch, 0.0, 1.0) * (width - len_x)
        rows = ops.broadcast_to(ops.arange(height, dtype="float32")[None, :], (batch, height))
        cols = ops.broadcast_to(ops.arange(width, dtype="float32")[None, :], (batch, width))
        if self.flip:
            flipped = self._uniform(batch, 0.0, 1.0) < 0.5
            cols = ops.where(flipped, (width - 1.0) - cols, cols)
        clip = self.mode == "resized"
        resample_y = _interpolation_matrix(rows, start_y, len_y, height, height, clip)
        resample_x = _interpolation_matrix(cols, start_x, len_x, width, width, clip)
        out = ops.einsum("bip,bpqc->biqc", resample_y, images)
        return ops.einsum("bjq,biqc->bijc", resample_x, out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "max_shift": self.max_shift,
            "scale": list(self.scale),
            "ratio": list(self.ratio),
            "flip": self.flip,
            "seed": self.seed,
        }

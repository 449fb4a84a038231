"""The layers Keras lacks: the paper's option-A shortcut, jit-friendly augmentation, and
MixUp/CutMix inside the train step.

All are registered serialisable, so a saved model reloads with ``keras.saving.load_model``
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


def reseed(generator: keras.random.SeedGenerator, seed: int | None, epoch: int, stream: int) -> None:
    """Set ``generator`` to a state that is a function of (seed, epoch, stream) alone."""
    state = generator.state
    base = (int(seed or 0) * 1_000_003 + int(epoch) * 7919 + stream) % (2**31 - 1)
    state.assign(ops.convert_to_tensor(np.array([base, 0]), dtype=state.dtype))


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
        reseed(self.seed_generator, self.seed, epoch, stream=1)

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


@keras.saving.register_keras_serializable(package="resnetctl")
class RandomAffineFlip(keras.layers.Layer):
    """Keras 2's ``ImageDataGenerator`` augmentation inside the model: a random rotation
    (degrees), shift (a fraction of the side), shear (degrees) and zoom (``1 +- zoom`` per axis)
    about the image centre, composed in its order (rotation, shift, shear, zoom), sampled
    bilinearly with its default ``fill_mode="nearest"`` (the edge pixel is repeated, not zeros),
    then a horizontal flip. The seed projects augmented this way.

    Every output pixel reads four input pixels by a gather at clamped coordinates (clamping is
    exactly the "nearest" fill), so it compiles under XLA on every backend. Identity at inference.
    """

    def __init__(
        self,
        shift: float = 0.0,
        rotation: float = 0.0,
        zoom: float = 0.0,
        shear: float = 0.0,
        flip: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.shift, self.rotation, self.zoom, self.shear = float(shift), float(rotation), float(zoom), float(shear)
        self.flip = bool(flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def reseed(self, epoch: int) -> None:
        """Like :meth:`RandomCropFlip.reseed`, on a stream of its own."""
        reseed(self.seed_generator, self.seed, epoch, stream=3)

    def _uniform(self, batch, bound):
        return keras.random.uniform((batch,), -bound, bound, seed=self.seed_generator)

    def sample(self, batch) -> dict:
        """One batch's random transforms, as ImageDataGenerator draws them (angles in radians,
        shifts as fractions of the side, ``tx`` along rows)."""
        return {
            "theta": self._uniform(batch, math.radians(self.rotation)),
            "tx": self._uniform(batch, self.shift),
            "ty": self._uniform(batch, self.shift),
            "shear": self._uniform(batch, math.radians(self.shear)),
            "zx": 1.0 + self._uniform(batch, self.zoom),
            "zy": 1.0 + self._uniform(batch, self.zoom),
        }

    @staticmethod
    def warp(images, theta, tx, ty, shear, zx, zy):
        """``images`` (float, NHWC) moved by rotation @ shift @ shear @ zoom about the centre, as
        ImageDataGenerator's ``apply_affine_transform`` maps output pixels to input ones
        (``tx``/``ty``: fractions of the height/width), sampled bilinearly at coordinates clamped
        into the image (``fill_mode="nearest"``). Each argument but ``images`` has one value an image."""
        batch = ops.shape(images)[0]
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        tx, ty = tx * height, ty * width
        cos, sin = ops.cos(theta), ops.sin(theta)
        # the 2x3 matrix in (row, col) coordinates
        m00, m01 = cos * zx, (-cos * ops.sin(shear) - sin * ops.cos(shear)) * zy
        m10, m11 = sin * zx, (cos * ops.cos(shear) - sin * ops.sin(shear)) * zy
        m02, m12 = cos * tx - sin * ty, sin * tx + cos * ty
        centre_r, centre_c = height / 2 - 0.5, width / 2 - 0.5
        rows = ops.arange(height, dtype="float32")[:, None] - centre_r
        cols = ops.arange(width, dtype="float32")[None, :] - centre_c
        e = lambda v: ops.reshape(v, (-1, 1, 1))  # noqa: E731
        src_r = ops.clip(e(m00) * rows + e(m01) * cols + e(m02) + centre_r, 0.0, height - 1.0)
        src_c = ops.clip(e(m10) * rows + e(m11) * cols + e(m12) + centre_c, 0.0, width - 1.0)
        r0, c0 = ops.floor(src_r), ops.floor(src_c)
        wr, wc = (src_r - r0)[..., None], (src_c - c0)[..., None]
        r1, c1 = ops.minimum(r0 + 1.0, height - 1.0), ops.minimum(c0 + 1.0, width - 1.0)
        flat = ops.reshape(images, (batch, height * width, channels))

        def at(r, c):
            index = ops.cast(ops.reshape(r * width + c, (batch, height * width, 1)), "int32")
            index = ops.broadcast_to(index, (batch, height * width, channels))
            return ops.reshape(ops.take_along_axis(flat, index, axis=1), (batch, height, width, channels))

        top = at(r0, c0) * (1.0 - wc) + at(r0, c1) * wc
        bottom = at(r1, c0) * (1.0 - wc) + at(r1, c1) * wc
        return top * (1.0 - wr) + bottom * wr

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            return images
        batch = ops.shape(images)[0]
        out = self.warp(images, **self.sample(batch))
        if self.flip:
            flipped = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < 0.5
            out = ops.where(flipped, ops.flip(out, axis=2), out)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "shift": self.shift,
            "rotation": self.rotation,
            "zoom": self.zoom,
            "shear": self.shear,
            "flip": self.flip,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="resnetctl")
class KerasPolicy(keras.layers.Layer):
    """Keras' own augmentation policies inside the model, in training only: ``keras.layers.RandAugment``
    (``num_ops`` operations a batch, each drawn from its 11, at Keras' normalised ``magnitude``) and/or
    ``keras.layers.RandomErasing`` (a box of noise on each image with probability ``erasing``), on
    0-255 images, after our crop-flip. Reseeded from (seed, epoch) at each epoch start, as our own
    layers are, so a resumed run draws what the uninterrupted run drew.

    Keras' ``RandomRotation`` (one of RandAugment's operations) declares ``supports_jit = False``,
    which turns XLA off for the whole model: right for TensorFlow (XLA has no kernel for its
    projective transform: the step stays a TensorFlow graph), not for JAX, whose transform is
    ``jax.scipy`` and compiles; on JAX the flag is set back so the step stays jitted (a test trains
    it so). RandomErasing keeps XLA everywhere."""

    def __init__(
        self, randaugment: bool = False, num_ops: int = 2, magnitude: float = 0.1, erasing: float = 0.0, seed=None,
        **kwargs,
    ):  # fmt: skip
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.randaugment, self.num_ops, self.magnitude = bool(randaugment), int(num_ops), float(magnitude)
        self.erasing, self.seed = float(erasing), seed
        self.rand_augment = (
            keras.layers.RandAugment(
                value_range=(0, 255), num_ops=self.num_ops, factor=self.magnitude, seed=seed, dtype="float32"
            )
            if self.randaugment
            else None
        )
        self.random_erasing = (
            keras.layers.RandomErasing(factor=self.erasing, value_range=(0, 255), seed=seed, dtype="float32")
            if self.erasing
            else None
        )
        if keras.backend.backend() == "jax":
            for layer in self._flatten_layers():
                layer.supports_jit = True

    def build(self, input_shape):
        for layer in (self.rand_augment, self.random_erasing):
            if layer is not None:
                layer.build(input_shape)

    def _generators(self) -> list:
        found = []
        for layer in self._flatten_layers():
            found += [v for v in vars(layer).values() if isinstance(v, keras.random.SeedGenerator)]
        return list(dict.fromkeys(found))

    def reseed(self, epoch: int) -> None:
        for k, generator in enumerate(self._generators()):
            reseed(generator, self.seed, epoch, stream=10 + k)

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            return images
        if self.rand_augment is not None:
            images = self.rand_augment(images, training=True)
        if self.random_erasing is not None:
            images = self.random_erasing(images, training=True)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "randaugment": self.randaugment,
            "num_ops": self.num_ops,
            "magnitude": self.magnitude,
            "erasing": self.erasing,
            "seed": self.seed,
        }


def _log_gamma_pair(alpha: float, seed_generator, candidates: int = 16):
    """The logarithms of two Gamma(alpha, 1) draws that compile under XLA on every backend (TensorFlow's gamma
    sampler, behind ``keras.random.beta``, does not): Marsaglia and Tsang's method with a fixed
    number of candidates drawn at once, keeping the first one accepted. Each is accepted with
    probability >= 0.95, so all 16 failing is below 1e-20; alpha < 1 takes the usual boost
    Gamma(alpha + 1) * U ** (1 / alpha)."""
    a = alpha + 1.0 if alpha < 1 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = keras.random.normal((2, candidates), seed=seed_generator)
    u = keras.random.uniform((2, candidates), seed=seed_generator)
    v = (1.0 + c * z) ** 3
    safe_v = ops.maximum(v, 1e-12)
    accepted = (v > 0) & (ops.log(u) < 0.5 * z * z + d - d * safe_v + d * ops.log(safe_v))
    first = ops.argmax(ops.cast(accepted, "int32"), axis=1)
    log_gamma = math.log(d) + ops.log(ops.take_along_axis(safe_v, first[:, None], axis=1)[:, 0])
    if alpha < 1:
        u = keras.random.uniform((2,), minval=1e-30, maxval=1.0, seed=seed_generator)
        log_gamma = log_gamma + ops.log(u) / alpha
    return log_gamma


@keras.saving.register_keras_serializable(package="resnetctl")
class BatchMix(keras.layers.Layer):
    """MixUp and CutMix inside the compiled train step, on any backend.

    Each image is mixed with the image at the mirrored position of its batch (timm pairs a batch
    with its reverse: the order is already random), with one weight per batch drawn from
    Beta(alpha, alpha). With both methods on, each batch gets CutMix with ``switch_prob``, else
    MixUp; with ``prob`` < 1 some batches stay unmixed. ``own_share`` holds the share of each
    image that is its own (lambda; for CutMix, the area outside the pasted box), which
    :class:`resnetctl.training.losses.SparseCrossentropy` reads in the same step to mix the
    targets alike. At inference images pass through and ``own_share`` is 1, so a loss computed
    in evaluation sees plain targets.

    Why not ``keras.layers.MixUp``/``CutMix``: they mix an ``{"images", "labels"}`` dict in a
    tf.data or grain pipeline, outside the compiled step; labels are not inputs of a model.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mixup_alpha < 0 or cutmix_alpha < 0 or not (mixup_alpha or cutmix_alpha):
            raise ValueError(f"Give mixup_alpha and/or cutmix_alpha > 0. Received: {mixup_alpha=}, {cutmix_alpha=}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.own_share = self.add_weight(
            shape=(), initializer="ones", trainable=False, aggregation="none", name="own_share"
        )

    def reseed(self, epoch: int) -> None:
        """Like :meth:`RandomCropFlip.reseed`, on a stream of its own."""
        reseed(self.seed_generator, self.seed, epoch, stream=2)

    def _beta(self, alpha: float):
        """Beta(alpha, alpha) = G0 / (G0 + G1) for two gamma draws, from their logarithms (small
        alphas give gammas that underflow float32)."""
        log_g = _log_gamma_pair(alpha, self.seed_generator)
        return ops.sigmoid(log_g[0] - log_g[1])

    def _cutmix(self, images, mirrored, share):
        """Paste a box of about ``1 - share`` of the area from ``mirrored``; returns the images and
        the exact share left after clipping the box at the border."""
        height, width = images.shape[1], images.shape[2]
        centre = keras.random.uniform((2,), seed=self.seed_generator)
        cut = ops.sqrt(1.0 - share)
        y0 = ops.clip(ops.floor(centre[0] * height - cut * height / 2), 0, height)
        y1 = ops.clip(ops.floor(centre[0] * height + cut * height / 2), 0, height)
        x0 = ops.clip(ops.floor(centre[1] * width - cut * width / 2), 0, width)
        x1 = ops.clip(ops.floor(centre[1] * width + cut * width / 2), 0, width)
        rows = ops.arange(height, dtype="float32")
        cols = ops.arange(width, dtype="float32")
        in_rows = ops.cast((rows >= y0) & (rows < y1), "float32")
        in_cols = ops.cast((cols >= x0) & (cols < x1), "float32")
        box = (in_rows[:, None] * in_cols[None, :])[None, :, :, None]
        return images * (1.0 - box) + mirrored * box, 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            self.own_share.assign(ops.ones((), "float32"))
            return images
        mirrored = ops.flip(images, axis=0)
        draws = keras.random.uniform((2,), seed=self.seed_generator)
        if self.mixup_alpha:
            share = self._beta(self.mixup_alpha)
            mixed = share * images + (1.0 - share) * mirrored
        if self.cutmix_alpha:
            cut_images, cut_share = self._cutmix(images, mirrored, self._beta(self.cutmix_alpha))
            if self.mixup_alpha:
                use_cutmix = draws[1] < self.switch_prob
                mixed = ops.where(use_cutmix, cut_images, mixed)
                share = ops.where(use_cutmix, cut_share, share)
            else:
                mixed, share = cut_images, cut_share
        apply = draws[0] < self.prob
        self.own_share.assign(ops.cast(ops.where(apply, share, 1.0), "float32"))
        return ops.where(apply, mixed, images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "prob": self.prob,
            "switch_prob": self.switch_prob,
            "seed": self.seed,
        }

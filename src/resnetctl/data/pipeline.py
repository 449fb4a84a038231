"""Feeding a split to ``model.fit``: one batch sequence for every mode.

:class:`Batches` serves in-memory arrays and HDF5 files streamed from disk alike. Its length is
the number of optimizer steps of an epoch, in every mode, so the learning-rate schedule is built
from the pipeline itself. The order of epoch ``e`` depends only on ``(seed, e)``: a run resumed
at epoch ``e`` sees exactly the batches the uninterrupted run would have seen.

Streamed, a batch is assembled from a few contiguous runs of images (each a single chunk read);
``prepare`` stored train in random order, so runs mix classes. Augmentation happens inside the
model, on the accelerator, in both cases.

Data-parallel JAX needs every batch to split evenly over the devices (``batch_multiple``): the
few images of an uneven last batch are left out of that epoch (a different few each epoch).
Across several JAX processes (``shard``), each process reads its own contiguous part of every
global batch, and the global batches are those of one process: the run does not depend on how
many processes share it.
"""

from __future__ import annotations

import threading

import h5py
import keras
import numpy as np

from resnetctl.data.store import DatasetInfo, check_split, chunk_length, fits_in_memory, read_split
from resnetctl.errors import DatasetError


class _Arrays:
    """Images and labels held in memory."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def read(self, rows: np.ndarray):
        return self.x[rows], self.y[rows]


class _DeviceArrays:
    """Images and labels copied to the JAX device once; each epoch's order goes there once too
    (a few hundred KB), and a batch is one compiled gather on the device: no host-to-device copy
    of images per step. The order is the host's, so the batches are the same, bit for bit."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        import jax

        self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.order = None

        def gather(x, y, order, start, size):
            rows = jax.lax.dynamic_slice_in_dim(order, start, size)
            return x[rows], y[rows]

        self._gather = jax.jit(gather, static_argnums=4)

    def set_order(self, order: np.ndarray) -> None:
        import jax

        self.order = jax.device_put(order.astype(np.int32))

    def read_span(self, start: int, stop: int):
        return self._gather(self.x, self.y, self.order, start, stop - start)


def fits_on_device(x: np.ndarray, fraction: float = 0.25) -> bool:
    """JAX only: the arrays take under ``fraction`` of the first device's memory (where JAX reports
    it; a CPU "device" shares the host's memory, which :func:`fits_in_memory` already checked)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return limit is None or x.nbytes < fraction * limit


def _in_memory(x: np.ndarray, y: np.ndarray, on_device: bool):
    return _DeviceArrays(x, y) if on_device and fits_on_device(x) else _Arrays(x, y)


class _H5File:
    """Images and labels read from ``<split>.h5`` by contiguous slices, one handle per thread."""

    def __init__(self, path):
        self.path = path
        self.local = threading.local()

    def read(self, rows: np.ndarray):
        f = getattr(self.local, "file", None)
        if f is None:
            f = self.local.file = h5py.File(self.path, "r")
        rows = np.sort(rows)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        images, labels = [], []
        try:
            for segment in np.split(rows, breaks):
                start, stop = int(segment[0]), int(segment[-1]) + 1
                images.append(f["images"][start:stop])
                labels.append(f["labels"][start:stop])
        except (OSError, KeyError) as exc:
            raise DatasetError(
                f"Cannot read {self.path} ({exc})", hint="prepare the dataset again with --force"
            ) from None
        return np.concatenate(images), np.concatenate(labels)


class Batches(keras.utils.PyDataset):
    """The batches of one split for one epoch; :meth:`set_epoch` picks the epoch's order.

    ``run`` images that are consecutive on disk stay together (1 in memory: a plain shuffle).
    ``workers=1`` (in memory) makes Keras read batches in its own loop; more start its thread
    enqueuer, which pays off for disk reads but costs about 0.1 s per epoch to stop (it drains
    its queue with a 0.1 s timeout), and more on a GPU, where it cut ResNet20's throughput on
    5,000 images to 0.2 of plain arrays (docs/benchmarks.md).
    """

    def __init__(
        self,
        source,
        count: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        run: int = 1,
        batch_multiple: int = 1,
        workers: int = 1,
        shard: tuple[int, int] = (0, 1),
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.source = source
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.run = max(1, int(run))
        self.total = int(count)
        # leave out what keeps the last batch from splitting evenly over the devices
        self.count = count - (count % batch_size) % batch_multiple
        if self.count < 1:
            raise DatasetError(f"A batch of {batch_size} does not fit {count} images over {batch_multiple} devices")
        self.shard, self.shards = shard
        self.order = np.arange(count)
        self.epoch = None
        self._order_changed()
        self.set_epoch(0)

    def _order_changed(self) -> None:
        if hasattr(self.source, "set_order"):
            self.source.set_order(self.order)

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The order of 0-based ``epoch``: a function of (seed, epoch) only."""
        if not self.shuffle or epoch == self.epoch:
            return
        rng = np.random.default_rng([self.seed, epoch])
        runs = rng.permutation(-(-self.total // self.run))
        if self.run == 1:
            self.order = runs
        else:
            starts = runs * self.run
            self.order = np.concatenate([np.arange(s, min(s + self.run, self.total)) for s in starts])
        self.epoch = epoch
        self._order_changed()

    def __getitem__(self, index):
        start, stop = index * self.batch_size, min(self.count, (index + 1) * self.batch_size)
        if hasattr(self.source, "read_span"):  # on the device (one process, never sharded)
            return self.source.read_span(start, stop)
        rows = self.order[start:stop]
        if self.shards > 1:  # this process's part; batch_multiple makes every part the same size
            part = len(rows) // self.shards
            rows = rows[self.shard * part : (self.shard + 1) * part]
        return self.source.read(rows)


class EpochStart(keras.callbacks.Callback):
    """At each epoch start, before Keras asks for a batch: the epoch's data order, and the
    reseeding of in-model augmentation (layers with ``reseed``), both from (seed, epoch)."""

    def __init__(self, batches: Batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
        for layer in self.model.layers:
            if hasattr(layer, "reseed"):
                layer.reseed(epoch)


def train_batches(
    info: DatasetInfo,
    batch_size: int,
    in_memory: bool | None,
    seed: int,
    batch_multiple: int = 1,
    shard: tuple[int, int] = (0, 1),
    on_device: bool = False,
) -> Batches:
    """The train split as :class:`Batches`: in memory when it fits (``on_device``: in the JAX
    device's memory when it fits there too), else streamed from HDF5."""
    if in_memory is None:
        in_memory = fits_in_memory(info, "train")
    count = info.splits["train"]
    if in_memory:
        arrays = _in_memory(*read_split(info, "train"), on_device)
        return Batches(arrays, count, batch_size, seed=seed, batch_multiple=batch_multiple, shard=shard)
    run = max(1, min(chunk_length(info.image_size), batch_size // 8))
    return Batches(
        _H5File(check_split(info, "train")),
        count,
        batch_size,
        seed=seed,
        run=run,
        batch_multiple=batch_multiple,
        workers=4,
        shard=shard,
    )


# validation computes no gradients and keeps no activations for a backward pass: a larger batch
# means fewer, fuller calls (the accelerator idles less between them), bounded for memory
VALIDATION_BATCH_FACTOR = 4
VALIDATION_BATCH_CAP = 1024


def validation_batch_size(batch_size: int) -> int:
    """Up to 4x the training batch and at most 1,024 images (never below the training batch);
    a multiple of it, so it splits over the devices wherever the training batch does."""
    cap = VALIDATION_BATCH_CAP // batch_size * batch_size
    return max(batch_size, min(VALIDATION_BATCH_FACTOR * batch_size, cap))


def validation_batches(
    info: DatasetInfo,
    batch_size: int,
    batch_multiple: int = 1,
    shard: tuple[int, int] = (0, 1),
    on_device: bool = False,
    split: str = "val",
) -> Batches | None:
    """The ``split`` watched during training (val; test for the seeds' protocol) in memory and in
    order, at :func:`validation_batch_size` of the training ``batch_size``, or ``None`` when the
    dataset has none."""
    if split not in info.splits:
        return None
    x, y = read_split(info, split)
    size = validation_batch_size(batch_size)
    return Batches(_in_memory(x, y, on_device), len(y), size, shuffle=False, batch_multiple=batch_multiple, shard=shard)

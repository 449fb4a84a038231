"""Feeding a split to ``model.fit``: in memory when it fits, else streamed from HDF5.

In memory, Keras' array adapter reshuffles every epoch and prefetches. Streamed, every batch
is assembled from a few contiguous runs of images (each a single chunk read), in an order
reshuffled every epoch; ``prepare`` stored train in random order, so runs mix classes.
Augmentation happens inside the model, on the accelerator, in both cases.

Data-parallel JAX needs every batch to split evenly over the devices (``batch_multiple``):
there, batches come from a PyDataset that leaves the few images of an uneven last batch out
of that epoch (a different few each epoch, as the order is reshuffled).
"""

from __future__ import annotations

import os
import threading

import h5py
import keras
import numpy as np

from resnetctl.data.store import DatasetInfo, chunk_length, read_split


def fits_in_memory(info: DatasetInfo, split: str = "train", fraction: float = 0.25) -> bool:
    size = info.image_size
    need = info.splits[split] * size * size * 3
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 << 30
    return need < fraction * total


class StreamedSplit(keras.utils.PyDataset):
    """Batches read from ``<split>.h5`` by background threads, reshuffled each epoch."""

    def __init__(self, info: DatasetInfo, split: str, batch_size: int, shuffle: bool = True,
                 seed: int = 0, workers: int = 4, batch_multiple: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
        self.path = info.split_path(split)
        self.count = info.splits[split]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.batch_multiple = batch_multiple
        self.run = max(1, min(chunk_length(info.image_size), batch_size // 8))
        self.runs_per_batch = max(1, batch_size // self.run)
        self.rng = np.random.default_rng(seed)
        self.local = threading.local()
        self.order = np.arange(-(-self.count // self.run))
        self.on_epoch_end()

    def __len__(self) -> int:
        return -(-len(self.order) // self.runs_per_batch)

    def _file(self):
        if getattr(self.local, "file", None) is None:
            self.local.file = h5py.File(self.path, "r")
        return self.local.file

    def __getitem__(self, index):
        f = self._file()
        runs = self.order[index * self.runs_per_batch : (index + 1) * self.runs_per_batch]
        images, labels = [], []
        for r in runs:
            start, stop = r * self.run, min(self.count, (r + 1) * self.run)
            images.append(f["images"][start:stop])
            labels.append(f["labels"][start:stop])
        return _even(np.concatenate(images), np.concatenate(labels), self.batch_multiple)

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def _even(x: np.ndarray, y: np.ndarray, multiple: int):
    keep = len(x) - len(x) % multiple
    return x[:keep], y[:keep]


class ArrayBatches(keras.utils.PyDataset):
    """In-memory batches whose sizes are multiples of ``batch_multiple``, reshuffled each epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, batch_multiple: int,
                 shuffle: bool = True, seed: int = 0):
        super().__init__(workers=2, use_multiprocessing=False, max_queue_size=8)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.batch_multiple = batch_multiple
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        last = len(x) % batch_size
        self.count = len(x) - last % batch_multiple
        self.order = np.arange(len(x))
        self.on_epoch_end()

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : min(self.count, (index + 1) * self.batch_size)]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def fit_inputs(info: DatasetInfo, split: str, batch_size: int, in_memory: bool | None, seed: int,
               batch_multiple: int = 1):
    """Keyword arguments for ``model.fit`` that feed ``split``: ``x``/``y`` or a PyDataset."""
    if in_memory is None:
        in_memory = fits_in_memory(info, split)
    if not in_memory:
        return {"x": StreamedSplit(info, split, batch_size, seed=seed, batch_multiple=batch_multiple)}
    x, y = read_split(info, split)
    if batch_multiple > 1:
        return {"x": ArrayBatches(x, y, batch_size, batch_multiple, seed=seed)}
    return {"x": x, "y": y, "batch_size": batch_size, "shuffle": True}


def validation_inputs(info: DatasetInfo, batch_size: int, batch_multiple: int = 1):
    """``validation_data`` for ``model.fit``: the val split, or ``None`` when there is none."""
    if "val" not in info.splits:
        return None
    x, y = read_split(info, "val")
    if batch_multiple > 1:
        return ArrayBatches(x, y, batch_size, batch_multiple, shuffle=False)
    return x, y

"""What a source reader hands to the writer: images as arrays, or as files still to decode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

UNLABELLED = -1


@dataclass
class ArrayRecords:
    """Decoded images already in memory (CIFAR batches, the generated demo)."""

    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    labels: np.ndarray  # (N,) int

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ArrayRecords:
        return ArrayRecords(self.images[index], self.labels[index])


@dataclass
class FileRecords:
    """Encoded image files: names (kept in the HDF5 for predictions) and a reader of bytes."""

    names: list[str]
    labels: np.ndarray
    read: Callable[[str], bytes]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> FileRecords:
        return FileRecords([self.names[i] for i in index], self.labels[index], self.read)


Records = ArrayRecords | FileRecords


@dataclass
class SourceData:
    """Everything a reader found in an archive or folder, before splitting and writing."""

    kind: str
    classes: list[str]
    splits: dict[str, Records]
    class_ids: list[str] | None = None
    image_size: int | None = None  # None: images vary, --size decides
    ignored: list[str] = field(default_factory=list)  # stray non-image files
    skipped: list[dict] = field(default_factory=list)  # special files never opened: {"file", "reason"}


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, carved) with ``fraction`` of every class carved out, at least one of a
    class that has two or more examples when ``fraction > 0``."""
    kept, carved = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) >= 2:
            n = 1
        carved.append(idx[:n])
        kept.append(idx[n:])
    return np.concatenate(kept), np.concatenate(carved)

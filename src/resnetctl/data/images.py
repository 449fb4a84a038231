"""Decoding user images into RGB uint8 squares, in parallel, with bad files skipped not fatal."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import cv2
import numpy as np

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2"}
)

T = TypeVar("T")
R = TypeVar("R")


class BadImage(Exception):
    """An image file that cannot be used; the reason ends up in meta.json's skipped list."""


def is_image_file(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _looks_truncated(data: bytes) -> bool:
    """OpenCV decodes a cut-off JPEG or PNG as a grey-filled image with only a warning."""
    if data[:2] == b"\xff\xd8":  # JPEG: the end-of-image marker must be there
        return b"\xff\xd9" not in data[-4096:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-32:]
    return False


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (aspect kept), then cut the centred square."""
    height, width = image.shape[:2]
    if height == size and width == size:
        return image
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[top : top + size, left : left + size]


def decode_image(data: bytes, size: int | None = None) -> np.ndarray:
    """Encoded bytes -> RGB uint8 ``(size, size, 3)``.

    Grey, RGBA, CMYK and 16-bit images become 8-bit RGB; the content decides the format, not
    the file extension. Raises :class:`BadImage` for empty, truncated or undecodable data.
    """
    if not data:
        raise BadImage("empty file")
    if _looks_truncated(data):
        raise BadImage("truncated image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadImage("not a decodable image")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return resize_center_crop(image, size) if size else image


def worker_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def ordered_parallel_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, ahead: int = 2
) -> Iterator[R]:
    """``map`` on a thread pool that yields in order and keeps at most ``ahead * workers``
    results in flight, so memory stays bounded however many items there are.

    Threads suffice: OpenCV and file reads release the GIL.
    """
    workers = workers or worker_count()
    with ThreadPoolExecutor(workers, thread_name_prefix="resnetctl-decode") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

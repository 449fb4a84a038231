"""Decoding image files block by block, in worker processes, straight into shared memory.

Why processes: a 64 px JPEG decodes in about 55 us, and the Python around it (read the file,
hand the pixels over) plus the HDF5 write, which holds the GIL, cost as much again when decode
threads and the writer share one interpreter; two threads reached a third of two cores' decode
rate. Worker processes each own a GIL; they decode a block into a slot of a shared-memory ring
and send back only which files were kept, which were skipped and why, and the block's channel
moments. The parent writes each slot to HDF5 while the workers fill the next ones, and its
memory stays bounded by the ring, whatever the number of images.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from resnetctl.data.images import BadImage, channel_moments, decode_image, worker_count
from resnetctl.data.records import FileRecords

_worker: dict = {}  # per worker process: the records, the image size and the ring


def decode_into(out: np.ndarray, records: FileRecords, index: np.ndarray, size: int):
    """Decode ``records[index]`` into ``out``; return (kept indices, skipped, moments)."""
    keep, skipped = [], []
    for i in index:
        name = records.names[i]
        try:
            out[len(keep)] = decode_image(records.read(name), size)
            keep.append(i)
        except BadImage as exc:
            skipped.append({"file": name, "reason": str(exc)})
    return np.asarray(keep, dtype=np.int64), skipped, channel_moments(out[: len(keep)])


def _start_worker(shm_name: str, shape: tuple, records: FileRecords, size: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    shm = SharedMemory(name=shm_name)
    _worker.update(shm=shm, ring=np.ndarray(shape, np.uint8, shm.buf), records=records, size=size)


def _decode_slot(slot: int, index: np.ndarray):
    return decode_into(_worker["ring"][slot], _worker["records"], index, _worker["size"])


def _context():
    # forkserver: workers start from a clean process, not a fork of one with threads running
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # imported once by the server, not per worker
    return context


def decode_blocks(
    records: FileRecords, blocks: Iterable[np.ndarray], size: int, workers: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, list, np.ndarray]]:
    """Yield ``(images, kept, skipped, moments)`` per block, in order.

    ``images`` is a view that is valid until the next block is asked for (the slot is reused).
    One worker, or a single block, decodes in this process.
    """
    blocks = list(blocks)
    workers = min(workers or worker_count(), len(blocks))
    longest = max((len(b) for b in blocks), default=0)
    if workers <= 1:
        out = np.empty((longest, size, size, 3), np.uint8)
        for index in blocks:
            kept, skipped, moments = decode_into(out, records, index, size)
            yield out[: len(kept)], kept, skipped, moments
        return

    slots = 2 * workers
    shape = (slots, longest, size, size, 3)
    shm = SharedMemory(create=True, size=max(1, int(np.prod(shape))))
    ring = np.ndarray(shape, np.uint8, shm.buf)
    pool = _context().Pool(workers, initializer=_start_worker, initargs=(shm.name, shape, records, size))
    try:
        pending: deque = deque()
        free = list(range(slots))
        todo = iter(blocks)
        while True:
            while free and (index := next(todo, None)) is not None:
                slot = free.pop()
                pending.append((slot, pool.apply_async(_decode_slot, (slot, index))))
            if not pending:
                break
            slot, result = pending.popleft()
            kept, skipped, moments = result.get()
            yield ring[slot, : len(kept)], kept, skipped, moments
            free.append(slot)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        del ring
        shm.unlink()
        with contextlib.suppress(BufferError):  # the caller still holds the last view
            shm.close()

"""Keep freed tensor memory in the process instead of handing it back to the kernel every step.

TensorFlow's tf.data generator op (behind every Keras ``PyDataset`` on the TensorFlow backend)
calls ``mallopt(M_TRIM_THRESHOLD, 128 KiB)`` the first time it runs. Setting any malloc
threshold switches off glibc's dynamic mmap threshold, which then stays at its 128 KiB start:
every activation buffer above 128 KiB is mmap'd and unmapped on each step and its pages are
faulted in again. With ResNet20 at batch 64 on one 2-core machine that was about 3,000 page
faults an image and half of the training time spent in the kernel; other CPUs pay far less
(docs/benchmarks.md).

``keep_freed_memory`` puts both thresholds where glibc's own dynamic rule ends up (mmap 32 MiB,
trim twice that), so the memory a step frees is reused by the next one. It is a no-op where
the C library has no ``mallopt`` (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import keras

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc's dynamic rule sets beside it


@functools.cache
def _mallopt():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds back to their dynamic maxima; True where it applied."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class KeepFreedMemory(keras.callbacks.Callback):
    """Undoes TensorFlow's threshold after every training and validation batch.

    The op sets it from inside ``fit``, when a dataset is first iterated, so it cannot be undone
    beforehand; re-applying it each batch (one ``mallopt`` call, microseconds against a step of
    tens of milliseconds) holds whether the op sets it once per process or once per iterator.
    ``async_safe``: ``mallopt`` takes glibc's own lock, so Keras may keep dispatching steps
    asynchronously (a batch-end hook without it makes every step wait for its logs)."""

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        keep_freed_memory()

    def on_test_batch_end(self, batch, logs=None):
        keep_freed_memory()

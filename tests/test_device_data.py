"""In-memory splits on the JAX device: the same batches as from the host, gathered on the device."""

from __future__ import annotations

import pytest

from tests.helpers import needs, run_cli

pytestmark = [pytest.mark.e2e, needs("jax")]

SCRIPT = """
import sys
import jax
import numpy as np
from resnetctl.data.pipeline import _DeviceArrays, train_batches, validation_batches
from resnetctl.data.store import open_dataset

info = open_dataset("cifar-small", sys.argv[1])
host = train_batches(info, 96, True, seed=7)
device = train_batches(info, 96, True, seed=7, on_device=True)
assert isinstance(device.source, _DeviceArrays) and isinstance(device.source.x, jax.Array)
assert len(host) == len(device) == 11  # 1,000 images: 10 of 96 and one of 40
for epoch in (0, 1, 0):
    host.set_epoch(epoch)
    device.set_epoch(epoch)
    for i in range(len(host)):
        (hx, hy), (dx, dy) = host[i], device[i]
        assert isinstance(dx, jax.Array) and dx.dtype == np.uint8
        assert np.array_equal(np.asarray(dx), hx) and np.array_equal(np.asarray(dy), hy), (epoch, i)
val_host = validation_batches(info, 96)
val_device = validation_batches(info, 96, on_device=True)
assert val_device.batch_size == 384 and len(val_device) == 3  # 1,000 val images, 4x the batch
for i in range(len(val_host)):
    assert np.array_equal(np.asarray(val_device[i][0]), val_host[i][0])
print("same batches")
"""


def test_device_batches_are_the_host_batches(cifar_small, data_dir):
    out = run_cli(data_dir, launcher=("-c", SCRIPT), env_extra={"KERAS_BACKEND": "jax"}).stdout
    assert "same batches" in out

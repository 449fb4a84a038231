"""The official CIFAR-10 and CIFAR-100 python archives (tarball or extracted folder)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from resnetctl.data.records import ArrayRecords, SourceData
from resnetctl.errors import DatasetError

LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names": b"label_names",
        "labels": b"labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names": b"fine_label_names",
        "labels": b"fine_labels",
    },
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR batches hold dicts, lists and numpy arrays; refuse anything else."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure is a damaged file
        raise DatasetError(
            f"{where} is not a readable CIFAR batch ({exc})", hint="download the archive again"
        ) from None


def _read_members(source: Path, wanted: set[str]) -> dict[str, bytes]:
    """The wanted files by base name, from a tarball or an extracted folder."""
    found: dict[str, bytes] = {}
    if source.is_dir():
        for path in source.rglob("*"):
            if path.name in wanted and path.is_file():
                found[path.name] = path.read_bytes()
        return found
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    found[base] = tar.extractfile(member).read()
            # read the compressed stream to its end, where gzip keeps its CRC and length:
            # tarfile stops at the end-of-archive blocks and would never check them
            while tar.fileobj.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise DatasetError(
            f"{source} is a truncated or damaged archive ({exc})",
            hint="download it again, or pass the extracted folder",
        ) from None
    return found


def read_cifar(kind: str, source: Path) -> SourceData:
    layout = LAYOUTS[kind]
    files = [*layout["train"], *layout["test"], layout["meta"]]
    members = _read_members(source, set(files))
    missing = [f for f in files if f not in members]
    if missing:
        raise DatasetError(
            f"{source} is not the {kind} python archive: missing {', '.join(missing)}",
            hint=f"expected {layout['folder']}/ with {', '.join(files)}",
        )
    meta = _unpickle(members[layout["meta"]], layout["meta"])
    classes = [n.decode() for n in meta[layout["names"]]]

    def batches(names: list[str]) -> ArrayRecords:
        images, labels = [], []
        for name in names:
            batch = _unpickle(members[name], name)
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetError(f"{name}: expected rows of 3072 bytes, got {data.shape}")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[layout["labels"]], dtype=np.int32))
        return ArrayRecords(np.concatenate(images), np.concatenate(labels))

    return SourceData(
        kind=kind,
        classes=classes,
        splits={"train": batches(layout["train"]), "test": batches(layout["test"])},
        image_size=32,
    )

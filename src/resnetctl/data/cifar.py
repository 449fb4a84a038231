"""The official CIFAR-10 and CIFAR-100 python archives (tarball or extracted folder)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from resnetctl.data.archive import walk_folder
from resnetctl.data.records import ArrayRecords, SourceData
from resnetctl.errors import DatasetError

MAX_MEMBER_BYTES = 256 << 20  # CIFAR-100's train batch, the largest, is 155 MB

LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names": b"label_names",
        "labels": b"labels",
        "classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names": b"fine_label_names",
        "labels": b"fine_labels",
        "classes": 100,
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

    def keep(base: str, where: str, read) -> None:
        if base in found:
            raise DatasetError(f"{source} holds {base} twice (again at {where})", hint="which one is meant is unclear")
        data = read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES:
            raise DatasetError(f"{source}: {where} is over {MAX_MEMBER_BYTES:,} bytes, not a CIFAR batch")
        found[base] = data

    if source.is_dir():
        files, _ = walk_folder(source)
        for name in files:
            base = name.rsplit("/", 1)[-1]
            if base in wanted:
                with open(source / name, "rb") as f:
                    keep(base, name, f.read)
        return found
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                # a hard link is a second name of a member before it: read through to its data
                if (member.isfile() or member.islnk()) and base in wanted:
                    keep(base, member.name, tar.extractfile(member).read)
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


def _refuse(where: str, what: str) -> DatasetError:
    return DatasetError(
        f"{where} is not a CIFAR batch as the official archive has it: {what}", hint="download it again"
    )


def _class_names(meta, layout: dict, kind: str) -> list[str]:
    """The meta file's class names: a list of exactly 10 (100) distinct byte or text strings."""
    key, where = layout["names"], layout["meta"]
    if not isinstance(meta, dict) or key not in meta:
        raise _refuse(where, f"no {key.decode()!r}")
    names = meta[key]
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise _refuse(where, f"{key.decode()!r} is not a list of names")
    names = [n.decode("utf-8", errors="replace") if isinstance(n, bytes) else n for n in names]
    if len(names) != layout["classes"] or len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise _refuse(where, f"{kind} has {layout['classes']} distinct class names; it lists {len(names)}")
    return names


def _batch(batch, name: str, labels_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 (N, 3072), labels int32 (N,))`` of one batch, every field checked: a short
    label list would shift every label after it, float data would be cast to garbage."""
    if not isinstance(batch, dict):
        raise _refuse(name, f"a {type(batch).__name__}, not a dict")
    for key in (b"data", labels_key):
        if key not in batch:
            raise _refuse(name, f"no {key.decode()!r}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise _refuse(name, f"'data' is a {kind}, not uint8 pixels")
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] < 1:
        raise _refuse(name, f"expected rows of 3072 bytes, got {data.shape}")
    labels = batch[labels_key]
    if not isinstance(labels, list | np.ndarray) or any(isinstance(v, bool | np.bool_) for v in labels):
        raise _refuse(name, f"{labels_key.decode()!r} is not a list of class indices")
    try:
        labels = np.asarray(labels)
    except ValueError:
        raise _refuse(name, f"{labels_key.decode()!r} is not a list of class indices") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise _refuse(name, f"{labels_key.decode()!r} is not a list of class indices")
    if len(labels) != len(data):
        raise _refuse(name, f"{len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise _refuse(name, f"label {labels.min() if labels.min() < 0 else labels.max()} is outside 0..{classes - 1}")
    return data, labels.astype(np.int32)


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
    classes = _class_names(meta, layout, kind)

    def batches(names: list[str]) -> ArrayRecords:
        images, labels = [], []
        for name in names:
            data, batch_labels = _batch(_unpickle(members[name], name), name, layout["labels"], len(classes))
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(batch_labels)
        return ArrayRecords(np.concatenate(images), np.concatenate(labels))

    return SourceData(
        kind=kind,
        classes=classes,
        splits={"train": batches(layout["train"]), "test": batches(layout["test"])},
        image_size=32,
    )

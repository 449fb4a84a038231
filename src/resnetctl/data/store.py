"""The dataset-dir contract: ``<split>.h5`` (uint8 RGB images, int labels) + ``meta.json``.

Images are chunked so a batch of consecutive images is one contiguous read; ``meta.json`` is
written last and the folder renamed into place only when complete (see ``prepare``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resnetctl import paths
from resnetctl.errors import DatasetError

if TYPE_CHECKING:  # numpy is imported where it is used: a mistake answered from meta.json needs none
    import numpy as np

log = logging.getLogger("resnetctl")

FORMAT_VERSION = 1
MAX_IMAGE_SIZE = 1024  # --size above this is a mistake, not a dataset
META = "meta.json"
MARKER = ".resnetctl-dataset"  # written by prepare: "made by resnetctl", a name no other tool uses
SPLIT_FILES = ("train.h5", "val.h5", "test.h5", "unlabelled.h5")


def made_by_resnetctl(folder: Path) -> bool:
    """Ownership, before ``--force`` may replace a folder: our marker file, or (datasets made
    before the marker) a meta.json with our format version and the ``resnetctl_version`` field
    that only resnetctl writes. A meta.json of another tool is not enough."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if (folder / MARKER).is_file() and not (folder / MARKER).is_symlink():
        return True
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format_version") == FORMAT_VERSION and "resnetctl_version" in meta


def foreign_files(folder: Path) -> list[str]:
    """What a dataset folder holds beyond what prepare writes (``--force`` would delete it)."""
    ours = {META, MARKER, *SPLIT_FILES}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours)


def chunk_length(image_size: int) -> int:
    """Images per HDF5 chunk: about 1 MiB, between 1 and 256 images."""
    return int(max(1, min(256, (1 << 20) // (image_size * image_size * 3))))


class SplitWriter:
    """Appends images to one split file in chunk-sized pieces; keeps per-channel sums."""

    def __init__(self, path: Path, image_size: int, capacity: int, store_names: bool):
        import numpy as np

        self.path = path
        self.size = image_size
        self.chunk = chunk_length(image_size)
        self.count = 0
        self.moments = np.zeros((2, 3))  # per-channel sum and sum of squares
        self.pixels = 0
        self.class_counts = np.zeros(0, np.int64)
        import h5py

        self.file = h5py.File(path, "w")
        shape = (image_size, image_size, 3)
        self.images = self.file.create_dataset(
            "images",
            shape=(max(capacity, 1), *shape),
            maxshape=(None, *shape),
            dtype=np.uint8,
            chunks=(self.chunk, *shape),
        )
        self.labels = self.file.create_dataset("labels", shape=(max(capacity, 1),), maxshape=(None,), dtype=np.int32)
        self.names = (
            self.file.create_dataset(
                "filenames",
                shape=(max(capacity, 1),),
                maxshape=(None,),
                dtype=h5py.string_dtype(),
            )
            if store_names
            else None
        )

    def append(
        self, images: np.ndarray, labels: np.ndarray, names: list[str] | None = None, moments: np.ndarray | None = None
    ):
        """Write a block; ``moments`` (from ``channel_moments``) when the caller already has them."""
        import numpy as np

        n = len(labels)
        if n == 0:
            return
        end = self.count + n
        if end > self.images.shape[0]:
            for ds in (self.images, self.labels, self.names):
                if ds is not None:
                    ds.resize(end, axis=0)
        self.images[self.count : end] = images
        self.labels[self.count : end] = labels
        if self.names is not None and names is not None:
            self.names[self.count : end] = names
        from resnetctl.data.images import channel_moments

        self.moments += channel_moments(images) if moments is None else moments
        self.pixels += n * self.size * self.size
        labels = np.asarray(labels)
        labelled = labels[labels >= 0]
        if labelled.size:
            counts = np.bincount(labelled, minlength=len(self.class_counts))
            counts[: len(self.class_counts)] += self.class_counts
            self.class_counts = counts
        self.count = end

    def close(self) -> None:
        try:
            for ds in (self.images, self.labels, self.names):
                if ds is not None:
                    ds.resize(self.count, axis=0)
            self.file.attrs["format_version"] = FORMAT_VERSION
        finally:
            self.file.close()

    def abort(self) -> None:
        """Close a file that is being discarded after a failure, whatever the failure was.

        On a full disk HDF5's closing writes fail too, the handle stays open, and the interpreter
        later prints h5py ``__dealloc__`` tracebacks and can segfault at exit. The file's blocks
        are freed first (it is truncated: it is thrown away anyway), so those few writes fit."""
        import os

        if not self.file.id.valid:
            return
        with contextlib.suppress(OSError):
            os.truncate(self.path, 0)
        for _ in range(3):
            try:
                self.file.close()
            except Exception:  # noqa: BLE001 - retried; the file is deleted by the caller either way
                continue
            if not self.file.id.valid:
                return

    def mean_std(self) -> tuple[list[float], list[float]]:
        import numpy as np

        pixels = max(self.pixels, 1)
        mean = self.moments[0] / pixels
        std = np.sqrt(np.maximum(self.moments[1] / pixels - mean**2, 0.0))
        return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


@dataclass(frozen=True)
class DatasetInfo:
    """A prepared dataset: where it is and what its meta.json says."""

    name: str
    path: Path
    meta: dict

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def mean(self) -> list[float]:
        return self.meta["mean"]

    @property
    def std(self) -> list[float]:
        return self.meta["std"]

    @property
    def splits(self) -> dict[str, int]:
        return {name: s["count"] for name, s in self.meta["splits"].items()}

    def split_path(self, split: str) -> Path:
        if split not in self.meta["splits"]:
            have = ", ".join(self.meta["splits"]) or "none"
            guess = near_miss(split, list(self.meta["splits"]))
            hint = (f"did you mean --split {guess}? " if guess else "") + f"it has: {have}"
            raise DatasetError(f"Dataset {self.name!r} has no split {split!r}", hint=hint)
        return self.path / f"{split}.h5"

    def is_labelled(self, split: str) -> bool:
        return bool(self.meta["splits"][split].get("labelled", True))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with a meta.json's fields (the field and what it holds), or None."""
    size, classes, splits = meta.get("image_size"), meta.get("classes"), meta.get("splits")
    if not (_is_int(size) and 8 <= size <= MAX_IMAGE_SIZE):
        return f"`image_size` must be a whole number of pixels in 8..{MAX_IMAGE_SIZE}. Received: {size!r}"
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)):
        return f"`classes` must be a list of 2 or more names (strings). Received: {str(classes)[:80]}"
    if len(set(classes)) != len(classes):
        return "`classes` names a class twice"
    ids = meta.get("class_ids")
    if ids is not None and not (
        isinstance(ids, list) and len(ids) == len(classes) and all(isinstance(i, str) for i in ids)
    ):
        return "`class_ids` must be a list of strings, one per class"
    for key, low in (("mean", 0), ("std", 1e-6)):  # in pixel units; a std of 0 would divide by zero
        value = meta.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) and low <= v <= 255 for v in value)):
            return f"`{key}` must be 3 numbers in {low}..255, one per channel. Received: {str(value)[:80]}"
    if not (isinstance(splits, dict) and "train" in splits):
        return "`splits` must be an object with a `train` split"
    for name, split in splits.items():
        if not (isinstance(split, dict) and _is_int(split.get("count")) and split["count"] >= 1):
            return f"`splits.{name}.count` must be a whole number >= 1"
        if not isinstance(split.get("labelled", True), bool):
            return f"`splits.{name}.labelled` must be true or false"
    if not isinstance(meta.get("skipped", []), list):
        return "`skipped` must be a list"
    return None


def _read_meta(path: Path) -> dict:
    """meta.json, checked for what the rest of the tool relies on."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{path / META} is unreadable ({exc})", hint="prepare the dataset again with --force"
        ) from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise DatasetError(
            f"{path} has dataset format {version}, this resnetctl reads {FORMAT_VERSION}",
            hint="prepare it again with --force",
        )
    problem = _meta_problem(meta)
    if problem:
        raise DatasetError(f"{path / META}: {problem}", hint="prepare the dataset again with --force")
    return meta


def dataset_rows(data_dir: str | Path | None = None) -> list[dict]:
    """What ``prepare --list`` shows: a row per readable dataset."""
    return [
        {"name": d.name, "splits": d.splits, "image_size": d.image_size, "classes": d.num_classes, "path": str(d.path)}
        for d in list_datasets(data_dir)
    ]


def list_datasets(data_dir: str | Path | None = None) -> list[DatasetInfo]:
    """Readable datasets under the data dir; a damaged one is skipped with a warning."""
    root = paths.check_folder(paths.data_dir(data_dir), "Data dir")
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and (child / META).is_file():
            try:
                found.append(DatasetInfo(child.name, child, _read_meta(child)))
            except DatasetError as exc:
                log.warning("skipped %s", exc.message)
    return found


# what ``prepare`` makes; kept here (no import of the readers) so a near-miss can name the command
PREPARE_KINDS = ("shapes", "cifar10", "cifar100", "tiny-imagenet", "folder")


def near_miss(word: str, choices) -> str | None:
    """The choice ``word`` most likely meant (``cifar-10`` -> ``cifar10``, ``validation`` -> ``val``)."""
    import difflib

    squash = {c.replace("-", "").replace("_", "").lower(): c for c in choices}
    key = str(word).replace("-", "").replace("_", "").lower()
    if key in squash:
        return squash[key]
    if key.startswith("valid") and "val" in choices:
        return "val"
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def open_dataset(name_or_path: str | Path | None, data_dir: str | Path | None = None) -> DatasetInfo:
    """Find a prepared dataset by name (under the data dir) or by its folder path; ``None``: the
    only one prepared (with several, the user names one)."""
    if name_or_path is None:
        return only_dataset(data_dir)
    candidate = Path(name_or_path).expanduser()
    if not (candidate / META).is_file():
        candidate = paths.data_dir(data_dir) / str(name_or_path)
    if not (candidate / META).is_file():
        root = paths.check_folder(paths.data_dir(data_dir), "Data dir")
        names = [d.name for d in list_datasets(data_dir)]
        guess = near_miss(str(name_or_path), names)
        if guess:
            hint = f"did you mean --dataset {guess}? prepared: {', '.join(names)}"
        else:
            kind = near_miss(str(name_or_path), PREPARE_KINDS)
            prepare = (
                shlex.join(["resnetctl", "prepare", kind, "--data-dir", str(root)])
                if kind and kind != "folder"
                else None
            )
            hint = f"prepared: {', '.join(names) or 'none yet'}" + (f"; make it with: {prepare}" if prepare else "")
        raise DatasetError(f"No prepared dataset {str(name_or_path)!r} in {root}", hint=hint)
    return DatasetInfo(candidate.name, candidate, _read_meta(candidate))


def only_dataset(data_dir: str | Path | None = None) -> DatasetInfo:
    """The default ``--dataset``: the one prepared dataset; none or several is a clear question."""
    root = paths.data_dir(data_dir)
    found = list_datasets(data_dir)
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(
            f"No prepared dataset in {root}",
            hint="prepare one first, e.g. the built-in demo: "
            + shlex.join(["resnetctl", "prepare", "shapes", "--data-dir", str(root)]),
        )
    raise DatasetError(
        f"{len(found)} prepared datasets in {root}; say which with --dataset",
        hint="prepared: " + ", ".join(d.name for d in found),
    )


def fits_in_memory(info: DatasetInfo, split: str = "train", fraction: float = 0.25) -> bool:
    """Whether ``split`` takes under ``fraction`` of the machine's memory (then it is held there)."""
    import os

    size = info.image_size
    need = info.splits[split] * size * size * 3
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 << 30
    return need < fraction * total


def open_run_dataset(record: dict, data_dir: str | Path | None = None) -> DatasetInfo:
    """The dataset a run (its config.json ``record``) trained on: under ``data_dir`` when given,
    else where the run found it, by name and then by the folder it recorded."""
    if data_dir is not None:
        return open_dataset(record["dataset"], data_dir)
    try:
        return open_dataset(record["dataset"], record.get("data_dir"))
    except DatasetError:
        recorded = (record.get("dataset_info") or {}).get("path")
        if recorded and (Path(recorded) / META).is_file():
            return open_dataset(recorded)
        raise


def load_dataset(
    name_or_path: str | Path, split: str = "train", data_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One split in memory: ``(images uint8 (N,H,W,3), labels int32 (N,))``."""
    return read_split(open_dataset(name_or_path, data_dir), split)


def check_split(info: DatasetInfo, split: str) -> Path:
    """The split's file, checked against meta.json (an edited image_size, a replaced file)."""
    import h5py

    path = info.split_path(split)
    try:
        with h5py.File(path, "r") as f:
            shape, count, dtype = f["images"].shape, f["labels"].shape[0], str(f["images"].dtype)
            labels = f["labels"][...]  # 4 bytes an image: checked whole, against the class count
    except (OSError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DatasetError(f"Cannot read {path}: {exc}", hint="prepare it again with --force") from None
    want = (info.image_size, info.image_size, 3)
    if tuple(shape[1:]) != want or shape[0] != count or count != info.splits[split]:
        raise DatasetError(
            f"{path} holds {shape[0]} images of {tuple(shape[1:])}, but meta.json says {info.splits[split]} of {want}",
            hint="prepare it again with --force",
        )
    if dtype != "uint8" or labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DatasetError(f"{path} holds {dtype} images and {labels.dtype} labels; resnetctl writes uint8 and int32")
    low, high = (0, info.num_classes - 1) if info.is_labelled(split) else (-1, -1)
    if labels.size and (labels.min() < low or labels.max() > high):
        bad = labels.min() if labels.min() < low else labels.max()
        what = f"classes 0..{high} of meta.json" if info.is_labelled(split) else "-1 (unlabelled)"
        raise DatasetError(
            f"{path} holds label {bad}, outside {what}",
            hint="prepare it again with --force (meta.json and the split must come from one prepare)",
        )
    return path


def read_split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    path = check_split(info, split)
    try:
        with h5py.File(path, "r") as f:
            return f["images"][...], f["labels"][...]
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}", hint="prepare it again with --force") from None


def normalization_stats(info: DatasetInfo, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, std) a model normalises its input with, 0-255 scale: ``channel`` from meta.json;
    ``channel-mean`` the same mean and a std of 1 (the from-scratch project's Tiny ImageNet);
    ``pixel-mean`` the train split's mean image and a std of 1 (He et al. 2015, the project's
    CIFAR); ``pixel`` the mean and std images. The per-pixel ones are read from train.h5 in
    blocks, in float64."""
    import h5py
    import numpy as np

    if kind in ("channel", "channel-mean"):
        mean = np.asarray(info.mean, np.float32)
        return mean, (np.asarray(info.std, np.float32) if kind == "channel" else np.ones(3, np.float32))
    path = check_split(info, "train")
    try:
        with h5py.File(path, "r") as f:
            images = f["images"]
            total, squares = np.zeros(images.shape[1:]), np.zeros(images.shape[1:])
            step = max(1, images.chunks[0] if images.chunks else 1024) * 16
            for start in range(0, len(images), step):
                block = images[start : start + step].astype(np.float64)
                total += block.sum(axis=0)
                squares += np.square(block).sum(axis=0)
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}", hint="prepare it again with --force") from None
    count = max(len(images), 1)
    mean = total / count
    if kind == "pixel-mean":
        return mean.astype(np.float32), np.ones_like(mean, np.float32)
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def read_filenames(info: DatasetInfo, split: str) -> list[str] | None:
    import h5py

    with h5py.File(info.split_path(split), "r") as f:
        if "filenames" not in f:
            return None
        return [n.decode() if isinstance(n, bytes) else n for n in f["filenames"][...]]

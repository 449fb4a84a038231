"""``resnetctl prepare``: any supported source -> a dataset dir, written whole or not at all.

Everything is written into a hidden temporary folder beside the target and renamed into place
at the end, so an interrupted or failed run (Ctrl+C, crash, full disk) leaves nothing that
looks finished; the next run removes the leftovers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnetctl import __version__, atomic, locks, paths
from resnetctl.data import store
from resnetctl.data.decode import decode_blocks
from resnetctl.data.images import BadImage, image_dimensions, resize_center_crop
from resnetctl.data.records import ArrayRecords, FileRecords, Records, SourceData, stratified_split
from resnetctl.errors import DatasetError, Stopped, is_disk_full
from resnetctl.hooks import PrepareProgress
from resnetctl.signals import stop_on_signals


@dataclass(frozen=True)
class Download:
    url: str
    md5: str


DOWNLOADS = {
    "cifar10": Download("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": Download(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"
    ),
    "tiny-imagenet": Download("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),
}
KINDS = ("shapes", "cifar10", "cifar100", "tiny-imagenet", "folder")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(kind: str) -> Path:
    import keras

    spec = DOWNLOADS[kind]
    try:
        return Path(
            keras.utils.get_file(
                fname=spec.url.rsplit("/", 1)[-1],
                origin=spec.url,
                file_hash=spec.md5,
                hash_algorithm="md5",
                cache_dir=str(paths.download_cache_dir()),
                cache_subdir="downloads",
            )
        )
    except Exception as exc:  # network errors and checksum mismatches alike
        raise DatasetError(
            f"Could not download {kind} from {spec.url} ({exc})",
            hint=f"download it yourself and pass --source FILE (md5 {spec.md5})",
        ) from None


def _read_source(kind: str, source: Path | None, seed: int, labels: Path | None = None) -> SourceData:
    if kind == "shapes":
        from resnetctl.data.shapes import generate_shapes

        return generate_shapes(seed=seed)
    if source is None:
        raise DatasetError(f"`prepare {kind}` needs --source DIR", hint="one subfolder per class")
    if kind in ("cifar10", "cifar100"):
        from resnetctl.data.cifar import read_cifar

        return read_cifar(kind, source)
    from resnetctl.data.archive import FileTree
    from resnetctl.data.layout import read_labelled, tiny_imagenet_root
    from resnetctl.data.tiny_imagenet import read_tiny_imagenet

    if kind == "tiny-imagenet" or (
        labels is None and source.is_dir() and tiny_imagenet_root(FileTree(source)) is not None
    ):  # `prepare folder` of the unpacked Tiny ImageNet tree reads it as Tiny ImageNet
        return read_tiny_imagenet(source)
    if labels is not None:
        return read_labelled(source, labels)
    from resnetctl.data.folder import read_folder

    return read_folder(source)


def _common_square_size(data: SourceData) -> int | None:
    """N when every image file whose header gives its size is NxN (a folder of CIFAR-10 JPEGs is
    read as it is, at 32), else None: then --size decides. Headers only, no decoding; stops at the
    first image of another size. Files without a readable header are left to the writer."""
    sizes = set()
    for records in data.splits.values():
        if not isinstance(records, FileRecords):
            return None
        for name in records.names:
            try:
                dims = image_dimensions(records.read(name))
            except (BadImage, OSError, ValueError):  # the writer skips it and says why
                continue
            if dims is not None:
                sizes.add(dims)
                if len(sizes) > 1 or dims[0] != dims[1]:
                    return None
    return sizes.pop()[0] if sizes else None


def _carve_splits(data: SourceData, val_split: float, test_split: float, rng) -> dict[str, Records]:
    """Add a stratified ``val`` (and for folders a ``test``) carved from ``train``."""
    splits = dict(data.splits)
    if "test" not in splits and test_split > 0:
        kept, carved = stratified_split(splits["train"].labels, test_split, rng)
        splits["test"] = splits["train"].subset(carved)
        splits["train"] = splits["train"].subset(kept)
    if "val" not in splits and val_split > 0:
        kept, carved = stratified_split(splits["train"].labels, val_split, rng)
        splits["val"] = splits["train"].subset(carved)
        splits["train"] = splits["train"].subset(kept)
    order = ["train", "val", "test", "unlabelled"]
    return {s: splits[s] for s in order if s in splits and len(splits[s])}


def _write_split(
    records: Records, path: Path, size: int, progress: PrepareProgress, workers: int | None, signals: dict
) -> tuple[store.SplitWriter, list[dict]]:
    is_files = isinstance(records, FileRecords)
    writer = store.SplitWriter(path, size, len(records), store_names=is_files)
    skipped: list[dict] = []
    # blocks of whole chunks, about 4 MiB: few enough for the decode workers' hand-offs not to show
    block = writer.chunk * max(1, (4 << 20) // (writer.chunk * size * size * 3))
    blocks = [np.arange(i, min(len(records), i + block)) for i in range(0, len(records), block)]
    try:  # closed in order here, on every path: a handle left open crashed the interpreter at exit
        if isinstance(records, ArrayRecords):
            for index in blocks:
                images = records.images[index]
                if images.shape[1:3] != (size, size):
                    images = np.stack([resize_center_crop(im, size) for im in images])
                writer.append(images, records.labels[index])
                progress.advance(len(index))
                _check(signals)
        else:
            with contextlib.closing(decode_blocks(records, blocks, size, workers)) as decoded:
                for index, (images, keep, bad, moments) in zip(blocks, decoded, strict=True):
                    writer.append(images, records.labels[keep], [records.names[i] for i in keep], moments)
                    skipped.extend(bad)
                    progress.advance(len(index))
                    _check(signals)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer, skipped


def _check(signals: dict) -> None:
    if signals["signal"]:
        raise Stopped(
            f"prepare stopped by {signals['signal']}; nothing was kept", hint="run the same command again to start over"
        )


def _check_target(target: Path, source: Path | None, force: bool) -> None:
    """Refuse to touch what the tool did not make, and a target that overlaps the source."""
    if source is not None:
        s, t = source.resolve(), target.resolve()
        if s == t or s in t.parents or t in s.parents:
            raise DatasetError(
                f"The dataset would be written at {target}, which overlaps the source {source}",
                hint="pick another --name or --data-dir",
            )
    if store.made_by_resnetctl(target):
        if not force:
            raise DatasetError(
                f"Dataset {target.name!r} is already prepared at {target}",
                hint="pass --force to replace it (the old one stays until the new one is complete)",
            )
        extra = store.foreign_files(target)
        if extra:
            raise DatasetError(
                f"{target} also holds {len(extra)} file(s) that resnetctl did not write, e.g. {extra[0]}; "
                "--force would delete them, so nothing was changed",
                hint="move them out of the dataset folder first",
            )
    elif target.exists() or target.is_symlink():
        raise DatasetError(
            f"{target} exists and is not a dataset made by resnetctl; it is left untouched",
            hint="pick another --name, or move it away",
        )


def _check_every_class_trains(classes: list[str], counts: np.ndarray, source) -> None:
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if len(classes) < 2:
        raise DatasetError(f"{source} has {len(classes)} class; a classifier needs 2 or more")
    if empty:
        raise DatasetError(
            f"No usable training image of class(es) {', '.join(empty[:10])} in {source}",
            hint="add images, or lower --val-split / --test-split",
        )


def prepare_dataset(
    kind: str,
    source: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    val_split: float = 0.1,
    test_split: float = 0.1,
    size: int | None = None,
    force: bool = False,
    seed: int = 0,
    checksum: str | None = None,
    workers: int | None = None,
    progress: PrepareProgress | None = None,
    labels: str | os.PathLike | None = None,
) -> store.DatasetInfo:
    """Turn an official archive, a folder, or the generated demo into a dataset dir.
    ``labels``: for a flat folder, a CSV of ``file,label`` (``prepare folder --labels``)."""
    if kind not in KINDS:
        raise DatasetError(f"Unknown dataset kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    for label, value in (("--val-split", val_split), ("--test-split", test_split)):
        if not 0 <= value < 1:
            raise DatasetError(f"{label} must be in [0, 1). Received: {value}")
    if size is not None and not 8 <= size <= store.MAX_IMAGE_SIZE:
        raise DatasetError(f"--size must be between 8 and {store.MAX_IMAGE_SIZE} pixels. Received: {size}")
    progress = progress or PrepareProgress()
    source_path = Path(source).expanduser() if source else None
    if kind == "folder" and source_path is None:
        raise DatasetError("`prepare folder` needs --source DIR", hint="one subfolder per class")
    labels_path = Path(labels).expanduser() if labels else None
    if labels_path is not None and kind != "folder":
        raise DatasetError(f"--labels is for `prepare folder`, not {kind}")
    if labels_path is not None and not labels_path.is_file():
        raise DatasetError(f"--labels {labels_path}: no such file")
    if source_path is not None and not source_path.exists():
        raise DatasetError(f"Source {source_path} does not exist")
    if source_path is not None and not (source_path.is_dir() or source_path.is_file()):
        from resnetctl.data.images import file_kind

        kind_of = file_kind(source_path.stat().st_mode)
        raise DatasetError(f"Source {source_path} is {kind_of}, not an archive or a folder; it was not opened")
    name = paths.check_name(name or (source_path.name if kind == "folder" else kind), "Dataset")
    root = paths.check_folder(paths.data_dir(data_dir), "Data dir")
    target = root / name
    _check_target(target, source_path, force)
    if source_path is None and kind in DOWNLOADS:
        source_path = _download(kind)

    digest = None
    algorithm = "md5" if checksum and len(checksum) == 32 else "sha256"
    if source_path is not None and source_path.is_file():
        digest = file_digest(source_path, algorithm)
        if checksum and digest != checksum.lower():
            raise DatasetError(
                f"Checksum mismatch for {source_path}: expected {checksum}, got {digest}",
                hint="the file is damaged or not the one you meant; download it again",
            )
    data = _read_source(kind, source_path, seed, labels_path)
    image_size = int(size or data.image_size or _common_square_size(data) or 0)
    if not image_size:
        raise DatasetError(
            f"Images in {source_path} come in various sizes",
            hint="pass --size N to resize them to NxN (e.g. --size 64)",
        )
    rng = np.random.default_rng(seed)
    splits = _carve_splits(data, val_split, test_split if kind == "folder" else 0.0, rng)
    _check_every_class_trains(
        data.classes, np.bincount(splits["train"].labels, minlength=len(data.classes)), source_path or kind
    )

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"Cannot create the data dir {root} ({exc.strerror or exc})") from None
    with locks.exclusive(target, "Dataset"), stop_on_signals() as signals:
        _check_target(target, source_path, force)  # again, now that no other prepare can change it
        atomic.remove_stale_temps(root, name)  # ours by name, and their writer is gone: we hold the lock
        tmp = atomic.temp_sibling(target)
        tmp.mkdir()
        try:
            meta_splits, skipped, train_writer = {}, list(data.skipped), None
            for split, records in splits.items():
                if split in ("train", "val"):  # consecutive images of mixed classes for streaming
                    records = records.subset(rng.permutation(len(records)))
                progress.start_split(split, len(records))
                writer, bad = _write_split(records, tmp / f"{split}.h5", image_size, progress, workers, signals)
                progress.end_split(split, writer.count, len(bad))
                skipped.extend(bad)
                if writer.count == 0:
                    raise DatasetError(
                        f"No usable image in the {split} split of {source_path}", hint="see the skipped files above"
                    )
                labelled = split != "unlabelled"
                meta_splits[split] = {"count": writer.count, "labelled": labelled}
                if labelled:
                    counts = np.zeros(len(data.classes), np.int64)
                    counts[: len(writer.class_counts)] = writer.class_counts
                    meta_splits[split]["class_counts"] = counts.tolist()
                if split == "train":
                    _check_every_class_trains(data.classes, counts, source_path)
                    train_writer = writer
            mean, std = train_writer.mean_std()
            meta = {
                "format_version": store.FORMAT_VERSION,
                "name": name,
                "kind": kind,
                "layout": data.kind,  # what was recognised: class-folders, split-folders, labels-csv, tiny-imagenet...
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "resnetctl_version": __version__,
                "source": {
                    "path": str(source_path) if source_path else None,
                    **({"labels": str(labels_path)} if labels_path else {}),
                    "checksum": digest,
                    "checksum_algorithm": algorithm if digest else None,
                },
                "image_size": image_size,
                "classes": data.classes,
                "class_ids": data.class_ids,
                "mean": mean,
                "std": std,
                "splits": meta_splits,
                "val_split": val_split,
                "seed": seed,
                "skipped": skipped,
                "ignored_files": len(data.ignored),
            }
            atomic.write_json(tmp / store.MARKER, {"made_by": "resnetctl", "format_version": store.FORMAT_VERSION})
            atomic.write_json(tmp / store.META, meta)
            if target.exists():
                old = target.with_name(f".{name}{atomic.TEMP_MARK}old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except (OSError, RuntimeError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(exc):
                raise DatasetError(
                    f"Disk full while writing {name} in {root}", hint="free some space or choose --data-dir elsewhere"
                ) from None
            if isinstance(exc, RuntimeError):
                raise
            raise DatasetError(f"Cannot write {name} in {root}: {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return store.open_dataset(target)

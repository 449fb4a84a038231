"""Which layout a folder of images is in, for ``prepare folder``: the layouts people have.

- class folders: ``DIR/<class>/<image>`` (torchvision's ``ImageFolder``);
- split folders: ``DIR/train/<class>/...`` with ``val/`` (or ``validation/``) and ``test/``
  beside it, each with the same class subfolders (``image_dataset_from_directory`` per split);
  the splits found are kept, the missing ones carved from train;
- a flat folder with a labels file: ``--labels FILE.csv`` with a ``file,label`` header;
- the unpacked Tiny ImageNet tree (``wnids.txt``, ``train/<wnid>/images/``, ``val/images/`` +
  ``val_annotations.txt``), read as ``prepare tiny-imagenet`` reads it.

Anything else is refused with one line saying what was expected: never a silent train-only
dataset (the unpacked Tiny ImageNet tree once became one).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from resnetctl.data.archive import FileTree
from resnetctl.data.images import is_image_file
from resnetctl.data.records import FileRecords, SourceData
from resnetctl.errors import DatasetError

# a top-level folder name -> the split it holds
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
EXPECTED = (
    "expected DIR/<class>/<image>, split folders DIR/train|val|test/<class>/<image>, the unpacked "
    "Tiny ImageNet tree, or a flat folder with --labels FILE.csv (header file,label)"
)


def tiny_imagenet_root(tree: FileTree) -> str | None:
    """The prefix of an unpacked Tiny ImageNet tree (``''`` or ``'tiny-imagenet-200/'``), if any."""
    for name in tree.names():
        if name.rsplit("/", 1)[-1] == "wnids.txt" and name.count("/") <= 1:
            root = name[: -len("wnids.txt")]
            if any(n.startswith(f"{root}train/") for n in tree.names()):
                return root
    return None


def split_prefixes(source: Path, top: list[str]) -> dict[str, str]:
    """``{split: prefix}`` of a folder whose top-level folders are ``top``: split folders, or
    class folders (``{"train": ""}``). A mix of both is refused."""
    splits = [t for t in top if t.lower() in SPLIT_NAMES]
    if "train" not in [t.lower() for t in splits]:
        if splits and len(splits) == len(top):
            raise DatasetError(f"{source} has {', '.join(f'{s}/' for s in splits)} but no train/", hint=EXPECTED)
        return {"train": ""}
    others = [t for t in top if t.lower() not in SPLIT_NAMES]
    if others:
        raise DatasetError(
            f"{source} has train/ beside other folders ({', '.join(others[:5])}): neither split folders nor class "
            "folders",
            hint=EXPECTED,
        )
    prefixes: dict[str, str] = {}
    for folder in splits:
        split = SPLIT_NAMES[folder.lower()]
        if split in prefixes:
            raise DatasetError(f"{source} has two folders for the {split} split: {prefixes[split]} and {folder}/")
        prefixes[split] = f"{folder}/"
    return prefixes


def check_split_classes(source: Path, split: str, prefix: str, unknown: dict[str, int], classes: list[str]) -> None:
    """Images of a split under folders that are not train's classes (``val/images/...`` of a
    Tiny ImageNet tree whose wnids.txt is gone) are refused, not dropped."""
    if unknown:
        folders = ", ".join(
            f"{prefix}{name}/ ({count})" if name else f"{prefix} itself ({count})"
            for name, count in sorted(unknown.items())[:5]
        )
        raise DatasetError(
            f"{source}: images of the {split} split in folders that are not classes of train/: {folders}",
            hint=f"expected {prefix}<class>/<image> with train's class names (e.g. {prefix}{classes[0]}/)",
        )


def read_labelled(source: Path, labels: Path) -> SourceData:
    """A flat folder and a CSV with a ``file,label`` header (file relative to the folder)."""
    if not source.is_dir():
        raise DatasetError(f"{source} is not a folder", hint="--labels names the images of a folder")
    try:
        text = labels.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read --labels {labels} ({getattr(exc, 'strerror', None) or exc})") from None
    rows = list(csv.reader(io.StringIO(text)))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header[:2] != ["file", "label"]:
        raise DatasetError(
            f"--labels {labels} must start with the header file,label. Received: {','.join(rows[0]) if rows else ''}"
        )
    tree = FileTree(source)
    have = set(tree.names())
    names, label_names, seen = [], [], {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"--labels {labels} line {number}: expected file,label. Received: {','.join(row)}")
        name, label = row[0].strip().replace("\\", "/").removeprefix("./"), row[1].strip()
        if name in seen:
            raise DatasetError(f"--labels {labels} line {number}: {name} is listed again (first on line {seen[name]})")
        if name not in have:
            raise DatasetError(f"--labels {labels} line {number}: no file {name} in {source}")
        if not is_image_file(name):
            raise DatasetError(f"--labels {labels} line {number}: {name} is not an image file")
        seen[name] = number
        names.append(name)
        label_names.append(label)
    if not names:
        raise DatasetError(f"--labels {labels} lists no images")
    classes = sorted(set(label_names))
    index = {c: i for i, c in enumerate(classes)}
    left = sorted(n for n in have - set(names) if not n.rsplit("/", 1)[-1].startswith("."))
    # an image the CSV does not name has no label: listed as skipped (said, and kept in meta.json),
    # never dropped in silence among the non-image files
    unlisted = [
        {"file": n, "reason": f"an image not listed in --labels {labels.name}"} for n in left if is_image_file(n)
    ]
    records = FileRecords(names, np.asarray([index[c] for c in label_names], np.int32), tree.read)
    return SourceData(
        kind="labels-csv",
        classes=classes,
        splits={"train": records},
        ignored=[n for n in left if not is_image_file(n)],
        skipped=[*tree.skipped, *unlisted],
    )

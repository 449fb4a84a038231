"""A folder of labelled images: one subfolder per class (optionally under train/ val/ test/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resnetctl.data.archive import FileTree
from resnetctl.data.images import is_image_file
from resnetctl.data.records import FileRecords, SourceData
from resnetctl.errors import DatasetError

SPLIT_FOLDERS = ("train", "val", "test")


def _class_folders(tree: FileTree, prefix: str) -> list[str]:
    found = set()
    for name in tree.names():
        if name.startswith(prefix):
            parts = name[len(prefix) :].split("/")
            if len(parts) >= 2 and not parts[0].startswith("."):
                found.add(parts[0])
    return sorted(found)


def read_folder(source: Path) -> SourceData:
    if not source.is_dir():
        raise DatasetError(f"{source} is not a folder", hint="pass a folder with one subfolder of images per class")
    tree = FileTree(source)
    top = _class_folders(tree, "")
    presplit = "train" in top and set(top) <= set(SPLIT_FOLDERS)
    prefixes = {s: f"{s}/" for s in SPLIT_FOLDERS if s in top} if presplit else {"train": ""}
    classes = _class_folders(tree, prefixes["train"])
    if not classes:
        raise DatasetError(
            f"{source} has no class subfolders",
            hint="expected <folder>/<class>/<image> (or train/<class>/<image>)",
        )
    index = {c: i for i, c in enumerate(classes)}

    splits, ignored = {}, []
    for split, prefix in prefixes.items():
        names, labels = [], []
        for name in tree.names():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            if len(parts) < 2 or parts[0] not in index:
                if not any(p.startswith(".") for p in parts):
                    ignored.append(name)
                continue
            if is_image_file(name):
                names.append(name)
                labels.append(index[parts[0]])
            elif not parts[-1].startswith("."):
                ignored.append(name)
        splits[split] = FileRecords(names, np.asarray(labels, np.int32), tree.read)
    counts = np.bincount(splits["train"].labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise DatasetError(
            f"{source}: no images in class folder(s) {', '.join(empty)}", hint="remove the empty folders or add images"
        )
    return SourceData(kind="folder", classes=classes, splits=splits, ignored=ignored, skipped=tree.skipped)

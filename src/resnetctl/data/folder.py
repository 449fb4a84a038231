"""A folder of labelled images: one subfolder per class (optionally under train/ val/ test/;
which layout a folder is in is decided in :mod:`resnetctl.data.layout`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resnetctl.data.archive import FileTree
from resnetctl.data.images import is_image_file
from resnetctl.data.layout import EXPECTED, check_split_classes, split_prefixes
from resnetctl.data.records import FileRecords, SourceData
from resnetctl.errors import DatasetError


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
    prefixes = split_prefixes(source, top)
    classes = _class_folders(tree, prefixes["train"])
    if not classes:
        raise DatasetError(
            f"{source}{'/' + prefixes['train'] if prefixes['train'] else ''} has no class subfolders", hint=EXPECTED
        )
    index = {c: i for i, c in enumerate(classes)}

    splits, ignored = {}, []
    # an image that is in no class folder has no label: listed as skipped, never dropped in silence
    loose = [
        {"file": n, "reason": "an image outside the split folders (train/ val/ test/); it has no split"}
        for n in tree.names()
        if "/" not in n and is_image_file(n) and not n.startswith(".") and prefixes["train"]
    ]
    for split, prefix in prefixes.items():
        names, labels, unknown = [], [], {}
        for name in tree.names():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            if len(parts) < 2 or parts[0] not in index:
                if not any(p.startswith(".") for p in parts):
                    if split == "train" and len(parts) < 2 and is_image_file(name):
                        loose.append({"file": name, "reason": "an image outside the class folders; it has no class"})
                        continue
                    ignored.append(name)
                    if is_image_file(name) and (len(parts) >= 2 or split != "train"):
                        where = parts[0] if len(parts) >= 2 else ""  # "": loose in the split's folder
                        unknown[where] = unknown.get(where, 0) + 1
                continue
            if is_image_file(name):
                names.append(name)
                labels.append(index[parts[0]])
            elif not parts[-1].startswith("."):
                ignored.append(name)
        check_split_classes(source, split, prefix, unknown, classes)
        splits[split] = FileRecords(names, np.asarray(labels, np.int32), tree.read)
    counts = np.bincount(splits["train"].labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise DatasetError(
            f"{source}: no images in class folder(s) {', '.join(empty)}", hint="remove the empty folders or add images"
        )
    kind = "split-folders" if prefixes["train"] else "class-folders"
    return SourceData(kind=kind, classes=classes, splits=splits, ignored=ignored, skipped=[*tree.skipped, *loose])

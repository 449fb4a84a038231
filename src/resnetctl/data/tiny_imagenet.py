"""Tiny ImageNet (``tiny-imagenet-200.zip`` or its folder), split as the reproduced project did:

the official labelled val set becomes our ``test``, ``val`` is carved from train (by
``prepare``), and the unlabelled official test images are kept as the ``unlabelled`` split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resnetctl.data.archive import FileTree
from resnetctl.data.images import is_image_file
from resnetctl.data.records import UNLABELLED, FileRecords, SourceData
from resnetctl.errors import DatasetError


def _class_names(tree: FileTree, root: str, wnids: list[str]) -> list[str]:
    """Short names from words.txt (first synonym), the wnid where words.txt lacks one."""
    words = {}
    if f"{root}words.txt" in tree.names():
        for line in tree.read_text(f"{root}words.txt").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    return [words.get(w) or w for w in wnids]


def read_tiny_imagenet(source: Path) -> SourceData:
    tree = FileTree(source)
    root = tree.locate("wnids.txt")
    wnids = [w.strip() for w in tree.read_text(f"{root}wnids.txt").splitlines() if w.strip()]
    if not wnids:
        raise DatasetError(f"{source}: wnids.txt lists no classes")
    twice = sorted({w for w in wnids if wnids.count(w) > 1})
    if twice:
        raise DatasetError(f"{source}: wnids.txt lists {twice[0]} more than once", hint="each class once, one a line")
    index = {w: i for i, w in enumerate(wnids)}
    names = tree.names()

    train_names, train_labels, ignored, unlabelled_images = [], [], [], []
    for name in names:
        if not name.startswith(f"{root}train/"):
            continue
        parts = name[len(root) :].split("/")  # train/<wnid>/images/<file>
        if len(parts) == 4 and parts[2] == "images" and parts[1] in index and is_image_file(name):
            train_names.append(name)
            train_labels.append(index[parts[1]])
        elif is_image_file(name) and not parts[-1].startswith("."):  # said, never dropped in silence
            outside = len(parts) < 3 or parts[1] in index
            why = "not in train/<wnid>/images/" if outside else f"not a class of wnids.txt ({parts[1]})"
            unlabelled_images.append({"file": name, "reason": f"an image with no class: {why}"})
        elif not name.endswith("_boxes.txt"):
            ignored.append(name)
    if not train_names:
        raise DatasetError(f"{source}: no images under {root}train/<wnid>/images/", hint="is this tiny-imagenet-200?")

    test_names, test_labels = [], []
    annotations = f"{root}val/val_annotations.txt"
    if annotations in names:
        for line in tree.read_text(annotations).splitlines():
            fields = line.strip().split("\t")
            if len(fields) < 2:
                continue
            if fields[1] not in index:
                raise DatasetError(f"{annotations}: class {fields[1]} of {fields[0]} is not in wnids.txt")
            test_names.append(f"{root}val/images/{fields[0]}")
            test_labels.append(index[fields[1]])
    missing = sorted(set(test_names) - set(names))
    if missing:
        raise DatasetError(
            f"{source}: {len(missing)} images named in val_annotations.txt are missing, e.g. {missing[0]}"
        )

    named = set(test_names)
    unlabelled_images += [
        {"file": n, "reason": "an image of val/images/ that val_annotations.txt does not name"}
        for n in names
        if n.startswith(f"{root}val/images/") and is_image_file(n) and n not in named
    ]
    unlabelled = [n for n in names if n.startswith(f"{root}test/images/") and is_image_file(n)]
    splits = {"train": FileRecords(train_names, np.asarray(train_labels, np.int32), tree.read)}
    if test_names:
        splits["test"] = FileRecords(test_names, np.asarray(test_labels, np.int32), tree.read)
    if unlabelled:
        splits["unlabelled"] = FileRecords(unlabelled, np.full(len(unlabelled), UNLABELLED, np.int32), tree.read)
    return SourceData(
        kind="tiny-imagenet",
        classes=_class_names(tree, root, wnids),
        class_ids=wnids,
        splits=splits,
        image_size=64,
        ignored=ignored,
        skipped=[*tree.skipped, *unlabelled_images],
    )

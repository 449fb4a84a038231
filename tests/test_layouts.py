"""`prepare folder` on the layouts people have: split folders (ImageFolder per split), a flat
folder with a labels CSV, the unpacked Tiny ImageNet tree; and layouts it can't read, refused."""

from __future__ import annotations

import json
import zipfile

import cv2
import h5py
import numpy as np
import pytest

from resnetctl.data.prepare import prepare_dataset
from resnetctl.errors import DatasetError
from tests.helpers import TINY_MINI, one_line_error, run_cli

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _image(path, rgb, seed):
    """A 12x12 PNG of one colour with a little noise: its class can be read back from its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 20, (12, 12, 3))
    image = np.clip(np.asarray(rgb)[None, None, :] * 0.9 + noise, 0, 255).astype(np.uint8)
    assert cv2.imwrite(str(path), image[:, :, ::-1])


def _colour_of(image) -> str:
    return list(COLOURS)[int(np.argmax(image.reshape(-1, 3).mean(0)))]


def _h5(path):
    with h5py.File(path, "r") as f:
        return f["images"][...], f["labels"][...], [n.decode() for n in f["filenames"][...]]


def _unpack_tiny(tmp_path):
    with zipfile.ZipFile(TINY_MINI) as z:
        z.extractall(tmp_path / "unpacked")
    return tmp_path / "unpacked" / "tiny-imagenet-200"


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["folder", "tiny-imagenet"])
def test_unpacked_tiny_imagenet_tree_prepares_with_its_val_split(tmp_path, kind):
    tree = _unpack_tiny(tmp_path)
    data = tmp_path / "data"
    proc = run_cli("prepare", kind, "--source", tree, "--data-dir", data, "--name", "tiny")
    assert "layout: tiny-imagenet" in proc.stdout
    meta = json.loads((data / "tiny" / "meta.json").read_text())
    assert meta["layout"] == "tiny-imagenet"
    counts = {k: v["count"] for k, v in meta["splits"].items()}
    assert counts == {"train": 900, "val": 100, "test": 200, "unlabelled": 100}  # never train-only
    wnids = (tree / "wnids.txt").read_text().split()
    assert meta["class_ids"] == wnids
    annotations = {}
    for line in (tree / "val" / "val_annotations.txt").read_text().splitlines():
        file, wnid = line.split("\t")[:2]
        annotations[file] = wnids.index(wnid)
    _, labels, names = _h5(data / "tiny" / "test.h5")  # the official val: every image, with its label
    assert sorted(n.rsplit("/", 1)[-1] for n in names) == sorted(annotations)
    assert [annotations[n.rsplit("/", 1)[-1]] for n in names] == labels.tolist()


@pytest.mark.e2e
def test_the_folder_above_the_tiny_imagenet_tree_is_recognised_too(tmp_path):
    tree = _unpack_tiny(tmp_path)
    prepare_dataset("folder", tree.parent, name="above", data_dir=tmp_path / "data", workers=1)
    meta = json.loads((tmp_path / "data" / "above" / "meta.json").read_text())
    assert meta["layout"] == "tiny-imagenet" and meta["splits"]["test"]["count"] == 200


@pytest.mark.e2e
@pytest.mark.parametrize("val_folder", ["val", "validation"])
def test_split_folders_keep_their_splits(tmp_path, val_folder):
    source = tmp_path / "photos"
    counts = {"train": 6, val_folder: 3, "test": 2}
    seed = 0
    for split, per_class in counts.items():
        for colour, rgb in COLOURS.items():
            for i in range(per_class):
                seed += 1
                _image(source / split / colour / f"{colour}_{i}.png", rgb, seed)
    proc = run_cli("prepare", "folder", "--source", source, "--data-dir", tmp_path / "data", "--size", 12)
    assert "layout: split-folders" in proc.stdout
    meta = json.loads((tmp_path / "data" / "photos" / "meta.json").read_text())
    assert meta["classes"] == ["blue", "green", "red"]
    assert {k: v["count"] for k, v in meta["splits"].items()} == {"train": 18, "val": 9, "test": 6}  # none carved
    for split, folder in (("train", "train"), ("val", val_folder), ("test", "test")):
        images, labels, names = _h5(tmp_path / "data" / "photos" / f"{split}.h5")
        assert all(n.startswith(f"{folder}/") for n in names)
        assert [meta["classes"][c] for c in labels] == [n.split("/")[1] for n in names]
        assert [_colour_of(im) for im in images] == [n.split("/")[1] for n in names]


@pytest.mark.e2e
def test_split_folders_without_val_get_it_carved_from_train(tmp_path):
    source = tmp_path / "photos"
    for split, per_class in (("train", 10), ("test", 2)):
        for colour, rgb in COLOURS.items():
            for i in range(per_class):
                _image(source / split / colour / f"{i}.png", rgb, i)
    info = prepare_dataset("folder", source, data_dir=tmp_path / "data", size=12, val_split=0.2, workers=1)
    assert info.splits == {"train": 24, "val": 6, "test": 6}


@pytest.mark.e2e
def test_flat_folder_with_a_labels_csv(tmp_path):
    source = tmp_path / "flat"
    rows = ["file,label"]
    for i in range(30):
        colour = list(COLOURS)[i % 3]
        _image(source / f"img_{i:02d}.png", COLOURS[colour], i)
        rows.append(f"img_{i:02d}.png,{colour}")
    (source / "notes.txt").write_text("not an image")
    labels = tmp_path / "labels.csv"
    labels.write_text("\r\n".join(rows) + "\r\n")  # a spreadsheet's CSV
    proc = run_cli(
        "prepare", "folder", "--source", source, "--labels", labels, "--data-dir", tmp_path / "data", "--size", 12
    )
    assert "layout: labels-csv" in proc.stdout
    meta = json.loads((tmp_path / "data" / "flat" / "meta.json").read_text())
    assert meta["classes"] == ["blue", "green", "red"] and meta["source"]["labels"] == str(labels)
    assert sum(v["count"] for v in meta["splits"].values()) == 30
    expected = dict(row.split(",") for row in rows[1:])
    for split in ("train", "val", "test"):
        images, labels_read, names = _h5(tmp_path / "data" / "flat" / f"{split}.h5")
        assert [meta["classes"][c] for c in labels_read] == [expected[n] for n in names]
        assert [_colour_of(im) for im in images] == [expected[n] for n in names]


# ------------------------------------------------------------------ refused, in one line (fast tier)
def _flat(tmp_path, count=4):
    for i in range(count):
        _image(tmp_path / "flat" / f"{i}.png", (255, 0, 0), i)
    return tmp_path / "flat"


def test_a_flat_folder_without_labels_is_refused_in_one_line(tmp_path):
    proc = run_cli("prepare", "folder", "--source", _flat(tmp_path), "--data-dir", tmp_path / "data", check=False)
    one_line_error(proc, 1, "has no class subfolders")
    assert "--labels FILE.csv" in proc.stderr and "split folders" in proc.stderr
    assert not (tmp_path / "data" / "flat").exists()


def test_tiny_imagenet_tree_without_wnids_is_refused_not_made_train_only(tmp_path):
    tree = _unpack_tiny(tmp_path)
    (tree / "wnids.txt").unlink()
    with pytest.raises(DatasetError, match=r"split in folders that are not classes of train/: (val|test)/images/"):
        prepare_dataset("folder", tree, data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (["train/red", "extra/red"], "has train/ beside other folders (extra)"),
        (["val/red", "test/red"], "but no train/"),
        (["train/red", "train/blue", "val/purple"], "val/purple/ (1)"),
        (["train/red", "train/blue", "val/red", "validation/red"], "two folders for the val split"),
        (["train/red", "train/blue", "test"], "test split in folders that are not classes of train/: test/ itself (1)"),
    ],
)
def test_layouts_that_cannot_be_read_are_refused(tmp_path, folders, message):
    for i, folder in enumerate(folders):
        _image(tmp_path / "src" / folder / f"{i}.png", (0, 0, 255), i)
    with pytest.raises(DatasetError) as raised:
        prepare_dataset("folder", tmp_path / "src", data_dir=tmp_path / "data", size=12)
    assert message in raised.value.message


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("name,class\n0.png,red\n", "must start with the header file,label"),
        ("file,label\n0.png,red\nmissing.png,red\n", "line 3: no file missing.png"),
        ("file,label\n0.png,red\n0.png,blue\n", "line 3: 0.png is listed again (first on line 2)"),
        ("file,label\n0.png\n", "line 2: expected file,label"),
        ("file,label\n", "lists no images"),
    ],
)
def test_bad_labels_files_are_refused(tmp_path, csv_text, message):
    source = _flat(tmp_path)
    (tmp_path / "labels.csv").write_text(csv_text)
    with pytest.raises(DatasetError) as raised:
        prepare_dataset("folder", source, labels=tmp_path / "labels.csv", data_dir=tmp_path / "data", size=12)
    assert message in raised.value.message


def test_labels_only_for_folders(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\n")
    with pytest.raises(DatasetError, match="--labels is for `prepare folder`"):
        prepare_dataset("cifar10", tmp_path, labels=tmp_path / "labels.csv", data_dir=tmp_path / "data")


def _jpeg(path, side, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


@pytest.mark.slow
def test_a_folder_of_same_size_jpegs_is_read_as_it_is_without_size(tmp_path):
    """The whole CIFAR-10 as JPEG files (train/ and test/ of class folders, every image 32x32):
    `prepare folder` needs no --size; one image of another size brings the refusal back."""
    source = tmp_path / "cifar-10-jpeg"
    for split, per_class in (("train", 6), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(per_class):
                _jpeg(source / split / c / f"{c}_{i}.jpg", 32, i)
    proc = run_cli("prepare", "folder", "--source", source, "--data-dir", tmp_path / "data")
    assert "32px" in proc.stdout
    meta = json.loads((tmp_path / "data" / "cifar-10-jpeg" / "meta.json").read_text())
    assert meta["image_size"] == 32 and {k: v["count"] for k, v in meta["splits"].items()} == {
        "train": 10,
        "val": 2,
        "test": 4,
    }
    _jpeg(source / "train" / "cat" / "big.jpg", 40, 9)
    proc = run_cli("prepare", "folder", "--source", source, "--data-dir", tmp_path / "data2", check=False)
    one_line_error(proc, 1, "come in various sizes")


# ------------------------------------------------------------------ images without a label are said, never dropped
@pytest.mark.parametrize(
    ("layout", "dropped", "reason"),
    [
        ("labels", "unlisted.png", "an image not listed in --labels labels.csv"),
        ("class-folders", "loose.png", "an image outside the class folders"),
        ("split-folders", "train/loose.png", "an image outside the class folders"),
        ("split-folders", "loose.png", "an image outside the split folders"),
    ],
)
def test_an_image_the_layout_gives_no_label_is_listed_as_skipped(tmp_path, layout, dropped, reason):
    """An image of --source that the layout gives no label (not in the CSV, loose beside the class
    or split folders) is listed in meta.json's skipped with why, and said by prepare; it was only
    counted among the ignored non-image files."""
    source, rows = tmp_path / "src", ["file,label"]
    top = "train/" if layout == "split-folders" else ""
    for i in range(12):
        colour = list(COLOURS)[i % 2]
        name = f"{i}.png" if layout == "labels" else f"{top}{colour}/{i}.png"
        _image(source / name, COLOURS[colour], i)
        rows.append(f"{name},{colour}")
    _image(source / dropped, COLOURS["blue"], 99)
    (source / top / "notes.txt").write_text("not an image")
    extra = ()
    if layout == "labels":
        (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
        extra = ("--labels", tmp_path / "labels.csv")
    proc = run_cli("prepare", "folder", "--source", source, "--data-dir", tmp_path / "data", "--size", 12,
                   "--val-split", 0, "--test-split", 0, *extra)  # fmt: skip
    meta = json.loads((tmp_path / "data" / "src" / "meta.json").read_text())
    assert sum(v["count"] for v in meta["splits"].values()) == 12
    assert [(s["file"], s["reason"].startswith(reason)) for s in meta["skipped"]] == [(dropped, True)], meta
    assert meta["ignored_files"] == 1  # notes.txt only: the non-image files
    assert "Skipped 1 image" in proc.stdout and dropped in proc.stdout


def test_an_image_of_the_tiny_imagenet_tree_without_a_class_is_listed_as_skipped(tmp_path):
    """An image under train/ of a class wnids.txt does not list, or in val/images/ that
    val_annotations.txt does not name, was dropped without a word."""
    tree = _unpack_tiny(tmp_path)
    _image(tree / "train" / "n99999999" / "images" / "stray_0.JPEG", COLOURS["red"], 1)
    _image(tree / "val" / "images" / "val_9999.JPEG", COLOURS["red"], 2)
    info = prepare_dataset("folder", tree, data_dir=tmp_path / "data", name="tiny", workers=1)
    assert {s["file"]: s["reason"] for s in info.meta["skipped"]} == {
        "train/n99999999/images/stray_0.JPEG": "an image with no class: not a class of wnids.txt (n99999999)",
        "val/images/val_9999.JPEG": "an image of val/images/ that val_annotations.txt does not name",
    }
    assert info.splits["test"] == 200  # the annotated ones, as before

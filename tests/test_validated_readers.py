"""Every file the tool reads is checked at the boundary: one DatasetError/RunError naming the
file and the field, never a crash deeper in (exit 70) nor a silent misreading.

In process, on real files written here: CIFAR pickles, tar archives, meta.json, HDF5 splits,
config.json, state.json, history.csv.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import tarfile

import numpy as np
import pytest

from resnetctl.data.cifar import read_cifar
from resnetctl.data.store import check_split, open_dataset
from resnetctl.errors import DatasetError, ResnetctlError, RunError
from resnetctl.paths import check_name
from resnetctl.training.config import config_from_file
from tests.helpers import cifar_members, fake_run_record, make_dataset


def write_cifar_folder(root, members: dict[str, object], raw: dict[str, bytes] | None = None):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, obj in members.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    for name, data in (raw or {}).items():
        (folder / name).write_bytes(data)
    return root


BAD_BATCHES = {
    "a list": (lambda m: m.__setitem__("data_batch_1", [1, 2]), "data_batch_1 .* a list, not a dict"),
    "no data": (lambda m: m["data_batch_2"].pop(b"data"), "data_batch_2 .* no 'data'"),
    "short labels": (
        lambda m: m["data_batch_3"].__setitem__(b"labels", m["data_batch_3"][b"labels"][:-1]),
        "data_batch_3 .* 4 images but 3 labels",
    ),
    "float data": (
        lambda m: m["test_batch"].__setitem__(b"data", m["test_batch"][b"data"].astype(np.float64)),
        "test_batch .* 'data' is a float64 array, not uint8 pixels",
    ),
    "object data": (
        lambda m: m["test_batch"].__setitem__(b"data", m["test_batch"][b"data"].astype(object)),
        "'data' is a object array",
    ),
    "label 200": (lambda m: m["data_batch_1"][b"labels"].__setitem__(0, 200), "label 200 is outside 0..9"),
    "label -1": (lambda m: m["data_batch_1"][b"labels"].__setitem__(0, -1), "label -1 is outside 0..9"),
    "string labels": (lambda m: m["data_batch_1"].__setitem__(b"labels", ["a"] * 4), "'labels' is not a list"),
    "object labels": (
        lambda m: m["data_batch_1"].__setitem__(b"labels", np.array([1, 2, 3, None], dtype=object)),
        "'labels' is not a list",
    ),
    "no label_names": (lambda m: m["batches.meta"].pop(b"label_names"), "batches.meta .* no 'label_names'"),
    "label_names a str": (
        lambda m: m["batches.meta"].__setitem__(b"label_names", "cat,dog"),
        "'label_names' is not a list of names",
    ),
    "two names": (
        lambda m: m["batches.meta"].__setitem__(b"label_names", [b"a", b"b"]),
        "cifar10 has 10 distinct class names; it lists 2",
    ),
    "wrong rows": (
        lambda m: m["data_batch_4"].__setitem__(b"data", np.zeros((4, 100), np.uint8)),
        r"expected rows of 3072 bytes, got \(4, 100\)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_cifar_batches_are_checked_field_by_field(tmp_path, case):
    members = cifar_members()
    damage, message = BAD_BATCHES[case]
    damage(members)
    with pytest.raises(DatasetError, match=message):
        read_cifar("cifar10", write_cifar_folder(tmp_path, members))


def test_a_good_cifar_folder_and_a_tar_hard_link_are_read(tmp_path):
    members = cifar_members()
    data = read_cifar("cifar10", write_cifar_folder(tmp_path / "f", members))
    assert len(data.splits["train"]) == 20 and data.classes[0] == "class0"
    assert data.splits["train"].labels.tolist()[:4] == members["data_batch_1"][b"labels"]

    archive = tmp_path / "linked.tar"
    with tarfile.open(archive, "w") as tar:
        for name, obj in members.items():
            if name == "data_batch_5":
                continue
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        link = tarfile.TarInfo("cifar-10-batches-py/data_batch_5")
        link.type, link.linkname = tarfile.LNKTYPE, "cifar-10-batches-py/data_batch_4"
        tar.addfile(link)  # was "missing data_batch_5"
    data = read_cifar("cifar10", archive)
    images = data.splits["train"].images
    assert np.array_equal(images[12:16], images[16:20])

    twice = tmp_path / "twice.tar"
    with tarfile.open(twice, "w") as tar:
        tar.add(tmp_path / "f" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        tar.add(tmp_path / "f" / "cifar-10-batches-py" / "test_batch", arcname="other/test_batch")
    with pytest.raises(DatasetError, match="holds test_batch twice"):
        read_cifar("cifar10", twice)


BAD_META = {
    "mean strings": ("mean", ["a", "b", "c"], "`mean` must be 3 numbers"),
    "std zero": ("std", [0, 1, 1], "`std` must be 3 numbers"),
    "integer class names": ("classes", [1, 2], "`classes` must be a list of 2 or more names"),
    "a class twice": ("classes", ["a", "a"], "`classes` names a class twice"),
    "size a string": ("image_size", "8", "`image_size` must be a whole number"),
    "count a string": ("splits", {"train": {"count": "4"}}, "`splits.train.count` must be a whole number"),
    "splits a list": ("splits", ["train"], "`splits` must be an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_meta_json_fields_are_checked(tmp_path, case):
    meta = make_dataset(tmp_path / "d")
    key, value, message = BAD_META[case]
    meta[key] = value
    (tmp_path / "d" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=f"meta.json: {message}"):
        open_dataset(tmp_path / "d")


def test_labels_are_checked_against_the_class_count(tmp_path):
    make_dataset(tmp_path / "ok")
    assert check_split(open_dataset(tmp_path / "ok"), "train").name == "train.h5"
    make_dataset(tmp_path / "label99", labels=(0, 1, 99, 0))  # one-hot of 99 was all zeros: trained with exit 0
    with pytest.raises(DatasetError, match=r"train.h5 holds label 99, outside classes 0..1 of meta.json"):
        check_split(open_dataset(tmp_path / "label99"), "train")
    make_dataset(tmp_path / "fewer", classes=("a", "b"), labels=(0, 1, 2, 0))  # meta.json edited to fewer classes
    with pytest.raises(DatasetError, match="holds label 2"):
        check_split(open_dataset(tmp_path / "fewer"), "train")


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"batch_size": None}, "`batch_size` must be set in a run's config"),
        ({"segments": "x"}, "`segments` must be a list"),
        ({"seed": "zero"}, '`seed` must be a whole number. Received: seed="zero"'),
        ({"epochs": "3"}, '`epochs` must be a whole number. Received: epochs="3"'),
        ({"dataset_info": "cifar"}, "`dataset_info` must be an object"),
        ({"milestones": "abc"}, "`milestones` must be a list of whole numbers"),
    ],
)
def test_a_run_config_with_wrong_types_is_one_line(tmp_path, changes, message):
    assert fake_run_record(tmp_path).config()["model"] == "resnet8"
    with pytest.raises(RunError, match=message):
        fake_run_record(tmp_path, **changes).config()


def test_config_option_types_state_json_and_history_csv(tmp_path):
    path = tmp_path / "c.json"
    for value, message in (
        ({"lr": "0.1"}, '--config .*c.json: `lr` must be a number. Received: lr="0.1"'),  # was "Received: lr=0.1"
        ({"epochs": "3"}, "`epochs` must be a whole number"),
        ({"milestones": "abc"}, "`milestones` must be a list of whole numbers"),
        ({"zero_init_last": 1}, "`zero_init_last` must be true or false"),
    ):
        path.write_text(json.dumps({"model": "resnet8", **value}))
        with pytest.raises(RunError, match=message):
            config_from_file(path)

    run = fake_run_record(tmp_path)
    run.state_path.write_text("[1, 2]")  # broke `summary` for every run
    assert run.state()["state"] == "failed"
    with open(run.history_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["epoch", "loss", "accuracy"], [1, 2.0, 0.5], [2, "nan", 0.6]])
    with pytest.raises(RunError, match=r"history.csv is damaged \(epoch 2: loss is not a finite value\)"):
        run.history()


def test_names_markup_and_error_lines(tmp_path):
    with pytest.raises(ResnetctlError, match="is not a plain name"):
        check_name("run\n", "Run")  # "$" matched before the trailing newline
    assert check_name("run-1.b", "Run") == "run-1.b"

    from resnetctl import ui

    console = ui.make_console(stderr=False)
    with console.capture() as captured:
        ui.print_error(console, "No run 'a[/b' in /x[/y]", hint="see [bold]this[/]")
    assert captured.get() == "error: No run 'a[/b' in /x[/y]\n  see [bold]this[/]\n"


def test_a_damaged_epoch_file_does_not_shadow_a_good_last_keras(tmp_path):
    """resume dead-ended on a garbage checkpoints/epoch_0002.keras beside a good last.keras of epoch 2."""
    import zipfile

    run = fake_run_record(tmp_path)
    run.checkpoint_dir.mkdir()
    run.epoch_path(2).write_bytes(b"garbage")
    run.epoch_path(1).write_bytes(b"")
    with zipfile.ZipFile(run.last_path, "w") as z:
        z.writestr("resnetctl.json", json.dumps({"format_version": 1, "id": "x", "epoch": 2}))
    assert run.checkpoints() == {2: run.last_path}
    with pytest.raises(RunError, match=r"No checkpoint of epoch 1 .* \(epochs with a checkpoint: 2\)"):
        run.checkpoint(1)


def test_duplicated_wnids_are_named(tmp_path):
    from resnetctl.data.tiny_imagenet import read_tiny_imagenet

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "wnids.txt").write_text("n01\nn02\nn01\n")
    with pytest.raises(DatasetError, match="wnids.txt lists n01 more than once"):  # was "no usable training image"
        read_tiny_imagenet(tmp_path / "t")

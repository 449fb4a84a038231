"""Fuzzing the readers: mutated CIFAR pickles and tars, Tiny ImageNet zips, images, meta.json,
config.json, state.json and history.csv. Each either reads as valid or is refused with a
ResnetctlError (one line, exit 1 at the CLI); nothing is published and the source is untouched.

Bounded: a fixed seed (``derandomize``), a few dozen examples per reader, in process (no Keras);
three mutated archives go through the real CLI.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zipfile

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from resnetctl.data.images import BadImage, decode_image
from resnetctl.data.prepare import prepare_dataset
from resnetctl.data.store import check_split, open_dataset
from resnetctl.errors import ResnetctlError
from resnetctl.reports import run_summary
from resnetctl.runs import RunDir
from resnetctl.training.config import config_from_file
from tests.helpers import cifar_members, make_dataset, one_line_error, run_cli
from tests.helpers import fake_run_record as _run

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with 1-3 edits: flipped bytes (most often), a cut, an inserted run, a copied slice."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(range(max(1, len(out)))))  # uniform: integers() favours the first bytes
        kind = draw(st.sampled_from(["flip", "flip", "flip", "cut", "insert", "copy"]))
        if kind == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            out = out[:at]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            length = draw(st.integers(1, 64))
            out[at:at] = out[at : at + length]
    return bytes(out)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


def _digest(root) -> dict:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _cifar_tar(rows: int = 30) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, obj in cifar_members(rows).items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def _prepared_or_refused(kind, source, data, name):
    """Prepare ``source``: a complete dataset, or a ResnetctlError and nothing published."""
    before = _digest(source.parent)
    try:
        info = prepare_dataset(kind, source, name=name, data_dir=data, workers=1, val_split=0, test_split=0)
    except ResnetctlError as exc:
        event("refused")
        assert "\n" not in exc.message
        assert {p.name for p in data.iterdir()} <= {f".{name}.lock"}  # the lock file, if it got that far
    else:
        event("prepared")
        assert check_split(info, "train") and sorted(p.name for p in data.iterdir()) == [f".{name}.lock", name]
    assert _digest(source.parent) == before


@settings(FUZZ, max_examples=15)
@given(st.data())
def test_mutated_cifar_pickles_and_tars(tmp_path_factory, data):
    tar = _cifar_tar()
    root = tmp_path_factory.mktemp("cifar")
    if data.draw(st.booleans(), label="whole tar"):
        source = root / "src" / "cifar.tar"
        source.parent.mkdir()
        source.write_bytes(data.draw(mutated(tar), label="tar"))
    else:  # one member of the extracted folder, mutated as a pickle
        members = cifar_members(30)
        name = data.draw(st.sampled_from(sorted(members)), label="member")
        source = root / "src"
        (source / "cifar-10-batches-py").mkdir(parents=True)
        for member, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            if member == name:
                blob = data.draw(mutated(blob), label="pickle")
            (source / "cifar-10-batches-py" / member).write_bytes(blob)
    (root / "data").mkdir()
    _prepared_or_refused("cifar10", source, root / "data", "c")


def _tiny_zip() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("tiny/wnids.txt", "n01\nn02\n")
        z.writestr("tiny/words.txt", "n01\tcat, feline\nn02\tdog\n")
        lines = []
        for w in ("n01", "n02"):
            for i in range(3):
                jpeg = cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))[1].tobytes()
                z.writestr(f"tiny/train/{w}/images/{w}_{i}.JPEG", jpeg)
            z.writestr(f"tiny/val/images/val_{w}.JPEG", jpeg)
            lines.append(f"val_{w}.JPEG\t{w}\t0\t0\t1\t1")
        z.writestr("tiny/val/val_annotations.txt", "\n".join(lines) + "\n")
    return buffer.getvalue()


@settings(FUZZ, max_examples=15)
@given(st.data())
def test_mutated_tiny_imagenet_zips(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("tiny")
    source = root / "src" / "tiny.zip"
    source.parent.mkdir()
    source.write_bytes(data.draw(mutated(_tiny_zip()), label="zip"))
    (root / "data").mkdir()
    _prepared_or_refused("tiny-imagenet", source, root / "data", "t")


IMAGES = [
    cv2.imencode(ext, np.random.default_rng(1).integers(0, 256, (24, 30, 3), dtype=np.uint8))[1].tobytes()
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff")
]


@settings(FUZZ, max_examples=150)
@given(st.sampled_from(IMAGES).flatmap(mutated))
def test_mutated_images_decode_or_are_bad_images(blob):
    try:
        image = decode_image(blob, 16)
    except BadImage as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8


@FUZZ
@given(st.sampled_from(["image_size", "classes", "mean", "std", "splits", "class_ids", "skipped"]), json_values)
def test_meta_json_with_any_value_opens_or_is_refused(tmp_path_factory, key, value):
    root = tmp_path_factory.mktemp("meta") / "d"
    meta = make_dataset(root)
    meta[key] = value
    (root / "meta.json").write_text(json.dumps(meta))
    try:
        info = check_split(open_dataset(root), "train")
    except ResnetctlError as exc:
        assert "\n" not in exc.message
    else:
        assert info.name == "train.h5"


RECORD_KEYS = ["model", "epochs", "batch_size", "lr", "milestones", "seed", "ema", "segments", "dataset_info", "jit"]


@FUZZ
@given(st.sampled_from(RECORD_KEYS), json_values, json_values, st.text(max_size=200))
def test_run_files_with_any_content_read_or_are_refused(tmp_path_factory, key, value, state, history):
    """config.json, state.json and history.csv of a run, as ``summary`` and ``--config`` read them."""
    root = tmp_path_factory.mktemp("run")
    run = _run(root, **{key: value})
    run.state_path.write_text(json.dumps(state))
    run.history_path.write_text("epoch,loss,accuracy,val_accuracy\n" + history)
    try:
        summary = run_summary(RunDir(run.path))
    except ResnetctlError as exc:
        assert "\n" not in exc.message
    else:
        assert isinstance(summary["state"], str)
    try:
        config_from_file(run.config_path).validate()
    except ResnetctlError as exc:
        assert "\n" not in exc.message


@pytest.mark.e2e  # three CLI subprocesses: kept out of the fast tier
def test_mutated_archives_through_the_cli(tmp_path):
    """Three fixed mutations of a CIFAR tarball through ``resnetctl prepare``: exit 0 or one line, exit 1."""
    tar = _cifar_tar()
    rng = np.random.default_rng(7)
    for i in range(3):
        blob = bytearray(tar)
        for at in rng.integers(0, len(blob), 3):
            blob[at] ^= 0x5A
        source = tmp_path / f"m{i}.tar"
        source.write_bytes(bytes(blob))
        data = tmp_path / f"data{i}"
        proc = run_cli("prepare", "cifar10", "--source", source, "--data-dir", data, "--val-split", 0, check=False)
        if proc.returncode:
            one_line_error(proc, 1)
            assert len(proc.stderr.strip().splitlines()) <= 2
            assert not data.exists() or sorted(p.name for p in data.iterdir()) == [".cifar10.lock"]
        assert source.read_bytes() == bytes(blob)

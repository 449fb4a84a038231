"""`resnetctl prepare` on the real fixtures, on archives made here, and on bad input."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import cv2
import h5py
import numpy as np
import pytest

from tests.helpers import CIFAR_SUBSET, TINY_MINI, cifar100_archive, invoke, one_line_error, run_cli

pytestmark = pytest.mark.slow  # prepares real archives and folders through the CLI; trains nothing


def _cifar_source():
    out = {}
    with tarfile.open(CIFAR_SUBSET) as tar:
        for m in tar:
            if m.isfile() and "_batch" in m.name:
                out[m.name.rsplit("/", 1)[-1]] = pickle.load(tar.extractfile(m), encoding="bytes")
    return out


def _h5(path):
    with h5py.File(path, "r") as f:
        return f["images"][...], f["labels"][...], (f["filenames"][...] if "filenames" in f else None)


def test_cifar10_subset_is_prepared_exactly(cifar):
    meta = json.loads((cifar / "meta.json").read_text())
    assert meta["classes"][:3] == ["airplane", "automobile", "bird"] and len(meta["classes"]) == 10
    assert {k: v["count"] for k, v in meta["splits"].items()} == {"train": 4499, "val": 501, "test": 1000}
    source = _cifar_source()
    # test keeps the official order: every pixel and label equal
    test_images, test_labels, _ = _h5(cifar / "test.h5")
    official = source["test_batch"]
    np.testing.assert_array_equal(test_images, official[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(test_labels, official[b"labels"])
    # train + val are a shuffled, stratified partition of the five training batches
    label_of = {}
    for i in range(1, 6):
        batch = source[f"data_batch_{i}"]
        for row, label in zip(batch[b"data"], batch[b"labels"], strict=True):
            label_of[row.reshape(3, 32, 32).transpose(1, 2, 0).tobytes()] = label
    seen = 0
    for split in ("train", "val"):
        images, labels, _ = _h5(cifar / f"{split}.h5")
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
        for image, label in zip(images, labels, strict=True):
            assert label_of[image.tobytes()] == label
        seen += len(labels)
    assert seen == 5000
    per_class = np.bincount(list(label_of.values()), minlength=10)
    expected_val = [max(1, round(0.1 * n)) for n in per_class]
    assert meta["splits"]["val"]["class_counts"] == expected_val  # 10% of every class
    train_images, _, _ = _h5(cifar / "train.h5")
    pixels = train_images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(meta["mean"], pixels.mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(meta["std"], pixels.std(axis=0), atol=1e-3)
    assert len(meta["source"]["checksum"]) == 64
    with h5py.File(cifar / "train.h5") as f:
        assert f["images"].chunks[0] > 1 and f["images"].chunks[1:] == (32, 32, 3)


def test_tiny_imagenet_mini_is_prepared_as_the_project_did(data_dir):
    run_cli("prepare", "tiny-imagenet", "--source", TINY_MINI, "--data-dir", data_dir)
    root = data_dir / "tiny-imagenet"
    meta = json.loads((root / "meta.json").read_text())
    counts = {k: v["count"] for k, v in meta["splits"].items()}
    assert counts == {"train": 900, "val": 100, "test": 200, "unlabelled": 100}
    with zipfile.ZipFile(TINY_MINI) as z:
        wnids = z.read("tiny-imagenet-200/wnids.txt").decode().split()
        words = dict(line.split("\t", 1) for line in z.read("tiny-imagenet-200/words.txt").decode().splitlines())
        annotation_text = z.read("tiny-imagenet-200/val/val_annotations.txt").decode()
        annotations = [line.split("\t") for line in annotation_text.splitlines()]
        images, labels, names = _h5(root / "test.h5")
        for image, label, name in zip(images, labels, names, strict=True):
            name = name.decode()
            expected = next(a[1] for a in annotations if name.endswith("/" + a[0]))
            assert wnids[label] == expected
            decoded = cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            np.testing.assert_array_equal(image, decoded)
    assert meta["class_ids"] == wnids
    assert meta["classes"][0] == words[wnids[0]].split(",")[0].strip()
    assert meta["splits"]["unlabelled"]["labelled"] is False
    listing = json.loads(run_cli("prepare", "--list", "--json", "--data-dir", data_dir).stdout)
    assert "tiny-imagenet" in [d["name"] for d in listing]


def _png16(path):
    image = (np.random.default_rng(0).random((40, 50, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(path), image)


@pytest.fixture
def messy_folder(tmp_path):
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            h, w = rng.integers(40, 90, 2)
            cv2.imwrite(str(root / cls / f"{i}.jpg"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "cat" / "gray.png"), rng.integers(0, 256, (50, 50), dtype=np.uint8))
    cv2.imwrite(str(root / "cat" / "rgba.png"), rng.integers(0, 256, (50, 50, 4), dtype=np.uint8))
    _png16(root / "dog" / "deep.png")
    ok, png = cv2.imencode(".png", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    (root / "dog" / "really_a_png.jpg").write_bytes(png.tobytes())
    jpeg = (root / "dog" / "0.jpg").read_bytes()
    (root / "dog" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "cat" / "garbage.jpg").write_bytes(b"this is not an image" * 10)
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "notes.txt").write_text("not a class")
    (root / "dog" / "labels.txt").write_text("stray")
    return root


def test_folder_with_odd_and_bad_images(messy_folder, tmp_path):
    out = tmp_path / "data"
    proc = run_cli(
        "prepare",
        "folder",
        "--source",
        messy_folder,
        "--size",
        "32",
        "--data-dir",
        out,
        "--val-split",
        "0",
        "--test-split",
        "0",
    )
    meta = json.loads((out / "pets" / "meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"]
    skipped = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert set(skipped) == {"dog/truncated.jpg", "cat/garbage.jpg"}
    assert "truncated" in skipped["dog/truncated.jpg"]
    assert "Skipped 2" in proc.stdout
    images, labels, names = _h5(out / "pets" / "train.h5")
    assert images.shape == (16, 32, 32, 3)  # 12 JPEGs + gray + rgba + 16-bit + mislabelled png
    assert np.bincount(labels).tolist() == [8, 8]
    names = [n.decode() for n in names]
    assert {"cat/gray.png", "cat/rgba.png", "dog/deep.png", "dog/really_a_png.jpg"} <= set(names)
    gray = images[names.index("cat/gray.png")]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert meta["ignored_files"] == 2  # notes.txt and labels.txt; hidden files are not counted


def test_folder_needs_a_size_when_images_vary(messy_folder, tmp_path):
    proc = run_cli("prepare", "folder", "--source", messy_folder, "--data-dir", tmp_path / "data", check=False)
    one_line_error(proc, 1, "--size")


def test_the_default_batch_keeps_fifty_steps_an_epoch(cifar, cifar_small, data_dir):
    """--dry-run shows the batch train would use: 64 for the subset's 4,499 images (36 steps at
    128), 32 for cifar-small's 1,000; a --batch-size given stays."""

    def batch(*args):
        proc = run_cli("train", "resnet20", "--data-dir", data_dir, "--dry-run", *args)
        return int(re.search(r"│ batch_size\s+│ (\d+)", proc.stdout).group(1))

    assert batch("--dataset", "cifar10") == 64
    assert batch("--dataset", "cifar-small") == 32
    assert batch("--dataset", "cifar10", "--batch-size", 128) == 128


def test_existing_dataset_needs_force(cifar, data_dir):
    proc = run_cli("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", data_dir, check=False)
    assert proc.returncode == 1 and "--force" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(CIFAR_SUBSET.read_bytes()[:4_000_000]), "truncated or damaged"),
        (lambda p: p.write_bytes(b"\x1f\x8b" + b"\x00" * 100), "truncated or damaged"),
        (lambda p: None, "does not exist"),
    ],
)
def test_bad_cifar_sources(tmp_path, make, message):
    source = tmp_path / "cifar-10-python.tar.gz"
    make(source)
    proc = run_cli("prepare", "cifar10", "--source", source, "--data-dir", tmp_path / "d", check=False)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d" / "cifar10").exists()
    assert not list((tmp_path / "d").glob(".cifar10*")) if (tmp_path / "d").exists() else True


def test_wrong_checksum_is_refused(tmp_path):
    proc = run_cli(
        "prepare", "cifar10", "--source", CIFAR_SUBSET, "--checksum", "0" * 64, "--data-dir", tmp_path, check=False
    )
    assert proc.returncode == 1 and "Checksum mismatch" in proc.stderr


def test_cifar100_official_layout(tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    cifar100_archive(archive)
    run_cli("prepare", "cifar100", "--source", archive, "--data-dir", tmp_path / "d", "--val-split", "0")
    meta = json.loads((tmp_path / "d" / "cifar100" / "meta.json").read_text())
    assert len(meta["classes"]) == 100 and meta["splits"]["train"]["count"] == 300


def test_tiny_imagenet_without_wnids_and_with_crlf(tmp_path):
    broken = tmp_path / "no-wnids.zip"
    with zipfile.ZipFile(TINY_MINI) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("wnids.txt"):
                dst.writestr(item, src.read(item))
    proc = run_cli("prepare", "tiny-imagenet", "--source", broken, "--data-dir", tmp_path, check=False)
    assert proc.returncode == 1 and "wnids.txt" in proc.stderr and "Traceback" not in proc.stderr

    crlf = tmp_path / "crlf"
    with zipfile.ZipFile(TINY_MINI) as src:
        src.extractall(crlf)
    for name in ("wnids.txt", "val/val_annotations.txt"):
        path = crlf / "tiny-imagenet-200" / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    run_cli("prepare", "tiny-imagenet", "--source", crlf, "--data-dir", tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "tiny-imagenet" / "meta.json").read_text())
    assert meta["splits"]["test"]["count"] == 200 and all("\r" not in w for w in meta["class_ids"])


def test_interrupted_prepare_leaves_nothing_that_looks_finished(tmp_path):
    source = tmp_path / "many"
    big = tmp_path / "big.jpg"  # slow to decode, cheap to multiply with hard links
    gradient = np.linspace(0, 255, 1024 * 1024 * 3).reshape(1024, 1024, 3).astype(np.uint8)
    cv2.imwrite(str(big), gradient)
    for cls in range(3):
        (source / f"c{cls}").mkdir(parents=True)
        for i in range(1000):
            os.link(big, source / f"c{cls}" / f"{i}.jpg")
    out = tmp_path / "d"
    (out / ".many.tmp-99999").mkdir(parents=True)  # a crashed earlier run's leftovers
    cmd = [
        sys.executable,
        "-m",
        "resnetctl",
        "prepare",
        "folder",
        "--source",
        str(source),
        "--size",
        "128",
        "--data-dir",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (list(out.glob(".many.tmp-*/train.h5"))):
        time.sleep(0.05)
    assert list(out.glob(".many.tmp-*/train.h5")), "prepare never started writing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert not (out / "many").exists()
    assert [p.name for p in out.iterdir()] == [".many.lock"]  # the temp folder and the stale leftovers are gone
    run_cli("prepare", "folder", "--source", source, "--size", "32", "--data-dir", out)
    assert (out / "many" / "meta.json").exists()


def test_shapes_demo_and_cli_runner_errors(tmp_path):
    result = invoke("prepare", "shapes", "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "shapes" / "meta.json").read_text())
    assert meta["splits"]["train"]["count"] == 3600 and len(meta["classes"]) == 8
    result = invoke("prepare", "imagenet-1k", "--data-dir", tmp_path)
    assert result.exit_code != 0 and "Unknown dataset kind" in str(result.exception)


def test_large_jpegs_are_scaled_down_by_the_decoder():
    from resnetctl.data.images import decode_image, jpeg_size, resize_center_crop

    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8), (9, 9), 4)
    for flags in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]):
        data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95, *flags])[1].tobytes()
        assert jpeg_size(data) == (300, 420)
        full = resize_center_crop(
            cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), 64
        )
        fast = decode_image(data, 64)  # decoded at 1/4 scale (75x105), then resized to 64
        assert fast.shape == (64, 64, 3)
        assert np.abs(fast.astype(int) - full).mean() < 2.0  # the same picture, to within JPEG noise
    assert jpeg_size(cv2.imencode(".png", photo)[1].tobytes()) is None
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00") is None  # cut off before any frame header

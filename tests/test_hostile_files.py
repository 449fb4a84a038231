"""Hostile files at the readers: pixel bombs, FIFOs and devices, link loops, deep folders.

Each bad file is one skipped entry that names it and says why; nothing blocks, nothing decodes
a header's fantasy size, and the command goes on with the good files.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from resnetctl.data.archive import FileTree, walk_folder
from resnetctl.data.images import BadImage, decode_image, image_dimensions, read_file
from resnetctl.errors import DatasetError
from tests.helpers import one_line_error, png_bomb, run_cli


def jpeg_bomb() -> bytes:
    """A real JPEG whose frame header is patched to claim 60000x60000 (OpenCV decoded it grey)."""
    data = bytearray(cv2.imencode(".jpg", np.full((40, 50, 3), 90, np.uint8))[1].tobytes())
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def _jpeg(value: int = 120) -> bytes:
    rng = np.random.default_rng(value)
    return cv2.imencode(".jpg", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))[1].tobytes()


def test_pixel_bombs_are_refused_from_their_header():
    for data in (png_bomb(60000, 60000), jpeg_bomb()):
        with pytest.raises(BadImage, match=r"60000x60000 pixels is over the limit of 100,000,000"):
            decode_image(data, 32)
    assert image_dimensions(png_bomb(60000, 60000)) == (60000, 60000)
    for ext in (".png", ".jpg", ".bmp", ".ppm", ".webp"):
        assert image_dimensions(cv2.imencode(ext, np.zeros((40, 50, 3), np.uint8))[1].tobytes()) == (40, 50), ext
    assert decode_image(_jpeg(), 32).shape == (32, 32, 3)


LOWERED_LIMIT = """
import numpy as np
from resnetctl.data.images import BadImage, decode_image
import cv2
for ext in (".png", ".tiff"):  # PNG: our header check; TIFF: OpenCV's own check, same limit
    try:
        decode_image(cv2.imencode(ext, np.zeros((40, 50, 3), np.uint8))[1].tobytes(), 32)
    except BadImage as exc:
        print(ext, exc)
"""


def test_the_pixel_limit_is_an_environment_variable_and_opencv_errors_are_bad_images():
    env = {**os.environ, "RESNETCTL_MAX_IMAGE_PIXELS": "1000", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", LOWERED_LIMIT], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ".png 50x40 pixels is over the limit of 1,000 (RESNETCTL_MAX_IMAGE_PIXELS raises it)"
    assert lines[1].startswith(".tiff not a decodable image (") and "CV_IO_MAX_IMAGE_PIXELS" in lines[1]


def test_special_files_are_never_opened(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: none will
    for path, kind in ((fifo, "a FIFO"), ("/dev/zero", "a character device")):
        with pytest.raises(BadImage, match=f"^{kind}, not an image file; not opened"):
            read_file(str(path))


def test_folder_walks_follow_links_list_special_files_and_end(tmp_path):
    root = tmp_path / "src"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.jpg").write_bytes(_jpeg())
    os.mkfifo(root / "cat" / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "cat" / "sock.jpg"))
    elsewhere = tmp_path / "elsewhere" / "dog"
    elsewhere.mkdir(parents=True)
    (elsewhere / "b.jpg").write_bytes(_jpeg(3))
    (root / "dog").symlink_to(elsewhere)  # a class folder that is a link: os.walk dropped it
    (elsewhere / "loop").symlink_to(root)  # and a loop back to the top
    (root / "cat" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    files, skipped = walk_folder(root)
    sock.close()
    assert files == ["cat/a.jpg", "dog/b.jpg"]
    reasons = {s["file"]: s["reason"] for s in skipped}
    assert reasons == {
        "cat/fifo.jpg": "a FIFO; not opened",
        "cat/gone.jpg": "a broken link; not opened",
        "cat/sock.jpg": "a socket; not opened",
        "dog/loop": "a link to a folder already read (a loop); not followed",
    }

    deep = tmp_path / "deep"
    path = str(deep)
    os.mkdir(path)
    try:
        for _ in range(1100):  # os.walk recursed once per level: RecursionError at about 1,000
            path += "/d"
            os.mkdir(path)
        with open(path + "/x.jpg", "wb") as f:
            f.write(b"x")
        files, skipped = walk_folder(deep)
        assert files == ["d/" * 1100 + "x.jpg"] and skipped == []
    finally:  # bottom up: shutil.rmtree (pytest's cleanup of old temp folders) recurses per level
        if os.path.exists(path + "/x.jpg"):
            os.remove(path + "/x.jpg")
        while path != str(tmp_path):
            os.rmdir(path)
            path = os.path.dirname(path)


def test_a_zip_with_a_member_twice_is_refused(tmp_path):
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("wnids.txt", "n01\n")
        z.writestr("wnids.txt", "n02\n")
    with pytest.raises(DatasetError, match="holds 1 member name.s. twice, e.g. wnids.txt"):
        FileTree(path)


def test_a_zip_member_is_read_only_up_to_the_byte_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.png", b"\0" * (3 << 20))
    monkeypatch.setenv("RESNETCTL_MAX_IMAGE_PIXELS", "1")  # the byte limit floors at 64 MiB
    tree = FileTree(path)
    assert len(tree.read("a.png")) == 3 << 20
    monkeypatch.setattr("resnetctl.data.archive.max_file_bytes", lambda: 1 << 20)
    with pytest.raises(BadImage, match="a member of 3,145,728 bytes, over 1,048,576"):
        tree.read("a.png")


def test_prepare_skips_bombs_fifos_and_sockets_and_follows_linked_class_folders(tmp_path):
    src = tmp_path / "p3"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(4):
            (src / cls / f"{i}.jpg").write_bytes(_jpeg(i + (10 if cls == "b" else 0)))
    os.mkfifo(src / "a" / "fifo.jpg")
    (src / "a" / "bomb.png").write_bytes(png_bomb(60000, 60000))
    (src / "b" / "bomb.jpg").write_bytes(jpeg_bomb())
    linked = tmp_path / "c-elsewhere"
    linked.mkdir()
    for i in range(4):
        (linked / f"{i}.jpg").write_bytes(_jpeg(20 + i))
    (src / "c").symlink_to(linked)
    before = sorted((p.relative_to(tmp_path), p.lstat().st_mtime_ns) for p in tmp_path.rglob("*"))
    args = (
        "prepare",
        "folder",
        "--source",
        src,
        "--data-dir",
        tmp_path / "data",
        "--size",
        32,
        "--val-split",
        0,
        "--test-split",
        0,
    )
    proc = run_cli(*args, timeout=120)  # the FIFO blocked open() forever
    meta = json.loads((tmp_path / "data" / "p3" / "meta.json").read_text())
    assert meta["classes"] == ["a", "b", "c"] and meta["splits"]["train"]["class_counts"] == [4, 4, 4]
    skipped = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert skipped == {
        "a/fifo.jpg": "a FIFO; not opened",
        "a/bomb.png": "60000x60000 pixels is over the limit of 100,000,000 (RESNETCTL_MAX_IMAGE_PIXELS raises it)",
        "b/bomb.jpg": "60000x60000 pixels is over the limit of 100,000,000 (RESNETCTL_MAX_IMAGE_PIXELS raises it)",
    }
    assert "Skipped 3" in proc.stdout
    after = sorted(
        (p.relative_to(tmp_path), p.lstat().st_mtime_ns) for p in tmp_path.rglob("*") if "data" not in p.parts
    )
    assert after == before

    fifo = tmp_path / "source-fifo"
    os.mkfifo(fifo)
    proc = run_cli("prepare", "cifar10", "--source", fifo, "--data-dir", tmp_path / "d2", check=False, timeout=60)
    one_line_error(proc, 1, "is a FIFO, not an archive or a folder; it was not opened")

"""Decoding user images into RGB uint8 squares, with bad files skipped, not fatal.

Memory stays bounded whatever a file claims: only regular files are opened (a FIFO would block
``open`` forever, ``/dev/zero`` never ends), a file is read only up to a byte limit, and an
image's width and height are read from its header and checked against a pixel limit before
anything is decoded (a 69-byte PNG can claim 60000x60000). The limit is
:data:`DEFAULT_MAX_PIXELS`, raised or lowered with ``RESNETCTL_MAX_IMAGE_PIXELS``; OpenCV gets
the same limit for the formats whose header is not parsed here.
"""

from __future__ import annotations

import os
import stat

MAX_PIXELS_ENV = "RESNETCTL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: 300 MB decoded as 8-bit RGB, twice that at 16 bits
BYTES_PER_PIXEL_BOUND = 8  # 16-bit RGBA, uncompressed: no image file within the pixel limit is larger


def max_image_pixels() -> int:
    """The pixel limit: ``$RESNETCTL_MAX_IMAGE_PIXELS`` when set to a positive integer, else the default."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_MAX_PIXELS


# OpenCV reads its own limit (1 gigapixel by default) once; it must agree with ours
os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max_image_pixels())

import cv2  # noqa: E402
import numpy as np  # noqa: E402

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2"})

# OpenCV >= 4.11 decodes straight to RGB, saving a colour conversion per image
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_READ_SIZE = 1 << 20
_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
# start-of-frame markers: every JPEG coding process, not DHT (C4), JPG (C8) or DAC (CC)
_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class BadImage(Exception):
    """An image file that cannot be used; the reason ends up in meta.json's skipped list."""


def max_file_bytes() -> int:
    """No image file within the pixel limit is larger than this (it would be bigger than raw pixels)."""
    return max(1 << 26, BYTES_PER_PIXEL_BOUND * max_image_pixels())


def file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is (a FIFO, a device...): never to be opened."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def is_image_file(name: str) -> bool:
    """By extension, not hidden; plain string work, as it runs once per file of a folder."""
    base = name.rpartition("/")[2].rpartition(os.sep)[2]
    stem, dot, extension = base.rpartition(".")
    return bool(dot and stem) and not base.startswith(".") and "." + extension.lower() in IMAGE_EXTENSIONS


def _looks_truncated(data: bytes) -> bool:
    """OpenCV decodes a cut-off JPEG or PNG as a grey-filled image with only a warning."""
    if data[:2] == b"\xff\xd8":  # JPEG: the end-of-image marker, usually last, sometimes padded
        return not data.endswith(b"\xff\xd9") and b"\xff\xd9" not in data[-4096:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-32:]
    return False


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (aspect kept), then cut the centred square."""
    height, width = image.shape[:2]
    if height == size and width == size:
        return image
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[top : top + size, left : left + size]


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, without decoding; None if there is none."""
    i, end = 2, len(data) - 9
    while i <= end and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _FRAME_MARKERS:
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] == b"BM" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # OS/2 header: 16-bit sizes
            return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return abs(height), abs(width)
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 3 or data[0:1] != b"P" or data[1:2] not in b"123456":
        return None
    fields, text = [], data[2:4096].split(b"\n")
    for line in text:
        fields += line.split(b"#", 1)[0].split()
        if len(fields) >= 2:
            break
    try:
        return int(fields[1]), int(fields[0])
    except (IndexError, ValueError):
        return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[27:30], "little"), 1 + int.from_bytes(data[24:27], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + ((bits >> 14) & 0x3FFF), 1 + (bits & 0x3FFF)
    if chunk == b"VP8 ":
        return int.from_bytes(data[28:30], "little") & 0x3FFF, int.from_bytes(data[26:28], "little") & 0x3FFF
    return None


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the header of a JPEG, PNG, BMP, PNM or WebP; None for other formats
    (TIFF, JPEG 2000: OpenCV checks those against the same limit itself)."""
    if data[:2] == b"\xff\xd8":
        return jpeg_size(data)
    for parse in (_png_size, _bmp_size, _pnm_size, _webp_size):
        if (dims := parse(data)) is not None:
            return dims
    return None


def check_dimensions(data: bytes) -> tuple[int, int] | None:
    """The header's (height, width), refused when over the pixel limit; None when unknown."""
    dims = image_dimensions(data)
    if dims is not None:
        height, width = dims
        limit = max_image_pixels()
        if height * width > limit:
            raise BadImage(f"{width}x{height} pixels is over the limit of {limit:,} ({MAX_PIXELS_ENV} raises it)")
    return dims


def _reduced_flag(data: bytes, dims: tuple[int, int] | None, size: int) -> int | None:
    """The imdecode flag that lets libjpeg scale a JPEG down by 8, 4 or 2 while decoding (as
    PIL's ``draft`` does), keeping the shorter side >= ``size``; None when no reduction fits."""
    if not dims or data[:2] != b"\xff\xd8":
        return None
    shorter = min(dims)
    for factor, flag in _REDUCED_FLAGS:
        if -(-shorter // factor) >= size:
            return flag
    return None


def decode_image(data: bytes, size: int | None = None) -> np.ndarray:
    """Encoded bytes -> RGB uint8 ``(size, size, 3)``.

    Grey, RGBA, CMYK and 16-bit images become 8-bit RGB; the content decides the format, not
    the file extension. A JPEG at least twice ``size`` is scaled down by the decoder itself,
    several times faster than a full decode; the resize to ``size`` follows as for any image.
    Raises :class:`BadImage` for empty, truncated, undecodable or too large data (by its
    header, before decoding: see :func:`check_dimensions`).
    """
    if not data:
        raise BadImage("empty file")
    if _looks_truncated(data):
        raise BadImage("truncated image")
    dims = check_dimensions(data)
    if dims is not None and min(dims) < 1:
        raise BadImage(f"{dims[1]}x{dims[0]} pixels: not an image")
    reduced = _reduced_flag(data, dims, size) if size else None
    flag = reduced or _IMREAD_RGB or cv2.IMREAD_COLOR  # OpenCV has no reduced RGB mode
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if image is None:
            raise BadImage("not a decodable image")
        if flag != _IMREAD_RGB:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return resize_center_crop(image, size) if size else image
    except cv2.error as exc:  # OpenCV's own limits and decoder failures
        reason = (str(exc).strip().splitlines() or ["OpenCV error"])[-1].split("error: ")[-1][:200]
        raise BadImage(f"not a decodable image ({reason})") from None
    except MemoryError:
        raise BadImage("too large to decode in the memory available") from None


def read_file(path: str) -> bytes:
    """A whole file in as few system calls as Python allows (``Path.read_bytes`` costs 3x more
    per small file, which shows when decoding 30,000 thumbnails a second).

    Only a regular file is opened (checked before ``open``, and again on the open descriptor,
    which ``O_NONBLOCK`` keeps from blocking on a FIFO swapped in between); one larger than
    :func:`max_file_bytes` is refused unread. Both are :class:`BadImage`."""
    kind = file_kind(os.stat(path).st_mode)
    if kind:
        raise BadImage(f"{kind}, not an image file; not opened")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        kind = file_kind(info.st_mode)
        if kind:
            raise BadImage(f"{kind}, not an image file")
        limit = max_file_bytes()
        if info.st_size > limit:
            raise BadImage(f"{info.st_size:,} bytes, over the {limit:,} an image within the pixel limit can take")
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data
        parts, total = [data], len(data)
        while part := os.read(fd, _READ_SIZE):
            parts.append(part)
            total += len(part)
            if total > limit:  # the file grew while read
                raise BadImage(f"over {limit:,} bytes")
        return b"".join(parts)
    finally:
        os.close(fd)


def channel_moments(images: np.ndarray) -> np.ndarray:
    """Per-channel sum and sum of squares of a uint8 ``(N, H, W, 3)`` block, shape ``(2, 3)``.

    OpenCV's SIMD ``meanStdDev`` in float64: about 6 us per 64 px image, against 60+ us for a
    NumPy histogram or float sums. The decode workers run it on their own blocks, in parallel.
    """
    if not images.size:
        return np.zeros((2, 3))
    pixels = images.shape[0] * images.shape[1] * images.shape[2]
    mean, std = cv2.meanStdDev(np.ascontiguousarray(images).reshape(-1, images.shape[2], 3))
    mean, std = mean.ravel(), std.ravel()
    return np.stack([mean * pixels, (std**2 + mean**2) * pixels])


def worker_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)

"""What the lossy JPEG copy of CIFAR-10 costs in accuracy, measured on the same images both ways.

    python benchmarks/jpeg_cost.py [--source ../shared/datasets/cifar-10-python-subset.tar.gz]
        [--epochs 15] [--seeds 0,1] [--model resnet20] [--work DIR]

``../shared/datasets/cifar-10-jpeg.tar.gz`` is the whole CIFAR-10 re-encoded as JPEG at IJG quality
75 with 4:2:0 chroma subsampling (read from its quantisation tables and frame header: PIL's defaults).
The papers' figures are on the official pixels. This script takes the official pixels of the CIFAR-10
python subset and writes them twice as a train/test folder tree: once as PNG (lossless, the official
pixels) and once as JPEG with the same quality and subsampling as the copy (checked: the script
prints the quality it reads back from both). Each tree goes through ``prepare folder``, the default
recipe trains on it for ``--epochs`` per seed, and ``evaluate`` scores the last checkpoint on the
test split: the same images, splits, seeds and code, so the difference is what the encoding costs.
Everything goes through the CLI, as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
from cli_runner import cli  # benchmarks/ is on the path of a script run from it

from resnetctl.data.cifar import read_cifar

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# IJG's luminance table (JPEG standard, Annex K) in natural order, and the zig-zag order of a DQT.
_IJG_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
             14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip
_ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
           7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
           39, 46, 53, 60, 61, 54, 47, 55, 62, 63]  # fmt: skip


def jpeg_quality(data: bytes) -> tuple[float, str]:
    """The IJG quality a baseline JPEG's luminance table was scaled from, and its chroma sampling."""
    quality, sampling, i = float("nan"), "?", 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        segment = data[i + 4 : i + 2 + length]
        if marker == 0xDB and segment[0] & 0x0F == 0:
            natural = [0] * 64
            for k, z in enumerate(_ZIGZAG):
                natural[z] = segment[1 + k]
            scale = 100 * sum(natural) / sum(_IJG_LUMA)
            quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
        if marker == 0xC0:
            luma = segment[7]
            sampling = {0x22: "4:2:0", 0x21: "4:2:2", 0x11: "4:4:4"}.get(luma, hex(luma))
        if marker == 0xDA:
            break
        i += 2 + length
    return round(quality, 1), sampling


def write_tree(root: Path, splits: dict, classes: list[str], suffix: str, params: list[int]) -> int:
    """The splits as ``root/<split>/<class>/NNNNN.suffix``; the bytes written, in all."""
    written = 0
    for split, records in splits.items():
        for i, (image, label) in enumerate(zip(records.images, records.labels, strict=True)):
            folder = root / split / classes[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
            assert ok, f"cv2 could not encode {suffix}"
            (folder / f"{i:05d}{suffix}").write_bytes(data.tobytes())
            written += len(data)
    return written


def _copy_quality(copy: Path) -> tuple[float, str] | None:
    """The encoding settings of the first JPEG in the copy's archive (None where it is not here)."""
    if not copy.exists():
        return None
    with tarfile.open(copy) as tar:
        for member in tar:
            if member.name.endswith(".jpg"):
                return jpeg_quality(tar.extractfile(member).read())
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default=str(SHARED / "cifar-10-python-subset.tar.gz"))
    parser.add_argument("--copy", default=str(SHARED / "cifar-10-jpeg.tar.gz"), help="read for its encoding only")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="jpeg-cost-"))
    source = read_cifar("cifar10", Path(args.source))
    n = {split: len(r.labels) for split, r in source.splits.items()}

    jpeg_params = [cv2.IMWRITE_JPEG_QUALITY, 75, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    variants = {"png": (".png", []), "jpeg75": (".jpg", jpeg_params)}
    for name, (suffix, params) in variants.items():
        size = write_tree(work / name, source.splits, source.classes, suffix, params)
        print(json.dumps({"variant": name, "images": n, "bytes_per_image": round(size / sum(n.values()))}), flush=True)
    ours = next((work / "jpeg75" / "train").rglob("*.jpg")).read_bytes()
    print(json.dumps({"written_jpeg": jpeg_quality(ours), "copy_jpeg": _copy_quality(Path(args.copy))}), flush=True)

    data_dir, runs = work / "data", work / "runs"
    scores: dict[str, list[float]] = {}
    for name in variants:
        cli("prepare", "folder", "--source", work / name, "--name", name, "--data-dir", data_dir)
        for seed in (int(s) for s in args.seeds.split(",")):
            run = runs / f"{name}-s{seed}"
            t0 = time.perf_counter()
            cli("train", args.model, "--dataset", name, "--data-dir", data_dir, "--runs-dir", runs,
                "--run", run.name, "--seed", seed, "--epochs", args.epochs)  # fmt: skip
            test = cli("evaluate", "--run", run, "--checkpoint", "last", "--split", "test", "--json")["rank_1"]
            scores.setdefault(name, []).append(test)
            print(json.dumps({"variant": name, "seed": seed, "test_rank_1": test,
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)  # fmt: skip
    means = {name: statistics.mean(s) for name, s in scores.items()}
    print(json.dumps({"mean_test_rank_1": means, "jpeg_cost_points": round(100 * (means["png"] - means["jpeg75"]), 2),
                      "epochs": args.epochs, "seeds": args.seeds, "work": str(work)}))  # fmt: skip


if __name__ == "__main__":
    main()

"""Throughput of `resnetctl predict` against decode-only and inference-only, in one invocation.

    python benchmarks/predict.py [--model resnet20] [--images 1000] [--rounds 3] [--batch-size 64]

The images are the real 64 px JPEGs of ../shared/datasets/tiny-imagenet-200-mini.zip (train
folders, extracted to a temporary folder); the model is an untrained ``--model`` built for 64 px
and 20 classes (weights don't change the cost). Three sides, alternated each round:

- decode: the same worker processes decoding the same files, no model;
- inference: the model on the already decoded images, batch by batch;
- predict: :func:`resnetctl.prediction.classify`, which does both, overlapped (the model
  loaded once, as the CLI does before its first batch).

Goal: predict >= 0.8 of the slower of the other two.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

TINY = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tiny-imagenet-200-mini.zip"


def extract(folder: Path, count: int) -> list[str]:
    with zipfile.ZipFile(TINY) as z:
        names = sorted(n for n in z.namelist() if "/train/" in n and n.endswith(".JPEG"))
        files = []
        for i in range(count):  # repeat the 1,000 train images if more are asked for
            target = folder / f"{i:06d}.jpg"
            target.write_bytes(z.read(names[i % len(names)]))
            files.append(str(target))
    return files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import keras

    from resnetctl.data.decode import decode_blocks
    from resnetctl.data.records import FileRecords
    from resnetctl.models import create_model
    from resnetctl.prediction import classify, read_image_file

    work = Path(tempfile.mkdtemp(prefix="resnetctl-bench-predict-"))
    files = extract(work, args.images)
    model = create_model(args.model, input_size=64, num_classes=20)
    classes = [f"c{i}" for i in range(20)]
    records = FileRecords(files, np.zeros(len(files), np.int32), read_image_file)
    blocks = [np.arange(i, min(i + args.batch_size, len(files))) for i in range(0, len(files), args.batch_size)]
    decoded = np.concatenate([images.copy() for images, *_ in decode_blocks(records, blocks, 64)])
    model.predict_on_batch(decoded[: args.batch_size])  # compile outside the timings

    def decode_only():
        for _ in decode_blocks(records, blocks, 64):
            pass

    def inference_only():
        for index in blocks:
            model.predict_on_batch(decoded[index])

    def predict():
        for _ in classify(model, classes, files, batch_size=args.batch_size):
            pass

    sides = {"decode only": decode_only, "inference only": inference_only, "predict": predict}
    rates = {name: [] for name in sides}
    order = list(sides)
    for r in range(args.rounds):
        for name in order[r % 3 :] + order[: r % 3]:
            start = time.perf_counter()
            sides[name]()
            rates[name].append(len(files) / (time.perf_counter() - start))
    print(f"{args.model}, {len(files)} JPEGs of 64 px, batch {args.batch_size}, backend {keras.backend.backend()}")
    for name, values in rates.items():
        print(f"{name + ':':17s}{np.median(values):9.1f} images/s  {[round(v, 1) for v in values]}")
    slower = min(np.median(rates["decode only"]), np.median(rates["inference only"]))
    print(f"predict / slower of the two: {np.median(rates['predict']) / slower:.3f}   (goal >= 0.8)")


if __name__ == "__main__":
    main()

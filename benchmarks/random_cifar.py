"""A CIFAR-10 python archive of random pixels and labels, for speed measurements at full size.

    python benchmarks/random_cifar.py OUT.tar.gz [--train 50000] [--test 1000] [--seed 0]

``resnetctl prepare cifar10 --source OUT.tar.gz`` reads it like the real archive (the same five
``data_batch_N`` files, ``test_batch`` and ``batches.meta``), so a benchmark epoch has the size a
user's has (50,000 images) on a machine that cannot download CIFAR-10. The images are noise:
good for images/s, meaningless for accuracy.
"""

from __future__ import annotations

import argparse
import io
import pickle
import tarfile

import numpy as np


def batch(rng: np.random.Generator, count: int) -> bytes:
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, count).tolist()
    return pickle.dumps({b"data": data, b"labels": labels})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    shares = np.diff(np.linspace(0, args.train, 6).round().astype(int))
    members = {f"data_batch_{i}": batch(rng, int(n)) for i, n in enumerate(shares, start=1)}
    members["test_batch"] = batch(rng, args.test)
    members["batches.meta"] = pickle.dumps({b"label_names": [f"class{i}".encode() for i in range(10)]})
    with tarfile.open(args.out, "w:gz", compresslevel=1) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    print(f"wrote {args.out}: {args.train:,} train and {args.test:,} test images of noise")


if __name__ == "__main__":
    main()

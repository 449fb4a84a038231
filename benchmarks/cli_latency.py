"""How long the CLI takes to answer mistakes, against `resnetctl --version`, in one invocation.

    python benchmarks/cli_latency.py [--repeat 5]

Prints the median wall time of each command and its ratio to `--version` (the goal is <= 1.5x:
every mistake that needs no Keras is answered before a backend is imported), and `build --list`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

CASES = [
    ["--version"],
    ["train", "resnet21"],
    ["train", "resnet20", "--epochs", "0"],
    ["train", "resnet20", "--lr", "inf"],
    ["train", "resnet20", "--dataset", "nowhere"],
    ["resume", "--run", "nowhere"],
    ["evaluate", "--run", "nowhere"],
    ["prepare", "folder"],
    ["build", "--list"],
    ["build", "resnet1202"],
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty:
        env_args = ["--data-dir", empty]
        times = {}
        for _ in range(args.repeat):  # interleaved rounds: machine noise hits every case alike
            for case in CASES:
                extra = env_args if case[0] == "train" else []
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "resnetctl", *case, *extra], capture_output=True)
                times.setdefault(" ".join(case), []).append(time.perf_counter() - start)
    base = statistics.median(times["--version"])
    print(f"{'command':<40} {'median s':>9} {'x --version':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<40} {median:9.3f} {median / base:12.2f}")


if __name__ == "__main__":
    main()

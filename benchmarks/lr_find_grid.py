"""lr-find's suggestion against a grid of rates, trained for the same epochs.

    python benchmarks/lr_find_grid.py --data-dir DIR [--dataset shapes] [--model resnet8] [--epochs 2]
        [--grid 0.01,0.03,0.1,0.3,1] [--runs-dir DIR] [--extra "--batch-size 64"]

Prepare the dataset first (``resnetctl prepare shapes --data-dir DIR``). Runs ``lr-find`` with the
extra train options, then ``train`` at the suggested rate and at each rate of the grid, each for
``--epochs`` epochs with the same seed and settings, evaluates each run's best.keras on the test
split, and prints one JSON line per run and a summary line: the suggestion's test rank-1 against the
grid's best (docs/benchmarks.md). Everything goes through the CLI, as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time

from cli_runner import cli  # benchmarks/ is on the path of a script run from it


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--grid", default="0.01,0.03,0.1,0.3,1")
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--extra", default="", help="train options given to lr-find and every run")
    args = parser.parse_args()
    runs = args.runs_dir or tempfile.mkdtemp(prefix="lr-find-grid-")
    common = ["--dataset", args.dataset, "--data-dir", args.data_dir, *shlex.split(args.extra)]
    started = time.perf_counter()
    found = cli("lr-find", args.model, *common, "--json")
    sweep_seconds = time.perf_counter() - started
    suggested = found["suggested_lr"]
    print(json.dumps({"lr_find": suggested, "rule": found["rule"].split(" ")[0], "steps": found["steps_run"],
                      "seconds": round(sweep_seconds, 1)}), flush=True)  # fmt: skip
    rates = [("suggested", suggested)] + [("grid", float(r)) for r in args.grid.split(",")]
    results = []
    for kind, lr in rates:
        name = f"{kind}-{lr:g}"
        t0 = time.perf_counter()
        cli("train", args.model, *common, "--epochs", args.epochs, "--lr", lr, "--run", name, "--runs-dir", runs)
        score = cli("evaluate", "--run", f"{runs}/{name}", "--split", "test", "--json")["rank_1"]
        row = {"kind": kind, "lr": lr, "test_rank_1": score, "seconds": round(time.perf_counter() - t0, 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
    grid = [r for r in results if r["kind"] == "grid"]
    best = max(grid, key=lambda r: r["test_rank_1"])
    mine = results[0]
    print(json.dumps({"suggested_lr": suggested, "suggested_test": mine["test_rank_1"], "grid_best_lr": best["lr"],
                      "grid_best_test": best["test_rank_1"],
                      "points_behind": round(100 * (best["test_rank_1"] - mine["test_rank_1"]), 2),
                      "epochs": args.epochs, "runs_dir": runs}))  # fmt: skip


if __name__ == "__main__":
    main()

"""A pruned ``tune`` study against the default recipe at the same epochs (issue #30's evidence).

    python benchmarks/tune_vs_default.py --data-dir DIR [--dataset cifar10] [--model resnet20]
        [--epochs 5] [--trials 12] [--space "--lr 0.01:1 --weight-decay 1e-5:1e-3"] [--runs-dir DIR]
        [--repeats N]

Prepare the dataset first (``resnetctl prepare cifar10 --source ../shared/datasets/cifar-10-python-subset.tar.gz
--data-dir DIR``). Trains the default recipe for ``--epochs`` (seed 0), runs a ``tune`` study of
``--trials`` trials of the same epochs over the space with Optuna's median pruner on, then scores
the default run's and the best trial's best.keras on the test split (the study chose its best on
the validation split; the test split is seen once, here). Prints one JSON line per trial and a
summary line: both test scores, the epochs the study spent against trials x epochs, and the wall
times. With ``--repeats N`` the comparison is also made the fair way: the default and the best
trial's settings each train with seeds 1..N-1 too (``train --seed 1 --seeds N-1``; seed 0 is the
default run and the best trial themselves), every run is scored on test, and the means and their
95% intervals are printed: one val split and one seed can choose a trial by luck, N seeds on the
test split say whether its settings are better (the tuned side's seed 0 is the trial the study
chose, so that side keeps a little of the selection's luck).
Everything goes through the CLI, as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time

from cli_runner import cli  # benchmarks/ is on the path of a script run from it

from resnetctl.reports import mean_and_interval


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--space", default="--lr 0.01:1 --weight-decay 1e-5:1e-3")
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--repeats", type=int, default=0, help="seeds of each side for the fair comparison")
    args = parser.parse_args()
    runs = args.runs_dir or tempfile.mkdtemp(prefix="tune-vs-default-")
    common = ["--dataset", args.dataset, "--data-dir", args.data_dir, "--epochs", args.epochs, "--runs-dir", runs]

    t0 = time.perf_counter()
    cli("train", args.model, *common, "--run", "default", "--seed", 0)
    default_test = cli("evaluate", "--run", f"{runs}/default", "--split", "test", "--json")["rank_1"]
    default_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = cli("tune", args.model, *common, "--study", "study", "--trials", args.trials, *shlex.split(args.space),
                 "--json")  # fmt: skip
    tune_seconds = time.perf_counter() - t0
    for t in report["trials"]:
        print(json.dumps({k: t[k] for k in ("number", "state", "value", "params", "epochs_done")}), flush=True)
    best = report["best"]
    best_test = cli("evaluate", "--run", best["run"], "--split", "test", "--json")["rank_1"]
    print(json.dumps({
        "default_test": default_test, "default_seconds": round(default_seconds, 1),
        "tune_best_test": best_test, "tune_best_params": best["params"], "tune_best_val": best["value"],
        "epochs_spent": report["epochs_spent"], "epochs_unpruned": args.trials * args.epochs,
        "tune_seconds": round(tune_seconds, 1), "notes": report["notes"], "runs_dir": runs,
    }))  # fmt: skip
    if args.repeats > 1:  # seed 0 of each side is the run above (the default, the best trial); seeds 1.. are new
        flags = [a for k, v in best["params"].items() for a in (f"--{k.replace('_', '-')}", v)]
        for side, side_flags, seed_0 in (("default", [], default_test), ("tuned", flags, best_test)):
            cli("train", args.model, *common, *side_flags, "--run", side, "--seed", 1, "--seeds", args.repeats - 1)
            tests = [seed_0] + [
                cli("evaluate", "--run", f"{runs}/{side}-s{seed}", "--split", "test", "--json")["rank_1"]
                for seed in range(1, args.repeats)
            ]
            row = {"side": side, "flags": side_flags, "test": tests, **mean_and_interval(tests)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

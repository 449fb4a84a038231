"""What ``resnetctl summary`` says about runs: read from the run dirs, nothing recomputed."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

from resnetctl.commands import command, start_again_command, train_again_command
from resnetctl.errors import RunError
from resnetctl.lineage import lineage
from resnetctl.runs import RunDir, best_row, list_runs, score
from resnetctl.tracking import mlflow_run_of

SPARK = "▁▂▃▄▅▆▇█"
RECIPE_KEYS = (
    "optimizer",
    "lr",
    "schedule",
    "power",
    "batch_size",
    "weight_decay",
    "label_smoothing",
    "augmentation",
    "precision",
)


def sparkline(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(7, int((v - low) / span * 7.999))] for v in values)


def next_command(run: RunDir, state: str, done: int, epochs: int) -> str | None:
    """The command that continues a run, as it should be pasted."""
    if state == "running":
        return command("summary", run.path.resolve(), "--follow")
    if done == 0:
        return start_again_command(run)
    if done < epochs and state != "finished":
        return command("resume", "--run", run.path.resolve())
    if not run.evaluated():
        return command("evaluate", "--run", run.path.resolve())
    # scored already: what comes next is using the model, exported under a name that is free here
    # (so the command works when pasted in this folder)
    out, k = f"{run.name}.keras", 2
    while os.path.lexists(out):
        out, k = f"{run.name}-{k}.keras", k + 1
    return command("export", "--run", run.path.resolve(), "--out", out)


def branches(run: RunDir) -> list[dict]:
    """The runs that came from this one: its branches (epochs it left behind) and forks."""
    here = str(run.path.resolve())
    out = []
    for other in list_runs(run.path.parent):
        try:
            parent = other.config().get("parent")
        except RunError:
            continue
        if isinstance(parent, dict) and parent.get("path") == here:
            out.append(
                {"run": other.name, "path": str(other.path), "epoch": parent.get("epoch"), "kind": parent.get("kind")}
            )
    return out


def latest_evaluation(run: RunDir) -> dict | None:
    """The newest evaluation of the run by when it was made, a test-split one preferred."""
    evals = [e for e in run.evaluations() if e.get("rank_1") is not None]
    tests = [e for e in evals if e.get("split") == "test"]
    return (tests or evals or [None])[-1]


# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96)
T_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
T_95 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_and_interval(values: list[float]) -> dict | None:
    """The mean of ``values``, their sample standard deviation and the half-width of the 95%
    confidence interval of the mean (Student's t); None without values."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None, "values": values}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T_95[n - 2] if n - 1 <= len(T_95) else 1.96
    return {"n": n, "mean": mean, "std": std, "ci95": t * std / math.sqrt(n), "values": values}


def seed_group(run: RunDir) -> dict | None:
    """``train --seeds``: the run's sibling runs (those of its group still beside it; a branch or a
    fork of one is not a sibling), the mean and 95% interval of their best scores and of their
    newest test rank-1 (the runs evaluated on test)."""
    group = run.config().get("seed_group")
    if not isinstance(group, dict) or not isinstance(group.get("runs"), list) or run.name not in group["runs"]:
        return None
    members = []
    for name in group["runs"]:
        sibling = RunDir(run.path.parent / str(name))
        if sibling.path.is_dir() and sibling.is_run():
            members.append(sibling)
    bests, tests = [], []
    for member in members:
        try:
            best = best_row(member.history())
            test = latest_evaluation(member)
        except RunError:
            continue
        if best is not None:
            bests.append(score(best))
        if test is not None and test.get("split") == "test":
            tests.append(float(test["rank_1"]))
    return {
        "name": group.get("name"),
        "seeds": group.get("seeds"),
        "runs": group["runs"],
        "found": len(members),
        "best_score": mean_and_interval(bests),
        "test_rank_1": mean_and_interval(tests),
    }


def run_summary(run: RunDir) -> dict:
    config = run.config()
    options = run.options()
    history = run.history()
    state = run.state()
    best = best_row(history)
    latest = latest_evaluation(run)
    seconds = sum(r.get("seconds", 0.0) for r in history)
    speeds = [r["images_per_second"] for r in history if "images_per_second" in r]
    curve_key = "val_accuracy" if any("val_accuracy" in r for r in history) else "accuracy"
    done = history[-1]["epoch"] if history else 0
    total = options.total_epochs()
    if latest:
        latest = {k: latest.get(k) for k in latest if k not in ("per_class", "confusion_matrix")}
        latest["stale"] = run.is_stale(latest)
    return {
        "run": run.name,
        "path": str(run.path),
        "state": state.get("state", "unknown"),
        "reason": state.get("reason"),
        "stopped_early": {k: state[k] for k in ("stopped_epoch", "best_epoch") if k in state} or None,
        "model": config["model"],
        "dataset": config["dataset"],
        "recipe": {k: config.get(k) for k in RECIPE_KEYS},
        "recipe_name": config.get("recipe"),
        "segments": [dict(s) for s in options.segments],
        "lineage": lineage(run),
        "branches": branches(run),
        "epochs_done": done,
        "epochs": total,
        "best_score": score(best) if best else None,
        "best_epoch": best["epoch"] if best else None,
        "latest_evaluation": latest,
        "seconds": round(seconds, 1),
        "images_per_second": round(sum(speeds) / len(speeds), 1) if speeds else None,
        "checkpoints": [int(e) for e in run.checkpoints()],
        "monitor": str(run.monitor_path) if run.monitor_path.exists() else None,
        "mlflow_run": mlflow_run_of(config),
        "curve": curve_key,
        "sparkline": sparkline([r[curve_key] for r in history if curve_key in r]),
        "next_command": next_command(run, state.get("state", ""), done, total),
        "seed_group": seed_group(run),
    }


def follow_run(run: RunDir, poll_seconds: float = 1.0, timeout: float | None = None) -> Iterator[dict]:
    """Each history row of ``run`` as it is written (the rows already there first), until the run
    is no longer training; then one last ``{"state": ...}`` item. Reads files only: the writer is
    never waited for or disturbed."""
    shown, started = 0, time.monotonic()
    while True:
        state = run.state()
        try:
            rows = run.history()
        except RunError:
            rows = []  # caught between two writes: read again next time
        yield from rows[shown:]
        shown = max(shown, len(rows))
        if state.get("state") != "running":
            yield {"state": state.get("state"), "reason": state.get("reason"), "epochs_done": shown}
            return
        if timeout is not None and time.monotonic() - started > timeout:
            return
        time.sleep(poll_seconds)


def summarise(plan) -> list[dict]:
    """``summary`` as planned by :func:`resnetctl.plan.plan_summary`: a summary per run (a run
    that can't be read is skipped with a warning unless it was named), the curves drawn when
    ``--plot`` asked; refused when there is nothing to summarise."""
    import logging

    from resnetctl.paths import runs_dir as runs_root

    rows, readable = [], []
    for run in plan.runs:
        try:
            rows.append(run_summary(run))
            readable.append(run)
        except RunError as exc:
            if plan.named:
                raise
            logging.getLogger("resnetctl").warning("skipped %s", exc.message)
    if not rows:
        hint = "start one, e.g.: " + command("train", "resnet20", "--runs-dir", runs_root(plan.runs_dir).resolve())
        raise RunError("No runs to summarise", hint=hint)
    if plan.study is not None:
        rows, readable = _ranked(rows, readable, runs_root(plan.runs_dir))
    if plan.plot is not None:
        from resnetctl.plots import plot_runs

        plot_runs([(row["run"], run.history()) for row, run in zip(rows, readable, strict=True)], plan.plot)
    return rows


def _ranked(rows: list[dict], runs: list[RunDir], root) -> tuple[list[dict], list[RunDir]]:
    """A study's trials best first (by best score; trials with none last), each with the settings
    that differ between them (``settings``), and the best with the ``train`` command that trains
    its settings again as a new run of the runs dir (``train_command``)."""
    pairs = sorted(zip(rows, runs, strict=True), key=lambda pair: _best_first(pair[0]["best_score"]))
    keys = {k for row, _ in pairs for k in row["recipe"]}
    varying = sorted(k for k in keys if len({repr(row["recipe"].get(k)) for row, _ in pairs}) > 1)
    for row, _ in pairs:
        row["settings"] = {k: row["recipe"].get(k) for k in varying}
    best, best_run = pairs[0]
    if best["best_score"] is not None:
        best["train_command"] = train_again_command(best_run.config_path.resolve(), root)
    return [r for r, _ in pairs], [run for _, run in pairs]


def _best_first(best_score: float | None) -> tuple[bool, float]:
    return best_score is None, -(best_score or 0.0)  # a run without a score last

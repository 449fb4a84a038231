"""What ``resnetctl summary`` says about runs: read from the run dirs, nothing recomputed."""

from __future__ import annotations

from resnetctl.errors import RunError
from resnetctl.runs import RunDir, checkpoint_info, score

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(7, int((v - low) / span * 7.999))] for v in values)


def _is_stale(run: RunDir, evaluation: dict) -> bool:
    """An evaluation is stale when the checkpoint file it scored now holds something else."""
    label = str(evaluation.get("checkpoint", ""))
    path = {"best": run.best_path, "last": run.last_path}.get(label)
    if path is None and label.startswith("epoch") and label[5:].isdigit():
        path = run.epoch_path(int(label[5:]))
    if path is None or not path.exists():
        return True
    try:
        return checkpoint_info(path).get("id") != evaluation.get("checkpoint_id")
    except RunError:
        return True


def _next_command(run: RunDir, state: str, done: int, epochs: int) -> str | None:
    where = run.path.resolve()
    if state == "running":
        return None
    if done == 0:
        return f"resnetctl train MODEL --run {run.name} --runs-dir {where.parent} (no epoch finished)"
    if done < epochs and state != "finished":  # a finished run short of its epochs was stopped early
        return f"resnetctl resume --run {where}"
    return f"resnetctl evaluate --run {where}"


def run_summary(run: RunDir) -> dict:
    config = run.config()
    history = run.history()
    state = run.state()
    best = max(history, key=score, default=None)
    evals = [e for e in run.evaluations() if e.get("rank_1") is not None]
    tests = [e for e in evals if e.get("split") == "test"]
    latest = (tests or evals or [None])[-1]
    seconds = sum(r.get("seconds", 0.0) for r in history)
    speeds = [r["images_per_second"] for r in history if "images_per_second" in r]
    curve_key = "val_accuracy" if any("val_accuracy" in r for r in history) else "accuracy"
    done = history[-1]["epoch"] if history else 0
    if latest:
        latest = {k: latest.get(k) for k in latest if k not in ("per_class", "confusion_matrix")}
        latest["stale"] = _is_stale(run, latest)
    return {
        "run": run.name,
        "path": str(run.path),
        "state": state.get("state", "unknown"),
        "reason": state.get("reason"),
        "stopped_early": {k: state[k] for k in ("stopped_epoch", "best_epoch") if k in state} or None,
        "model": config["model"],
        "dataset": config["dataset"],
        "recipe": {
            k: config.get(k)
            for k in (
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
        },
        "recipe_name": config.get("recipe"),
        "segments": config.get("segments", []),
        "epochs_done": done,
        "epochs": config["epochs"],
        "best_score": score(best) if best else None,
        "best_epoch": best["epoch"] if best else None,
        "latest_evaluation": latest,
        "seconds": round(seconds, 1),
        "images_per_second": round(sum(speeds) / len(speeds), 1) if speeds else None,
        "checkpoints": [int(e) for e in run.checkpoints()],
        "monitor": str(run.monitor_path) if run.monitor_path.exists() else None,
        "curve": curve_key,
        "sparkline": sparkline([r[curve_key] for r in history if curve_key in r]),
        "next_command": _next_command(run, state.get("state", ""), done, config["epochs"]),
    }

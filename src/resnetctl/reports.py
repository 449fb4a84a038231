"""What ``resnetctl summary`` says about runs: read from the run dirs, nothing recomputed."""

from __future__ import annotations

from resnetctl.runs import RunDir

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(7, int((v - low) / span * 7.999))] for v in values)


def run_summary(run: RunDir) -> dict:
    config = run.config()
    history = run.history()
    best = max(history, key=lambda r: r.get("val_accuracy", r.get("accuracy", 0.0)), default=None)
    evals = [e for e in run.evaluations() if "rank_1" in e]
    tests = [e for e in evals if e.get("split") == "test"]
    latest = (tests or evals or [None])[-1]
    seconds = sum(r.get("seconds", 0.0) for r in history)
    speeds = [r["images_per_second"] for r in history if "images_per_second" in r]
    curve_key = "val_accuracy" if any("val_accuracy" in r for r in history) else "accuracy"
    done = history[-1]["epoch"] if history else 0
    return {
        "run": run.name,
        "path": str(run.path),
        "model": config["model"],
        "dataset": config["dataset"],
        "recipe": {k: config.get(k) for k in ("optimizer", "lr", "schedule", "power", "batch_size",
                                                "weight_decay", "label_smoothing", "augmentation",
                                                "precision")},
        "segments": config.get("segments", []),
        "epochs_done": done,
        "epochs": config["epochs"],
        "best_val_accuracy": best.get(curve_key) if best else None,
        "best_epoch": best["epoch"] if best else None,
        "latest_evaluation": ({k: latest.get(k) for k in latest if k not in ("per_class", "confusion_matrix")}
                              if latest else None),
        "seconds": round(seconds, 1),
        "images_per_second": round(sum(speeds) / len(speeds), 1) if speeds else None,
        "checkpoints": [int(e) for e in run.checkpoints()] if history else [],
        "monitor": str(run.monitor_path) if run.monitor_path.exists() else None,
        "curve": curve_key,
        "sparkline": sparkline([r[curve_key] for r in history if curve_key in r]),
        "resume_command": f"resnetctl resume --run {run.path}" if 0 < done < config["epochs"] else None,
    }

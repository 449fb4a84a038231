"""``diagnose``: what a run's history says, in a few lines, and the command that acts on it.

Read from history.csv, state.json and the checkpoints (nothing recomputed, no Keras), by the
rules a babysitter applies to the monitor plot, in this order of urgency:

- **diverging**: the run diverged (a non-finite loss), or the train loss has risen for the last
  two epochs to more than 1.25x its lowest value. Go back to the last checkpoint at or before the
  lowest loss with a tenth of that epoch's rate (the trainer's own advice after a divergence).
- **over-fitting**: the validation loss has risen for 3 epochs or more since its lowest value
  (by more than 5%) while the train loss kept falling; said with the train/val accuracy gap now
  and the epoch from which it stayed above 5 points. Fork from the checkpoint at or before the
  best validation loss with a tenth of its rate (annealing before the gap widens), or train again
  with twice the weight decay.
- **plateau**: the score (val accuracy, else train accuracy: :func:`resnetctl.runs.score`) has
  not beaten its best by half a point in the last few epochs (a quarter of the epochs done, 3 to
  10), while the rate is above a twentieth of its peak: go back to the newest checkpoint with a
  tenth of the rate (the step schedule's drop). With the rate already low, the run has converged.
- **still improving**: the score beat its best by half a point within that window: train on
  (``resume``; ``resume --epochs`` for a finished run), or follow it while it trains.
"""

from __future__ import annotations

import math

from resnetctl.commands import command
from resnetctl.errors import RunError
from resnetctl.runs import RunDir, best_row, find_run, free_name, score

MIN_EPOCHS = 3  # fewer: too early to tell
DIVERGING_RISE = 1.25  # the train loss above this times its lowest value, rising for two epochs
OVERFIT_RISE = 0.05  # the val loss this much above its lowest value ...
OVERFIT_EPOCHS = 3  # ... for at least this many epochs since
GAP = 0.05  # a train/val accuracy gap above this is "open"
PLATEAU_DELTA = 0.005  # half a point of accuracy: less is no improvement
LOW_RATE = 1 / 20  # a rate below this share of the run's peak: the schedule has annealed


def _window(done: int) -> int:
    return max(3, min(10, done // 4))


def _checkpoint_at_or_before(run: RunDir, epoch: int) -> int | None:
    kept = [e for e in run.checkpoints() if e <= epoch]
    return max(kept) if kept else None


def _rate(row: dict) -> float | None:
    lr = row.get("lr")
    return lr if lr is not None and lr > 0 else None


def diagnose(run: RunDir) -> dict:
    """The diagnosis of ``run``: its findings, the verdict and the command that acts on it (the
    JSON of ``diagnose --json``, docs/json.md)."""
    history = run.history()
    options = run.options()
    state = run.state().get("state", "unknown")
    done = history[-1]["epoch"] if history else 0
    total = options.total_epochs()
    has_val = any("val_loss" in r for r in history)
    best = best_row(history)
    out = {
        "run": run.name,
        "path": str(run.path),
        "state": state,
        "epochs_done": done,
        "epochs": total,
        "curve": "val_accuracy" if has_val else "accuracy",
        "best_epoch": best["epoch"] if best else None,
        "best_score": score(best) if best else None,
    }
    findings = _diverging(run, history, state) or []
    if not findings and done < MIN_EPOCHS:
        findings = [
            _finding("too early", f"too early to tell: {done} epoch(s) done (at least {MIN_EPOCHS} are needed)")
        ]
        findings[0]["command"] = _go_on(run, state, done, total)
    if not findings:
        findings = _overfitting(run, history, options) + _progress(run, history, state, done, total)
    if not has_val and history:
        findings.append(
            _finding("note", "no validation split: over-fitting can't be seen (the score is train accuracy)")
        )
    verdict = findings[0]
    return {
        **out,
        "verdict": verdict["kind"],
        "text": verdict["text"],
        "command": verdict.get("command"),
        "findings": findings,
    }


def _finding(kind: str, text: str, **more) -> dict:
    return {"kind": kind, "text": text, **more}


def _back_to(run: RunDir, epoch: int, history: list[dict], why: str, fork: str | None = None) -> dict:
    """The resume that goes back to the checkpoint at or before ``epoch`` with a tenth of its rate."""
    by_epoch = {r["epoch"]: r for r in history}
    chosen = _checkpoint_at_or_before(run, epoch)
    if chosen is None:
        return {"command": None, "note": f"no checkpoint at or before epoch {epoch} to go back to"}
    lr = _rate(by_epoch.get(chosen, {})) or _rate(history[-1]) or run.options().lr
    words = ["resume", "--run", run.path.resolve(), "--epoch", chosen, "--lr", f"{lr / 10:.3g}"]
    if fork:
        words += ["--fork", free_name(run.path.parent, fork)]
    if chosen != epoch:
        why += f"; epoch {chosen} is the newest checkpoint at or before epoch {epoch}"
    return {"command": command(*words), "epoch": chosen, "lr": float(f"{lr / 10:.3g}"), "why": why}


def _go_on(run: RunDir, state: str, done: int, total: int) -> str:
    if state == "running":
        return command("summary", run.path.resolve(), "--follow")
    if done >= total or state == "finished":
        return command("resume", "--run", run.path.resolve(), "--epochs", total + max(5, total // 2))
    return command("resume", "--run", run.path.resolve())


def _diverging(run: RunDir, history: list[dict], state: str) -> list[dict] | None:
    if state == "diverged":
        done = history[-1]["epoch"] if history else 0
        if not history:
            return [_finding("diverging", "diverged in its first epoch: no epoch finished")]
        action = _back_to(run, done, history, "the last good epoch, a tenth of its rate")
        return [_finding("diverging", f"diverged after epoch {done}: the loss became NaN or inf", **action)]
    losses = [r["loss"] for r in history if "loss" in r]
    if len(losses) < 3:
        return None
    lowest = min(range(len(losses)), key=losses.__getitem__)
    rising = losses[-1] > losses[-2] > losses[-3]
    if rising and losses[-1] > DIVERGING_RISE * losses[lowest] and lowest <= len(losses) - 3:
        epoch = history[lowest]["epoch"]
        text = (
            f"diverging: the train loss rose to {losses[-1]:.4g} in the last two epochs, "
            f"{losses[-1] / losses[lowest]:.2f}x its lowest ({losses[lowest]:.4g} at epoch {epoch})"
        )
        return [_finding("diverging", text, **_back_to(run, epoch, history, "before the rise, a tenth of its rate"))]
    return None


def _gap_opened(history: list[dict]) -> int | None:
    """The first epoch from which the train/val accuracy gap stayed above :data:`GAP`."""
    opened = None
    for r in history:
        if "accuracy" in r and "val_accuracy" in r and r["accuracy"] - r["val_accuracy"] > GAP:
            opened = opened or r["epoch"]
        else:
            opened = None
    return opened


def _overfitting(run: RunDir, history: list[dict], options) -> list[dict]:
    rows = [r for r in history if "val_loss" in r and "loss" in r]
    if len(rows) < OVERFIT_EPOCHS + 1:
        return []
    low = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
    since = len(rows) - 1 - low
    last, best = rows[-1], rows[low]
    if not (
        since >= OVERFIT_EPOCHS
        and last["val_loss"] > best["val_loss"] * (1 + OVERFIT_RISE)
        and last["loss"] < best["loss"]
    ):
        return []
    gap = last.get("accuracy", math.nan) - last.get("val_accuracy", math.nan)
    opened = _gap_opened(history)
    text = (
        f"over-fitting: the val loss is {last['val_loss'] / best['val_loss'] - 1:.0%} above its lowest "
        f"({best['val_loss']:.4g} at epoch {best['epoch']}) while the train loss fell "
        f"{1 - last['loss'] / best['loss']:.0%}"
    )
    if math.isfinite(gap):
        text += f"; the train/val accuracy gap is {gap:.3f}" + (
            f", above {GAP:g} since epoch {opened}" if opened else ""
        )
    action = _back_to(
        run, best["epoch"], history, "the best val loss, annealed", fork=f"{run.name[:100]}-e{best['epoch']}-anneal"
    )
    also = command("train", "--config", run.config_path.resolve(), "--weight-decay", f"{2 * options.weight_decay:.3g}")
    return [_finding("over-fitting", text, gap=gap, gap_opened=opened, also=also, **action)]


def _progress(run: RunDir, history: list[dict], state: str, done: int, total: int) -> list[dict]:
    window = _window(done)
    scores = [score(r) for r in history]
    before = max(scores[:-window], default=-math.inf)
    recent = max(scores[-window:])
    peak = max((r.get("lr", 0.0) for r in history), default=0.0)
    lr = history[-1].get("lr", 0.0)
    if recent > before + PLATEAU_DELTA:
        gained = recent - before if math.isfinite(before) else None
        text = f"still improving: the best score rose in the last {window} epochs" + (
            f" (+{gained:.3f})" if gained is not None else ""
        )
        return [_finding("still improving", text, command=_go_on(run, state, done, total))]
    flat = f"on a plateau: no gain of {PLATEAU_DELTA:g} in the score over the last {window} epochs"
    if peak and lr < LOW_RATE * peak:
        return [
            _finding(
                "converged",
                f"{flat}, with the rate already annealed ({lr:.3g}, {lr / peak:.1%} of its peak)",
                command=command("evaluate", "--run", run.path.resolve()),
            )
        ]
    return [
        _finding("plateau", f"{flat} at lr {lr:.3g}", **_back_to(run, done, history, "the newest, a tenth of the rate"))
    ]


def diagnose_run(run=None, runs_dir=None) -> dict:
    """:func:`diagnose` of a run named as every command names one (the latest by default)."""
    found = find_run(run, runs_dir)
    if not found.history() and found.state().get("state") != "diverged":
        raise RunError(f"Run {found.name} has no finished epoch to diagnose", hint="let it train an epoch first")
    return diagnose(found)

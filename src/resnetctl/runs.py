"""The run-dir contract: config.json, state.json, history.csv, monitor.png, checkpoints, eval-*.json.

This module owns what a run *is*: its files, its state (running, finished, stopped, diverged,
failed), and the one definition of the score that picks ``best.keras`` (:func:`score`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from resnetctl import atomic, locks, paths
from resnetctl.checkpoints import checkpoint_info, load_model, save_checkpoint  # noqa: F401 (re-exported)
from resnetctl.errors import RunError

log = logging.getLogger("resnetctl")

EPOCH_FILE = re.compile(r"^epoch_(\d{4,})\.keras$")
# ``lr`` is the learning rate of the epoch's last optimizer step; TensorBoard and monitor.png
# show the same column. ``top5``/``val_top5`` only where the dataset has more than 5 classes.
HISTORY_COLUMNS = [
    "epoch",
    "lr",
    "loss",
    "accuracy",
    "top5",
    "val_loss",
    "val_accuracy",
    "val_top5",
    "seconds",
    "images_per_second",
]
STATES = ("running", "finished", "stopped", "diverged", "failed")


def score(row: dict) -> float:
    """What ``best.keras`` maximises: validation accuracy, or train accuracy without a val split."""
    value = row.get("val_accuracy", row.get("accuracy"))
    return float(value) if value is not None and math.isfinite(float(value)) else -math.inf


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.json")
    state_path = property(lambda self: self.path / "state.json")
    history_path = property(lambda self: self.path / "history.csv")
    monitor_path = property(lambda self: self.path / "monitor.png")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")
    last_path = property(lambda self: self.path / "last.keras")
    best_path = property(lambda self: self.path / "best.keras")
    tensorboard_dir = property(lambda self: self.path / "tensorboard")

    def epoch_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch_{epoch:04d}.keras"

    @contextlib.contextmanager
    def lock(self):
        """Held by train, resume and evaluate while they write this run. Temporary files of a
        writer that was killed are removed once it is held (only the holder writes here)."""
        with locks.exclusive(self.path, "Run"):
            for folder in (self.path, self.checkpoint_dir):
                atomic.remove_stale_temps(folder)
            yield

    # ------------------------------------------------------------------ config and state
    def config(self) -> dict:
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.path} is not a readable resnetctl run ({exc})") from None
        if not isinstance(config, dict) or "model" not in config or "epochs" not in config:
            raise RunError(f"{self.config_path} is not a resnetctl run config")
        from resnetctl.training.config import check_run_record

        check_run_record(config, str(self.config_path))  # each field's type: one line, not a crash later
        return config

    def write_config(self, config: dict) -> None:
        atomic.write_json(self.config_path, config)

    def write_state(self, state: str, **details) -> None:
        assert state in STATES, state
        atomic.write_json(self.state_path, {"state": state, "pid": os.getpid(), "updated": now(), **details})

    def state(self) -> dict:
        """The run's state; a run marked running whose process is gone is ``failed``."""
        try:
            recorded = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(recorded, dict) or not isinstance(recorded.get("state"), str):
                raise ValueError("not a JSON object with a state")
        except (OSError, ValueError):
            recorded = {
                "state": "failed" if self.config_path.exists() else "unknown",
                "reason": "no readable state.json",
            }
        if recorded.get("state") == "running" and locks.holder(self.path) is None:
            recorded = {
                **recorded,
                "state": "failed",
                "reason": "the process ended without finishing (killed or crashed)",
            }
        return recorded

    # ------------------------------------------------------------------ history
    def history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        try:
            with open(self.history_path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            parsed = [
                {k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if k and v not in ("", None)}
                for r in rows
            ]
            for row in parsed:  # the trainer never writes a non-finite value nor a row without its epoch
                bad = [k for k, v in row.items() if not math.isfinite(v)]
                if bad or row.get("epoch", 0) < 1:
                    raise ValueError(f"epoch {row.get('epoch')}: {', '.join(bad) or 'epoch'} is not a finite value")
            return parsed
        except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
            raise RunError(f"{self.history_path} is damaged ({exc})") from None

    def write_history(self, rows: list[dict]) -> None:
        with atomic.atomic_path(self.history_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, HISTORY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    # ------------------------------------------------------------------ checkpoints
    def epoch_files(self) -> list[tuple[int, Path]]:
        """``checkpoints/epoch_NNNN.keras`` by epoch, oldest first (names only, nothing read)."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoint_dir.iterdir() if (m := EPOCH_FILE.match(p.name))]
        return sorted(found)

    def keep_newest_epoch_files(self, keep: int) -> list[int]:
        """Delete all but the ``keep`` newest epoch files (``best.keras`` and ``last.keras`` are
        separate files and stay); returns the epochs deleted."""
        old = self.epoch_files()[:-keep] if keep > 0 else []
        for _, path in old:
            path.unlink(missing_ok=True)
        return [epoch for epoch, _ in old]

    def checkpoints(self) -> dict[int, Path]:
        """Every readable checkpoint by the epoch it holds (epoch files, then last/best).

        An unreadable ``best.keras`` or ``last.keras`` is skipped with a warning: it must not
        stop a resume from a good epoch file."""
        found: dict[int, Path] = {}
        for epoch, p in self.epoch_files():
            try:  # a damaged epoch file must not shadow a good last.keras of the same epoch
                checkpoint_info(p)
                found[epoch] = p
            except RunError as exc:
                log.warning("skipped %s", exc.message)
        for p in (self.best_path, self.last_path):
            if p.exists():
                try:
                    found.setdefault(int(checkpoint_info(p)["epoch"]), p)
                except RunError as exc:
                    log.warning("skipped %s", exc.message)
        return dict(sorted(found.items()))

    def checkpoint(self, epoch: int) -> Path:
        """The checkpoint holding ``epoch``, or an error listing the epochs that have one."""
        checkpoints = self.checkpoints()
        if epoch not in checkpoints:
            have = ", ".join(map(str, checkpoints)) or "none"
            raise RunError(f"No checkpoint of epoch {epoch} in {self.path}", hint=f"epochs with a checkpoint: {have}")
        return checkpoints[epoch]

    def named_checkpoint(self, which: str) -> tuple[Path, str]:
        """``best``, ``last`` or an epoch number -> (path, label). ``best`` without a
        ``best.keras`` (a run without val split that never improved, or one rolled back by
        ``resume --epoch``) falls back to ``last``, and the label says so."""
        if which in ("best", "last"):
            path = self.best_path if which == "best" else self.last_path
            if which == "best" and not path.exists() and self.last_path.exists():
                log.warning("%s has no best.keras; using last.keras", self.path)
                path, which = self.last_path, "last"
            if not path.exists():
                raise RunError(f"Run {self.path} has no checkpoint yet", hint="it stopped before its first epoch ended")
            return path, which
        try:
            epoch = int(which)
        except ValueError:
            raise RunError(f"Unknown checkpoint {which!r}", hint="use best, last or an epoch number") from None
        return self.checkpoint(epoch), f"epoch{epoch:04d}"

    def evaluations(self) -> list[dict]:
        out = []
        for p in sorted(self.path.glob("eval-*.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                log.warning("skipped unreadable %s", p)
        return out


def find_run(run: str | Path | None, runs_dir: str | Path | None = None) -> RunDir:
    """A run by path, by name under the runs dir, or the most recently changed one."""
    root = paths.runs_dir(runs_dir)
    if run:
        for candidate in (Path(run).expanduser(), root / str(run)):
            if (candidate / "config.json").is_file():
                return RunDir(candidate)
        raise RunError(
            f"No run {str(run)!r} (looked for config.json in {run} and {root / str(run)})",
            hint="see `resnetctl summary` for the runs there are",
        )
    runs = list_runs(root)
    if not runs:
        raise RunError(f"No runs in {root}", hint="start one with `resnetctl train MODEL`")
    return runs[-1]


def list_runs(runs_dir: str | Path | None = None) -> list[RunDir]:
    """Readable runs under the runs dir, oldest first (by last change of history or config).
    Anything else there is skipped, with a warning when it looks like a damaged run."""
    root = paths.check_folder(paths.runs_dir(runs_dir), "Runs dir")
    if not root.is_dir():
        return []
    runs = []
    for p in root.iterdir():
        if p.name.startswith(".") or not (p / "config.json").is_file():
            continue
        run = RunDir(p)
        try:
            run.config()
        except RunError as exc:
            log.warning("skipped %s", exc.message)
            continue
        runs.append(run)

    def changed(r: RunDir) -> float:
        return max(p.stat().st_mtime for p in (r.config_path, r.history_path) if p.exists())

    return sorted(runs, key=changed)


def init_source(init_from: str | Path, runs_dir: str | Path | None = None) -> Path:
    """``train --init-from``: a ``.keras`` file as given, or a run's best checkpoint."""
    path = Path(init_from).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".keras":
        raise RunError(f"--init-from: no file at {path}")
    return find_run(str(init_from), runs_dir).named_checkpoint("best")[0]

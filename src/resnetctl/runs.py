"""The run-dir contract: config.json, history.csv, monitor.png, checkpoints, eval-*.json.

A checkpoint is a ``.keras`` file (model + optimizer state) with one extra member,
``resnetctl.json``, that says which epoch it holds; it is written to a hidden temp name and
renamed, so a crash never leaves a half-written checkpoint under a real name.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from resnetctl import atomic, paths
from resnetctl.errors import RunError

CHECKPOINT_FORMAT = 1
CHECKPOINT_META = "resnetctl.json"
EPOCH_FILE = re.compile(r"^epoch_(\d{4,})\.keras$")
HISTORY_COLUMNS = ["epoch", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                   "images_per_second"]


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.json")
    history_path = property(lambda self: self.path / "history.csv")
    monitor_path = property(lambda self: self.path / "monitor.png")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")
    last_path = property(lambda self: self.path / "last.keras")
    best_path = property(lambda self: self.path / "best.keras")

    def epoch_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch_{epoch:04d}.keras"

    def config(self) -> dict:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.path} is not a resnetctl run ({exc})") from None

    def write_config(self, config: dict) -> None:
        atomic.write_json(self.config_path, config)

    def history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        with open(self.history_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v != ""}
                for r in rows]

    def write_history(self, rows: list[dict]) -> None:
        with atomic.atomic_path(self.history_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, HISTORY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def checkpoints(self) -> dict[int, Path]:
        """Every checkpoint by the epoch it holds (epoch files, then last/best for the rest)."""
        found: dict[int, Path] = {}
        if self.checkpoint_dir.is_dir():
            for p in sorted(self.checkpoint_dir.iterdir()):
                m = EPOCH_FILE.match(p.name)
                if m:
                    found[int(m.group(1))] = p
        for p in (self.best_path, self.last_path):
            if p.exists():
                found.setdefault(checkpoint_info(p)["epoch"], p)
        return dict(sorted(found.items()))

    def checkpoint(self, epoch: int) -> Path:
        """The checkpoint holding ``epoch``, or an error listing the epochs that have one."""
        checkpoints = self.checkpoints()
        if epoch not in checkpoints:
            have = ", ".join(map(str, checkpoints)) or "none"
            raise RunError(f"No checkpoint of epoch {epoch} in {self.path}",
                           hint=f"epochs with a checkpoint: {have}")
        return checkpoints[epoch]

    def evaluations(self) -> list[dict]:
        out = []
        for p in sorted(self.path.glob("eval-*.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except ValueError:
                continue
        return out


def save_checkpoint(model, path: Path, info: dict) -> None:
    """``model.save`` (weights, optimizer state, compile config) + our metadata, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(CHECKPOINT_META, json.dumps({"format_version": CHECKPOINT_FORMAT, **info}))


def checkpoint_info(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(CHECKPOINT_META))
    except KeyError:
        raise RunError(f"{path} was not written by resnetctl (no {CHECKPOINT_META})") from None
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise RunError(f"{path} is not a readable checkpoint ({exc})") from None


def load_model(path: str | Path, compile: bool = True):
    """Load a ``.keras`` file written by resnetctl (or any Keras model file)."""
    import keras

    import resnetctl

    resnetctl.register_keras_objects()
    path = Path(path)
    if not path.is_file():
        raise RunError(f"No model file at {path}")
    from resnetctl.models.builder import deep_graph_recursion

    try:
        with deep_graph_recursion():
            return keras.saving.load_model(path, compile=compile)
    except Exception as exc:  # Keras raises many kinds for a damaged file
        raise RunError(f"Cannot load {path}: {exc}") from None


def find_run(run: str | Path | None, runs_dir: str | Path | None = None) -> RunDir:
    """A run by path, by name under the runs dir, or the most recently modified one."""
    root = paths.runs_dir(runs_dir)
    if run:
        for candidate in (Path(run).expanduser(), root / str(run)):
            if (candidate / "config.json").is_file():
                return RunDir(candidate)
        raise RunError(f"No run {str(run)!r} (looked for config.json in {run} and {root / str(run)})",
                       hint="see `resnetctl summary` for the runs there are")
    runs = list_runs(root)
    if not runs:
        raise RunError(f"No runs in {root}", hint="start one with `resnetctl train MODEL`")
    return runs[-1]


def list_runs(runs_dir: str | Path | None = None) -> list[RunDir]:
    """Runs under the runs dir, oldest first (by last change of their history or config)."""
    root = paths.runs_dir(runs_dir)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if (p / "config.json").is_file()]

    def changed(r: RunDir) -> float:
        return max(p.stat().st_mtime for p in (r.config_path, r.history_path) if p.exists())

    return sorted(runs, key=changed)

"""The run-dir contract: the marker, config.json, state.json, history.csv, monitor.png,
checkpoints, eval-*.json, branches and lineage, and the commands that continue a run.

This module owns what a run *is*: which folder is one (:data:`MARKER`, written when the tool
creates it), its files, its state (running, finished, stopped, diverged, failed), the one
definition of the score that picks ``best.keras`` (:func:`score`, :func:`best_row`), the labels
of its checkpoints, its evaluation records, its branches (what ``resume --epoch`` leaves behind),
and :func:`command`, the one place a printed command is built.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from resnetctl import atomic, locks, paths
from resnetctl.checkpoints import checkpoint_info, load_model, save_checkpoint  # noqa: F401 (re-exported)
from resnetctl.commands import command
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
# written when the tool creates a run: a folder without it is not a run, whatever files it holds
MARKER = ".resnetctl-run"
RUN_FORMAT = 2
# what of a run dir is the tool's: these files, everything in these folders, the evaluation
# records and their files (``eval-*``) and hidden names (the marker, temporaries). No output a
# user names lands on one of them, --force or not (``outputs.claim`` asks :meth:`RunDir.owns`).
OWN_FILES = frozenset({MARKER, "config.json", "state.json", "history.csv", "monitor.png", "last.keras", "best.keras"})
OWN_FOLDERS = frozenset({"checkpoints", "tensorboard"})


def score(row: dict) -> float:
    """What ``best.keras`` maximises: validation accuracy, or train accuracy without a val split."""
    value = row.get("val_accuracy", row.get("accuracy"))
    return float(value) if value is not None and math.isfinite(float(value)) else -math.inf


def best_row(rows: list[dict]) -> dict | None:
    """The best epoch by :func:`score`; of equal scores the earliest (an epoch becomes best only by
    beating the best so far, as ``RunRecorder`` saves it)."""
    best = None
    for row in rows:
        if best is None or score(row) > score(best):
            best = row
    return best


def epoch_label(epoch: int) -> str:
    """The label of a checkpoint holding ``epoch`` (evaluation records, file names)."""
    return f"epoch{epoch:04d}"


def label_epoch(label: str) -> int | None:
    """The epoch of an ``epoch_label``, else None (``best``, ``last``, a file's stem)."""
    m = re.fullmatch(r"epoch(\d{4,})", str(label))
    return int(m.group(1)) if m else None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunDir:
    path: Path
    _parsed: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see config()

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

    marker_path = property(lambda self: self.path / MARKER)

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0):
        """Held by train and resume while they write this run; readers never take it. Keyed on the
        real path, so two names of one run (a symlink) share one lock. Temporary files of a writer
        that was killed are removed once it is held (only the holder writes here). ``wait``: as
        :func:`resnetctl.locks.exclusive_file`."""
        with locks.exclusive(self.path.resolve(), "Run", wait):
            for folder in (self.path, self.checkpoint_dir):
                atomic.remove_stale_temps(folder)
            yield

    # ------------------------------------------------------------------ identity
    def is_run(self) -> bool:
        """Whether the tool made this folder a run: its marker, or (runs made before the marker) a
        config.json that records resnetctl's version and the dataset it trained on."""
        if self.marker_path.is_file() and not self.marker_path.is_symlink():
            return True
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (
            isinstance(config, dict)
            and isinstance(config.get("versions"), dict)
            and "resnetctl" in config["versions"]
            and isinstance(config.get("dataset_info"), dict)
        )

    def owns(self, relative: tuple[str, ...]) -> bool:
        """Whether the path ``relative`` to this run's folder is one the tool writes or will write."""
        first = relative[0]
        if first in OWN_FOLDERS:
            return True
        return len(relative) == 1 and (first in OWN_FILES or first.startswith(("eval-", ".")))

    def check_is_run(self) -> RunDir:
        if not self.is_run():
            raise RunError(
                f"{self.path} is not a resnetctl run (it has no {MARKER} marker); it was left untouched",
                hint="give a run made by `resnetctl train`, or a new name with --run",
            )
        return self

    def create(self) -> None:
        """Make the folder a run: a new folder appears with its marker already in it (made under a
        temporary name and renamed), so no other process ever sees it unmarked; an existing run of
        ours is marked if it was made before the marker existed."""
        marker = {"format": RUN_FORMAT, "id": uuid.uuid4().hex, "created": now()}
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.name}{atomic.TEMP_MARK}{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            atomic.write_json(tmp / MARKER, marker)
            try:
                os.rename(tmp, self.path)
                return
            except OSError:  # it appeared meanwhile: use it as it is
                shutil.rmtree(tmp, ignore_errors=True)
        if not self.marker_path.is_file():
            atomic.write_json(self.marker_path, marker)

    # ------------------------------------------------------------------ config and state
    def config(self) -> dict:
        """``config.json``, checked; the caller's own copy to change."""
        return copy.deepcopy(self._read_config()[0])

    def options(self):
        """The run's train options (:class:`TrainConfig`), each checked for its type."""
        return copy.deepcopy(self._read_config()[1])

    def _read_config(self) -> tuple:
        """(the record, its options), parsed and checked once while the file stays the same
        (inode, mtime and size; writers replace it by a rename), so the many readers of one
        ``summary`` don't parse it again and again, and a run resumed meanwhile is seen anew."""
        try:
            st = self.config_path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._parsed.get("key") == key:
                return self._parsed["value"]
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.path} is not a readable resnetctl run ({exc})") from None
        if not isinstance(config, dict) or not isinstance(config.get("model"), str) or "epochs" not in config:
            raise RunError(f"{self.config_path} is not a resnetctl run config")
        options = check_record(config, str(self.config_path))  # each field's type: one line, not a crash later
        self._parsed.update(key=key, value=(config, options))
        return config, options

    def total_epochs(self) -> int:
        return self.options().total_epochs()

    def write_config(self, config: dict) -> None:
        atomic.write_json(self.config_path, config)

    def write_state(self, state: str, **details) -> None:
        assert state in STATES, state
        atomic.write_json(self.state_path, {"state": state, "pid": os.getpid(), "updated": now(), **details})

    def state(self) -> dict:
        """The run's state; a run marked running whose process is gone is ``failed``."""
        try:
            recorded = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(recorded, dict) or recorded.get("state") not in STATES:
                raise ValueError("not a state record")
        except (OSError, ValueError):
            recorded = {
                "state": "failed" if self.config_path.exists() else "unknown",
                "reason": f"no readable state.json in {self.path}",
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
            history = [
                {k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if k and v not in ("", None)}
                for r in rows
            ]
            for row in history:  # the trainer never writes a non-finite value nor a row without its epoch
                bad = [k for k, v in row.items() if not math.isfinite(v)]
                if bad:
                    raise ValueError(f"epoch {row.get('epoch')}: {', '.join(bad)} is not a finite value")
            epochs = [r.get("epoch") for r in history]
            if None in epochs or epochs != sorted(set(epochs)) or (epochs and epochs[0] < 1):
                raise ValueError("its epochs are not 1, 2, 3, ... in order")
            return history
        except (OSError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as exc:
            raise RunError(f"{self.history_path} is damaged ({exc})") from None

    def history_upto(self, epoch: int) -> list[dict]:
        """The rows of epochs 1..``epoch``: history.csv's, then any it lacks from the metadata of
        their checkpoints (a process killed between an epoch's checkpoint and its row leaves the
        row there). A gap no checkpoint fills is an error, never a silent hole."""
        rows = [r for r in self.history() if r["epoch"] <= epoch]
        checkpoints = self.checkpoints()
        for missing in range((rows[-1]["epoch"] if rows else 0) + 1, epoch + 1):
            metrics = {}
            if missing in checkpoints:
                with contextlib.suppress(RunError):
                    metrics = checkpoint_info(checkpoints[missing]).get("metrics") or {}
            row = {"epoch": missing}
            for key, value in metrics.items() if isinstance(metrics, dict) else ():
                if key in HISTORY_COLUMNS and isinstance(value, int | float) and math.isfinite(value):
                    row[key] = float(value)
            if "loss" not in row:
                have = rows[-1]["epoch"] if rows else 0
                raise RunError(
                    f"{self.history_path} has no row for epoch {missing} and no checkpoint records it",
                    hint=f"go on from the last recorded epoch: {command('resume', '--run', self.path, '--epoch', have)}"
                    if have
                    else None,
                )
            log.warning("history.csv had no row for epoch %d; it was taken from its checkpoint", missing)
            rows.append(row)
        return rows

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

    def prune_epoch_files(self, every: int, recent: int, keep: int | None) -> list[int]:
        """Keep the epoch files worth going back to: the ``recent`` newest and every ``every``-th
        epoch, at most ``keep`` in all (the newest first); returns the epochs deleted.
        ``best.keras`` and ``last.keras`` are separate names and stay."""
        files = self.epoch_files()
        newest = {epoch for epoch, _ in files[-recent:]} if recent > 0 else set()
        wanted = [(e, p) for e, p in files if e in newest or e % every == 0]
        if keep is not None:
            wanted = wanted[-keep:]
        kept = {e for e, _ in wanted}
        dropped = [(e, p) for e, p in files if e not in kept]
        for _, path in dropped:
            path.unlink(missing_ok=True)
        return [e for e, _ in dropped]

    def checkpoints(self) -> dict[int, Path]:
        """Every readable checkpoint by the epoch it holds: epoch files, then ``last.keras`` and
        ``best.keras`` for epochs that have no epoch file. A damaged file (an epoch file that is
        not a checkpoint, a 0-byte ``last.keras``) is skipped with a warning and never shadows a
        good one of the same epoch."""
        found: dict[int, Path] = {}
        for epoch, path in self.epoch_files():
            if self._readable(path, epoch):
                found[epoch] = path
        for p in (self.last_path, self.best_path):
            if p.is_file():
                try:
                    found.setdefault(int(checkpoint_info(p)["epoch"]), p)
                except (RunError, KeyError, TypeError, ValueError):
                    log.warning("skipped %s: not a readable checkpoint", p)
        return dict(sorted(found.items()))

    @staticmethod
    def _readable(path: Path, epoch: int) -> bool:
        try:
            info = checkpoint_info(path)
            if info.get("epoch") not in (None, epoch):
                raise RunError(f"{path} holds epoch {info.get('epoch')}, not {epoch}")
            return True
        except RunError as exc:
            log.warning("skipped %s", exc.message)
            return False

    def checkpoint(self, epoch: int) -> Path:
        """The checkpoint holding ``epoch``, or an error listing the epochs that have one."""
        checkpoints = self.checkpoints()
        if epoch not in checkpoints:
            have = ", ".join(map(str, checkpoints)) or "none"
            raise RunError(f"No checkpoint of epoch {epoch} in {self.path}", hint=f"epochs with a checkpoint: {have}")
        return checkpoints[epoch]

    def named_checkpoint(self, which: str) -> tuple[Path, str]:
        """``best``, ``last`` or an epoch number -> (path, label). ``last`` is the newest
        checkpoint; ``best`` without a ``best.keras`` (no epoch improved, or it went to a branch)
        falls back to it, and the label says so. An epoch's label is ``epochNNNN`` wherever the
        epoch is stored (its file, ``last.keras`` or ``best.keras``)."""
        if which in ("best", "last"):
            if which == "best" and self.best_path.is_file():
                return self.best_path, "best"
            checkpoints = self.checkpoints()
            if not checkpoints:
                raise RunError(f"Run {self.path} has no checkpoint yet", hint="it stopped before its first epoch ended")
            if which == "best":
                log.warning("%s has no best.keras; using its newest checkpoint", self.path)
            newest = max(checkpoints)
            path = checkpoints[newest]
            return path, "last" if path == self.last_path else epoch_label(newest)
        try:
            epoch = int(which)
        except ValueError:
            raise RunError(f"Unknown checkpoint {which!r}", hint="use best, last or an epoch number") from None
        return self.checkpoint(epoch), epoch_label(epoch)

    def label_path(self, label: str) -> Path | None:
        """The file an evaluation's checkpoint label names now (None: no such checkpoint)."""
        if label in ("best", "last"):
            return self.best_path if label == "best" else self.last_path
        epoch = label_epoch(label)
        return self.checkpoints().get(epoch) if epoch is not None else None

    @contextmanager
    def snapshot(self, which: str) -> Iterator[tuple[Path, str]]:
        """A private copy of a checkpoint, read in one pass from one open file: a reader sees
        one whole checkpoint even while the writer replaces that name (it never waits for it)."""
        path, label = self.named_checkpoint(which)
        with snapshot_file(path) as copy:
            yield copy, label

    # ------------------------------------------------------------------ evaluations
    def evaluation_path(self, split: str, label: str, tta: str | None) -> Path:
        return self.path / (f"eval-{split}-{label}" + (f"-{tta}" if tta else "") + ".json")

    def write_evaluation(self, result: dict) -> Path:
        result.setdefault("evaluated", now())
        path = self.evaluation_path(result["split"], result["checkpoint"], result.get("tta"))
        atomic.write_json(path, result)
        return path

    def evaluations(self) -> list[dict]:
        """The evaluation records, oldest first by when they were made (each has its time,
        checkpoint, epoch, split and TTA)."""
        out = []
        for p in self.path.glob("eval-*.json"):
            try:
                record = json.loads(p.read_text(encoding="utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError):
                log.warning("skipped unreadable %s", p)
                continue
            record.setdefault("evaluated", dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc).isoformat())
            out.append(record)
        return sorted(out, key=lambda r: str(r["evaluated"]))

    def evaluated(self) -> bool:
        """Whether a score of the checkpoint a bare ``evaluate`` reads now (``best.keras``, else the
        newest) is recorded: then evaluating is not what comes next."""
        path = self.best_path if self.best_path.is_file() else None
        if path is None:
            checkpoints = self.checkpoints()
            path = checkpoints[max(checkpoints)] if checkpoints else None
        try:
            wanted = checkpoint_info(path).get("id") if path is not None else None
        except RunError:
            return False
        return wanted is not None and any(
            e.get("checkpoint_id") == wanted and e.get("rank_1") is not None for e in self.evaluations()
        )

    def is_stale(self, evaluation: dict) -> bool:
        """An evaluation is stale when no checkpoint of the run holds what it scored any more."""
        wanted = evaluation.get("checkpoint_id")
        first = self.label_path(str(evaluation.get("checkpoint", "")))
        for path in dict.fromkeys([first, self.last_path, self.best_path, *self.checkpoints().values()]):
            if path is not None and path.is_file():
                try:
                    if checkpoint_info(path).get("id") == wanted:
                        return False
                except RunError:
                    continue
        return True


def check_record(record: dict, where: str):
    """A run's config.json: its options typed (:meth:`TrainConfig.from_dict`), resolved (batch
    size and augmentation set by train), its schedule segments and dataset summary well formed."""
    from resnetctl.training.config import TrainConfig, check_segments

    config = TrainConfig.from_dict(record, source=where)
    for key in ("batch_size", "augmentation"):
        if getattr(config, key) is None:
            raise RunError(f"{where}: `{key}` must be set in a run's config. Received: {key}=null")
    if not isinstance(config.batch_size, int):  # train writes the batch --batch-size auto found
        raise RunError(
            f"{where}: `batch_size` must be a whole number in a run's config. Received: {config.batch_size!r}"
        )
    check_segments(config.segments)
    info = record.get("dataset_info")
    if info is not None and not (
        isinstance(info, dict)
        and isinstance(info.get("classes", []), list)
        and all(isinstance(c, str) for c in info.get("classes", []))
        and isinstance(info.get("image_size", 0), int)
    ):
        raise RunError(f"{where}: `dataset_info` must be an object with `classes` (strings) and `image_size`")
    return config


def epoch_in(path: Path) -> int | None:
    """The epoch a checkpoint file holds, or None when it is unreadable."""
    try:
        epoch = checkpoint_info(path).get("epoch")
        return epoch if isinstance(epoch, int) else None
    except RunError:
        return None


def free_name(folder: Path, stem: str) -> str:
    """``STEM1``, ``STEM2``, ...: the first that names nothing in ``folder`` (branches, forks the tool suggests)."""
    k = 1
    while (folder / f"{stem}{k}").exists() or (folder / f"{stem}{k}").is_symlink():
        k += 1
    return f"{stem}{k}"


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (one file, two names: timm's way with best/last), or a
    copy where links are not possible; atomic either way."""
    with atomic.atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


@contextmanager
def snapshot_file(path: Path, opened=None) -> Iterator[Path]:
    """A private copy of ``path`` made from one open file descriptor (what a rename or an unlink
    does to the name after the open does not matter), removed afterwards. ``opened``: that file,
    opened earlier (read from its start)."""
    with tempfile.TemporaryDirectory(prefix="resnetctl-") as folder:
        copy = Path(folder) / path.name
        try:
            with contextlib.nullcontext(opened) if opened is not None else open(path, "rb") as src:
                src.seek(0)
                with open(copy, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        except OSError as exc:
            raise RunError(f"Cannot read {path} ({exc.strerror or exc})") from None
        yield copy


def find_run(run: str | Path | None, runs_dir: str | Path | None = None) -> RunDir:
    """A run by path, by name under the runs dir, or the most recently changed one. A folder
    that is not a run (no marker) is refused, never taken for one."""
    root = paths.runs_dir(runs_dir)
    if run:
        for candidate in (Path(run).expanduser(), root / str(run)):
            if candidate.is_dir():
                return RunDir(candidate).check_is_run()
        raise RunError(
            f"No run {str(run)!r} (looked in {run} and {root / str(run)})",
            hint="see the runs there are with: " + command("summary", "--runs-dir", root.resolve()),
        )
    runs = list_runs(root)
    if not runs:
        raise RunError(
            f"No runs in {root}", hint="start one, e.g.: " + command("train", "resnet20", "--runs-dir", root.resolve())
        )
    return runs[-1]


def list_runs(runs_dir: str | Path | None = None) -> list[RunDir]:
    """The runs (and branches) under the runs dir, oldest first by last change of history or
    config. Folders that are not runs are left alone; a damaged run is skipped with a warning."""
    root = paths.check_folder(paths.runs_dir(runs_dir), "Runs dir")
    if not root.is_dir():
        return []
    runs = []
    for p in root.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        run = RunDir(p)
        if not run.is_run():
            continue
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

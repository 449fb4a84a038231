"""Where a run came from and what it left behind: ``parent`` chains (``lineage``), the branch a
``resume --epoch`` keeps of the epochs after it (``branch_off``), and ``resume --fork``
(``fork``). Each is staged in a temporary folder and renamed into place: a branch or fork is
complete or absent."""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from pathlib import Path

from resnetctl import atomic, paths
from resnetctl.errors import RunError
from resnetctl.runs import RUN_FORMAT, RunDir, epoch_in, free_name, link_or_copy, now


def lineage(run: RunDir) -> list[dict]:
    """This run's ancestry, nearest first: ``{"run", "epoch", "kind"}`` (kind ``fork`` for
    ``resume --fork``, ``branch`` for the epochs a ``resume --epoch`` left behind)."""
    chain, seen = [], {run.path.resolve()}
    while True:
        try:
            parent = run.config().get("parent")
        except RunError:
            break
        if not isinstance(parent, dict) or not isinstance(parent.get("path"), str):
            break
        chain.append(parent)
        nxt = Path(parent["path"])
        if nxt.resolve() in seen or not (nxt / "config.json").is_file():
            break
        seen.add(nxt.resolve())
        run = RunDir(nxt)
    return chain


def branch_off(run: RunDir, epoch: int) -> RunDir | None:
    """Keep what came after ``epoch`` as a run of its own beside this one (``NAME.bK``), before
    this run goes back to ``epoch``: its later checkpoints and evaluations move there, its
    history and TensorBoard logs go with them; this run keeps epochs up to ``epoch``. Returns
    the branch, or None when there is nothing after ``epoch``."""
    history = run.history()
    later_rows = [r for r in history if r["epoch"] > epoch]
    later_files = [(e, p) for e, p in run.epoch_files() if e > epoch]
    ends = {p: epoch_in(p) for p in (run.last_path, run.best_path) if p.is_file()}
    if not later_rows and not later_files and not any(e is not None and e > epoch for e in ends.values()):
        return None
    branch = RunDir(run.path.with_name(free_name(run.path.parent, f"{run.name[:120]}.b")))
    tmp = run.path.with_name(f".{branch.name}{atomic.TEMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    staged = RunDir(tmp)
    record = run.config()
    parent = {"run": run.name, "path": str(run.path.resolve()), "epoch": epoch, "kind": "branch"}
    record.update(run=branch.name, parent=parent)
    staged.write_config(record)
    staged.write_history(history)
    moves: list[tuple[Path, Path]] = [(p, staged.epoch_path(e)) for e, p in later_files]
    for p, e in ends.items():  # a later best/last moves; one of a kept epoch is shared (linked)
        if e is not None and e > epoch:
            moves.append((p, tmp / p.name))
        elif e is not None:
            link_or_copy(p, tmp / p.name)
    for record_ in run.evaluations():
        e = record_.get("epoch")
        if isinstance(e, int) and e > epoch:
            src = run.evaluation_path(record_["split"], record_["checkpoint"], record_.get("tta"))
            for p in [src, *run.path.glob(glob.escape(src.stem) + "-*")]:  # its CSVs and figure
                if p.is_file() and (p, tmp / p.name) not in moves:
                    moves.append((p, tmp / p.name))
    if run.tensorboard_dir.is_dir():
        moves.append((run.tensorboard_dir, staged.tensorboard_dir))
    if run.monitor_path.is_file():
        link_or_copy(run.monitor_path, staged.monitor_path)
    staged.write_state(
        "stopped",
        epoch=history[-1]["epoch"] if history else epoch,
        reason=f"left behind when {run.name} went back to epoch {epoch}",
    )
    atomic.write_json(staged.marker_path, {"format": RUN_FORMAT, "id": uuid.uuid4().hex, "created": now()})
    for src, dst in moves:  # same folder tree: renames, no copies
        os.replace(src, dst)
    os.replace(tmp, branch.path)
    run.write_history([r for r in history if r["epoch"] <= epoch])
    return branch


def fork_record(run: RunDir, epoch: int, name: str) -> dict:
    """The config.json of a fork ``name`` of ``run`` at ``epoch``: its parent recorded, the
    schedule changes made before ``epoch``, and no MLflow run (the fork gets its own)."""
    record = run.config()
    record.update(run=name, parent={"run": run.name, "path": str(run.path.resolve()), "epoch": epoch, "kind": "fork"})
    record["segments"] = list(run.options().segments_before(epoch))
    record.pop("mlflow_run", None)
    return record


def fork(run: RunDir, epoch: int, name: str, into: Path | None = None) -> RunDir:
    """A new run ``name`` that starts from this run's ``epoch`` (its checkpoint linked, its history
    up to there copied, ``parent`` recorded), beside this run or in the folder ``into`` (tune
    --from's trials live in their study); this run is not changed."""

    paths.check_name(name, "Run")
    child = RunDir((into or run.path.parent) / name)
    if child.path.exists() or child.path.is_symlink():
        raise RunError(f"--fork {name}: {child.path} already exists", hint="pick another name")
    source = run.checkpoint(epoch)
    tmp = child.path.with_name(f".{name}{atomic.TEMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    staged = RunDir(tmp)
    staged.checkpoint_dir.mkdir(parents=True)
    staged.write_config(fork_record(run, epoch, name))
    staged.write_history([r for r in run.history() if r["epoch"] <= epoch])
    link_or_copy(source, staged.epoch_path(epoch))
    staged.write_state("stopped", epoch=epoch, reason=f"forked from {run.name} at epoch {epoch}")
    atomic.write_json(staged.marker_path, {"format": RUN_FORMAT, "id": uuid.uuid4().hex, "created": now()})
    os.rename(tmp, child.path)
    return child

"""Every command line the tool prints (hints after a stop, the next step of a run), built in one
place and quoted so that it works when pasted into a shell. A leaf: it imports nothing of the
tool, and takes a run as anything with ``path``, ``name`` and ``config_path`` (a ``RunDir``)."""

from __future__ import annotations

import shlex


def command(*words) -> str:
    """``resnetctl WORDS...``, each word quoted for a shell (paths with spaces or quotes included);
    ``None`` words are left out."""
    return shlex.join(["resnetctl", *(str(w) for w in words if w is not None)])


def resume_command(run, lr: float | None = None) -> str:
    """``resume`` of a run, at another rate when ``lr`` is given."""
    return command("resume", "--run", run.path.resolve(), *(("--lr", f"{lr:.3g}") if lr else ()))


def train_again_command(config_path, runs_root=None) -> str:
    """``train --config`` of a run's settings as a new run (of ``runs_root`` when given): the
    command that repeats a study's best trial."""
    return command("train", "--config", config_path, *(("--runs-dir", runs_root.resolve()) if runs_root else ()))


def start_again_command(run, dataset_path=None, lr: float | None = None) -> str:
    """``train --config`` of a run that never finished an epoch: same settings, same name."""
    return command(
        "train",
        "--config",
        run.config_path.resolve(),
        "--run",
        run.name,
        "--runs-dir",
        run.path.parent.resolve(),
        *(("--dataset", dataset_path.resolve()) if dataset_path else ()),
        *(("--lr", f"{lr:.3g}") if lr else ()),
    )

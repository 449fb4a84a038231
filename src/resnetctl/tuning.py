"""``tune``: a hyperparameter search on Optuna, each trial an ordinary run dir.

The space is named with train's own options: a range ``LOW:HIGH`` (a log scale when LOW > 0 and
HIGH >= 10 x LOW, or say ``:log``/``:linear``) or a list ``A,B,C`` searches an option, a plain value
fixes it (``--lr 0.01:1 --weight-decay 1e-5:1e-3 --schedule poly,cosine --epochs 5``), or a JSON file
of the same (``--space FILE``). A study lives on Optuna's RDB storage: by default an SQLite file
beside its trials (``RUNS/STUDY/optuna.db``), or any SQLAlchemy URL, so several processes (and
hosts) that name one ``--storage``/``--study`` share its trials (Optuna's distributed mode). The
study records its space and the base settings (the study's user attribute ``resnetctl``): a
process with another space is refused, one with ``--resume`` needs nothing else.

Trial K is the run ``RUNS/STUDY/tKKKK``, trained by :func:`resnetctl.training.trainer.train` (so it
is resumable, evaluable, listed by ``summary``, logged to MLflow with ``--mlflow``); each epoch's
score (:func:`resnetctl.runs.score`: val accuracy, else train accuracy) is reported to Optuna, whose
pruner may end the run after an epoch (the run then ends as early stopping ends one). The trial's
value is its best score. While a process trains a trial it holds the trial's lock (``.tKKKK.trial.lock``
beside it); ``--resume`` takes over the trials still marked running whose lock is free (their process
died): a trial with a checkpoint goes on from it (``resume``), one without starts again.

``--trials N`` is the study's total: a process stops when N trials are finished or running; a
trial asked for beyond N by processes racing for the last one is marked failed with the user
attribute ``surplus`` and left out of every count and listing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

from resnetctl import locks, paths
from resnetctl.commands import command, train_again_command
from resnetctl.data.store import DatasetInfo, open_dataset
from resnetctl.errors import Busy, Diverged, RunError, Stopped
from resnetctl.hooks import TuneProgress
from resnetctl.runs import RunDir, best_row, free_name, score
from resnetctl.training.config import TrainConfig, cli_options, option_kind, parse_option, searchable
from resnetctl.training.settings import config_from_flags

TUNE_INSTALL = 'pip install "resnetctl[tune]"'
STUDY_KEY = "resnetctl"  # the study's user attribute: its space, base settings and budget
STUDY_FORMAT = 1
DB_NAME = "optuna.db"
PRUNERS = ("median", "none")
# the median rule (Optuna's MedianPruner): a trial whose best score up to an epoch is below the
# median of the earlier trials' scores at that epoch is stopped, once 3 trials have finished and
# from epoch 2 on (Optuna prunes from step n_warmup_steps; the first epoch, in warmup, says little)
MEDIAN_STARTUP_TRIALS = 3
MEDIAN_WARMUP_EPOCHS = 2
# options that say where or how a trial runs on this host, not what it trains: another value is
# the same study (a worker on another host names its own folders)
LOCAL = frozenset(
    {"data_dir", "runs_dir", "run", "in_memory", "tensorboard", "mlflow", "log_every", "steps_per_execution", "jit"}
)


def require_optuna():
    """``optuna``, or one line saying how to install it."""
    if importlib.util.find_spec("optuna") is None:
        raise RunError("tune needs the optuna package", hint=f"install it with: {TUNE_INSTALL}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class Param:
    """One searched option: a float or int range (log scale or not) or a list of choices."""

    name: str
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"kind": self.kind, "choices": list(self.choices)}
        return {"kind": self.kind, "low": self.low, "high": self.high, "log": self.log}

    @classmethod
    def from_dict(cls, name: str, d: dict) -> Param:
        return cls(name, d["kind"], d.get("low"), d.get("high"), bool(d.get("log")), tuple(d.get("choices") or ()))

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")

    def ends(self) -> tuple:
        """The values a trial can take at the edges (each is checked as a train setting)."""
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def distribution(self):
        optuna = require_optuna()
        d = optuna.distributions
        if self.kind == "categorical":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log)


def parse_param(name: str, spec, where: str) -> Param | None:
    """``LOW:HIGH[:log|:linear]`` or ``A,B,C`` (or a JSON list) as a :class:`Param` of option
    ``name``; ``None`` for a plain value (the option is fixed)."""
    if name not in searchable():
        raise RunError(f"{where}: `{name}` can't be searched", hint=f"searchable: {', '.join(searchable())}")
    base = option_kind(next(f for f in cli_options() if f.name == name))[0]
    if isinstance(spec, list):
        texts = [str(v) for v in spec]
    elif isinstance(spec, str) and "," in spec:
        texts = [t.strip() for t in spec.split(",") if t.strip()]
    elif isinstance(spec, str) and ":" in spec and base in (int, float):
        parts = [p.strip() for p in spec.split(":")]
        scale = parts[2] if len(parts) == 3 else None
        if len(parts) not in (2, 3) or scale not in (None, "log", "linear"):
            raise RunError(f"{where}: `{name}` must be LOW:HIGH or LOW:HIGH:log|linear. Received: {spec!r}")
        low, high = parse_option(name, parts[0], where), parse_option(name, parts[1], where)
        if not low < high:
            raise RunError(f"{where}: the range of `{name}` is empty ({spec}): LOW must be below HIGH")
        log = scale == "log" if scale else low > 0 and high >= 10 * low
        if log and low <= 0:
            raise RunError(f"{where}: a log range of `{name}` needs LOW > 0. Received: {spec!r}")
        return Param(name, "int" if base is int else "float", low, high, log)
    else:
        return None
    choices = tuple(dict.fromkeys(parse_option(name, t, where) for t in texts))
    if len(choices) < 2:
        raise RunError(f"{where}: the choices of `{name}` are empty ({spec}): give two or more different values")
    return Param(name, "categorical", choices=choices)


def read_space(path) -> dict:
    """``--space FILE``: a JSON object of option -> ``"LOW:HIGH"``, a list of choices, or a value."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"Cannot read --space {path} ({exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"--space {path} is not a JSON object of option names")
    known = {f.name for f in cli_options()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RunError(
            f"Unknown parameter {', '.join(map(repr, unknown))} in --space {path}",
            hint=f"searchable: {', '.join(searchable())}",
        )
    return data


def split_space(flags: dict, space_file=None) -> tuple[dict, dict[str, Param]]:
    """(fixed train options, searched options) from ``tune``'s flags (text: a value, a range or a
    list) and ``--space FILE``; a flag overrides the file."""
    fixed: dict = {}
    space: dict[str, Param] = {}
    given = (
        [(name, spec, f"--space {space_file}") for name, spec in read_space(space_file).items()] if space_file else []
    )
    given += [(name, value, "--" + name.replace("_", "-")) for name, value in flags.items() if value is not None]
    for name, value, where in given:
        if name == "run":
            raise RunError("tune names its trials' runs itself (STUDY/t0000, t0001, ...): leave out --run")
        space.pop(name, None)
        fixed.pop(name, None)
        param = parse_param(name, value, where) if name in searchable() else None
        if param is not None:
            space[name] = param
        elif name in searchable() and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            fixed[name] = parse_option(name, value, where)
        else:
            fixed[name] = value  # flags, lists (train's parser reads them), paths
    return fixed, space


# --------------------------------------------------------------------------- the plan
# what a fork's trial can change: the rate from the fork on and the epoch it trains to (resume's
# --lr and --epochs); the model, its decay and the data are the forked run's
FORK_SEARCHABLE = ("lr", "epochs")
FORK_WAIT = 30.0  # seconds a trial waits for the forked run's lock (another trial forking it)
FORK_LOCAL = frozenset({"data_dir", "runs_dir", "mlflow"})  # what resume lets a host say of a fork


@dataclass(frozen=True)
class ForkOrigin:
    """``tune --from RUN --epoch N``: every trial is a fork of ``run`` at ``epoch`` that goes on
    with its own rate and epochs (``lr``/``epochs``: the values fixed for every trial, if any)."""

    run: RunDir
    epoch: int
    lr: float | None = None
    epochs: int | None = None
    trains_to: int = 0  # the epoch a trial trains to when it does not search --epochs

    def to_dict(self) -> dict:
        return {"run": str(self.run.path.resolve()), "epoch": self.epoch, "lr": self.lr, "epochs": self.epochs,
                "trains_to": self.trains_to}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> ForkOrigin:
        return cls(RunDir(Path(d["run"])), int(d["epoch"]), d.get("lr"), d.get("epochs"), int(d.get("trains_to") or 0))

    def trial_change(self, params: dict) -> dict:
        """The resume a trial makes from the fork: ``{"lr": ..., "epochs": ...}``."""
        return {"lr": params.get("lr", self.lr), "epochs": params.get("epochs", self.epochs)}

    def repeat_command(self, params: dict, name: str) -> str:
        """The ``resume --fork`` that trains the trial's line again beside the run."""
        change = self.trial_change(params)
        return command(
            "resume", "--run", self.run.path.resolve(), "--epoch", self.epoch,
            *(("--lr", f"{change['lr']:.6g}") if change["lr"] is not None else ()),
            *(("--epochs", change["epochs"]) if change["epochs"] is not None else ()),
            "--fork", name,
        )  # fmt: skip


@dataclass(frozen=True)
class TunePlan:
    study_name: str
    storage: str  # the SQLAlchemy URL
    study_dir: Path  # where the trials' runs live
    runs_root: Path
    base: TrainConfig  # every setting but the searched ones (validated)
    space: dict  # name -> Param
    trials: int
    pruner: str
    resume: bool
    dataset: DatasetInfo
    origin: ForkOrigin | None = None  # tune --from RUN --epoch N

    def distributions(self) -> dict:
        return {name: p.distribution() for name, p in self.space.items()}

    def trial_config(self, params: dict, name: str) -> TrainConfig:
        """Trial ``name``'s settings: the base with its values of the searched options."""
        config = TrainConfig.from_dict(
            {**self.base.to_dict(), **params, "run": name, "runs_dir": str(self.study_dir)},
            source=f"trial {name}",
        )
        return config.validate()

    def identity(self) -> dict:
        """What makes two processes one study: the space, what is trained and on what."""
        base = {k: v for k, v in self.base.to_dict().items() if k not in LOCAL and k not in self.space}
        info = self.dataset
        return {
            "space": {name: p.to_dict() for name, p in sorted(self.space.items())},
            "base": base,
            "dataset": {"name": info.name, "splits": info.splits, "classes": info.num_classes, "size": info.image_size},
            "from": self.origin.to_dict() if self.origin else None,
        }

    def record(self) -> dict:
        """The study's user attribute: its identity, budget, pruner, and the local settings of the
        process that made it (what ``--resume`` uses where it is not told otherwise)."""
        local = {k: v for k, v in self.base.to_dict().items() if k in LOCAL and v is not None}
        return {"format": STUDY_FORMAT, **self.identity(), "trials": self.trials, "pruner": self.pruner, "local": local}

    def open(self):
        """The Optuna study, with its sampler (TPE) and pruner."""
        optuna = require_optuna()
        startup = max(2, min(10, self.trials // 3))  # TPE's random start: a third of a short study
        sampler = optuna.samplers.TPESampler(n_startup_trials=startup)
        # from the second epoch of a trial on: epoch 2, or a fork's second epoch after the fork
        warmup = MEDIAN_WARMUP_EPOCHS + (self.origin.epoch if self.origin else 0)
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=warmup)
            if self.pruner == "median"
            else optuna.pruners.NopPruner()
        )
        return optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage), sampler=sampler,
                                 pruner=pruner)  # fmt: skip


# two processes opening a new storage at once both create its tables: the second's insert of the
# schema version fails (seen with two workers on one new SQLite file); opening it again then finds it made
STORAGE_ATTEMPTS = 5
CREATION_RACE = ("IntegrityError", "UNIQUE constraint", "already exists", "database is locked", "Duplicate")


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / DB_NAME).resolve()}"


def open_storage(url: str):
    """Optuna's RDB storage at ``url`` (any SQLAlchemy URL), or one line saying why not."""
    optuna = require_optuna()
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}  # several writers wait
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except Exception as exc:  # noqa: BLE001 (SQLAlchemy and drivers raise many kinds)
            text = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < STORAGE_ATTEMPTS and any(mark in text for mark in CREATION_RACE):
                time.sleep(0.5 * (attempt + 1))  # another process is creating the same storage's tables
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(
                f"Cannot open --storage {url} ({reason})",
                hint="give a SQLAlchemy URL that can be opened, e.g. sqlite:///study.db or postgresql://host/db",
            ) from None
    raise AssertionError("unreachable")


def _locate(study: str, storage: str | None, runs_dir, create: bool = True) -> tuple[Path, Path, str]:
    """(runs dir, the study's folder, its storage URL: by default the SQLite file in that folder)."""
    if not study:
        raise RunError("--study NAME is needed", hint="the study's name; its trials are runs in RUNS/NAME/")
    paths.check_name(study, "Study")
    root = paths.check_folder(paths.runs_dir(runs_dir), "Runs dir")
    study_dir = root / study
    paths.check_folder(study_dir, "Study folder")
    if storage is None:
        if not create and not (study_dir / DB_NAME).is_file():
            raise RunError(f"No study {study!r} in {study_dir}", hint="name its --storage, or --runs-dir")
        storage = default_storage(study_dir)  # made (with its folder) when the study is created
    return root, study_dir, storage


def _stored(storage: str, study: str, study_dir: Path) -> dict | None:
    """The study's record, None when there is no such study; a study not made by tune is refused.
    The default storage is not made here (a refused command leaves nothing behind)."""
    optuna = require_optuna()
    if storage == default_storage(study_dir) and not (study_dir / DB_NAME).is_file():
        return None
    opened = open_storage(storage)
    if study not in optuna.study.get_all_study_names(opened):
        return None
    record = optuna.load_study(study_name=study, storage=opened).user_attrs.get(STUDY_KEY)
    if not isinstance(record, dict) or record.get("format") != STUDY_FORMAT:
        raise RunError(f"Study {study!r} in {storage} was not made by resnetctl tune", hint="use another --study name")
    return record


def _describe_space(space: dict) -> str:
    return "; ".join(Param.from_dict(n, d).describe() for n, d in space.items()) or "nothing"


def _differences(theirs: dict, mine: dict) -> list[str]:
    """``its epochs is 2, this command's 3``: the settings two study records differ in."""
    out = []
    if theirs.get("from") != mine.get("from"):

        def forks(record: dict):
            return {k: v for k, v in (record.get("from") or {}).items() if k in ("run", "epoch")} or "no run"

        out.append(f"it forks {forks(theirs)}, this command {forks(mine)} (--from, --epoch)")
    for part in ("base", "dataset"):
        a, b = theirs.get(part) or {}, mine.get(part) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"its {key} is {a.get(key)!r}, this command's {b.get(key)!r}")
    return out[:5]


def plan_tune(
    model: str | None = None,
    config_file=None,
    recipe: str | None = None,
    flags: dict | None = None,
    *,
    study: str,
    storage: str | None = None,
    trials: int | None = None,
    space_file=None,
    pruner: str = "median",
    resume: bool = False,
    from_run: str | None = None,
    from_epoch: int | None = None,
) -> TunePlan:
    """Everything ``tune`` can refuse, refused before Keras: the space (unknown options, empty
    ranges), the base settings (as train checks them, at every edge of the space), the dataset,
    the storage, and a study of the same name that searches another space. ``from_run`` (and
    ``from_epoch``, by default its latest checkpoint): every trial forks that run there."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    if pruner not in PRUNERS:
        raise RunError(f"Unknown pruner {pruner!r}", hint=f"use one of {', '.join(PRUNERS)}")
    if trials is not None and trials < 1:
        raise RunError(f"`trials` must be >= 1. Received: trials={trials}")
    require_optuna()
    local = {k: v for k, v in flags.items() if k in LOCAL}
    fixed, space = split_space(flags, space_file)
    root, study_dir, storage = _locate(study, storage, flags.get("runs_dir"))
    stored = _stored(storage, study, study_dir)
    asked = bool(model or config_file or recipe or space or set(fixed) - LOCAL or from_run is not None)
    if from_epoch is not None and from_run is None:
        raise RunError("--epoch is the epoch of the run tune forks: give --from RUN too")
    origin = None
    if stored is None and resume:
        raise RunError(f"No study {study!r} in {storage} to resume", hint="start it without --resume")
    if stored is not None and not asked:
        if not resume:
            raise RunError(
                f"Study {study!r} exists in {storage}",
                hint="continue it with --resume (its own space), or name its space and settings again to join it",
            )
        settings = {**stored["base"], **stored.get("local", {}), **local}
        base = TrainConfig.from_dict(settings, source=f"study {study}").validate()
        space = {name: Param.from_dict(name, d) for name, d in stored["space"].items()}
        if stored.get("from"):
            origin = ForkOrigin.from_dict(stored["from"])
            if not origin.run.is_run():
                raise RunError(
                    f"Study {study!r} forks run {origin.run.path}, which is gone",
                    hint="put the run back where it was; the finished trials are kept",
                )
            origin.run.checkpoint(origin.epoch)  # its checkpoint at the fork is still there
    else:
        if not space:
            raise RunError(
                "Nothing to search: give a range or a list of values",
                hint="e.g. --lr 0.01:1 --weight-decay 1e-5:1e-3 --schedule poly,cosine, or --space FILE.json",
            )
        if from_run is not None:
            origin, base = _plan_fork(from_run, from_epoch, bool(model or config_file or recipe), fixed, space)
        else:
            base = config_from_flags(model, config_file, fixed, recipe)
    info = open_dataset(base.dataset, base.data_dir)
    base = replace(base, dataset=base.dataset or info.name)
    budget = trials or (stored or {}).get("trials")
    if budget is None:
        raise RunError("--trials N is needed to start a study", hint="e.g. --trials 12")
    plan = TunePlan(study, storage, study_dir, root, base, space, int(budget), (stored or {}).get("pruner", pruner),
                    resume, info, origin)  # fmt: skip
    if origin is not None:
        _check_fork_edges(origin, space)
    else:
        for name, param in space.items():  # every edge of the space is a valid train setting
            for value in param.ends():
                edge = {**{n: p.ends()[0] for n, p in space.items()}, name: value}
                plan.trial_config(edge, "t0000").check_dataset(info)
    if stored is not None and asked:
        mine = plan.identity()
        theirs = {k: stored.get(k) for k in mine}
        if mine != theirs:
            what = [k for k in mine if mine[k] != theirs[k]]
            if "space" in what:
                detail = (
                    f"it searches {_describe_space(stored['space'])}; this asks for {_describe_space(mine['space'])}"
                )
            else:
                detail = "; ".join(_differences(theirs, mine))
            raise RunError(
                f"Study {study!r} in {storage} is from another space: {detail}",
                hint="use another --study name, or --resume to continue that study with its own space",
            )
    return plan


def _plan_fork(from_run: str, epoch: int | None, named_model: bool, fixed: dict, space: dict):
    """(the fork every trial makes, the base settings: the run's own) for ``tune --from``."""
    from resnetctl.runs import find_run

    if named_model:
        raise RunError(
            "tune --from forks a run: its model and settings are the run's, leave out MODEL, --recipe and --config"
        )
    changed = sorted(set(space) - set(FORK_SEARCHABLE)) + sorted(set(fixed) - FORK_LOCAL - set(FORK_SEARCHABLE))
    if changed:
        flags = ", ".join("--" + n.replace("_", "-") for n in changed)
        raise RunError(
            f"tune --from forks a run, so {flags} cannot change in its trials",
            hint="a fork goes on with the run's model, decay and data; it searches --lr and --epochs "
            "(leave out --from to search the rest from scratch)",
        )
    source = find_run(from_run, fixed.get("runs_dir"))
    options = source.options()
    checkpoints = source.checkpoints()
    if not checkpoints:
        raise RunError(f"Run {source.path} has no checkpoint to fork: it stopped before its first epoch ended")
    epoch = max(checkpoints) if epoch is None else epoch
    source.checkpoint(epoch)  # an epoch without a checkpoint: the error lists those that have one
    base = replace(options, segments=options.segments_before(epoch))
    if fixed.get("data_dir") is not None:
        base = replace(base, data_dir=str(fixed["data_dir"]))
    if fixed.get("mlflow") is not None:
        base = replace(base, mlflow=bool(fixed["mlflow"]))
    origin = ForkOrigin(source, epoch, fixed.get("lr"), fixed.get("epochs"), fixed.get("epochs") or base.total_epochs())
    return origin, base.validate()


def _check_fork_edges(origin: ForkOrigin, space: dict) -> None:
    """Every trial of a fork study trains past the epoch it forks at."""
    ends = space["epochs"].ends() if "epochs" in space else (origin.trains_to,)
    short = [int(e) for e in ends if int(e) <= origin.epoch]
    if short:
        raise RunError(
            f"A trial forked from {origin.run.name} at epoch {origin.epoch} would train to epoch {min(short)}: "
            "it must train past the fork",
            hint=f"give --epochs above {origin.epoch} (a number, or a range: {origin.epoch + 1}:{origin.epoch + 10})",
        )


def create_study(plan: TunePlan):
    """The plan's study, made if it is new (two processes making it at once share it) and its
    record written; the budget follows the latest ``--trials``."""
    optuna = require_optuna()
    if plan.storage == default_storage(plan.study_dir):
        plan.study_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=plan.study_name, storage=open_storage(plan.storage), direction="maximize", load_if_exists=True
    )
    record = study.user_attrs.get(STUDY_KEY)
    if record is None or record.get("trials") != plan.trials:
        study.set_user_attr(STUDY_KEY, {**(record or plan.record()), "trials": plan.trials})
    return plan.open()


# --------------------------------------------------------------------------- running trials
def _counted(trial) -> bool:
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return trial.state in live and not trial.user_attrs.get("surplus")


def _trial_lock(run: RunDir):
    """Held while a process trains the trial (beside the run: ``.tKKKK.trial.lock``)."""
    return locks.exclusive(run.path.with_name(run.name + ".trial"), "Trial")


def _pruning(trial):
    """The trainer's ``watch``: each epoch's score to Optuna; its pruner's answer back."""

    def watch(epoch: int, logs: dict) -> str | None:
        value = score(logs)
        if not math.isfinite(value):
            return None
        trial.report(value, epoch)
        if trial.should_prune():
            return f"pruned by the study's median rule at epoch {epoch} ({value:.4f} is below the median)"
        return None

    return watch


def run_study(plan: TunePlan, progress: TuneProgress | None = None) -> dict:
    """Run the plan's study in this process until it has ``plan.trials`` trials (finished or
    being run by any process); with ``plan.resume``, first take over the trials whose process
    died. Returns :func:`study_report`."""
    optuna = require_optuna()
    progress = progress or TuneProgress()
    study = create_study(plan)
    if plan.resume:
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if _counted(frozen):
                with contextlib.suppress(Busy):  # its process is alive: not ours to take
                    _run_trial(plan, study, optuna.trial.Trial(study, frozen._trial_id), progress, frozen.params)
    while sum(_counted(t) for t in study.get_trials(deepcopy=False)) < plan.trials:
        trial = study.ask(plan.distributions())
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and _counted(t)]
        if len(earlier) >= plan.trials:  # another process took the last one meanwhile
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        with contextlib.suppress(Busy):  # a --resume elsewhere took it over the moment it was asked
            _run_trial(plan, study, trial, progress, trial.params)
    return study_report(plan, study)


def _run_trial(plan: TunePlan, study, trial, progress: TuneProgress, params: dict) -> None:
    """Train (or go on with) trial ``trial`` and tell Optuna how it ended."""
    from optuna.trial import TrialState

    from resnetctl.plan import plan_resume, plan_train
    from resnetctl.training.trainer import resume, train

    run = RunDir(plan.study_dir / f"t{trial.number:04d}")
    with _trial_lock(run):
        trial.set_user_attr("run", str(run.path.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        going_on = run.path.is_dir() and run.is_run() and bool(run.checkpoints())
        progress.trial_start(
            {"number": trial.number, "trials": plan.trials, "params": params, "run": str(run.path), "resumed": going_on}
        )
        watch = _pruning(trial)
        try:
            ended = run.state() if going_on else {}
            if ended.get("state") == "finished":  # it ended (or was pruned) before Optuna was told
                history = run.history()
                stopped = {"reason": ended.get("reason")} if ended.get("stopped_epoch") else None
            elif plan.origin is not None:
                result = resume(_fork_plan(plan, run, params), progress.training(), watch)
                history, stopped = result.history, result.stopped_early
            elif going_on:
                result = resume(plan_resume(str(run.path)), progress.training(), watch)
                history, stopped = result.history, result.stopped_early
            else:
                result = train(plan_train(plan.trial_config(params, run.name)), progress.training(), watch)
                history, stopped = result.history, result.stopped_early
        except Diverged as exc:
            trial.set_user_attr("diverged", exc.message)
            study.tell(trial, state=TrialState.PRUNED)
            progress.trial_end({"number": trial.number, "state": "diverged", "value": None, "reason": exc.message})
            return
        except Stopped as exc:  # the trial stays running in the study: --resume goes on with it
            raise Stopped(
                f"{exc.message}; study {plan.study_name} keeps trial {trial.number} to go on with",
                hint="continue the study with: " + resume_command(plan),
            ) from None
        except BaseException:
            with contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL)
            raise
        best = best_row(history)
        value = score(best) if best else None
        if stopped:
            trial.set_user_attr("pruned", stopped["reason"])
            study.tell(trial, state=TrialState.PRUNED)
            state = "pruned"
        else:
            study.tell(trial, value if value is not None and math.isfinite(value) else None,
                       state=None if value is not None and math.isfinite(value) else TrialState.FAIL)  # fmt: skip
            state = "finished"
        progress.trial_end({"number": trial.number, "state": state, "value": value, "epochs": len(history)})


def _fork_plan(plan: TunePlan, run: RunDir, params: dict):
    """The resume that trains a fork trial: the run forked into the study (once: a trial taken
    over after its process died finds its fork), then gone on with from the fork's epoch with the
    trial's rate and epochs, or from its latest checkpoint when it had trained past the fork."""
    from resnetctl.lineage import fork
    from resnetctl.plan import plan_resume

    origin, here = plan.origin, {"data_dir": plan.base.data_dir, "mlflow": plan.base.mlflow}  # this host's
    if not run.path.exists():
        try:
            with origin.run.lock(wait=FORK_WAIT):  # another trial forking it holds it for a moment
                fork(origin.run, origin.epoch, run.name, into=run.path.parent)
        except Busy as exc:
            raise RunError(
                f"Cannot fork {origin.run.path}: {exc.message}",
                hint="tune --from forks a run that is not training: continue the study when it stops (--resume)",
            ) from None
    if any(r["epoch"] > origin.epoch for r in run.history()):
        return plan_resume(str(run.path), **here)
    change = origin.trial_change(params)
    return plan_resume(str(run.path), epoch=origin.epoch, lr=change["lr"], epochs=change["epochs"], **here)


def resume_command(plan: TunePlan) -> str:
    return command(
        "tune",
        "--study",
        plan.study_name,
        "--storage",
        plan.storage,
        "--runs-dir",
        plan.runs_root.resolve(),
        "--resume",
    )


# --------------------------------------------------------------------------- the report
_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}


def _epochs_done(run_path: str | None, trial, start: int = 0) -> int:
    """The epochs the trial trained (a fork's: those after the epoch it forked at)."""
    if run_path and (Path(run_path) / "config.json").is_file():
        with contextlib.suppress(RunError):
            rows = RunDir(Path(run_path)).history()
            return max(0, rows[-1]["epoch"] - start) if rows else 0
    return len(trial.intermediate_values)


def study_report(plan_or_none, study, runs_root: Path | None = None) -> dict:
    """The study's trials best first (finished by value, then pruned, running, failed), with
    their settings, epochs and runs; the best; the ``train`` command that repeats it; the epochs
    spent against the epochs an unpruned study would have spent; and what the study did not
    explore (the JSON of ``tune --show --json``, docs/json.md)."""
    record = study.user_attrs.get(STUDY_KEY) or {}
    forked = record.get("from") or None
    origin = ForkOrigin.from_dict(forked) if forked else None
    start = origin.epoch if origin else 0
    budget_epochs = origin.trains_to if origin else record.get("base", {}).get("epochs")
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        run = t.user_attrs.get("run")
        planned = t.params.get("epochs", budget_epochs)
        rows.append(
            {
                "number": t.number,
                "state": "diverged" if t.user_attrs.get("diverged") else t.state.name.lower(),
                "value": t.value if t.values else None,
                "params": dict(t.params),
                "epochs_done": _epochs_done(run, t, start),
                "epochs": planned - start if planned is not None else None,
                "reason": t.user_attrs.get("pruned") or t.user_attrs.get("diverged"),
                "run": run,
                "worker": f"{t.user_attrs['host']}:{t.user_attrs['pid']}" if "pid" in t.user_attrs else None,
            }
        )
    rows.sort(key=lambda r: (_STATE_ORDER.get(r["state"].upper(), 1), -(r["value"] if r["value"] is not None else -1)))
    finished = [r for r in rows if r["state"] == "complete"]
    best = finished[0] if finished else None
    root = runs_root or (plan_or_none.runs_root if plan_or_none else None)
    train_command = None
    if best and best["run"] and origin:  # the fork's line again, beside the run it forked
        train_command = origin.repeat_command(
            best["params"], free_name(origin.run.path.parent, f"{study.study_name}-best")
        )
    elif best and best["run"]:
        train_command = train_again_command(Path(best["run"]) / "config.json", root)
    notes = []
    if not finished:
        notes.append("no trial has finished yet: there is no best")
    elif len({json.dumps(r["params"], sort_keys=True) for r in finished}) == 1 and len(finished) > 1:
        notes.append("the study explored nothing: every finished trial had the same settings")
    elif len({r["value"] for r in finished}) == 1 and len(finished) > 1:
        notes.append(f"the study explored nothing: every finished trial scored {finished[0]['value']:.4f}")
    space = record.get("space", {})
    return {
        "study": study.study_name,
        "space": {n: Param.from_dict(n, d).describe() for n, d in space.items()},
        "model": record.get("base", {}).get("model"),
        "dataset": (record.get("dataset") or {}).get("name"),
        "trials_planned": record.get("trials"),
        "pruner": record.get("pruner"),
        "from": forked,
        "trials": rows,
        "best": best,
        "train_command": train_command,
        "epochs_spent": sum(r["epochs_done"] for r in rows),
        # a failed trial would not have trained on unpruned either: it counts what it trained
        "epochs_without_pruning": sum(r["epochs_done"] if r["state"] == "fail" else r["epochs"] or 0 for r in rows),
        "notes": notes,
    }


def show_study(study: str, storage: str | None = None, runs_dir=None, forking: bool = False) -> dict:
    """``tune --show``: :func:`study_report` of a study read from its storage (nothing run);
    ``forking``: --from/--epoch were given too, which a study's record already says."""
    if forking:
        raise RunError("tune --show lists a study as it is: leave out --from and --epoch (its record names its fork)")
    optuna = require_optuna()
    root, study_dir, storage = _locate(study, storage, runs_dir, create=False)
    if _stored(storage, study, study_dir) is None:
        raise RunError(f"No study {study!r} in {storage}", hint="start one with: resnetctl tune MODEL --study NAME ...")
    loaded = optuna.load_study(study_name=study, storage=open_storage(storage))
    return {**study_report(None, loaded, root), "storage": storage}

"""Where a run is also recorded while it trains: TensorBoard event files and an MLflow run.

The trainer talks to one :class:`Trackers` bundle and nothing else: ``start`` before ``fit``,
``log_step`` every ``--log-every`` optimizer steps, ``log_epoch`` with each history row once it
is on disk, ``finish`` with the run's final state. Each tracker writes what history.csv holds,
under the names its tool's users expect:

- TensorBoard as ``keras.callbacks.TensorBoard`` writes it: ``<log dir>/train`` and
  ``<log dir>/validation`` with the same tags (``epoch_loss`` train and validation overlay),
  ``batch_*`` every N steps in ``train``, and the resolved config through the HParams plugin.
  Epochs are numbered as in history.csv (from 1; Keras counts from 0).
- MLflow (``--mlflow``): the resolved config as params, history.csv's columns per epoch under
  their own names, ``batch_loss``/``batch_lr`` per step, tags for model, dataset and parent,
  and config.json, history.csv, monitor.png (and each evaluation) as artifacts. The store is
  MLflow's own choice (``MLFLOW_TRACKING_URI``, else MLflow 3's default, ``sqlite:///mlflow.db``
  in the working folder); the run's MLflow id and store are kept in config.json under
  ``mlflow_run``, so ``resume`` and ``evaluate`` find the same MLflow run from anywhere.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

from resnetctl.errors import RunError
from resnetctl.training.config import TrainConfig, check_extra, install_hint

log = logging.getLogger("resnetctl")

MLFLOW_INSTALL = install_hint("mlflow")
MLFLOW_KEY = "mlflow_run"  # config.json: {"id", "tracking_uri", "experiment_id"}
DEFAULT_EXPERIMENT = "resnetctl"  # unless MLFLOW_EXPERIMENT_NAME names another
# history.csv column -> Keras' TensorBoard name (without the epoch_ prefix and val_ split)
TENSORBOARD_NAMES = {"lr": "learning_rate"}
RUN_ARTIFACTS = ("config.json", "history.csv", "monitor.png")
MLFLOW_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "diverged": "FAILED", "failed": "FAILED"}


def mlflow_run_of(record: dict) -> dict | None:
    """The MLflow run a resnetctl run logs to (``{"id", "tracking_uri", ...}``), if any: the
    one place that knows where config.json keeps it."""
    found = record.get(MLFLOW_KEY)
    return found if isinstance(found, dict) and found.get("id") else None


def parent_of(record: dict) -> str | None:
    """The run a branch or fork came from (config.json's ``parent``: a name, or an object
    with ``run``), for the ``parent`` tag."""
    parent = record.get("parent")
    if isinstance(parent, dict):
        parent = parent.get("run") or parent.get("name") or parent.get("path")
    return str(parent) if parent else None


def _plain(value):
    """A config value as TensorBoard's HParams and MLflow's params take it."""
    if value is None:
        return "none"
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def hyperparameters(record: dict) -> dict:
    """The run's options (the TrainConfig fields of config.json) plus what they resolved to."""
    from dataclasses import fields

    names = [f.name for f in fields(TrainConfig)] + ["steps_per_epoch", "effective_warmup_epochs"]
    params = {k: _plain(record[k]) for k in names if k in record and k not in ("data_dir", "runs_dir")}
    totals = [s.get("epochs") for s in record.get("segments") or [] if isinstance(s, dict) and s.get("epochs")]
    if totals:  # the epochs it trains to: a resume --epochs is a segment (config.json keeps what train asked)
        params["epochs"] = _plain(totals[-1])
    info = record.get("dataset_info") or {}
    for key in ("image_size", "num_classes"):
        if key in info:
            params[f"dataset_{key}"] = info[key]
    if isinstance(info.get("splits"), dict) and "train" in info["splits"]:
        params["train_images"] = info["splits"]["train"]
    return params


class Tracker:
    """What the trainer calls; every method may be a no-op."""

    def start(self, run, initial_epoch: int) -> None: ...

    def log_step(self, step: int, values: dict) -> None: ...

    def log_epoch(self, row: dict) -> None: ...

    def finish(self, run, state: str) -> None: ...


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.fresh = not self.log_dir.exists()  # a resumed run whose logs went with a branch

    def start(self, run, initial_epoch: int) -> None:
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        self.tf = tf
        self.train = tf.summary.create_file_writer(str(self.log_dir / "train"))
        self.validation = tf.summary.create_file_writer(str(self.log_dir / "validation"))
        root = tf.summary.create_file_writer(str(self.log_dir))  # the session: its config, in HParams
        with root.as_default():
            hp.hparams(hyperparameters(run.config()), trial_id=run.name)
        root.close()
        if self.fresh and initial_epoch:  # TensorBoard shows what history.csv holds, from epoch 1
            for row in run.history():
                if row["epoch"] <= initial_epoch:
                    self.log_epoch(row)

    def log_step(self, step: int, values: dict) -> None:
        with self.train.as_default():
            for key, value in values.items():
                self.tf.summary.scalar(f"batch_{TENSORBOARD_NAMES.get(key, key)}", value, step=step)

    def log_epoch(self, row: dict) -> None:
        for writer, prefix in ((self.train, ""), (self.validation, "val_")):
            values = {
                k[len(prefix) :]: v
                for k, v in row.items()
                if k != "epoch" and (k.startswith("val_") if prefix else not k.startswith("val_"))
            }
            if values:
                with writer.as_default():
                    for key, value in values.items():
                        self.tf.summary.scalar(f"epoch_{TENSORBOARD_NAMES.get(key, key)}", value, step=row["epoch"])
                writer.flush()

    def finish(self, run, state: str) -> None:
        for writer in (self.train, self.validation):
            writer.close()


class MlflowTracker(Tracker):
    """One MLflow run per resnetctl run, created by ``train`` and continued by ``resume``.

    A failure to log during training (a server gone away) is a warning, once: the run itself
    goes on; a store that can't be reached at the start refuses the run before it trains."""

    def __init__(self):
        self.warned = False

    def start(self, run, initial_epoch: int) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines on creating a store
        record = run.config()
        known = mlflow_run_of(record)
        try:
            if known:
                self.client = MlflowClient(known["tracking_uri"])
                self.run_id = known["id"]
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                import mlflow

                uri = mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's default store
                self.client = MlflowClient(uri)
                experiment_id = _experiment(self.client, uri)
                self.run_id = self.client.create_run(experiment_id, run_name=run.name).info.run_id
                remember_mlflow_run(run, {"id": self.run_id, "tracking_uri": uri, "experiment_id": experiment_id})
            logged = self.client.get_run(self.run_id).data.params
            params = {k: str(v) for k, v in hyperparameters(record).items()}
            new = [Param(k, v) for k, v in params.items() if k not in logged]
            changed = [RunTag(f"resumed.{k}", v) for k, v in params.items() if k in logged and logged[k] != v]
            tags = {"model": record["model"], "dataset": record["dataset"], "resnetctl.run": str(run.path.resolve())}
            parent = parent_of(record)
            if parent:
                tags["parent"] = parent
            self.client.log_batch(self.run_id, params=new, tags=[RunTag(k, v) for k, v in tags.items()] + changed)
        except Exception as exc:
            raise RunError(
                f"MLflow: cannot log to {getattr(self.client, 'tracking_uri', None) or 'the tracking store'} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''})",
                hint="check MLFLOW_TRACKING_URI (or start the server), or train without --mlflow",
            ) from None

    def _log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in metrics.items()])
        except Exception as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        if not self.warned:
            self.warned = True
            log.warning("MLflow logging failed, training goes on: %s", str(exc).splitlines()[0][:300])

    def log_step(self, step: int, values: dict) -> None:
        self._log({f"batch_{k}": v for k, v in values.items()}, step)

    def log_epoch(self, row: dict) -> None:
        self._log({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])

    def finish(self, run, state: str) -> None:
        try:
            for name in RUN_ARTIFACTS:
                if (run.path / name).is_file():
                    self.client.log_artifact(self.run_id, str(run.path / name))
            self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(state, "FAILED"))
        except Exception as exc:
            self._warn(exc)


def _experiment(client, uri: str) -> str:
    """MLflow's own MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME, else ``resnetctl``. An
    experiment we create in a local sqlite store keeps its artifacts beside the database
    (``<db folder>/mlruns``), not in ``./mlruns`` of whatever folder training ran from."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=location)


def remember_mlflow_run(run, mlflow_run: dict) -> None:
    run.write_config({**run.config(), MLFLOW_KEY: mlflow_run})


class Trackers(Tracker):
    """The trackers a run asked for, called in turn."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self, run, initial_epoch: int) -> None:
        for t in self.trackers:
            t.start(run, initial_epoch)

    def log_step(self, step: int, values: dict) -> None:
        for t in self.trackers:
            t.log_step(step, values)

    def log_epoch(self, row: dict) -> None:
        for t in self.trackers:
            t.log_epoch(row)

    def finish(self, run, state: str) -> None:
        for t in self.trackers:
            t.finish(run, state)


def open_trackers(config, tensorboard_dir: Path, chief: bool = True) -> Trackers:
    """What ``config`` asks for (``--tensorboard``, ``--mlflow``); nothing on a worker that is
    not the chief (it writes no run)."""
    trackers: list[Tracker] = []
    if chief and config.tensorboard:
        trackers.append(TensorBoardTracker(tensorboard_dir))
    if chief and config.mlflow:
        check_extra("mlflow", "--mlflow")
        trackers.append(MlflowTracker())
    return Trackers(trackers)


def state_after(exc: BaseException | None) -> str:
    """The run state a tracker records for how ``fit`` ended (a StopRequested says whether
    the loss diverged or a signal came)."""
    if exc is None:
        return "finished"
    if isinstance(exc, KeyboardInterrupt):
        return "stopped"
    diverged = getattr(exc, "diverged", None)
    return "failed" if diverged is None else ("diverged" if diverged else "stopped")


@contextlib.contextmanager
def session(trackers: Tracker, run, initial_epoch: int):
    """Start the trackers, and finish them with the state ``fit`` ended in."""
    trackers.start(run, initial_epoch)
    try:
        yield
    except BaseException as exc:
        trackers.finish(run, state_after(exc))
        raise
    trackers.finish(run, "finished")


def log_evaluation(record: dict, files: list[Path], metrics: dict, step: int | None) -> bool:
    """``evaluate`` of a run that logs to MLflow: its eval files as artifacts (under
    ``evaluation/``) and its scores as metrics of that MLflow run. Returns whether it was logged;
    a failure is a warning, as the evaluation itself is done and kept."""
    known = mlflow_run_of(record)
    if not known:
        return False
    if importlib.util.find_spec("mlflow") is None:
        log.warning("this run logs to MLflow, but mlflow is not installed (%s)", MLFLOW_INSTALL)
        return False
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        client = MlflowClient(known["tracking_uri"])
        for path in files:
            client.log_artifact(known["id"], str(path), "evaluation")
        stamp = int(time.time() * 1000)
        client.log_batch(known["id"], metrics=[Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()])
    except Exception as exc:
        log.warning("MLflow: could not log the evaluation: %s", str(exc).splitlines()[0][:300])
        return False
    return True

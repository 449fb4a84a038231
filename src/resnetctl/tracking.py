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
    """What the trainer calls; every method may be a no-op. ``open`` comes before anything of the
    run is written (a refusal there leaves every file as it was) and returns what config.json
    keeps of the tracker; ``start`` once the run's files are in place, before ``fit``."""

    def open(self, run_path: Path, record: dict) -> dict:
        return {}

    def start(self, run, initial_epoch: int) -> None: ...

    def log_step(self, step: int, values: dict) -> None: ...

    def log_epoch(self, row: dict) -> None: ...

    def finish(self, run, state: str) -> None: ...


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)

    def start(self, run, initial_epoch: int) -> None:
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        self.fresh = not self.log_dir.exists()  # a resumed run whose logs went with a branch, or a fork
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
        for writer in (getattr(self, "train", None), getattr(self, "validation", None)):
            if writer is not None:  # None: the run ended before it started
                writer.close()


# Every call to an MLflow store is bounded. MLflow's own defaults retry an HTTP request 7 times,
# doubling a 2 s wait, each try waiting up to 120 s for an answer: minutes against a server that
# is gone. Unless the user set them, these apply to resnetctl's calls.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
WAIT_ENV = "RESNETCTL_MLFLOW_TIMEOUT"  # seconds the start may take (a store that answers slowly)
START_SECONDS = 20.0  # the start (store, experiment, run, params): past this, refused in one line
FINISH_SECONDS = 10.0  # at the end of training: what the store has not taken by then is given up


def _start_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(WAIT_ENV) or START_SECONDS))
    except ValueError:
        raise RunError(f"{WAIT_ENV} must be a number of seconds. Received: {os.environ[WAIT_ENV]!r}") from None


def within(seconds: float, work, name: str):
    """``work()`` on a daemon thread, waited for at most ``seconds`` in short steps, so Ctrl+C and
    SIGTERM are answered at once whatever the store does. Its value, or what it raised;
    TimeoutError past ``seconds`` (the thread is left to end on its own)."""
    import threading

    box: dict = {}

    def target():
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"resnetctl-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.1)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _client(uri: str):
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines on creating a store
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def current_uri() -> str:
    """The store a new MLflow run goes to: MLFLOW_TRACKING_URI, else MLflow's default, with a
    local database's path made absolute (config.json keeps it: resume and evaluate reach the same
    store from any folder)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    path = sqlite_file(uri)
    if path is not None and not path.is_absolute():
        rest = uri[len("sqlite:///") :]
        query = rest[len(str(rest).split("?", 1)[0]) :]
        uri = f"sqlite:///{path.resolve()}{query}"
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store (None: another kind of store)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


def _folder_of_file_store(uri: str) -> Path:
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(uri)
    return Path(url2pathname(parsed.path) if parsed.scheme == "file" else uri).expanduser().resolve()


def _refusal(uri: str, exc: BaseException, off: str) -> RunError:
    """What a store that refuses or does not answer gets: one line, MLflow's reason, what to do."""
    if isinstance(exc, RunError):
        return exc
    text = " ".join(str(exc).split())
    if isinstance(exc, TimeoutError):
        return RunError(
            f"MLflow: {uri} gave {text} (set {WAIT_ENV} to wait longer)",
            hint=f"check that the tracking server is up and MLFLOW_TRACKING_URI, or {off}",
        )
    if "MLFLOW_ALLOW_FILE_STORE" in text:
        import mlflow

        database = f"sqlite:///{_folder_of_file_store(uri).parent / 'mlflow.db'}"
        return RunError(
            f"MLflow {mlflow.__version__} refuses the file store {uri}: its filesystem backend is in maintenance "
            "mode (MLflow's own refusal)",
            hint=f"use a database, e.g. MLFLOW_TRACKING_URI={database} (`mlflow migrate-filestore` moves old runs "
            f"there), or set MLFLOW_ALLOW_FILE_STORE=true to keep the folder; or {off}",
        )
    return RunError(
        f"MLflow: cannot use the store {uri} ({type(exc).__name__}: {text[:300]})",
        hint=f"check MLFLOW_TRACKING_URI (or start the server), or {off}",
    )


def _gone(known: dict, off: str) -> RunError | None:
    """The local database a run logged to, deleted since: refused without making a new, empty one."""
    path = sqlite_file(known["tracking_uri"])
    if path is None or path.exists():
        return None
    return RunError(
        f"MLflow: the store {known['tracking_uri']} this run logs to is gone (no file {path})",
        hint=f"put the database back, or {off}",
    )


def _known_run(client, known: dict, off: str):
    """The MLflow run config.json names, there and not deleted, else one line saying which."""
    try:
        found = client.get_run(known["id"])
    except Exception as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise RunError(
                f"MLflow: run {known['id']}, which this run logs to, is not in {known['tracking_uri']}",
                hint=f"point it back at its store, or {off}",
            ) from None
        raise
    if found.info.lifecycle_stage == "deleted":
        raise RunError(
            f"MLflow: run {known['id']}, which this run logs to, was deleted from {known['tracking_uri']}",
            hint=f"restore it (mlflow runs restore --run-id {known['id']}), or {off}",
        )
    return found


def _experiment(client, uri: str, off: str, create: bool = True) -> str | None:
    """MLflow's own MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME, else ``resnetctl``; a deleted
    one is refused. An experiment we create in a local sqlite store keeps its artifacts beside the
    database (``<db folder>/mlruns``), not in ``./mlruns`` of whatever folder training ran from.
    ``create=False``: None where it would be created."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        found = client.get_experiment(os.environ["MLFLOW_EXPERIMENT_ID"])
    else:
        found = client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise RunError(
                f"MLflow: experiment {found.name!r} is deleted in {uri}",
                hint=f"restore it (mlflow experiments restore --experiment-id {found.experiment_id}), set "
                f"MLFLOW_EXPERIMENT_NAME to another, or {off}",
            )
        return found.experiment_id
    if not create:
        return None
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    path = sqlite_file(uri)
    location = (path.resolve().parent / "mlruns").as_uri() if path is not None else None
    return client.create_experiment(name, artifact_location=location)


def check_store(known: dict | None, off: str) -> None:
    """``--mlflow`` checked in a command's plan, before Keras and before anything is written: the
    store takes the URI and answers (bounded), and the MLflow run config.json names (``known``)
    is there and not deleted. Read only: a new local database is made when training starts."""
    check_extra("mlflow", "--mlflow")
    uri = known["tracking_uri"] if known else current_uri()
    if known and (gone := _gone(known, off)):
        raise gone
    path = sqlite_file(uri)
    if path is not None and not path.exists():
        return

    def work():
        client = _client(uri)
        _known_run(client, known, off) if known else _experiment(client, uri, off, create=False)

    try:
        within(_start_seconds(), work, "mlflow-check")
    except Exception as exc:
        raise _refusal(uri, exc, off) from None


class _Calls:
    """The store's calls during training, in order on one daemon thread: the training thread (and
    a stop asked for by a signal) never waits on the store."""

    def __init__(self, warn):
        import queue
        import threading

        self.warn, self.queue = warn, queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="resnetctl-mlflow", daemon=True)
        self.thread.start()

    def put(self, call) -> None:
        self.queue.put(call)

    def _run(self) -> None:
        while (call := self.queue.get()) is not None:
            try:
                call()
            except Exception as exc:
                self.warn(exc)

    def close(self, seconds: float) -> bool:
        """Wait at most ``seconds`` (in short steps) for what is queued; whether it all went."""
        self.queue.put(None)
        deadline = time.monotonic() + seconds
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(0.1)
        return not self.thread.is_alive()


class MlflowTracker(Tracker):
    """One MLflow run per resnetctl run, created by ``train`` and continued by ``resume``.

    The start is bounded and comes before the run's files change: a store that refuses (MLflow 3
    and a file store), does not answer, or lost the MLflow run refuses the command in one line and
    leaves every file as it was. During training the calls go to a thread of their own: a failure
    is a warning, once, and the run goes on without waiting; at the end what the store has not
    taken within :data:`FINISH_SECONDS` is given up with a warning."""

    def __init__(self, off: str = "train without --mlflow"):
        self.off = off  # how to go on without tracking, for the hint of a refusal
        self.warned = False
        self.calls: _Calls | None = None
        self.logged: set[int] = set()  # epochs the MLflow run already has

    def open(self, run_path: Path, record: dict) -> dict:
        from mlflow.entities import Param, RunTag

        known = mlflow_run_of(record)
        uri = known["tracking_uri"] if known else current_uri()
        if known and (gone := _gone(known, self.off)):
            raise gone

        def work():
            client = _client(uri)
            if known:
                logged = _known_run(client, known, self.off).data.params
                run_id, experiment_id = known["id"], known.get("experiment_id")
                client.update_run(run_id, status="RUNNING")
                epochs = {int(m.step) for m in client.get_metric_history(run_id, "loss")}
            else:
                experiment_id = _experiment(client, uri, self.off)
                run_id = client.create_run(experiment_id, run_name=run_path.name).info.run_id
                logged, epochs = {}, set()
            params = {k: str(v) for k, v in hyperparameters(record).items()}
            new = [Param(k, v) for k, v in params.items() if k not in logged]
            changed = [RunTag(f"resumed.{k}", v) for k, v in params.items() if k in logged and logged[k] != v]
            tags = {"model": record["model"], "dataset": record["dataset"], "resnetctl.run": str(run_path.resolve())}
            parent = parent_of(record)
            if parent:
                tags["parent"] = parent
            client.log_batch(run_id, params=new, tags=[RunTag(k, v) for k, v in tags.items()] + changed)
            return client, run_id, experiment_id, epochs

        try:
            self.client, self.run_id, experiment_id, self.logged = within(_start_seconds(), work, "mlflow-start")
        except Exception as exc:
            raise _refusal(uri, exc, self.off) from None
        self.calls = _Calls(self._warn)
        return {} if known else {MLFLOW_KEY: {"id": self.run_id, "tracking_uri": uri, "experiment_id": experiment_id}}

    def start(self, run, initial_epoch: int) -> None:
        for row in run.history():  # epochs trained while tracking was off, or before a new MLflow run
            if row["epoch"] <= initial_epoch and row["epoch"] not in self.logged:
                self.log_epoch(row)

    def _log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        if self.calls is None:
            return
        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        self.calls.put(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def _warn(self, exc: Exception) -> None:
        if not self.warned:
            self.warned = True
            log.warning("MLflow logging failed, training goes on: %s", " ".join(str(exc).split())[:300])

    def log_step(self, step: int, values: dict) -> None:
        self._log({f"batch_{k}": v for k, v in values.items()}, step)

    def log_epoch(self, row: dict) -> None:
        self._log({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])

    def finish(self, run, state: str) -> None:
        if self.calls is None:
            return
        for name in RUN_ARTIFACTS:
            if (run.path / name).is_file():
                self.calls.put(lambda path=run.path / name: self.client.log_artifact(self.run_id, str(path)))
        self.calls.put(lambda: self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(state, "FAILED")))
        calls, self.calls = self.calls, None
        if not calls.close(FINISH_SECONDS):
            log.warning(
                "MLflow did not take the run's last metrics and files within %g s; the run itself is complete "
                "(MLflow run %s may lack them)",
                FINISH_SECONDS,
                self.run_id,
            )


class Trackers(Tracker):
    """The trackers a run asked for, called in turn."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def open(self, run_path: Path, record: dict) -> dict:
        kept: dict = {}
        for t in self.trackers:
            kept.update(t.open(run_path, {**record, **kept}))
        return kept

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


def open_trackers(config, tensorboard_dir: Path, chief: bool = True, off: str = "train without --mlflow") -> Trackers:
    """What ``config`` asks for (``--tensorboard``, ``--mlflow``); nothing on a worker that is
    not the chief (it writes no run). ``off``: how to go on without tracking (a refusal's hint)."""
    trackers: list[Tracker] = []
    if chief and config.tensorboard:
        trackers.append(TensorBoardTracker(tensorboard_dir))
    if chief and config.mlflow:
        check_extra("mlflow", "--mlflow")
        trackers.append(MlflowTracker(off))
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
    """Start the opened trackers, and finish them with the state ``fit`` ended in."""
    with finished_on_error(trackers, run):
        trackers.start(run, initial_epoch)
        yield
    trackers.finish(run, "finished")


@contextlib.contextmanager
def finished_on_error(trackers: Tracker, run):
    """Opened trackers are finished with the state a failure means (between ``open`` and the
    session too: a full disk writing config.json ends the MLflow run as failed, not running)."""
    try:
        yield
    except BaseException as exc:
        trackers.finish(run, state_after(exc))
        raise


def log_evaluation(record: dict, files: list[Path], metrics: dict, step: int | None) -> bool:
    """``evaluate`` of a run that logs to MLflow: its eval files as artifacts (under
    ``evaluation/``) and its scores as metrics of that MLflow run. Returns whether it was logged;
    a failure (a store gone or not answering within the start's bound) is a warning, as the
    evaluation itself is done and kept. A run resumed with ``--no-mlflow`` logs nothing."""
    known = mlflow_run_of(record)
    if not known or record.get("mlflow") is False:
        return False
    if importlib.util.find_spec("mlflow") is None:
        log.warning("this run logs to MLflow, but mlflow is not installed (%s)", MLFLOW_INSTALL)
        return False

    def work():
        from mlflow.entities import Metric

        client = _client(known["tracking_uri"])
        for path in files:
            client.log_artifact(known["id"], str(path), "evaluation")
        stamp = int(time.time() * 1000)
        client.log_batch(known["id"], metrics=[Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()])

    try:
        if gone := _gone(known, "evaluate it without MLflow"):
            raise gone
        within(_start_seconds(), work, "mlflow-evaluation")
    except Exception as exc:
        log.warning("MLflow: could not log the evaluation: %s", _refusal(known["tracking_uri"], exc, "").message)
        return False
    return True

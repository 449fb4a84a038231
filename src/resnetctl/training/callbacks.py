"""Callbacks that keep a run resumable and report it: history, checkpoints, curves, clean stops.

The library shows nothing itself: a front end implements :class:`TrainingProgress` (the CLI's
is in ``resnetctl.ui``) and :class:`Reporter` feeds it from Keras' callback calls.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import keras

from resnetctl import atomic
from resnetctl.checkpoints import CheckpointTwin, host_copy, variable_layout
from resnetctl.hooks import TrainingProgress
from resnetctl.plots import plot_monitor, rate_samples
from resnetctl.runs import RunDir, link_or_copy, save_checkpoint, score


class StopRequested(Exception):
    """Raised from inside ``fit`` to leave it at once (a signal or a non-finite loss)."""

    def __init__(self, reason: str, epoch: int, diverged: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch  # 1-based epoch that was running
        self.diverged = diverged


class Reporter(keras.callbacks.Callback):
    """Per batch: stop on a signal or a non-finite loss, and tell the front end (with the lr of
    the step just taken, computed in Python from the schedule).

    ``async_safe``: on backends that allow it (JAX, torch), Keras calls the batch hooks from a
    thread pool, so reading the loss doesn't stall the dispatch of the next steps (on an H100 a
    per-batch read halved ResNet20's throughput, docs/benchmarks.md). Hooks may then run out of
    order: a lock serialises them and an older step never overwrites a newer one. A stop raised
    in a worker reaches ``fit`` at the next batch or at the epoch's end.

    With ``steps_per_execution`` K, Keras calls the hooks once per K steps with the index of
    the call's last step (past the epoch's end for a shorter last call): every check then
    covers K steps (the loss is the epoch's running mean, so a NaN in any of them shows).
    """

    async_safe = True

    def __init__(self, progress: TrainingProgress, schedule, signals: dict):
        super().__init__()
        self.progress = progress
        self.schedule = schedule
        self.signals = signals
        self.epoch = 0
        self.steps = 1
        self.shown = -1  # the last global step shown
        self.lock = threading.Lock()

    def set_params(self, params):
        super().set_params(params)
        self.steps = params.get("steps") or 1

    def _check(self, logs):
        if self.signals["signal"]:
            raise StopRequested(f"received {self.signals['signal']}", self.epoch + 1)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise StopRequested("the loss became non-finite (NaN or inf)", self.epoch + 1, diverged=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs)
        batch = min(batch, self.steps - 1)
        step = self.epoch * self.steps + batch
        with self.lock:
            if step <= self.shown:
                return
            self.shown = step
            self.progress.batch(self.epoch, batch + 1, logs or {}, self.schedule.at_step(step))

    def on_test_batch_end(self, batch, logs=None):
        self._check(None)


def swap_ema(model) -> None:
    """Exchange the model's trainable weights with the optimizer's averages (Keras' ``use_ema``
    keeps one per trainable variable, in the same order), in place."""
    averages = model.optimizer._model_variables_moving_average  # what keras' SwapEMAWeights uses
    for variable, average in zip(model.trainable_variables, averages, strict=True):
        current = keras.ops.copy(variable.value)
        variable.assign(average.value)
        average.assign(current)


class EMAWeights(keras.callbacks.Callback):
    """With ``--ema``: the averaged weights are validated, checkpointed and so become best.keras,
    and what evaluate, predict and export load; training steps the raw weights.

    Convention for every checkpoint of an EMA run: the model holds the averaged weights and the
    optimizer's average slots hold the raw ones; ``resume`` swaps them back (:func:`swap_ema`)
    and continues exactly. Keras' ``SwapEMAWeights(swap_on_epoch=True)`` is close, but it
    overwrites the raw weights at the last epoch, so a finished run could not be trained further.
    Keep this callback before :class:`RunRecorder`.
    """

    def __init__(self):
        super().__init__()
        self.averaged_in_model = False  # fit starts from the raw weights (resume swaps first)

    def _show(self, averaged: bool) -> None:
        if self.averaged_in_model != averaged:
            swap_ema(self.model)
            self.averaged_in_model = averaged

    def on_epoch_begin(self, epoch, logs=None):
        self._show(averaged=False)

    def on_test_begin(self, logs=None):
        self._show(averaged=True)

    def on_epoch_end(self, epoch, logs=None):
        self._show(averaged=True)


class PlateauCut(keras.callbacks.Callback):
    """``--schedule plateau``: feeds the epoch's metric to the rule (``monitors.Plateau``) and
    gives the schedule its new rate. Keep it before :class:`RunRecorder`, which saves the rule's
    state after this epoch with the checkpoint."""

    def __init__(self, rule, schedule):
        super().__init__()
        self.rule, self.schedule = rule, schedule

    def on_epoch_end(self, epoch, logs=None):
        if self.rule.update((logs or {}).get(self.rule.monitor)):
            self.schedule.set_rate(epoch + 1, self.rule.lr)
            if keras.backend.backend() == "jax":  # a jitted step read the rate as a constant: trace again
                self.model.make_train_function(force=True)


class EarlyStop(keras.callbacks.Callback):
    """``--early-stopping``: ends ``fit`` when the rule (``monitors.EarlyStopping``) says so.
    Keep it before :class:`RunRecorder` (which writes the last epoch's file on a stop)."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def on_epoch_end(self, epoch, logs=None):
        if self.rule.update(epoch + 1, (logs or {}).get(self.rule.monitor)):
            self.model.stop_training = True


class EpochWatch(keras.callbacks.Callback):
    """An outside judge of each finished epoch (``tune``'s pruner): ``watch(epoch, logs)`` with the
    1-based epoch and Keras' logs returns None to go on, or the reason to end the run after this
    epoch, which then ends as early stopping ends it (``finished``, its reason and epochs in
    state.json, the last epoch's checkpoint kept). Keep it before :class:`RunRecorder`."""

    def __init__(self, watch):
        super().__init__()
        self.watch = watch
        self.stopped_epoch: int | None = None
        self.why: str | None = None

    def on_epoch_end(self, epoch, logs=None):
        why = self.watch(epoch + 1, dict(logs or {}))
        if why:
            self.why, self.stopped_epoch = why, epoch + 1
            self.model.stop_training = True

    def reason(self) -> str:
        return self.why or ""


class RunRecorder(keras.callbacks.Callback):
    """Writes the checkpoints, history.csv and monitor.png after each finished epoch.

    ``last.keras`` every epoch, ``checkpoints/epoch_NNNN.keras`` every ``checkpoint_every``
    epochs and at the end, ``best.keras`` when :func:`resnetctl.runs.score` improves on
    ``best_score`` (the score of the existing ``best.keras``): one save, then links and copies.
    With ``keep``, only the ``keep`` newest epoch files stay. ``rules`` (name -> an object
    with ``state()``: the plateau and early-stopping rules) go into each checkpoint's metadata.

    The writes run on one background thread, in order, so the next epoch trains while they
    happen (on a GPU a CIFAR epoch takes 2-4 s; a ResNet56 save and the plot about a second
    each). On one device (``background_saves``) the training thread only copies the state to
    host memory and a :class:`~resnetctl.checkpoints.CheckpointTwin`, loaded from the first
    epoch's checkpoint (saved in the foreground), saves it; on several, the training thread
    saves. The contract stays: each file is atomic, a row reaches history.csv (and ``history``)
    only after its checkpoint, one epoch's writes are pending at most, and their failure is
    raised at the next epoch's end or by :meth:`settle` as a failure of the epoch's own writes.
    """

    async_safe = True  # its batch hook only reads the clock

    def __init__(
        self,
        run: RunDir,
        history: list[dict],
        schedule,
        images: int,
        checkpoint_every: int,
        best_score: float,
        progress: TrainingProgress,
        extra: list | None = None,
        keep: int | None = None,
        recent: int = 3,
        model_name: str | None = None,
        marks: list[tuple[int, str]] | None = None,
        rules: dict | None = None,
        background_saves: bool = True,
    ):
        super().__init__()
        self.rules = rules or {}
        self.run = run
        self.rows = history  # the rows on disk (appended by the writer, after history.csv)
        self.submitted = list(history)  # the rows handed to the writer
        self.schedule = schedule
        self.images = images
        self.every = checkpoint_every
        self.best = best_score
        self.progress = progress
        self.extra = extra or []  # more writers of each row (TensorBoard)
        self.keep = keep  # epoch files kept at most (None: no limit)
        self.recent = recent  # the newest epochs' files kept beside every ``every``-th
        self.started = 0.0
        self.train_seconds = 0.0
        self.model_name = model_name  # the registry name, recorded in each checkpoint
        self.marks = marks or []  # (epoch, text) of resumes and rate changes, drawn on monitor.png
        self.writer = None  # the single background thread that writes
        self.pending = None  # the Future of the last epoch's writes
        # the CheckpointTwin; False: saves stay in the foreground (several devices, or no twin)
        self.twin = None if background_saves else False

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.train_seconds = time.perf_counter(), 0.0

    def on_train_batch_end(self, batch, logs=None):  # may run late and out of order (Reporter)
        self.train_seconds = max(self.train_seconds, time.perf_counter() - self.started)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "lr": self.schedule.at_epoch_end(epoch),
            **{
                k: float(logs[k])
                for k in ("loss", "accuracy", "top5", "val_loss", "val_accuracy", "val_top5")
                if k in logs
            },
            "seconds": round(time.perf_counter() - self.started, 3),
            "images_per_second": round(self.images / max(self.train_seconds, 1e-9), 1),
        }
        if not math.isfinite(row.get("loss", 0.0)):
            raise StopRequested("the loss became non-finite (NaN or inf)", epoch + 1, diverged=True)
        info = {
            "epoch": epoch + 1,
            "model": self.model_name,
            "metrics": {k: v for k, v in row.items() if k != "epoch"},
            **{name: rule.state() for name, rule in self.rules.items()},
        }
        self.settle()  # one epoch's writes pending at most; their failure is this epoch's
        state = None
        if self.twin:
            state = host_copy(self.model)
        else:
            save_checkpoint(self.model, self.run.last_path, info)
        # the writer thread never reads self.model (on JAX that syncs the state: see CheckpointTwin)
        layout = variable_layout(self.model) if self.twin is None else None
        best = score(row) > self.best
        self.best = max(self.best, score(row))
        final = epoch + 1 == self.params.get("epochs") or self.model.stop_training
        self.submitted.append(row)
        steps = self.params.get("steps") or 1
        # a schedule that is a function of the step alone can be drawn per step; a plateau's rate
        # depends on its history, and its lr column (the rate of each epoch) shows every cut
        replayable = getattr(self.schedule, "replayable", True)
        rate = rate_samples(self.schedule, steps, epoch + 1) if replayable else None
        if self.writer is None:
            self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resnetctl-writes")
        rows = list(self.submitted)
        self.pending = self.writer.submit(self._write_epoch, state, info, row, rows, best, final, rate, layout)
        for writer in self.extra:
            writer(row)
        self.progress.epoch_end(row)

    def _write_epoch(self, state, info, row, rows, best, final, rate, layout) -> None:
        """The epoch's files, in the order that keeps the run consistent at every moment."""
        if state is not None:
            self.twin.save(state, self.run.last_path, info)
        if best:  # a copy, not a link: a best.keras damaged in place leaves the epoch files whole
            atomic.copy_file(self.run.last_path, self.run.best_path)
        # after its checkpoint (and best.keras): a row always has them, and the row is in memory
        # only once on disk, so a write that fails (a full disk) never invents a row; a row lost
        # to a kill here is in the checkpoint's metadata, and resume puts it back
        self.run.write_history(rows)
        self.rows.append(row)
        # the epoch's file is a second name of last.keras (a hard link: no copy, no extra space
        # until last.keras is replaced); the newest few and every N-th are kept
        self.run.checkpoint_dir.mkdir(exist_ok=True)
        link_or_copy(self.run.last_path, self.run.epoch_path(row["epoch"]))
        self.run.prune_epoch_files(self.every, max(self.recent, 1 if final else 0), self.keep)
        plot_monitor(rows, self.run.monitor_path, self.run.name, rate=rate, marks=self.marks)
        if self.twin is None:  # after the first checkpoint of this call, later ones are saved from here
            try:
                self.twin = CheckpointTwin(self.run.last_path, layout)
            except Exception:  # noqa: BLE001 (an exotic model: the saves stay in the foreground)
                self.twin = False

    def settle(self) -> None:
        """Block until the pending writes are on disk; re-raise their failure."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> BaseException | None:
        """Settle and stop the writer thread; returns the writes' failure instead of raising it
        (for a run that is ending for another reason)."""
        try:
            self.settle()
        except BaseException as exc:  # noqa: BLE001
            return exc
        finally:
            if self.writer is not None:
                self.writer.shutdown()
                self.writer = None
        return None

    def on_train_end(self, logs=None):
        failure = self.close()
        if failure is not None:
            raise failure


class StepLogger(keras.callbacks.Callback):
    """Every ``every`` optimizer steps: the running loss and accuracy of the epoch (as Keras
    logs them) and the rate of the step just taken, to the trackers (TensorBoard, MLflow).

    ``async_safe`` like :class:`Reporter`: hooks may run late and out of order; a lock keeps
    them serial and an older step is never logged after a newer one."""

    async_safe = True

    def __init__(self, trackers, schedule, every: int):
        super().__init__()
        self.trackers = trackers
        self.schedule = schedule
        self.every = every
        self.epoch = 0
        self.steps = 1
        self.logged = 0  # the last global step logged (1-based: optimizer iterations done)
        self.lock = threading.Lock()

    def set_params(self, params):
        super().set_params(params)
        self.steps = params.get("steps") or 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.epoch * self.steps + batch + 1
        if step % self.every:
            return
        values = {k: float(logs[k]) for k in ("loss", "accuracy") if logs and k in logs}
        values["lr"] = self.schedule.at_step(step - 1)
        with self.lock:
            if step > self.logged:
                self.logged = step
                self.trackers.log_step(step, values)

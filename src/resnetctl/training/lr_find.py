"""``lr-find``: an exponential sweep of the learning rate over a few hundred optimizer steps of a
freshly built model, and the rate it suggests (fastai's ``lr_find``; Smith 2017, section 3.3).

The model, its augmentation, optimizer, loss and compiled train step are ``train``'s own
(:func:`resnetctl.training.trainer.build_model` and :func:`~resnetctl.training.trainer.compile_model`
on the plan's resolved config); only the schedule is the sweep (:class:`ExponentialSweep`). The
model is thrown away afterwards: no run is made or touched.

The rules (:func:`suggest`) read the smoothed loss (an exponential moving average, beta 0.98,
debiased, as fastai smooths it). ``peak`` (the default) is half the rate at the lowest smoothed
loss: Smith's (2018) maximum rate, the largest at which the loss still falls, is the peak of a
warmup-then-decay schedule such as train's; halved because the smoothing lags the raw loss (on the
shapes demo its raw loss had already risen at the smoothed minimum). fastai's ``valley`` (its default
since 2021: the longest stretch over which the loss keeps falling, the rate about halfway down it)
and ``minimum/10`` (its ``lr_min``) are there too; on the shapes demo ``valley`` fell 17 points
behind the best rate of a grid (docs/benchmarks.md), which is why it is not the default here. The
sweep stops early when the smoothed loss passes 4x its lowest value or the loss is not finite
(fastai's divergence test), or on Ctrl+C.
"""

from __future__ import annotations

import math

import keras

from resnetctl.errors import Stopped
from resnetctl.signals import stop_on_signals
from resnetctl.training.callbacks import StopRequested
from resnetctl.training.config import LR_FIND_RULE as DEFAULT_RULE
from resnetctl.training.distribute import resolve
from resnetctl.training.schedules import ExponentialSweep
from resnetctl.training.trainer import build_model, compile_model, set_up_backend, train_batches_for

SMOOTHING = 0.98  # fastai's beta
DIVERGENCE = 4.0  # stop once the smoothed loss is this many times its lowest value
RULES = {
    "peak": (
        "peak: half the rate at the lowest smoothed loss (Smith 2018's maximum rate, the largest at which the "
        "loss still falls, as the peak of train's warmup-then-decay schedule; halved for the smoothing's lag)"
    ),
    "valley": (
        "valley (fastai's default): the longest stretch over which the smoothed loss keeps falling, "
        "the rate about halfway down it (first 10% of the steps and last 5 left out)"
    ),
    "minimum/10": "minimum/10 (fastai's lr_min): a tenth of the rate at the lowest smoothed loss",
}
SHORT_VALLEY = "; the loss fell over too few steps for a valley, so minimum/10"


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """The debiased exponential moving average of ``losses`` (fastai's ``smooth_loss``)."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def longest_valley(values: list[float]) -> tuple[int, int]:
    """(start, end) of the longest strictly decreasing subsequence of ``values``: ``end`` its last
    index, ``start`` its end minus its length, as fastai's ``valley`` counts it."""
    n = len(values)
    lengths = [1] * n
    end = 0
    for i in range(1, n):
        for j in range(i):
            if values[i] < values[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
        if lengths[end] < lengths[i]:
            end = i
    return max(0, end - lengths[end]) if n else 0, end


def _valley(rates: list[float], smoothed: list[float]) -> tuple[float, list[float]] | None:
    skip = len(rates) // 10
    rates_kept, losses_kept = rates[skip : len(rates) - 5], smoothed[skip : len(smoothed) - 5]
    if len(rates_kept) < 4:
        return None
    start, end = longest_valley(losses_kept)
    if end - start < 3:
        return None
    third = (end - start) / 3
    return rates_kept[start + int(third) + int(third / 2)], [rates_kept[start], rates_kept[end]]


def suggest(rates: list[float], smoothed: list[float], rule: str = DEFAULT_RULE) -> dict:
    """The rate ``rule`` (:data:`RULES`) suggests, what every rule would, and the lowest point."""
    if not rates:
        raise ValueError("no step was recorded")
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    valley = _valley(rates, smoothed)
    candidates = {"peak": rates[lowest] / 2, "valley": valley[0] if valley else None, "minimum/10": rates[lowest] / 10}
    text = RULES[rule]
    lr = candidates[rule]
    if lr is None:  # no valley
        lr, text = candidates["minimum/10"], text + SHORT_VALLEY
    return {
        "lr": lr,
        "rule": text,
        "rule_name": rule,
        "candidates": candidates,
        "valley": valley[1] if valley else None,
        "minimum_lr": rates[lowest],
        "minimum_loss": smoothed[lowest],
    }


class SweepRecorder(keras.callbacks.Callback):
    """Per optimizer step: the batch's loss (Keras logs the epoch's running mean; the step's own
    value is recovered from two consecutive means), its rate, the smoothed loss; stops the fit when
    the sweep is done, diverges, or a signal came. Not ``async_safe``: the steps are read in order."""

    def __init__(self, schedule: ExponentialSweep, steps: int, signals: dict, progress=None):
        super().__init__()
        self.schedule, self.steps, self.signals, self.progress = schedule, steps, signals, progress
        self.points: list[dict] = []
        self.stopped: str | None = None
        self.step = 0
        self.mean = 0.0
        self.average = 0.0
        self.best = math.inf

    def on_epoch_begin(self, epoch, logs=None):
        self.mean = 0.0  # Keras resets its loss tracker at each epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.signals["signal"]:
            raise StopRequested(f"received {self.signals['signal']}", 1)
        mean = float((logs or {}).get("loss", math.nan))
        loss = (batch + 1) * mean - batch * self.mean
        self.mean = mean
        rate = self.schedule.at_step(self.step)
        self.step += 1
        if not math.isfinite(loss):
            self.stopped = f"the loss became non-finite at lr {rate:.3g}"
            self.model.stop_training = True
            return
        self.average = SMOOTHING * self.average + (1 - SMOOTHING) * loss
        smoothed = self.average / (1 - SMOOTHING**self.step)
        self.points.append({"step": self.step, "lr": rate, "loss": loss, "smoothed": smoothed})
        self.best = min(self.best, smoothed)
        if self.progress is not None:
            self.progress(self.step, self.steps, rate, smoothed)
        if smoothed > DIVERGENCE * self.best:
            self.stopped = f"the smoothed loss passed {DIVERGENCE:g}x its lowest value at lr {rate:.3g}"
            self.model.stop_training = True
        elif self.step >= self.steps:
            self.model.stop_training = True


def lr_find(plan, progress=None) -> dict:
    """Sweep the rate as :func:`resnetctl.plan.plan_lr_find` planned it and suggest one.

    ``progress(step, steps, lr, smoothed_loss)`` is called after every step. Returns the JSON of
    ``lr-find --json`` (docs/json.md)."""
    from resnetctl.data.pipeline import EpochStart

    config, info = plan.config, plan.dataset
    placement = resolve("none")
    set_up_backend(config)
    batches = train_batches_for(info, config, placement)
    schedule = ExponentialSweep(plan.start_lr, plan.end_lr, plan.steps)
    model = build_model(config, info)
    compile_model(model, config, schedule, info.num_classes)
    with stop_on_signals() as signals:
        recorder = SweepRecorder(schedule, plan.steps, signals, progress)
        try:
            model.fit(
                batches,
                epochs=math.ceil(plan.steps / len(batches)),
                shuffle=False,
                callbacks=[EpochStart(batches), recorder],
                verbose=0,
            )
        except StopRequested as stop:
            raise Stopped(f"lr-find stopped: {stop.reason}; nothing was written") from None
    keras.backend.clear_session()
    points = recorder.points
    if not points:
        raise Stopped(f"lr-find stopped at its first step: {recorder.stopped}", hint="try a lower --start-lr")
    found = suggest([p["lr"] for p in points], [p["smoothed"] for p in points], plan.rule)
    result = {
        "model": config.model,
        "dataset": info.name,
        "backend": keras.backend.backend(),
        "batch_size": config.batch_size,
        "augmentation": config.augmentation,
        "optimizer": config.optimizer,
        "start_lr": plan.start_lr,
        "end_lr": plan.end_lr,
        "steps": plan.steps,
        "steps_run": len(points),
        "stopped": recorder.stopped or f"the sweep reached lr {points[-1]['lr']:.3g}",
        "suggested_lr": float(f"{found['lr']:.3g}"),
        "rule": found["rule"],
        "rule_name": found["rule_name"],
        "candidates": {k: (float(f"{v:.3g}") if v else None) for k, v in found["candidates"].items()},
        "valley": found["valley"],
        "minimum_lr": found["minimum_lr"],
        "minimum_loss": found["minimum_loss"],
        "train_command": plan.train_command(found["lr"]),
        "plot": str(plan.plot.path) if plan.plot is not None else None,
        "points": points,
    }
    if plan.plot is not None:
        from resnetctl.plots import plot_lr_find

        plot_lr_find(result, plan.plot)
    return result

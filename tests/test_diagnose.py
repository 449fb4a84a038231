"""``diagnose``: each verdict on a history that shows it, in a real run (the session's, copied), and
every command it prints accepted by the plan of the command it names."""

from __future__ import annotations

import json
import shlex

import pytest

from resnetctl.diagnose import GAP, diagnose
from resnetctl.plan import plan_resume
from tests.helpers import copy_run, one_line_error, run_in_process

pytestmark = pytest.mark.e2e  # the session's trained run


def rows(losses, val_losses=None, accuracies=None, val_accuracies=None, lrs=None):
    out = []
    for i, loss in enumerate(losses):
        row = {"epoch": i + 1, "lr": (lrs or [0.1] * len(losses))[i], "loss": loss}
        if accuracies:
            row["accuracy"] = accuracies[i]
        if val_losses:
            row["val_loss"], row["val_accuracy"] = val_losses[i], val_accuracies[i]
        out.append(row)
    return out


@pytest.fixture
def run_with(small_run, tmp_path):
    """A copy of the session's run (checkpoints of epochs 1-3) given another history and 30 epochs."""

    made = []

    def make(history, state="finished"):
        made.append(history)
        run = copy_run(small_run, tmp_path / f"runs{len(made)}")
        record = run.config()
        record["epochs"] = 30
        run.write_config(record)
        run.write_history(history)
        run.write_state(state, epoch=history[-1]["epoch"] if history else 0)
        return run

    return make


def resume_plan(text: str):
    """The plan of a printed ``resnetctl resume ...`` (its every check, no training)."""
    words = shlex.split(text)
    assert words[:2] == ["resnetctl", "resume"], text
    given = dict(zip(words[2::2], words[3::2], strict=True))
    return plan_resume(
        given["--run"],
        epoch=int(given["--epoch"]) if "--epoch" in given else None,
        lr=float(given["--lr"]) if "--lr" in given else None,
        epochs=int(given["--epochs"]) if "--epochs" in given else None,
        fork=given.get("--fork"),
    )


def test_a_rising_train_loss_is_diverging_and_goes_back_before_the_rise(run_with):
    losses = [2.2, 2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 1.3, 1.7]
    run = run_with(rows(losses, lrs=[0.4, 0.4, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]))
    d = diagnose(run)
    assert d["verdict"] == "diverging" and "epoch 7" in d["text"]
    plan = resume_plan(d["command"])  # epoch 7 has no checkpoint: the newest before it, 3, at a tenth of its rate
    assert plan.epoch == 3 and plan.segment["lr"] == pytest.approx(0.02)


def test_a_diverged_run_goes_back_to_its_last_good_epoch(run_with):
    run = run_with(rows([2.2, 2.0, 1.9], lrs=[0.05, 0.1, 0.3]), state="diverged")
    d = diagnose(run)
    assert d["verdict"] == "diverging" and "NaN or inf" in d["text"]
    plan = resume_plan(d["command"])
    assert plan.epoch == 3 and plan.segment["lr"] == pytest.approx(0.03)


def test_over_fitting_names_the_gap_and_where_it_opened_and_forks(run_with):
    val_losses = [2.0, 1.6, 1.3, 1.2, 1.25, 1.3, 1.4, 1.5]
    accuracies = [0.30, 0.45, 0.55, 0.70, 0.80, 0.86, 0.92, 0.96]
    val_accuracies = [0.28, 0.44, 0.54, 0.60, 0.61, 0.61, 0.60, 0.60]
    run = run_with(rows([2.1, 1.7, 1.3, 1.0, 0.8, 0.6, 0.4, 0.3], val_losses, accuracies, val_accuracies))
    d = diagnose(run)
    (found,) = [f for f in d["findings"] if f["kind"] == "over-fitting"]
    assert d["verdict"] == "over-fitting" and found["gap_opened"] == 4  # 0.70 - 0.60 > GAP from epoch 4 on
    assert found["gap"] == pytest.approx(0.36) and f"above {GAP:g} since epoch 4" in d["text"]
    plan = resume_plan(d["command"])
    assert plan.epoch == 3 and plan.fork and plan.fork.startswith(run.name) and plan.run.path != run.path
    assert shlex.split(found["also"])[1:3] == ["train", "--config"] and "0.001" in found["also"]


def test_a_plateau_at_a_high_rate_drops_it_and_at_a_low_rate_is_converged(run_with):
    flat = [0.50, 0.60, 0.70, 0.72, 0.72, 0.721, 0.72, 0.719]
    losses = [2.0, 1.5, 1.2, 1.1, 1.05, 1.04, 1.03, 1.02]
    run = run_with(rows(losses, losses, flat, flat))
    d = diagnose(run)
    assert d["verdict"] == "plateau"
    plan = resume_plan(d["command"])
    assert plan.epoch == 3 and plan.segment["lr"] == pytest.approx(0.01)

    annealed = rows(losses, losses, flat, flat, lrs=[0.1, 0.1, 0.08, 0.05, 0.03, 0.01, 0.004, 0.001])
    d = diagnose(run_with(annealed))
    assert d["verdict"] == "converged" and shlex.split(d["command"])[1] == "evaluate"


def test_a_run_still_improving_is_trained_on(run_with):
    scores = [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    losses = [2.0, 1.8, 1.6, 1.4, 1.2, 1.1, 1.0, 0.9]
    d = diagnose(run_with(rows(losses, losses, scores, scores), state="stopped"))
    assert d["verdict"] == "still improving"
    assert resume_plan(d["command"]).epoch == 3  # resume where it stopped (its newest checkpoint)


def test_diagnose_on_the_command_line(small_run):
    proc = run_in_process("diagnose", "--run", small_run.path, "--json")
    d = json.loads(proc.stdout)
    assert d["run"] == "small" and d["epochs_done"] == 3 and d["findings"][0]["kind"] == d["verdict"]
    text = run_in_process("diagnose", "--run", small_run.path).stdout
    assert d["text"] in text and (d["command"] is None or d["command"] in text)
    one_line_error(run_in_process("diagnose", "--run", small_run.path.parent / "nowhere", check=False), 1, "No run")

"""``tune`` on Optuna for real: two worker processes sharing one SQLite study, a study killed and
resumed, the pruner's answer through the trainer, and bad input in one line."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from resnetctl.runs import RunDir
from tests.helpers import cli_command, needs, one_line_error, run_cli, run_in_process, run_together

pytestmark = needs("optuna")


def tune_args(two_class_data, runs, study, *more):
    return ("tune", "resnet8", "--dataset", "tiny", "--data-dir", two_class_data, "--runs-dir", runs, "--study", study,
            "--batch-size", 8, "--warmup-epochs", 0, *more)  # fmt: skip


@pytest.mark.e2e
def test_two_workers_share_one_sqlite_study_and_show_repeats_the_best(two_class_data, tmp_path):
    runs = tmp_path / "runs"
    args = tune_args(two_class_data, runs, "duo", "--trials", 4, "--epochs", 1, "--lr", "0.01:0.5", "--weight-decay",
                     "1e-5:1e-3", "--pruner", "none", "--json")  # fmt: skip
    results = run_together(args, [{}, {}])  # two processes at once, one default storage
    assert (runs / "duo" / "optuna.db").is_file()
    report = json.loads(run_in_process("tune", "--study", "duo", "--runs-dir", runs, "--show", "--json").stdout)
    trials = report["trials"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3] and report["trials_planned"] == 4
    assert all(t["state"] == "complete" and t["epochs_done"] == 1 for t in trials)
    assert len({t["worker"] for t in trials}) == 2, "both processes ran trials"
    values = [t["value"] for t in trials]
    assert values == sorted(values, reverse=True) and report["best"] == trials[0]
    assert report["epochs_spent"] == 4 == report["epochs_without_pruning"]
    for t in trials:  # each trial an ordinary run, with the settings Optuna gave it
        run = RunDir(runs / "duo" / f"t{t['number']:04d}")
        assert run.options().lr == pytest.approx(t["params"]["lr"]) and len(run.history()) == 1
        assert 0.01 <= t["params"]["lr"] <= 0.5 and 1e-5 <= t["params"]["weight_decay"] <= 1e-3
    summary = json.loads(run_in_process("summary", "--runs-dir", runs / "duo", "--json").stdout)
    assert sorted(s["run"] for s in summary) == ["t0000", "t0001", "t0002", "t0003"]
    # summary STUDY: its trials ranked as tune ranks them, the settings that differ, the best's command
    ranked = json.loads(run_in_process("summary", "duo", "--runs-dir", runs, "--json").stdout)
    assert [s["best_score"] for s in ranked] == values and {s["path"] for s in ranked} == {t["run"] for t in trials}
    params = {t["run"]: t["params"] for t in trials}
    for s in ranked:
        assert set(s["settings"]) == {"lr", "weight_decay"}
        assert s["settings"] == pytest.approx(params[s["path"]])
    again_words = shlex.split(ranked[0]["train_command"])
    assert again_words[1:3] == ["train", "--config"] and again_words[3] == ranked[0]["path"] + "/config.json"
    assert "nothing was trained" in run_in_process(*again_words[1:], "--dry-run").stdout  # it works when pasted
    shown = run_in_process("summary", "duo", "--runs-dir", runs).stdout
    assert f"best: {ranked[0]['run']}; train it again with: resnetctl train --config" in shown.replace("\n", " ")
    for proc in results:  # each process ends with the study's report
        assert len(json.loads(proc.stdout)["trials"]) == 4
    words = shlex.split(report["train_command"])
    assert words[1:3] == ["train", "--config"] and words[3] == trials[0]["run"] + "/config.json"
    plan = run_in_process(*words[1:], "--dry-run").stdout
    assert f"{trials[0]['params']['lr']}"[:6] in plan and "nothing was trained" in plan

    # another space on this study: one line, exit 1, and nothing of its trials lost
    other = run_in_process(
        *tune_args(two_class_data, runs, "duo", "--trials", 4, "--epochs", 1, "--lr", "0.01:1"), check=False
    )
    one_line_error(other, 1, "is from another space: it searches lr in [0.01, 0.5] (log)")
    space = ("--lr", "0.01:0.5", "--weight-decay", "1e-5:1e-3")
    longer = run_in_process(*tune_args(two_class_data, runs, "duo", "--trials", 4, "--epochs", 2, *space), check=False)
    one_line_error(longer, 1, "its epochs is 1, this command's 2")
    again = json.loads(run_in_process("tune", "--study", "duo", "--runs-dir", runs, "--show", "--json").stdout)
    assert again["trials"] == trials


@pytest.mark.e2e
def test_a_killed_study_goes_on_where_it_was_with_resume(two_class_data, tmp_path):
    runs = tmp_path / "runs"
    args = tune_args(two_class_data, runs, "k", "--trials", 2, "--epochs", 5, "--lr", "0.01:0.1", "--pruner", "none")
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = RunDir(runs / "k" / "t0000")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if first.history():  # an epoch is on disk: kill it in the middle of the trial
                    break
            except Exception:  # noqa: BLE001 (caught between two writes)
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    before = first.history()
    assert 1 <= len(before) < 5, "the trial was killed in its middle"
    shown = json.loads(run_in_process("tune", "--study", "k", "--runs-dir", runs, "--show", "--json").stdout)
    assert [t["state"] for t in shown["trials"]] == ["running"]
    resumed = run_in_process("tune", "--study", "k", "--runs-dir", runs, "--resume", "--json")
    assert "trial 0 of 2 (going on from its checkpoint)" in resumed.stderr
    report = json.loads(resumed.stdout)
    assert sorted((t["number"], t["state"]) for t in report["trials"]) == [(0, "complete"), (1, "complete")]
    after = first.history()
    assert [r["epoch"] for r in after] == [1, 2, 3, 4, 5]
    assert after[: len(before)] == before, "the epochs done before the kill were kept, not trained again"


@pytest.mark.e2e
def test_the_pruner_ends_a_trial_as_early_stopping_ends_a_run(two_class_data, tmp_path):
    """Optuna's median rule (real study, in memory) through the trainer's watch: a trial below the
    median at epoch 2 stops there, finished, with the reason in state.json and summary."""
    import optuna

    from resnetctl.plan import plan_train
    from resnetctl.training.config import TrainConfig
    from resnetctl.training.trainer import train
    from resnetctl.tuning import MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_EPOCHS, _pruning

    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS),
    )
    for _ in range(MEDIAN_STARTUP_TRIALS):  # earlier trials that scored above any accuracy at every epoch
        done = study.ask()
        for epoch in (1, 2, 3):
            done.report(2.0, epoch)
        study.tell(done, 2.0)
    trial = study.ask()
    config = TrainConfig(model="resnet8", dataset="tiny", data_dir=str(two_class_data), runs_dir=str(tmp_path), run="t",
                         epochs=3, batch_size=8, warmup_epochs=0, lr=1e-9)  # fmt: skip
    result = train(plan_train(config), watch=_pruning(trial))
    assert [r["epoch"] for r in result.history] == [1, 2]  # epoch 1 is never pruned (the warmup steps)
    assert result.stopped_early["stopped_epoch"] == 2 and "median rule at epoch 2" in result.stopped_early["reason"]
    state = RunDir(tmp_path / "t").state()
    assert state["state"] == "finished" and state["stopped_epoch"] == 2
    assert sorted(RunDir(tmp_path / "t").checkpoints()) == [1, 2]
    assert sorted(study.trials[-1].intermediate_values) == [1, 2]


OPEN = "import sys, resnetctl.tuning as t; t.open_storage(sys.argv[1])"


@pytest.mark.slow
def test_processes_opening_a_new_storage_at_once_all_open_it(tmp_path):
    """Each makes the storage's tables; the slower one's insert of the schema version used to fail
    (UNIQUE constraint failed: alembic_version.version_num), 12 times in 24 here without the retry."""
    import sys

    for k in range(3):
        url = f"sqlite:///{tmp_path}/s{k}.db"
        procs = [
            subprocess.Popen([sys.executable, "-c", OPEN, url], stderr=subprocess.PIPE, text=True) for _ in range(3)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err


def test_bad_input_is_one_line_before_anything_is_written(two_class_data, tmp_path):
    runs = tmp_path / "runs"
    (tmp_path / "space.json").write_text(json.dumps({"lr": "0.01:1", "lrr": "1:2"}))
    (tmp_path / "wrong.json").write_text(json.dumps({"lr": "1:0.1"}))
    cases = [
        (("--trials", 2, "--space", tmp_path / "space.json"), "Unknown parameter 'lrr' in --space"),
        (("--trials", 2, "--space", tmp_path / "wrong.json"), "the range of `lr` is empty (1:0.1)"),
        (("--trials", 2, "--lr", "0.5:0.5"), "the range of `lr` is empty"),
        (("--trials", 2, "--schedule", "poly,poly"), "the choices of `schedule` are empty"),
        (("--trials", 2, "--label-smoothing", "0:1.5"), "`label_smoothing` must be in [0, 1)"),
        (
            ("--trials", 2, "--lr", "0.01:1", "--storage", f"sqlite:///{tmp_path}/no/such/folder/s.db"),
            "Cannot open --storage",
        ),  # fmt: skip
        (("--trials", 2, "--lr", "0.01:1", "--storage", "nosuchdb://host/x"), "Cannot open --storage"),
        (("--trials", 2, "--epochs", 3), "Nothing to search"),
        (("--trials", 2, "--lr", "0.01:1", "--run", "mine"), "tune names its trials' runs itself"),
        (("--lr", "0.01:1", "--resume"), "No study 's' in"),
        (("--trials", 0, "--lr", "0.01:1"), "`trials` must be >= 1"),
        (("--trials", 2, "--lr", "0.01:1", "--pruner", "hyperband"), "Unknown pruner 'hyperband'"),
    ]
    for more, text in cases:
        one_line_error(run_cli(*tune_args(two_class_data, runs, "s", *more), check=False), 1, text)
    one_line_error(run_cli("tune", "--study", "s", "--runs-dir", runs, "--show", check=False), 1, "No study 's'")
    assert not runs.exists(), "a refused tune leaves nothing behind"


@pytest.mark.e2e
def test_tune_from_a_run_forks_every_trial_at_the_epoch_and_leaves_the_run_as_it_was(two_class_data, tmp_path):
    """``tune --from RUN --epoch N``: each trial is a fork of RUN at N (its checkpoint and history
    up to N, ``parent`` recorded) trained on with the trial's rate; only the epochs after N are
    spent; the command shown for the best is a pasteable ``resume --fork``."""
    runs = tmp_path / "runs"
    run_in_process("train", "resnet8", "--dataset", "tiny", "--data-dir", two_class_data, "--runs-dir", runs,
            "--run", "base", "--epochs", 3, "--batch-size", 8, "--warmup-epochs", 0,
            "--checkpoint-every", 1)  # fmt: skip
    source = RunDir(runs / "base")
    before = {p: p.stat().st_mtime_ns for p in source.path.rglob("*")}
    common = ("tune", "--from", "base", "--runs-dir", runs, "--study", "babysit")
    for more, text in [
        (("--epoch", 1, "--weight-decay", "1e-4:1e-3", "--trials", 2), "--weight-decay cannot change in its trials"),
        (("--epoch", 1, "--lr", "0.01:0.5", "--epochs", 1, "--trials", 2), "must train past the fork"),
        (("--epoch", 7, "--lr", "0.01:0.5", "--trials", 2), "epoch 7"),
        (("--lr", "0.01:0.5", "--trials", 2, "resnet20"), "leave out MODEL"),
        (("--lr", "0.01:0.5", "--trials", 2, "--tensorboard"), "--tensorboard cannot change in its trials"),
        (("--show",), "leave out --from and --epoch"),
    ]:
        one_line_error(run_in_process(*common, *more, check=False), 1, text)
    one_line_error(
        run_in_process("tune", "--epoch", 1, "--lr", "0.01:0.5", "--runs-dir", runs, "--study", "x", check=False),
        1,
        "give --from RUN too",
    )
    proc = run_in_process(*common, "--epoch", 1, "--lr", "0.01:0.5", "--epochs", 3, "--trials", 3, "--pruner", "none",
                   "--json")  # fmt: skip
    report = json.loads(proc.stdout)
    assert report["from"]["epoch"] == 1 and report["from"]["run"] == str(source.path.resolve())
    assert [t["state"] for t in report["trials"]] == ["complete"] * 3
    assert report["epochs_spent"] == 6 == report["epochs_without_pruning"], "two epochs a trial, after the fork"
    first = source.history()[0]
    for t in report["trials"]:
        trial = RunDir(Path(t["run"]))
        record = trial.config()
        assert record["parent"] == {"run": "base", "path": str(source.path.resolve()), "epoch": 1, "kind": "fork"}
        assert record["segments"][-1]["from_epoch"] == 1
        assert record["segments"][-1]["lr"] == pytest.approx(t["params"]["lr"])
        rows = trial.history()
        assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[0] == first, "epoch 1 is the run's, not trained again"
    assert {p: p.stat().st_mtime_ns for p in source.path.rglob("*")} == before, "the forked run is unchanged"
    words = shlex.split(report["train_command"])
    best = report["trials"][0]
    assert words[1:] == ["resume", "--run", str(source.path.resolve()), "--epoch", "1", "--lr",
                         f"{best['params']['lr']:.6g}", "--epochs", "3", "--fork", "babysit-best1"]  # fmt: skip
    run_in_process(*words[1:])
    again = RunDir(runs / "babysit-best1")
    assert again.config()["parent"]["epoch"] == 1 and [r["epoch"] for r in again.history()] == [1, 2, 3]
    shown = json.loads(run_in_process("tune", "--study", "babysit", "--runs-dir", runs, "--show", "--json").stdout)
    assert shown["train_command"].endswith("--fork babysit-best2"), "pasteable again: a name not taken"

    # another fork epoch on this study says so; a study whose run is gone says so before training
    other = run_in_process(*common, "--epoch", 2, "--lr", "0.01:0.5", "--epochs", 3, "--trials", 3, check=False)
    one_line_error(other, 1, "(--from, --epoch)")
    source.path.rename(runs / "away")
    gone = run_in_process("tune", "--study", "babysit", "--runs-dir", runs, "--resume", "--trials", 4, check=False)
    one_line_error(gone, 1, "which is gone")
    assert len(list((runs / "babysit").glob("t*"))) == 3, "no trial was started"


@pytest.mark.e2e
def test_a_study_from_a_space_file_that_explored_nothing_says_so(two_class_data, tmp_path):
    """A ``--space`` file (a range and a fixed value) whose rates are too small to move the weights:
    every trial scores the same, and the report says the study explored nothing instead of
    presenting a best."""
    runs, space = tmp_path / "runs", tmp_path / "space.json"
    space.write_text(json.dumps({"lr": "1e-9:1e-8", "label_smoothing": 0.0}))
    args = tune_args(two_class_data, runs, "flat", "--trials", 2, "--epochs", 1, "--space", space, "--pruner", "none")
    report = json.loads(run_in_process(*args, "--json").stdout)
    assert report["space"] == {"lr": "lr in [1e-09, 1e-08] (log)"}
    assert [t["state"] for t in report["trials"]] == ["complete", "complete"]
    values = {t["value"] for t in report["trials"]}
    assert len(values) == 1
    assert report["notes"] == [f"the study explored nothing: every finished trial scored {values.pop():.4f}"]
    for t in report["trials"]:
        options = RunDir(Path(t["run"])).options()
        assert options.label_smoothing == 0.0 and 1e-9 <= options.lr <= 1e-8
    shown = run_in_process("tune", "--study", "flat", "--runs-dir", runs, "--show").stdout
    assert "the study explored nothing" in shown

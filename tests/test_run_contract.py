"""The fast tier of the run contract, the plan and the output policy: fake run dirs (config.json,
history.csv, small checkpoint files in the real zip format), no Keras, no training."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import uuid
import zipfile
from pathlib import Path

import pytest

from resnetctl.commands import command
from resnetctl.errors import ResnetctlError, RunError
from resnetctl.lineage import branch_off, fork, lineage
from resnetctl.outputs import claim, write_text, written
from resnetctl.runs import MARKER, RunDir, best_row, find_run, list_runs
from resnetctl.training.config import TrainConfig, config_from_file
from resnetctl.training.settings import config_from_flags
from tests.helpers import fake_dataset, invoke, one_line_error, run_cli, run_in_process, tree


def refused(*args) -> ResnetctlError:
    """The error a command (run in this process: these need no Keras) ends with."""
    result = invoke(*args)
    assert isinstance(result.exception, ResnetctlError), (result.output, result.exception)
    return result.exception


HEADER = "epoch,lr,loss,accuracy,val_loss,val_accuracy,seconds,images_per_second\n"


def fake_checkpoint(path: Path, epoch: int, model: str = "resnet8") -> str:
    """A file in the checkpoint format (a zip holding resnetctl.json) without a real model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_id = uuid.uuid4().hex
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "resnetctl.json", json.dumps({"format_version": 1, "id": checkpoint_id, "epoch": epoch, "model": model})
        )
        z.writestr("model.weights.h5", f"weights of epoch {epoch}")
    return checkpoint_id


def fake_run(root: Path, name: str = "r", epochs: int = 4, scores=(0.5, 0.6, 0.6, 0.55), dataset: Path | None = None):
    """A finished run of ``epochs`` epochs with a checkpoint file per epoch, best.keras and last.keras."""
    run = RunDir(root / name)
    run.create()
    config = {
        **TrainConfig(model="resnet8", epochs=epochs, run=name, batch_size=64, augmentation="crop-flip").to_dict(),
        "dataset": "shapes",
        "dataset_info": {
            "name": "shapes",
            "path": str(dataset or root / "nowhere"),
            "classes": list("abcdefgh"),
            "image_size": 32,
        },
        "versions": {"resnetctl": "test"},
    }
    run.write_config(config)
    rows = "".join(f"{e},0.1,1.0,0.5,1.0,{s},1.0,100.0\n" for e, s in zip(range(1, epochs + 1), scores, strict=False))
    run.history_path.write_text(HEADER + rows)
    ids = {e: fake_checkpoint(run.epoch_path(e), e) for e in range(1, epochs + 1)}
    best = best_row(run.history())["epoch"]
    os.link(run.epoch_path(best), run.best_path)
    os.link(run.epoch_path(epochs), run.last_path)
    run.write_state("finished", epoch=epochs)
    return run, ids


# ------------------------------------------------------------------ identity
def test_a_folder_is_a_run_only_by_the_tools_marker(tmp_path):
    user = tmp_path / "proj"
    (user / "checkpoints").mkdir(parents=True)
    (user / "config.json").write_text(json.dumps({"model": "resnet8", "epochs": 3}))
    (user / "checkpoints" / "notes.txt").write_text("mine")
    before = tree(user)
    assert not RunDir(user).is_run()
    with pytest.raises(RunError, match="is not a resnetctl run"):
        find_run(str(user))
    assert list_runs(tmp_path) == []
    run, _ = fake_run(tmp_path)
    assert (run.path / MARKER).is_file() and run.is_run() and find_run("r", tmp_path).path == run.path
    assert tree(user) == before


def test_train_refuses_a_foreign_folder_at_run_and_leaves_it_byte_for_byte(tmp_path):
    """`train --run proj` where proj is a user's folder with a config.json: refused, untouched."""
    data = tmp_path / "data"
    fake_dataset(data, "shapes")
    runs = tmp_path / "runs"
    proj = runs / "proj"
    (proj / "checkpoints").mkdir(parents=True)
    (proj / "tensorboard").mkdir()
    (proj / "config.json").write_text('{"model": "resnet8", "epochs": 30}')
    (proj / "checkpoints" / "epoch_0001.keras").write_bytes(b"the user's file")
    (proj / "tensorboard" / "events").write_bytes(b"the user's events")
    before = tree(proj)
    error = refused("train", "resnet8", "--run", "proj", "--runs-dir", runs, "--data-dir", data)
    assert "is not a resnetctl run" in error.message
    assert tree(proj) == before


def test_the_default_dataset_is_the_only_one_prepared_and_several_are_a_question(tmp_path):
    data = tmp_path / "data"
    fake_dataset(data, "tiny-imagenet")
    proc = run_in_process(
        "train", "resnet56", "--schedule", "poly", "--dry-run", "--data-dir", data, "--runs-dir", tmp_path
    )
    assert "tiny-imagenet" in proc.stdout and "nothing was trained" in proc.stdout
    fake_dataset(data, "cifar10")
    proc = run_in_process("train", "resnet56", "--dry-run", "--data-dir", data, check=False)
    assert (
        proc.returncode == 1 and "say which with --dataset" in proc.stderr and "cifar10, tiny-imagenet" in proc.stderr
    )


def test_near_misses_name_the_likely_cause(tmp_path):
    data = tmp_path / "data"
    hint = refused("train", "resnet20", "--dataset", "cifar-10", "--data-dir", data).hint.split("make it with: ")[1]
    assert shlex.split(hint) == ["resnetctl", "prepare", "cifar10", "--data-dir", str(data)]
    folder = fake_dataset(data, "cifar10")
    assert (
        "did you mean --dataset cifar10?"
        in refused("train", "resnet20", "--dataset", "cifar_10", "--data-dir", data).hint
    )
    (folder / "val.h5").write_bytes(b"")
    error = refused(
        "evaluate", "--model", folder / "meta.json", "--dataset", "cifar10", "--data-dir", data, "--split", "validation"
    )
    assert "did you mean --split val?" in error.hint


# ------------------------------------------------------------------ best, branches, forks, evaluations
def test_best_is_the_earliest_of_equal_scores():
    rows = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.7}, {"epoch": 3, "val_accuracy": 0.7}]
    assert best_row(rows)["epoch"] == 2
    assert best_row([{"epoch": 1, "accuracy": float("nan")}, {"epoch": 2, "accuracy": 0.1}])["epoch"] == 2
    assert best_row([]) is None


def test_going_back_keeps_the_later_epochs_as_a_branch(tmp_path):
    run, ids = fake_run(tmp_path, scores=(0.5, 0.6, 0.7, 0.65))
    (run.tensorboard_dir).mkdir()
    (run.tensorboard_dir / "events.out").write_bytes(b"events of epochs 1-4")
    later_eval = {
        "split": "test",
        "checkpoint": "best",
        "epoch": 3,
        "checkpoint_id": ids[3],
        "rank_1": 0.7,
        "tta": None,
    }
    early_eval = {
        "split": "test",
        "checkpoint": "epoch0001",
        "epoch": 1,
        "checkpoint_id": ids[1],
        "rank_1": 0.4,
        "tta": None,
    }
    run.write_evaluation(dict(later_eval))
    run.write_evaluation(dict(early_eval))

    branch = branch_off(run, 2)
    assert branch.name == "r.b1" and branch.is_run()
    assert [r["epoch"] for r in run.history()] == [1, 2]
    assert [r["epoch"] for r in branch.history()] == [1, 2, 3, 4]  # its whole line
    assert sorted(run.checkpoints()) == [1, 2] and sorted(branch.checkpoints()) == [3, 4]
    assert not run.best_path.exists() and not run.last_path.exists()  # they held epochs 3 and 4
    assert branch.named_checkpoint("best")[0] == branch.best_path and branch.state()["state"] == "stopped"
    assert [e["epoch"] for e in branch.evaluations()] == [3] and not branch.is_stale(branch.evaluations()[0])
    assert [e["epoch"] for e in run.evaluations()] == [1]
    assert (branch.tensorboard_dir / "events.out").read_bytes() == b"events of epochs 1-4"
    parent = branch.config()["parent"]
    assert parent["run"] == "r" and parent["epoch"] == 2 and parent["kind"] == "branch"
    assert lineage(branch)[0]["run"] == "r"
    assert branch_off(run, 2) is None  # nothing after epoch 2 any more
    assert branch_off(run, 1).name == "r.b2"  # a second branch gets the next name


def test_a_fork_copies_nothing_it_does_not_need_and_changes_nothing(tmp_path):
    run, _ = fake_run(tmp_path)
    before = tree(run.path)
    child = fork(run, 2, "r-low-lr")
    assert tree(run.path) == before
    assert sorted(child.checkpoints()) == [2] and [r["epoch"] for r in child.history()] == [1, 2]
    assert child.config()["parent"]["kind"] == "fork" and child.config()["run"] == "r-low-lr"
    assert os.stat(child.epoch_path(2)).st_ino == os.stat(run.epoch_path(2)).st_ino  # a hard link, not a copy
    with pytest.raises(RunError, match="already exists"):
        fork(run, 2, "r-low-lr")


def test_evaluations_are_ordered_by_when_they_were_made_and_say_their_tta(tmp_path):
    run, ids = fake_run(tmp_path)
    newest = {"split": "test", "checkpoint": "best", "epoch": 2, "checkpoint_id": ids[2], "rank_1": 0.6, "tta": "flip"}
    older = {
        "split": "test",
        "checkpoint": "epoch0004",
        "epoch": 4,
        "checkpoint_id": ids[4],
        "rank_1": 0.5,
        "tta": None,
    }
    run.write_evaluation({**older, "evaluated": "2026-01-01T00:00:00+00:00"})
    run.write_evaluation({**newest, "evaluated": "2026-01-02T00:00:00+00:00"})
    from resnetctl.reports import run_summary

    third = {**older, "checkpoint": "epoch0003", "epoch": 3, "checkpoint_id": ids[3], "tta": None}
    run.write_evaluation({**third, "evaluated": "2026-01-01T12:00:00+00:00"})  # made between the two
    assert [(r["checkpoint"], r["tta"]) for r in run.evaluations()] == [
        ("epoch0004", None),
        ("epoch0003", None),
        ("best", "flip"),
    ]  # by when they were made, not by file name (eval-test-best... sorts first)
    latest = run_summary(run)["latest_evaluation"]
    assert latest["tta"] == "flip" and latest["evaluated"].startswith("2026-01-02")


def test_an_epoch_stored_only_in_last_keras_is_not_stale_when_evaluated(tmp_path):
    run, ids = fake_run(tmp_path)
    run.epoch_path(4).unlink()  # epoch 4 only in last.keras now
    path, label = run.named_checkpoint("4")
    assert path == run.last_path and label == "epoch0004"
    assert not run.is_stale({"checkpoint": label, "checkpoint_id": ids[4]})
    assert run.is_stale({"checkpoint": label, "checkpoint_id": "another"})


def test_a_damaged_epoch_file_never_shadows_a_good_last_keras(tmp_path):
    run, _ = fake_run(tmp_path)
    run.epoch_path(4).unlink()
    run.epoch_path(4).write_bytes(b"garbage")
    assert run.checkpoint(4) == run.last_path


def test_a_snapshot_is_one_whole_checkpoint_even_when_the_name_is_replaced(tmp_path):
    run, ids = fake_run(tmp_path)
    from resnetctl.checkpoints import checkpoint_info

    with run.snapshot("last") as (copy, label):
        fake_checkpoint(tmp_path / "new.keras", 9)
        os.replace(tmp_path / "new.keras", run.last_path)  # the writer replaces last.keras meanwhile
        assert checkpoint_info(copy)["id"] == ids[4] and label == "epoch0004"  # named by its epoch
    assert not copy.exists()


# ------------------------------------------------------------------ config and options
def test_the_config_of_a_resumed_run_trains_it_again(tmp_path):
    run, _ = fake_run(tmp_path)
    record = run.config()
    record.update(
        segments=[{"from_epoch": 2, "lr": 0.01, "epochs": 6}],
        resumes=[{"at": "x", "from_epoch": 2, "lr": 0.01, "epochs": 6}],
        parent={"run": "p", "path": "/x", "epoch": 1, "kind": "fork"},
    )
    run.write_config(record)
    config = config_from_file(run.config_path)
    assert config.segments == ({"from_epoch": 2, "lr": 0.01, "epochs": 6},) and config.total_epochs() == 6
    assert config.run is None  # a new run gets a new name


@pytest.mark.parametrize(
    "key,value,text",
    [
        ("lr", "0.1", '`lr` must be a number. Received: lr="0.1"'),
        ("seed", "zero", "must be a whole number"),
        ("epochs", "3", "must be a whole number"),
        ("milestones", "abc", "must be a list of whole numbers"),
        ("segments", "x", "must be a list"),
        ("epochs", None, "cannot be null"),
        ("tensorboard", 1, "must be true or false"),
    ],
)
def test_config_values_of_the_wrong_type_get_one_line(tmp_path, key, value, text):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "resnet8", key: value}))
    with pytest.raises(RunError, match=re.escape(text)):
        config_from_file(path)


def test_a_null_batch_size_means_the_default_rule(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "resnet8", "batch_size": None}))
    assert config_from_file(path).batch_size is None


def test_flags_override_the_config_and_a_true_can_be_switched_off(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "resnet8", "tensorboard": True, "zero_init_last": True, "epochs": 7}))
    config = config_from_flags(None, path, {"tensorboard": False, "zero_init_last": None, "milestones": None})
    assert config.tensorboard is False and config.zero_init_last is True and config.epochs == 7
    with pytest.raises(RunError, match="Unknown train options: bogus"):
        TrainConfig(model="resnet8").with_overrides(bogus=1)


def test_every_boolean_option_has_its_no_form():
    from dataclasses import fields

    text = invoke("train", "-h").output
    for f in fields(TrainConfig):
        if f.metadata.get("cli") and isinstance(f.default, bool):
            assert f"--no-{f.name.replace('_', '-')}" in text, f.name
    assert "--stream" in text  # in_memory's off form


# ------------------------------------------------------------------ printed commands
def test_printed_commands_are_quoted_for_the_shell(tmp_path):
    weird = tmp_path / "my runs" / "it's here"
    line = command("resume", "--run", weird, "--lr", "0.01")
    assert shlex.split(line) == ["resnetctl", "resume", "--run", str(weird), "--lr", "0.01"]


def test_hints_keep_their_brackets_and_are_never_wrapped(tmp_path):
    """rich markup must not eat `[...]`, and a long hint stays one line that works when pasted."""
    data = tmp_path / "[/b]odd" / ("a-long-folder-name-" * 6)
    proc = run_in_process("train", "resnet8", "--data-dir", data, check=False, env_extra={"COLUMNS": "40"})
    message, hint = proc.stderr.splitlines()[-2:]
    assert "Traceback" not in proc.stderr and str(data) in message
    pasted = shlex.split(hint.split(": ", 1)[1])
    assert pasted == ["resnetctl", "prepare", "shapes", "--data-dir", str(data)]


# ------------------------------------------------------------------ the output policy
def test_an_existing_file_is_refused_and_force_replaces_it(tmp_path):
    keep = tmp_path / "keep.jpg"
    keep.write_bytes(b"a photo")
    with pytest.raises(ResnetctlError, match="already exists"):
        claim(keep, "--csv")
    assert keep.read_bytes() == b"a photo"
    write_text(claim(keep, "--csv", force=True), "file,class\n")
    assert keep.read_text() == "file,class\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.jpg"]  # no temporary left


def test_symlinks_and_special_files_are_never_replaced(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "link.csv").symlink_to(victim)
    (tmp_path / "stdout.csv").symlink_to("/proc/self/fd/1")
    os.mkfifo(tmp_path / "fifo.csv")
    for name in ("link.csv", "stdout.csv", "fifo.csv"):
        for force in (False, True):
            with pytest.raises(ResnetctlError, match="symbolic link|FIFO"):
                claim(tmp_path / name, "--csv", force=force)
    with pytest.raises(ResnetctlError, match="device"):
        claim("/dev/null", "--csv", force=True)
    assert victim.read_text() == "precious" and (tmp_path / "link.csv").is_symlink()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.csv").st_mode)


def test_a_long_valid_name_does_not_fail_for_its_temporary(tmp_path):
    out = tmp_path / ("m" * 240 + ".keras")
    write_text(claim(out, "--out"), "x")
    assert out.read_text() == "x"
    with pytest.raises(ResnetctlError, match="longer than 255 bytes"):
        claim(tmp_path / ("m" * 256), "--out")


def test_two_writers_of_one_output_are_refused(tmp_path):
    out = claim(tmp_path / "m.csv", "--csv")
    with written(out) as tmp:
        tmp.write_text("first")
        with pytest.raises(ResnetctlError, match="in use"), written(claim(tmp_path / "m.csv", "--csv")):
            pass
    assert (tmp_path / "m.csv").read_text() == "first"


def test_a_file_that_appears_during_the_work_is_not_replaced(tmp_path):
    out = claim(tmp_path / "m.csv", "--csv")
    with pytest.raises(ResnetctlError, match="already exists"), written(out) as tmp:
        tmp.write_text("mine")
        (tmp_path / "m.csv").write_text("appeared meanwhile")
    assert (tmp_path / "m.csv").read_text() == "appeared meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


@pytest.mark.parametrize(
    "args,text",
    [
        (["predict", "{d}/photo.jpg", "--csv", "{d}/photo.jpg", "--model", "{d}/m.keras"], "already exists"),
        (["build", "resnet8", "--save", "{d}/mine.keras", "--dataset", "x"], "already exists"),
        (["export", "--out", "{d}/model.keras", "--model", "{d}/m.keras", "--dataset", "x"], "model.labels.txt"),
        (["predict", "{d}/photo.jpg", "--csv", "{d}/sub/none/x.csv", "--model", "{d}/m.keras"], "does not exist"),
    ],
)
def test_the_cli_refuses_to_overwrite_before_any_work(tmp_path, args, text):
    for name in ("photo.jpg", "mine.keras", "model.labels.txt", "m.keras"):
        (tmp_path / name).write_bytes(b"the user's " + name.encode())
    fake_dataset(tmp_path / "data", "x")
    before = tree(tmp_path)
    error = refused(*(a.format(d=tmp_path) for a in args), "--data-dir", tmp_path / "data")
    assert text in error.message
    assert tree(tmp_path) == before


# ------------------------------------------------------------------ found by a fresh review
def _resumable(tmp_path, segments):
    data = tmp_path / "data"
    folder = fake_dataset(data, "shapes")
    run, _ = fake_run(tmp_path, dataset=folder)
    record = run.config()
    record.update(segments=segments, data_dir=str(data))
    run.write_config(record)
    return run


def test_a_resume_stopped_before_its_first_epoch_keeps_its_change(tmp_path):
    """`resume --epochs 6` stopped in its first epoch: the printed `resume --run` must go on to 6."""
    from resnetctl.plan import plan_resume

    run = _resumable(tmp_path, [{"from_epoch": 4, "lr": None, "epochs": 6}])
    plan = plan_resume(str(run.path))
    assert plan.epoch == 4 and plan.config.total_epochs() == 6 and plan.segment is None


def test_going_back_drops_the_change_made_on_the_abandoned_line(tmp_path):
    from resnetctl.plan import plan_resume

    run = _resumable(tmp_path, [{"from_epoch": 2, "lr": 0.01, "epochs": None}])
    assert plan_resume(str(run.path), epoch=2).config.segments == ()
    assert plan_resume(str(run.path), epoch=2, lr=0.05).config.segments == (
        {"from_epoch": 2, "lr": 0.05, "epochs": None},
    )


def test_the_resume_line_survives_a_finished_poly_schedule():
    """A finished poly schedule planned a rate of 0: `resume --epochs N` divided by it (exit 70)."""
    import io

    from rich.console import Console

    from resnetctl.ui import TrainingDisplay

    out = io.StringIO()
    display = TrainingDisplay(Console(file=out, width=80))
    plan = {"model": "resnet8", "dataset": "d", "placement": "one device", "path": "p", "epochs": 8, "steps": 5}
    display.start({**plan, "resumed": {"from_epoch": 4, "lr": 0.05, "planned_lr": 0.0, "branch": None}})
    assert "the schedule before this resume had 0 here" in out.getvalue()


def test_a_closed_pipe_ends_quietly_with_0(tmp_path):
    import subprocess

    from tests.helpers import cli_command

    proc = subprocess.Popen(cli_command("build", "--list"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written: `| head` at its extreme
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err and b"error" not in err, err


def test_the_dry_run_shows_the_architecture_that_will_train(tmp_path):
    data = tmp_path / "data"
    fake_dataset(data, "cifar10")
    result = invoke("train", "resnet20", "--recipe", "keras-resnet20", "--dry-run", "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert "shortcut avgpool" in result.output and "shortcut A)" not in result.output


def test_a_reader_keeps_the_checkpoint_it_resolved_when_training_prunes_or_replaces_it(tmp_path):
    """evaluate/predict/export resolve a checkpoint, then import a backend for seconds: a run that
    trains meanwhile may prune that epoch file or replace last.keras. The reader still gets the
    file it resolved, whole."""
    from resnetctl.plan import resolve_model

    pruned, replaced = tmp_path / "epoch_0001.keras", tmp_path / "last.keras"
    for path in (pruned, replaced):
        path.write_bytes(b"resolved " + path.name.encode() * 1000)
    sources = [resolve_model(model_path=path) for path in (pruned, replaced)]
    pruned.unlink()  # prune_epoch_files
    (tmp_path / ".last.keras.tmp").write_bytes(b"the next epoch")
    os.replace(tmp_path / ".last.keras.tmp", replaced)  # the next epoch's atomic save
    for source, name in zip(sources, ("epoch_0001.keras", "last.keras"), strict=True):
        with source.snapshot() as copy:
            assert copy.read_bytes() == b"resolved " + name.encode() * 1000
        with source.snapshot() as copy:  # read again from the start (evaluate, then a second reader)
            assert copy.read_bytes().startswith(b"resolved ")


def test_summary_suggests_evaluate_until_the_checkpoint_it_reads_is_scored(tmp_path, monkeypatch):
    """Right after `evaluate` wrote its record, `summary` said `next: resnetctl evaluate` again."""
    monkeypatch.chdir(tmp_path)

    def next_words():
        result = invoke("summary", run.path, "--json")
        assert result.exit_code == 0, result.output
        return shlex.split(json.loads(result.stdout)[0]["next_command"])

    run, ids = fake_run(tmp_path)  # best.keras is epoch 2, last.keras epoch 4
    assert next_words()[:2] == ["resnetctl", "evaluate"]
    record = {"split": "test", "tta": None, "rank_1": 0.5}
    run.write_evaluation({**record, "checkpoint": "last", "epoch": 4, "checkpoint_id": ids[4]})
    assert next_words()[:2] == ["resnetctl", "evaluate"]  # another checkpoint was scored, not best
    run.write_evaluation({**record, "checkpoint": "best", "epoch": 2, "checkpoint_id": ids[2]})
    words = next_words()
    assert words[1] == "export" and words[words.index("--run") + 1] == str(run.path.resolve())
    assert words[words.index("--out") + 1] == "r.keras"
    (tmp_path / "r.keras").write_text("the user's")  # the suggestion stays pasteable: a free name
    assert next_words()[next_words().index("--out") + 1] == "r-2.keras"
    fake_checkpoint(run.best_path.with_name("new.keras"), 2)  # best.keras replaced by another file
    os.replace(run.best_path.with_name("new.keras"), run.best_path)
    assert next_words()[:2] == ["resnetctl", "evaluate"]


# ------------------------------------------------------------------ user-named outputs never land on the tool's files
def _owned_world(tmp_path):
    """A run `r` in runs/ (with an evaluation record), a prepared dataset `x` (its marker, meta.json
    and a split file), a photo and a model file of the user's, and a link to the run's folder."""
    runs = tmp_path / "runs"
    run, _ = fake_run(runs)
    (run.path / "eval-test-best.json").write_text('{"rank_1": 0.5}')
    (run.path / "tensorboard" / "train").mkdir(parents=True)
    (runs / ".r.lock").write_text("")
    folder = fake_dataset(tmp_path / "data", "x")
    (folder / ".resnetctl-dataset").write_text("{}")
    (folder / "train.h5").write_bytes(b"the dataset's images")
    (tmp_path / "photo.jpg").write_bytes(b"a photo")
    (tmp_path / "alias").symlink_to(run.path)
    return run


OWNED_TEXT = [  # for the text outputs (predict --csv, evaluate --predict): any name
    "runs/r/history.csv",
    "runs/r/config.json",
    "runs/r/state.json",
    "runs/r/checkpoints/epoch_0002.keras",
    "runs/r/eval-test-best.json",
    "runs/r/.resnetctl-run",
    "runs/r/tensorboard/train/events.csv",
    "runs/.r.lock",
    "alias/history.csv",  # the run's folder through a link
    "data/x/meta.json",
    "data/x/train.h5",
    "data/x/mine.csv",  # a dataset's folder holds its own files only
]
OWNED_MODELS = [  # export --out, build --save: .keras names
    "runs/r/last.keras",
    "runs/r/best.keras",
    "runs/r/checkpoints/epoch_0002.keras",
    "runs/r/checkpoints/epoch_0009.keras",  # not there yet
    "alias/best.keras",
    "data/x/m.keras",
]
OWNED_PLOTS = [  # summary --plot
    "runs/r/monitor.png",
    "runs/r/eval-test-best-confusion.png",  # not there yet: evaluate writes it
    "runs/r/tensorboard/curves.svg",
    "data/x/curves.png",
]
OWNED = [
    *((c, t) for c in ("predict", "evaluate") for t in OWNED_TEXT),
    *((c, t) for c in ("export", "build") for t in OWNED_MODELS),
    *(("summary", t) for t in OWNED_PLOTS),
]


@pytest.mark.parametrize(("command_", "target"), OWNED)
def test_force_never_lands_an_output_on_a_file_the_tool_manages(tmp_path, command_, target):
    """`predict --csv runs/R/history.csv --force` replaced the run's history (the run was then
    lost); `export --force --out runs/R/last.keras` a checkpoint. Any path a run's contract names,
    anything in a dataset, the lock beside them: refused in one line naming the run, unchanged."""
    run = _owned_world(tmp_path)
    out = tmp_path / target
    args = {
        "predict": ("predict", tmp_path / "photo.jpg", "--run", run.path, "--csv", out),
        "evaluate": (
            "evaluate",
            "--run",
            run.path,
            "--dataset",
            "x",
            "--data-dir",
            tmp_path / "data",
            "--predict",
            out,
        ),
        "export": ("export", "--run", run.path, "--out", out),
        "build": ("build", "resnet8", "--save", out),
        "summary": ("summary", run.path, "--plot", out),
    }[command_]
    before = tree(tmp_path)
    error = refused(*args, "--force")
    assert "which resnetctl manages" in error.message and "--force or not" in error.message, error.message
    assert any(f" {name} " in error.message for name in ("run r", "dataset x", "runs/r")), error.message
    assert tree(tmp_path) == before


def test_a_new_name_of_the_users_in_a_run_folder_is_still_allowed(tmp_path):
    run = _owned_world(tmp_path)
    assert claim(run.path / "my-predictions.csv", "--csv").path == run.path / "my-predictions.csv"
    assert claim(tmp_path / "runs" / "r.keras", "--out").path.name == "r.keras"  # beside the run, not in it


def test_the_issues_predict_csv_history_force_is_one_line_through_the_cli(tmp_path):
    run = _owned_world(tmp_path)
    before = tree(tmp_path)
    proc = run_cli("predict", tmp_path / "photo.jpg", "--run", run.path, "--csv", run.history_path, "--force",
                   check=False)  # fmt: skip
    one_line_error(proc, 1, "is a file of run r")
    assert tree(tmp_path) == before


def test_a_side_file_that_already_says_the_same_is_kept_not_a_conflict(tmp_path):
    side = tmp_path / "m.labels.txt"
    side.write_text("cat\ndog\n")
    stamp = side.stat().st_mtime_ns
    write_text(claim(side, "labels", same="cat\ndog\n"), "cat\ndog\n")  # shared by m.onnx and m.tflite
    assert side.read_text() == "cat\ndog\n" and side.stat().st_mtime_ns == stamp
    with pytest.raises(ResnetctlError, match="already exists"):
        claim(side, "labels", same="bird\nfish\n")  # another model's names: the one policy as before
    with pytest.raises(ResnetctlError, match="already exists"):
        claim(side, "labels", same="cat\ndog")  # a prefix is not the same
    assert side.read_text() == "cat\ndog\n"

"""The fast tier: the CLI's answers that need no training and no Keras."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import PROBE, one_line_error, run_cli


@pytest.mark.parametrize(
    "args,text",
    [
        (["train", "resnet21"], "Unknown model 'resnet21'"),
        (["train", "resnet20", "--epochs", 0], "`epochs` must be >= 1"),
        (["train", "resnet20", "--lr", "inf"], "`lr` must be a finite number"),
        (["train", "resnet20", "--weight-decay", -1], "`weight_decay` must be a finite number >= 0"),
        (["train", "resnet20", "--schedule", "step", "--milestones", "20,10"], "must be increasing"),
        (["train", "resnet20", "--schedule", "step", "--milestones", "10,40"], "between 1 and 29"),
        (["train", "resnet20", "--milestones", "10"], "only apply to --schedule step"),
        (["train", "resnet20", "--run", "../x"], "is not a plain name"),
        (["train", "resnet20", "--dataset", "nowhere"], "No prepared dataset 'nowhere'"),
        (["resume", "--run", "nowhere"], "No run 'nowhere'"),
        (["evaluate", "--run", "nowhere"], "No run 'nowhere'"),
        (["diagnose", "--run", "nowhere"], "No run 'nowhere'"),
        (["build", "resnet21"], "Unknown model"),
        (["lr-find", "resnet20", "--start-lr", 1, "--end-lr", 0.1], "0 < start < end"),
        (["lr-find", "resnet20", "--steps", 3], "--steps must be >= 10"),
        (["lr-find", "resnet20", "--rule", "steep"], "Unknown rule 'steep'"),
        (["lr-find", "resnet20", "--dataset", "nowhere"], "No prepared dataset 'nowhere'"),
        (["lr-find", "resnet20", "--plot", "sweep.txt"], "--plot must end in .png"),
        (["lr-find", "resnet20", "--batch-size", "auto"], "lr-find sweeps at one batch size"),
        (["train", "resnet20", "--seeds", 0], "`seeds` must be >= 1"),
        (["train", "resnet20", "--randaugment-magnitude", 0.3], "applies only with --augmentation randaugment"),
        (["train", "resnet20", "--random-erasing", 1.5], "`random_erasing` must be in [0, 1]"),
        (["train", "resnet20", "--batch-size", "many"], "`batch_size` must be a whole number"),
        (["predict", "photo.jpg", "--run", "nowhere"], "No run 'nowhere'"),
        (["predict", "photo.jpg", "--csv", "no/such/folder/out.csv"], "folder no/such/folder does not exist"),
        (["predict", "photo.jpg", "--model", "missing.keras"], "No model file at missing.keras"),
        (["export", "--out", "m.pt", "--format", "torchscript"], "Unknown export format 'torchscript'"),
        (["export", "--out", "m.onnx"], "--out for keras must end in .keras"),
        (["export", "--out", "no/such/folder/m.keras"], "folder no/such/folder does not exist"),
        (["export", "--out", "m.keras", "--run", "nowhere"], "No run 'nowhere'"),
    ],
)
def test_mistakes_are_answered_before_keras_is_imported(args, text, tmp_path):
    proc = run_cli(
        *args,
        "--verbose" if args[0] == "build" else "-v",
        launcher=("-c", PROBE),
        check=False,
        env_extra={"RESNETCTL_DATA_DIR": str(tmp_path), "RESNETCTL_RUNS_DIR": str(tmp_path)},
    )
    assert proc.returncode == 1 and text in proc.stderr, proc.stderr
    assert "NO-KERAS" in proc.stderr


def test_verbose_anywhere_shows_the_traceback_and_without_it_one_line(tmp_path):
    env = {"RESNETCTL_DATA_DIR": str(tmp_path)}
    quiet = run_cli("train", "resnet21", check=False, env_extra=env)
    one_line_error(quiet, 1, "Unknown model")
    for args in (["--verbose", "train", "resnet21"], ["train", "resnet21", "--verbose"]):
        loud = run_cli(*args, check=False, env_extra=env)
        assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_help_shows_every_default_and_environment_variable():
    # wherever the help wraps its lines, also after a hyphen (Click breaks "MODEL-DATASET-TIMESTAMP" there)
    text = re.sub(r"-\s+", "-", " ".join(run_cli("train", "-h").stdout.split()))
    for default in (
        "default: (30)",
        "default: (poly)",
        "default: (sgd)",
        "default: (0.1)",
        "default: (128, halved down to 32 while an epoch has under 50 steps)",
        "env var: RESNETCTL_DATA_DIR",
        "env var: RESNETCTL_RUNS_DIR",
        "default: (MODEL-DATASET-TIMESTAMP)",
    ):
        assert default in text, default
    assert "<bool>" not in text
    assert "default: (the latest)" in " ".join(run_cli("resume", "-h").stdout.split())
    assert "--install-completion" in run_cli("-h").stdout
    sweep = run_cli("lr-find", "-h").stdout  # lr-find sweeps the rate itself: no --lr among train's options
    assert "--start-lr" in sweep and not re.search(r"^\s+--lr\s", sweep, re.MULTILINE)
    assert "--from" in run_cli("tune", "-h").stdout


@pytest.mark.slow
def test_prepare_list_json_is_a_row_per_dataset_and_summary_of_no_runs_is_one_line(tmp_path, cifar_small, data_dir):
    assert json.loads(run_cli("prepare", "--list", "--json", "--data-dir", tmp_path).stdout) == []
    rows = json.loads(run_cli("prepare", "--list", "--json", "--data-dir", data_dir).stdout)
    small = next(r for r in rows if r["name"] == "cifar-small")
    assert set(small) == {"name", "splits", "image_size", "classes", "path"}
    assert (small["image_size"], small["classes"], small["path"]) == (32, 10, str(cifar_small))
    assert set(small["splits"]) >= {"train", "val", "test"} and all(
        isinstance(n, int) for n in small["splits"].values()
    )
    proc = run_cli("summary", "--runs-dir", tmp_path, "--json", check=False)
    one_line_error(proc, 1, "No runs to summarise")


def test_piped_output_is_never_wrapped_or_cut(tmp_path):
    proc = run_cli("build", "--list", env_extra={"COLUMNS": "40"})
    assert "preact-resnet56-narrow" in proc.stdout and "…" not in proc.stdout

"""Real runs of the plateau schedule and early stopping (resnet8 on the real CIFAR subset), and
every recipe resolved by ``train --dry-run`` on every dataset kind, through the CLI (in process on
TensorFlow, real subprocesses for JAX and for the one-line refusals)."""

from __future__ import annotations

import json
import math
import zipfile

import cv2
import numpy as np
import pytest

from resnetctl.runs import RunDir, checkpoint_info
from resnetctl.training.recipes import RECIPES
from tests.helpers import invoke, needs, one_line_error, run_cli, run_in_process

pytestmark = pytest.mark.e2e

CUT = math.sqrt(0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _numbers(run: RunDir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in run.history()]


def _weights(path):
    import resnetctl

    return [np.asarray(w) for w in resnetctl.load_model(path, compile=False).weights]


def _rule_state(path) -> dict:
    return {k: v for k, v in checkpoint_info(path).items() if k in ("plateau", "early_stopping")}


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=needs("jax"))])
def test_a_plateau_run_cuts_at_the_right_epochs_and_resumes_exactly(backend, cifar_small, data_dir, runs):
    """lr 1e-6: the loss cannot fall by 0.1, so with patience 2 the rate is cut at the end of
    epochs 3 and 5 (after a 1-epoch warmup). Resumed at epoch 3, epochs 4-5 come out the same,
    row for row and weight for weight (on JAX too, where the jitted step must see the new rate);
    ``resume --lr`` starts the rule again from that rate (on TensorFlow)."""
    env = {"KERAS_BACKEND": backend}
    name = f"plateau-{backend}"
    common = ["--data-dir", data_dir, "--runs-dir", runs]
    proc = run_in_process(
        "train", "resnet8", "--dataset", "cifar-small", *common, "--run", name, "--epochs", 5,
        "--batch-size", 100, "--checkpoint-every", 1, "--augmentation", "none", "--schedule", "plateau",
        "--lr", 1e-6, "--plateau-patience", 2, "--plateau-min-delta", 0.1, "--plateau-min-lr", 0,
        "--warmup-epochs", 1, "--tensorboard", env_extra=env,
    )  # fmt: skip
    run = RunDir(runs / name)
    straight = _numbers(run)
    lr = [r["lr"] for r in straight]
    assert lr == pytest.approx([1e-6, 1e-6, 1e-6, 1e-6 * CUT, 1e-6 * CUT], rel=1e-6), proc.stdout
    state = checkpoint_info(run.last_path)["plateau"]
    assert state["reductions"] == 2 and state["lr"] == pytest.approx(1e-7, rel=1e-6) and state["wait"] == 0
    assert checkpoint_info(run.epoch_path(3))["plateau"]["reductions"] == 1
    assert run.monitor_path.stat().st_size > 0

    # TensorBoard shows the lr column, cut for cut
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    # as Keras' own callback writes it: the epoch scalars of training under train/
    events = EventAccumulator(str(run.tensorboard_dir / "train"), size_guidance={"tensors": 0}).Reload()
    shown = [float(make_ndarray(e.tensor_proto)) for e in events.Tensors("epoch_learning_rate")]
    assert shown == pytest.approx(lr, rel=1e-6)

    weights, states = _weights(run.last_path), _rule_state(run.last_path)
    run_in_process("resume", "--run", name, "--epoch", 3, *common, env_extra=env)
    assert _numbers(run) == straight  # the run never stopped, row for row
    assert all(np.array_equal(a, b) for a, b in zip(_weights(run.last_path), weights, strict=True))
    assert _rule_state(run.last_path) == states
    if backend == "jax":  # the rule's restart is plain Python, the same on every backend: checked once
        return

    run_in_process("resume", "--run", name, "--epochs", 7, "--lr", 1e-5, *common, env_extra=env)
    rows = run.history()
    assert [r["lr"] for r in rows[5:]] == pytest.approx([1e-5, 1e-5], rel=1e-6)
    again = checkpoint_info(run.last_path)["plateau"]
    assert again["reductions"] == 0 and again["lr"] == pytest.approx(1e-5) and again["wait"] == 1  # started over
    assert run.config()["segments"] == [{"from_epoch": 5, "lr": 1e-5, "epochs": 7}]


def test_early_stopping_ends_the_run_and_resume_epochs_continues_it(cifar_small, data_dir, runs):
    common = ["--data-dir", data_dir, "--runs-dir", runs]
    proc = run_in_process(
        "train", "resnet8", "--dataset", "cifar-small", *common, "--run", "early", "--epochs", 10,
        "--batch-size", 100, "--augmentation", "none", "--lr", 1e-6, "--warmup-epochs", 0,
        "--early-stopping", 2, "--early-stopping-monitor", "loss", "--early-stopping-min-delta", 0.1,
    )  # fmt: skip
    run = RunDir(runs / "early")
    assert [r["epoch"] for r in run.history()] == [1, 2, 3]  # best at 1, 2 epochs without a 0.1 gain
    assert "Stopped early at epoch 3" in proc.stdout and "best epoch 1" in proc.stdout
    state = json.loads(run.state_path.read_text())
    assert (state["state"], state["epoch"], state["best_epoch"], state["stopped_epoch"]) == ("finished", 3, 1, 3)
    assert "early stopping: loss did not improve" in state["reason"]
    assert run.epoch_path(3).exists()  # the last epoch keeps its file, as at a run's planned end
    summary = json.loads(run_in_process("summary", "early", "--runs-dir", runs, "--json").stdout)[0]
    assert summary["stopped_early"] == {"stopped_epoch": 3, "best_epoch": 1}
    assert summary["next_command"].startswith("resnetctl evaluate")
    shown = run_in_process("summary", "early", "--runs-dir", runs).stdout
    assert "stopped early at epoch 3" in shown and "early stopping" in shown

    one_line_error(
        run_in_process("resume", "--run", "early", *common, check=False),
        1,
        "train further on purpose, e.g.: resnetctl resume --run",
    )
    run_in_process("resume", "--run", "early", "--epochs", 10, *common)  # on purpose: 2 more epochs to beat epoch 1
    assert [r["epoch"] for r in run.history()] == [1, 2, 3, 4, 5]
    state = json.loads(run.state_path.read_text())
    assert (state["state"], state["best_epoch"], state["stopped_epoch"]) == ("finished", 1, 5)


# --------------------------------------------------------------------------- every recipe, every kind
def _cifar100(path):
    from tests.helpers import cifar100_archive as _cifar100_archive

    _cifar100_archive(path)
    return path


def _folder(root):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "fox"):
        (root / cls).mkdir(parents=True)
        for i in range(20):
            cv2.imwrite(str(root / cls / f"{i}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, cifar, tiny, data_dir):
    """One prepared dataset of each kind, with prepare's defaults: (data dir, dataset name)."""
    root = tmp_path_factory.mktemp("kinds")
    run_cli("prepare", "shapes", "--data-dir", root)
    run_cli("prepare", "cifar100", "--source", _cifar100(root / "c100.tar.gz"), "--data-dir", root)
    run_cli(
        "prepare",
        "folder",
        "--source",
        _folder(root / "images" / "pets"),
        "--size",
        32,
        "--data-dir",
        root,
        "--name",
        "pets",
    )
    return {
        "shapes": (root, "shapes"),
        "cifar10": (data_dir, "cifar10"),
        "cifar100": (root, "cifar100"),
        "tiny-imagenet": (tiny.parent, "tiny-imagenet"),
        "folder": (root, "pets"),
    }


@pytest.mark.parametrize("kind", ["shapes", "cifar10", "cifar100", "tiny-imagenet", "folder"])
def test_every_recipe_resolves_on_every_dataset_kind(kind, kinds, tmp_path):
    where, name = kinds[kind]
    meta = json.loads((where / name / "meta.json").read_text())
    for recipe in RECIPES.values():  # in process: the printed plan is what is checked here (a real
        # subprocess runs train --recipe in test_recipe_list_and_an_unknown_name and the runs above)
        result = invoke(
            "train", "--recipe", recipe.name, "--dataset", name, "--data-dir", where, "--dry-run",
            "--runs-dir", tmp_path, "--run", "x",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert f"resolved config (recipe {recipe.name})" in out, out
        assert f"dataset {name} at" in out and "nothing was trained" in out
        rows = dict(line.strip("│ ").split("│")[:2] for line in out.splitlines() if line.count("│") in (3, 4))
        rows = {k.strip(): v.strip() for k, v in rows.items()}
        assert rows["model"] == recipe.model and rows["recipe"] == recipe.name
        assert rows["batch_size"] == str(recipe.settings["batch_size"])
        if recipe.iterations:  # steps converted for this dataset's train split at the recipe's batch
            steps = math.ceil(meta["splits"]["train"]["count"] / recipe.settings["batch_size"])
            assert int(rows["epochs"]) == max(3, round(recipe.iterations["total"] / steps))
        else:
            assert rows["epochs"] == str(recipe.settings["epochs"])
    assert not (tmp_path / "x").exists()


def test_recipe_list_and_an_unknown_name(tmp_path):
    shown = run_in_process("train", "--recipe", "list").stdout
    for recipe in RECIPES.values():
        assert recipe.name in shown and recipe.model in shown
    assert "91.0%" in shown and "93.79%" in shown and "57.93%" in shown
    proc = run_cli("train", "--recipe", "resnet-best", "--dataset", "cifar10", check=False)
    one_line_error(proc, 1, "Unknown recipe 'resnet-best'")
    assert all(name in proc.stderr for name in RECIPES) and len(proc.stderr.strip().splitlines()) <= 2
    help_text = " ".join(run_in_process("train", "-h").stdout.split())  # the notebook's defaults, shown
    for shown in ("--schedule", "plateau.", "(sqrt(0.1) = 0.3162)", "--plateau-min-lr", "(1e-06)", "(val_accuracy)"):
        assert shown in help_text, shown


def test_a_recipe_run_records_its_name_and_values(cifar_small, data_dir, runs):
    """The notebook recipe, cut to one epoch: config.json says which recipe and every value,
    and the model has the recipe's avg-pool shortcut."""
    run_in_process(
        "train", "resnet8", "--recipe", "keras-resnet20", "--dataset", "cifar-small", "--data-dir", data_dir,
        "--runs-dir", runs, "--run", "notebook", "--epochs", 1,
    )  # fmt: skip
    config = RunDir(runs / "notebook").config()
    assert config["recipe"] == "keras-resnet20" and config["model"] == "resnet8" and config["epochs"] == 1
    for key, value in RECIPES["keras-resnet20"].settings.items():
        if key != "epochs":
            assert config[key] == value, key
    with zipfile.ZipFile(runs / "notebook" / "last.keras") as z:
        assert "shortcut_pool" in z.read("config.json").decode()
    assert checkpoint_info(runs / "notebook" / "last.keras")["early_stopping"]["best_epoch"] == 1


def test_a_plateau_cut_reaches_every_replica_under_mirrored_strategy(cifar_small, data_dir, runs):
    """lr 0.1 and a min_delta no loss can beat: a cut at the end of every epoch from the second.
    Resumed from epoch 2 (the schedule built afresh at the cut rate), epoch 3 agrees with the run
    that went on to rounding: had a replica kept the old rate (0.1 against 0.0316) in the run
    that went on, its epoch 3 would be far from the resumed one."""
    from tests.helpers import run_two_cpus

    common = ["--data-dir", data_dir, "--runs-dir", runs]
    plateau = ["--schedule", "plateau", "--plateau-patience", 1, "--plateau-min-delta", 10, "--warmup-epochs", 0]
    out = run_two_cpus(
        "train", "resnet8", "--dataset", "cifar-small", *common, "--run", "mirrored-plateau", "--epochs", 3,
        "--batch-size", 100, "--checkpoint-every", 1, "--strategy", "mirrored", *plateau,
    ).stdout  # fmt: skip
    assert "2 replicas, MirroredStrategy" in out
    run = RunDir(runs / "mirrored-plateau")
    straight = run.history()
    assert [r["lr"] for r in straight] == pytest.approx([0.1, 0.1, 0.1 * CUT], rel=1e-6)
    run_two_cpus("resume", "--run", "mirrored-plateau", "--epoch", 2, "--strategy", "mirrored", *common)
    resumed = run.history()
    assert resumed[2]["lr"] == straight[2]["lr"]
    # rounding: the two replicas' sums meet in either order. Once, loss and accuracy agreed exactly
    # and val_loss (1,000 images; it was 4,000) was 2.1490 against 2.1513, rel 1.03e-3, where epoch 3
    # itself moved it by 0.157 (from 2.306) at the cut rate: 3e-3 (0.0065) still tells 0.1 from 0.0316
    for key in ("loss", "accuracy", "val_loss"):
        assert resumed[2][key] == pytest.approx(straight[2][key], rel=3e-3), key


@pytest.mark.parametrize(
    "args,text",
    [
        (["--recipe", "nope"], "Unknown recipe 'nope'"),
        (["--plateau-patience", 3], "--plateau-patience apply only with --schedule plateau"),
        (["--schedule", "plateau", "--plateau-monitor", "val_acc"], "Unknown --plateau-monitor 'val_acc'"),
        (["--early-stopping", 0], "`early_stopping` must be >= 1"),
        (["--recipe", "he2015-cifar", "--dataset", "nowhere"], "No prepared dataset 'nowhere'"),
    ],
)
def test_recipe_and_rule_mistakes_are_answered_before_keras_is_imported(args, text, tmp_path):
    from tests.helpers import PROBE

    env = {"RESNETCTL_DATA_DIR": str(tmp_path), "RESNETCTL_RUNS_DIR": str(tmp_path)}
    proc = run_cli("train", "resnet20", *args, "-v", launcher=("-c", PROBE), check=False, env_extra=env)
    assert proc.returncode == 1 and text in proc.stderr, proc.stderr
    assert "NO-KERAS" in proc.stderr

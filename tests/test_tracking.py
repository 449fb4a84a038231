"""--mlflow and --tensorboard: a real MLflow store (and server) and real event files, read back
with MLflow's client and TensorBoard's own reader and compared with history.csv."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from resnetctl.runs import RunDir
from resnetctl.tracking import hyperparameters, mlflow_run_of, parent_of, state_after
from tests.helpers import needs, one_line_error, run_cli, run_in_process

LOG_EVERY = 4  # divides the 16 steps of an epoch here: each epoch's last step is logged
BATCH = 64


def _train(data_dir, runs, name, env, *extra):
    return run_in_process(
        "train",
        "resnet8",
        "--dataset",
        "cifar-small",
        "--data-dir",
        data_dir,
        "--runs-dir",
        runs,
        "--run",
        name,
        "--batch-size",
        BATCH,
        "--log-every",
        LOG_EVERY,
        *extra,
        env_extra=env,
    )


@pytest.fixture(scope="module")
def tracked(cifar_small, data_dir, tmp_path_factory):
    """resnet8 on the small CIFAR subset with --mlflow --tensorboard for 2 epochs, resumed to 3,
    then evaluated: everything logged to a sqlite MLflow store in tmp."""
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install '.[mlflow]')")
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install '.[tensorboard]')")
    root = tmp_path_factory.mktemp("tracked")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "tests"}
    runs = root / "runs"
    _train(data_dir, runs, "t", env, "--epochs", 2, "--mlflow", "--tensorboard")
    run = RunDir(runs / "t")
    first_id = mlflow_run_of(run.config())["id"]
    record = json.loads(run.config_path.read_text())
    run.config_path.write_text(json.dumps({**record, "parent": "base"}))  # as a branch's config.json says
    elsewhere = root / "elsewhere.db"
    run_in_process(
        "resume", "--run", run.path, "--epochs", 3, env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{elsewhere}"}
    )
    assert not elsewhere.exists()  # the run's own store, not the one in the environment now
    evaluation = json.loads(run_in_process("evaluate", "--run", run.path, "--json").stdout)
    flipped = run_in_process("evaluate", "--run", run.path, "--tta", "flip").stdout
    return run, first_id, evaluation, flipped


@pytest.mark.e2e
def test_mlflow_run_holds_params_metrics_tags_and_files(tracked, tmp_path):
    from mlflow.tracking import MlflowClient

    run, first_id, evaluation, _ = tracked
    record = run.config()
    known = mlflow_run_of(record)
    assert known["id"] == first_id  # resume continued the same MLflow run (not the URI in its env)
    client = MlflowClient(known["tracking_uri"])
    logged = client.get_run(known["id"])
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "t"
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.name == "tests"  # MLFLOW_EXPERIMENT_NAME
    store = Path(known["tracking_uri"][len("sqlite:///") :])
    assert experiment.artifact_location == (store.parent / "mlruns").as_uri()  # beside the store, not in cwd
    artifacts = Path(logged.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(store.parent / "mlruns") and (artifacts / "history.csv").is_file()
    params = logged.data.params
    assert params["model"] == "resnet8" and params["batch_size"] == str(BATCH) and params["lr"] == "0.1"
    assert params["epochs"] == "2" and logged.data.tags["resumed.epochs"] == "3"  # params never change
    assert logged.data.tags["model"] == "resnet8" and logged.data.tags["dataset"] == "cifar-small"
    assert logged.data.tags["parent"] == "base"

    history = run.history()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_second"):
        points = client.get_metric_history(known["id"], column)
        assert [m.step for m in points] == [1, 2, 3], column
        np.testing.assert_allclose([m.value for m in points], [r[column] for r in history], rtol=1e-6)

    steps = record["steps_per_epoch"]
    batch = client.get_metric_history(known["id"], "batch_loss")
    assert [m.step for m in batch] == list(range(LOG_EVERY, 3 * steps + 1, LOG_EVERY))
    rates = {m.step: m.value for m in client.get_metric_history(known["id"], "batch_lr")}
    assert steps % LOG_EVERY == 0
    for row in history:  # history.csv's lr is the rate of the epoch's last step
        assert rates[row["epoch"] * steps] == pytest.approx(row["lr"], rel=1e-6)

    files = {a.path for a in client.list_artifacts(known["id"])}
    assert {"config.json", "history.csv", "monitor.png"} <= files
    evaluated = {a.path for a in client.list_artifacts(known["id"], "evaluation")}
    assert "evaluation/eval-test-best.json" in evaluated and "evaluation/eval-test-best-confusion.csv" in evaluated
    local = Path(client.download_artifacts(known["id"], "evaluation/eval-test-best.json", str(tmp_path)))
    assert json.loads(local.read_text())["rank_1"] == evaluation["rank_1"]
    (score,) = client.get_metric_history(known["id"], "eval_test_best_rank_1")
    assert score.value == pytest.approx(evaluation["rank_1"]) and score.step == evaluation["epoch"]
    text = Path(client.download_artifacts(known["id"], "history.csv", str(tmp_path / "dl"))).read_text()
    assert text == run.history_path.read_text()  # the final history, logged again after the resume


@pytest.mark.e2e
def test_evaluation_has_precision_recall_f1_and_the_matrix_as_counts(tracked):
    import csv

    run, _, evaluation, flipped = tracked
    matrix = np.asarray(evaluation["confusion_matrix"])
    assert matrix.sum() == evaluation["images"] == 1000
    right, predicted, actual = np.diag(matrix), matrix.sum(0), matrix.sum(1)
    for i, row in enumerate(evaluation["per_class"]):
        precision = right[i] / predicted[i] if predicted[i] else 0.0
        recall = right[i] / actual[i]
        assert row["precision"] == pytest.approx(precision) and row["recall"] == pytest.approx(recall)
        assert row["accuracy"] == row["recall"] and row["images"] == actual[i]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert row["f1"] == pytest.approx(f1)
    assert evaluation["macro_f1"] == pytest.approx(np.mean([r["f1"] for r in evaluation["per_class"]]))
    assert evaluation["macro_recall"] == pytest.approx(np.mean(right / actual))
    assert evaluation["rank_1"] == pytest.approx(right.sum() / 1000)
    with open(evaluation["per_class_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == [r["class"] for r in evaluation["per_class"]]
    assert [float(r["f1"]) for r in rows] == pytest.approx([r["f1"] for r in evaluation["per_class"]], abs=1e-6)
    with open(evaluation["confusion_csv"], newline="") as f:
        table = list(csv.reader(f))
    assert table[0][1:] == [r["class"] for r in evaluation["per_class"]]
    assert [[int(v) for v in row[1:]] for row in table[1:]] == matrix.tolist()
    assert Path(evaluation["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    # the test-time augmentation is named wherever a score is shown
    assert evaluation["tta"] is None
    header, scores = flipped.splitlines()[:2]
    assert header.endswith("TTA flip") and f"(best, epoch {evaluation['epoch']})" in header
    assert "macro precision" in scores and scores.endswith("(TTA flip)")
    assert (run.path / "eval-test-best-flip-confusion.csv").is_file()
    (summarised,) = json.loads(run_in_process("summary", run.path, "--json").stdout)
    assert summarised["mlflow_run"] == mlflow_run_of(run.config())
    summary = run_in_process("summary", run.path).stdout
    assert f"run {summarised['mlflow_run']['id']} at sqlite:///" in summary
    assert re.search(r"evaluation\s*│?\s*test rank-1 [0-9.]+ \(best epoch \d, (no TTA|TTA flip)\)", summary), summary


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of one TensorBoard run folder, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
    from tensorboard.util import tensor_util

    reader = EventAccumulator(str(folder), size_guidance={TENSORS: 0})
    reader.Reload()
    return {
        tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in reader.Tensors(tag)]
        for tag in reader.Tags()["tensors"]
        if not tag.startswith("_hparams_")
    }


@pytest.mark.e2e
def test_tensorboard_overlays_train_and_validation_like_keras(tracked):
    run, *_ = tracked
    history = run.history()
    epochs = [r["epoch"] for r in history]
    train, validation = _scalars(run.tensorboard_dir / "train"), _scalars(run.tensorboard_dir / "validation")
    for name in ("loss", "accuracy", "top5"):  # the same tag in both folders: one chart, two curves
        assert [s for s, _ in train[f"epoch_{name}"]] == epochs
        np.testing.assert_allclose([v for _, v in train[f"epoch_{name}"]], [r[name] for r in history], rtol=1e-6)
        assert [s for s, _ in validation[f"epoch_{name}"]] == epochs
        np.testing.assert_allclose(
            [v for _, v in validation[f"epoch_{name}"]], [r[f"val_{name}"] for r in history], rtol=1e-6
        )
    np.testing.assert_allclose([v for _, v in train["epoch_learning_rate"]], [r["lr"] for r in history], rtol=1e-6)
    assert not any(tag.startswith("epoch_val_") for tag in train)
    assert "epoch_learning_rate" not in validation
    steps = run.config()["steps_per_epoch"]
    assert [s for s, _ in train["batch_loss"]] == list(range(LOG_EVERY, 3 * steps + 1, LOG_EVERY))
    assert {s for s, _ in train["batch_learning_rate"]} == {s for s, _ in train["batch_loss"]}


@pytest.mark.e2e
def test_tensorboard_hparams_hold_the_resolved_config(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    run, *_ = tracked
    reader = EventAccumulator(str(run.tensorboard_dir))
    reader.Reload()
    content = reader.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.SESSION_START_INFO_TAG in content
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.group_name == "t"
    assert start.hparams["model"].string_value == "resnet8"
    assert start.hparams["batch_size"].number_value == BATCH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
@needs("mlflow")
def test_train_logs_to_a_real_mlflow_server(cifar_small, data_dir, tmp_path):
    """``mlflow server`` on 127.0.0.1, started here and stopped at the end."""
    from mlflow.tracking import MlflowClient

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"mlflow server did not come up on {url} within 90 s here")
            time.sleep(1)
        _train(data_dir, tmp_path / "runs", "served", {"MLFLOW_TRACKING_URI": url}, "--epochs", 1, "--mlflow")
        run = RunDir(tmp_path / "runs" / "served")
        known = mlflow_run_of(run.config())
        assert known["tracking_uri"] == url
        client = MlflowClient(url)
        logged = client.get_run(known["id"])
        assert logged.info.status == "FINISHED" and logged.data.params["model"] == "resnet8"
        (loss,) = client.get_metric_history(known["id"], "loss")
        assert loss.step == 1 and loss.value == pytest.approx(run.history()[0]["loss"], rel=1e-6)
        assert {"config.json", "history.csv", "monitor.png"} <= {a.path for a in client.list_artifacts(known["id"])}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


# ------------------------------------------------------------------ fast tier
def test_mlflow_flag_without_mlflow_is_refused_with_the_install_line(tmp_path):
    """A Python in which mlflow can't be found (sys.modules says so): one line, nothing written."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")
    src = Path(__file__).resolve().parents[1] / "src"
    proc = run_in_process(
        "train",
        "resnet8",
        "--mlflow",
        "--runs-dir",
        tmp_path / "runs",
        env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{src}"},
        check=False,
    )
    one_line_error(proc, 1, "--mlflow needs the mlflow package")
    assert 'pip install "resnetctl[mlflow]"' in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_log_every_must_be_positive(tmp_path):
    proc = run_cli("train", "resnet8", "--log-every", 0, "--runs-dir", tmp_path, check=False)
    one_line_error(proc, 1, "`log_every` must be >= 1")


def test_hyperparameters_are_plain_values_of_the_options():
    record = {
        "model": "resnet20",
        "milestones": [3, 6],
        "clip_norm": None,
        "lr": 0.1,
        "data_dir": "/somewhere",
        "created": "now",
        "steps_per_epoch": 16,
        "dataset_info": {"image_size": 32, "num_classes": 10, "splits": {"train": 1000}},
    }
    params = hyperparameters(record)
    assert params == {
        "model": "resnet20",
        "milestones": "[3, 6]",
        "clip_norm": "none",
        "lr": 0.1,
        "steps_per_epoch": 16,
        "dataset_image_size": 32,
        "dataset_num_classes": 10,
        "train_images": 1000,
    }


def test_parent_and_state_names():
    assert parent_of({}) is None
    assert parent_of({"parent": "base"}) == "base"
    assert parent_of({"parent": {"run": "base", "epoch": 3}}) == "base"
    assert mlflow_run_of({"mlflow_run": {"id": ""}}) is None

    class Stop(Exception):
        def __init__(self, diverged):
            self.diverged = diverged

    assert state_after(None) == "finished"
    assert state_after(Stop(False)) == "stopped" and state_after(Stop(True)) == "diverged"
    assert state_after(KeyboardInterrupt()) == "stopped" and state_after(OSError()) == "failed"


# ------------------------------------------------------------------ stores that refuse, stores that hang
def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs("mlflow")
@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    ["file-uri", "folder", "relative-folder", "unknown-scheme", "closed-port", "no-answer", "deleted-experiment"],
)
def test_a_store_that_refuses_at_the_start_is_one_line_and_nothing_is_written(cifar_small, data_dir, tmp_path, kind):
    """MLflow 3 refuses a file store (`file:///x/mlruns`, a plain folder, documented as valid): the
    error path itself failed (AttributeError, exit 70). A server that is not there took minutes of
    MLflow's retries. Each is one line with what to do, before anything of the run is written."""
    listening = socket.socket()  # takes connections and never answers: a server that hangs
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    env = {"MLFLOW_EXPERIMENT_NAME": "tests"}
    uri, text = {
        "file-uri": ((tmp_path / "x" / "mlruns").as_uri(), "refuses the file store"),
        "folder": (str(tmp_path / "plain"), "refuses the file store"),
        "relative-folder": ("./mlruns", "MLFLOW_TRACKING_URI=sqlite:///"),
        "unknown-scheme": ("bogus://somewhere", "cannot use the store bogus://somewhere"),
        "closed-port": (f"http://127.0.0.1:{_free_port()}", "cannot use the store http://127.0.0.1:"),
        "no-answer": (f"http://127.0.0.1:{listening.getsockname()[1]}", "gave no answer within 3 s"),
        "deleted-experiment": (f"sqlite:///{tmp_path / 'm.db'}", "experiment 'tests' is deleted"),
    }[kind]
    env.update(MLFLOW_TRACKING_URI=uri, RESNETCTL_MLFLOW_TIMEOUT="3")
    if kind == "deleted-experiment":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        client.delete_experiment(client.create_experiment("tests"))
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        proc = run_cli("train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir,
                       "--runs-dir", tmp_path / "runs", "--run", "t", "--epochs", 1, "--mlflow",
                       env_extra=env, check=False, cwd=tmp_path, timeout=150)  # fmt: skip
    finally:
        listening.close()
    one_line_error(proc, 1, text)
    assert "train without --mlflow" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run, no mlruns/, no mlflow.db


def _hint_command(stderr: str, after: str) -> list[str]:
    import shlex

    line = next(line for line in stderr.splitlines() if after in line)
    words = shlex.split(line.split(after, 1)[1])
    assert words[0] == "resnetctl"
    return words[1:]


@pytest.mark.e2e
@needs("mlflow")
def test_a_refused_resume_leaves_every_file_and_resume_turns_tracking_off_and_on(cifar_small, data_dir, tmp_path):
    """Train with --mlflow, delete that MLflow run, `resume --epochs 2`: refused, but config.json got
    a segment and a `resumes` entry and state.json said failed; and nothing could go on without
    tracking. Now the refusal changes nothing, its hint's `--no-mlflow` command goes on, `--mlflow`
    later continues the same MLflow run (the epochs trained without it included), and a store
    that is gone is refused without an empty one made in its place."""
    from mlflow.tracking import MlflowClient

    store = tmp_path / "m.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}", "MLFLOW_EXPERIMENT_NAME": "tests"}
    runs = tmp_path / "runs"
    _train(data_dir, runs, "m", env, "--epochs", 1, "--mlflow")
    run = RunDir(runs / "m")
    known = mlflow_run_of(run.config())
    client = MlflowClient(known["tracking_uri"])
    client.delete_run(known["id"])
    before = _tree(runs)
    refused = run_in_process("resume", "--run", run.path, "--epochs", 2, env_extra=env, check=False)
    one_line_error(refused, 1, f"run {known['id']}, which this run logs to, was deleted")
    assert _tree(runs) == before  # config.json, state.json, history.csv: every file as it was
    go_on = _hint_command(refused.stderr, "resume without tracking: ")
    assert go_on[-1] == "--no-mlflow" and "--epochs" in go_on
    run_in_process(*go_on, env_extra=env)  # pasted as printed
    assert [r["epoch"] for r in run.history()] == [1, 2]
    assert run.config()["mlflow"] is False and mlflow_run_of(run.config()) == known  # kept, to turn it on again
    client.restore_run(known["id"])
    run_in_process("resume", "--run", run.path, "--epochs", 3, "--mlflow", env_extra=env)
    logged = client.get_run(known["id"])
    assert logged.info.status == "FINISHED" and run.config()["mlflow"] is True
    points = client.get_metric_history(known["id"], "loss")
    assert sorted(m.step for m in points) == [1, 2, 3]  # epoch 2, trained without MLflow, put in
    np.testing.assert_allclose(
        [m.value for m in sorted(points, key=lambda m: m.step)], [r["loss"] for r in run.history()], rtol=1e-6
    )
    store.rename(tmp_path / "moved.db")
    before = _tree(runs)
    gone = run_in_process("resume", "--run", run.path, "--epochs", 4, env_extra=env, check=False)
    one_line_error(gone, 1, "this run logs to is gone")
    assert _tree(runs) == before and not store.exists()


@pytest.mark.e2e
@needs("mlflow")
def test_a_store_that_stops_answering_never_holds_training_and_sigterm_is_answered(cifar_small, data_dir, tmp_path):
    """A real tracking server (MLflow's app) that stops answering once training runs: each
    logging call waited on the training thread (MLflow's retries: minutes), and a SIGTERM waited
    behind them. Now the epochs go on, SIGTERM ends the run in seconds (what the store did not take
    is given up with a warning), and a resume once it answers again completes the MLflow run."""
    import signal

    from mlflow.tracking import MlflowClient

    port, gate = _free_port(), tmp_path / "gate"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.mlflow_gate", str(port), str(tmp_path / "s.db"), str(tmp_path / "art"), gate],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = tmp_path / "runs"
    train = None
    try:
        assert server.stdout.readline().strip() == b"ready"
        args = ("train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", runs,
                "--run", "g", "--batch-size", BATCH, "--epochs", 30, "--log-every", 1, "--mlflow")  # fmt: skip
        train = subprocess.Popen(
            [sys.executable, "-m", "resnetctl", *map(str, args)], env=env, stderr=subprocess.PIPE, text=True
        )
        run = RunDir(runs / "g")
        deadline = time.monotonic() + 300
        while run.state().get("state") != "running":  # the start is done: the MLflow run exists
            assert train.poll() is None and time.monotonic() < deadline, train.stderr.read()
            time.sleep(0.2)
        gate.touch()  # from here on the server answers nothing
        deadline = time.monotonic() + 120  # one epoch is seconds; a held logging call is minutes
        while len(run.history()) < 2:
            assert train.poll() is None and time.monotonic() < deadline, "training waited on the store"
            time.sleep(0.2)
        train.send_signal(signal.SIGTERM)
        _, stderr = train.communicate(timeout=60)
        assert train.returncode == 130, stderr
        assert "Traceback" not in stderr and "stopped" in stderr and "MLflow did not take" in stderr, stderr
        assert run.state()["state"] == "stopped"
        gate.unlink()  # the server answers again
        done = len(run.history())
        run_in_process("resume", "--run", run.path, "--epochs", done + 1, env_extra={"MLFLOW_TRACKING_URI": url})
        known = mlflow_run_of(run.config())
        logged = MlflowClient(url).get_run(known["id"])
        assert logged.info.status == "FINISHED" and logged.data.params["model"] == "resnet8"
        steps = sorted({m.step for m in MlflowClient(url).get_metric_history(known["id"], "loss")})
        assert steps == [r["epoch"] for r in run.history()]  # what the held calls lost is put back at resume
    finally:
        if train is not None and train.poll() is None:
            train.kill()
            train.wait(timeout=30)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@needs("mlflow")
@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_is_answered_while_the_store_does_not_answer(cifar_small, data_dir, tmp_path, name):
    """Ctrl+C or SIGTERM while resnetctl waits for a store that hangs: one line and 130 at once
    (the wait was in MLflow's HTTP call, up to 120 s a try, with the signal only noted)."""
    import signal

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    listening.settimeout(120)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{listening.getsockname()[1]}",
           "RESNETCTL_MLFLOW_TIMEOUT": "300", "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    args = ("train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", tmp_path / "runs",
            "--epochs", 1, "--mlflow")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "resnetctl", *map(str, args)], env=env, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)  # fmt: skip
    try:
        connection, _ = listening.accept()  # resnetctl asked the store and waits for its answer
        time.sleep(0.5)
        proc.send_signal(getattr(signal, name))
        _, stderr = proc.communicate(timeout=30)
        connection.close()
    finally:
        proc.kill()
        listening.close()
    assert proc.returncode == 130 and f"stopped by {name}" in stderr and "Traceback" not in stderr, stderr
    assert not (tmp_path / "runs").exists()

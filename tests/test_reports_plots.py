"""Evaluation a user acts on (precision, recall, F1, the confusion matrix as counts, figure and
CSV) and runs side by side (`summary --plot`)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from resnetctl.errors import ResnetctlError
from resnetctl.evaluation import class_scores, confusion_matrix
from resnetctl.plots import check_plot_path, plot_confusion, runs_figure
from resnetctl.runs import RunDir
from tests.helpers import invoke, one_line_error, run_in_process


# ------------------------------------------------------------------ scores (fast tier)
def test_class_scores_match_their_definitions():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2, 2, 0, 1])
    matrix = confusion_matrix(labels, predicted, 4)  # class 3: no image, never predicted
    scores = class_scores(matrix)
    np.testing.assert_allclose(scores["precision"], [2 / 4, 1 / 3, 2 / 2, 0])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 1 / 2, 2 / 4, 0])
    p, r = scores["precision"][:3], scores["recall"][:3]
    np.testing.assert_allclose(scores["f1"], [*(2 * p * r / (p + r)), 0])
    assert scores["images"].tolist() == [3, 2, 4, 0]


def _drawn_counts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


@pytest.mark.parametrize("n", [8, 200])
def test_confusion_figure_is_readable_at_8_and_200_classes(tmp_path, n, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 3, (n, n)) + np.diag(np.full(n, 20))
    path = tmp_path / "c.png"
    plot_confusion(matrix, [f"class-{i}" for i in range(n)], path, title="r: test, best epoch 3, no TTA\naccuracy 80%")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    ax = fig.axes[0]
    assert "accuracy 80%" in ax.get_title() and "best" in ax.get_title()
    if n == 8:  # every count in its cell, names large
        assert sorted(_drawn_counts(fig)) == sorted(str(v) for v in matrix.ravel() if v)
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"class-{i}" for i in range(8)]
        assert ax.get_xticklabels()[0].get_fontsize() >= 11
    else:  # no per-cell text, a few index ticks
        assert _drawn_counts(fig) == []
        assert len(ax.get_xticks()) <= 20
        assert all(t.get_text().isdigit() for t in ax.get_xticklabels())
    width, height = fig.get_size_inches() * fig.dpi
    assert max(width, height) <= 1600


def _history(epochs, offset):
    return [
        {
            "epoch": e,
            "lr": 0.1 / e,
            "loss": 2.0 / e + offset,
            "accuracy": 0.3 + 0.1 * e,
            "val_loss": 2.2 / e + offset,
            "val_accuracy": 0.25 + 0.1 * e,
        }
        for e in range(1, epochs + 1)
    ]


def test_runs_figure_overlays_runs_train_solid_validation_dashed():
    fig = runs_figure([("a", _history(3, 0.0)), ("b", _history(5, 0.5))])
    loss, accuracy, rate = fig.axes
    assert loss.get_yscale() == "log"
    for ax, with_val in ((loss, True), (accuracy, True), (rate, False)):
        lines = [line for line in ax.get_lines() if len(line.get_xdata())]
        by_run = {}
        for line in lines:
            by_run.setdefault(line.get_label(), []).append(line)
        assert set(by_run) == {"a", "b"}
        assert by_run["a"][0].get_color() != by_run["b"][0].get_color()
        for run_lines in by_run.values():
            assert len({line.get_color() for line in run_lines}) == 1
            assert [line.get_linestyle() for line in run_lines] == (["-", "--"] if with_val else ["-"])
    assert list(loss.get_lines()[0].get_ydata()) == [r["loss"] for r in _history(3, 0.0)]


# ------------------------------------------------------------------ summary --plot (CLI)
def _fake_run(runs, name, history):
    folder = runs / name
    RunDir(folder).create()  # the tool's marker: a folder is a run only with it
    (folder / "config.json").write_text(
        json.dumps(
            {"model": "resnet8", "dataset": "shapes", "epochs": len(history), "batch_size": 64, "augmentation": "none"}
        )
    )
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def test_summary_plot_writes_one_picture_and_never_replaces_without_force(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "a", _history(3, 0.0))
    _fake_run(runs, "b", _history(4, 0.3))
    out = tmp_path / "curves.png"
    proc = run_in_process("summary", "a", "b", "--runs-dir", runs, "--plot", out)
    assert f"curves of 2 run(s): {out}" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out.write_bytes(b"mine")
    one_line_error(run_in_process("summary", "--runs-dir", runs, "--plot", out, check=False), 1, "already exists")
    assert out.read_bytes() == b"mine"
    result = invoke("summary", "--runs-dir", runs, "--plot", out, "--force")  # in process: matplotlib is loaded
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp-*"))


def test_plot_paths_that_cannot_be_written_are_refused(tmp_path):
    for path, message in (
        (tmp_path / "c.txt", "must end in .png, .svg, .pdf"),
        (tmp_path / "missing" / "c.png", "does not exist"),
    ):
        with pytest.raises(ResnetctlError) as raised:
            check_plot_path(path, force=True)
        assert message in raised.value.message
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ResnetctlError, match="is a folder"):
        check_plot_path(tmp_path / "folder.png", force=True)


# ------------------------------------------------------------------ export --format tflite: LiteRT
@pytest.mark.e2e
def test_tflite_artifacts_are_checked_with_litert_not_the_deprecated_tf_lite(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed (pip install '.[export]')")
    import warnings

    import keras

    from resnetctl.export import run_artifact, tflite_interpreter

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    path = tmp_path / "m.tflite"
    model.export(str(path), format="litert", verbose=False)
    images = np.random.default_rng(0).random((5, 4, 4, 3)).astype(np.float32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert type(tflite_interpreter(path)).__module__.startswith("ai_edge_litert")
        got = run_artifact("tflite", path, images)
    assert not [w for w in seen if "tf.lite.Interpreter" in str(w.message)]
    np.testing.assert_allclose(got, model.predict(images, verbose=0), atol=1e-5)

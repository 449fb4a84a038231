"""Using a trained run: `predict` on real JPEGs gives the same answers as `evaluate` on the
prepared split; every `export` format, run by its own runtime here, gives the same answers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import TINY_MINI, needs, one_line_error, pets_world, run_cli, run_in_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """A ResNet8 trained for one epoch on the Tiny ImageNet mini (a real run, real checkpoints)."""
    runs = tmp_path_factory.mktemp("predict-runs")
    run_in_process(
        "train",
        "resnet8",
        "--dataset",
        "tiny-imagenet",
        "--data-dir",
        tiny.parent,
        "--runs-dir",
        runs,
        "--run",
        "tiny",
        "--epochs",
        1,
        "--batch-size",
        50,
        "--ema",  # the recipe options leave a model that predicts and exports like any other
        0.9,
        "--mixup",
        0.2,
        "--cutmix",
        1.0,
    )
    return runs / "tiny"


@pytest.fixture(scope="module")
def val_jpegs(tmp_path_factory):
    """The mini's labelled val JPEGs as files, half of them one folder down: {file name: wnid}."""
    root = tmp_path_factory.mktemp("photos")
    (root / "more").mkdir()
    with zipfile.ZipFile(TINY_MINI) as z:
        annotations = z.read("tiny-imagenet-200/val/val_annotations.txt").decode().splitlines()
        labels = dict(line.split("\t")[:2] for line in annotations)
        for i, name in enumerate(sorted(labels)):
            (root / ("more" if i % 2 else "") / name).write_bytes(z.read(f"tiny-imagenet-200/val/images/{name}"))
    return root, labels


@pytest.fixture(scope="module")
def photo_predictions(tiny_run, val_jpegs, tmp_path_factory):
    """``predict`` on the val photos (JSON, and the same as CSV), run once for the module: the
    reference every export format is compared with."""
    root, _ = val_jpegs
    out = tmp_path_factory.mktemp("predicted") / "predict.csv"
    proc = run_in_process("predict", root, "--run", tiny_run, "--json", "--csv", out)
    return json.loads(proc.stdout), out


def test_predict_agrees_with_evaluate(tiny, tiny_run, val_jpegs, photo_predictions, tmp_path):
    root, labels = val_jpegs
    meta = json.loads((tiny / "meta.json").read_text())
    wnid_of = dict(zip(meta["classes"], meta["class_ids"], strict=True))
    challenge = tmp_path / "evaluate.txt"
    evaluated = json.loads(
        run_in_process(
            "evaluate",
            "--run",
            tiny_run,
            "--data-dir",
            tiny.parent,
            "--split",
            "test",
            "--predict",
            challenge,
            "--json",
        ).stdout
    )
    expected = {line.split(" ")[0]: line.split(" ")[1:] for line in challenge.read_text().splitlines()}
    results, out = photo_predictions
    assert len(results) == len(labels) == len(expected) == evaluated["images"]
    got = {r["file"].rsplit("/", 1)[1]: [wnid_of[p["class"]] for p in r["predictions"]] for r in results}
    assert got == expected  # the same top-5, in the same order, for every image
    rank_1 = np.mean([got[name][0] == wnid for name, wnid in labels.items()])
    assert rank_1 == pytest.approx(evaluated["rank_1"])
    every = json.loads(
        run_in_process(
            "predict", next(iter(root.rglob("*.JPEG"))), "--run", tiny_run, "--json", "--topk", len(wnid_of)
        ).stdout
    )
    assert sum(p["probability"] for p in every[0]["predictions"]) == pytest.approx(1.0, abs=1e-5)  # a softmax
    for r in results:
        assert [p["probability"] for p in r["predictions"]] == sorted(
            (p["probability"] for p in r["predictions"]), reverse=True
        )
    rows = list(csv.DictReader(out.open()))
    assert [row["file"] for row in rows] == [r["file"] for r in results]
    assert rows[0]["class_1"] == results[0]["predictions"][0]["class"]
    assert float(rows[0]["probability_1"]) == pytest.approx(results[0]["predictions"][0]["probability"], abs=1e-6)


def test_predict_skips_what_it_cannot_read_and_converts_formats(tiny_run, val_jpegs, tmp_path):
    root, _ = val_jpegs
    photo = cv2.imread(str(next(root.glob("*.JPEG"))))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "grey.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(mixed / "rgba.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(mixed / "deep.png"), photo.astype(np.uint16) * 257)
    cv2.imwrite(str(mixed / "big.jpg"), cv2.resize(photo, (300, 200)))
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (mixed / "notes.txt").write_text("not an image, not even looked at")
    proc = run_in_process("predict", mixed, mixed / "missing.png", "--run", tiny_run, "--topk", 2, "--json")
    results = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(proc.stdout)}
    assert set(results) == {"grey.png", "rgba.png", "deep.png", "big.jpg", "broken.jpg", "missing.png"}
    assert "error" in results["broken.jpg"] and "error" in results["missing.png"]
    for name in ("grey.png", "rgba.png", "deep.png", "big.jpg"):
        assert len(results[name]["predictions"]) == 2
    # 16-bit and RGBA become the same 8-bit RGB as the plain photo
    deep, rgba = results["deep.png"]["predictions"], results["rgba.png"]["predictions"]
    assert deep[0]["probability"] == pytest.approx(rgba[0]["probability"], abs=1e-5)
    assert "2 of 6 skipped" in proc.stderr


def test_predict_bad_input(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    for args, text in [
        (("predict", tmp_path / "empty", "--run", tiny_run), "No image files found"),
        (("predict", tmp_path / "junk.jpg", "--run", tiny_run), "No image could be classified"),
        (("predict", tmp_path / "junk.jpg", "--run", tiny_run, "--topk", 0), "--topk must be between 1"),
        (("predict", tmp_path / "junk.jpg", "--run", tiny_run, "--checkpoint", "7"), "epoch 7"),
    ]:
        one_line_error(run_cli(*args, check=False), 1, text)


# --------------------------------------------------------------------------- export
def _photos(root, count=16):
    """The first val JPEGs decoded as a test would, with OpenCV alone: (names, uint8 RGB batch)."""
    files = sorted(root.rglob("*.JPEG"))[:count]
    return [f.name for f in files], np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])


PLAIN_KERAS = """
import sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]), verbose=0)))
assert not any(m.startswith("resnetctl") for m in sys.modules), "resnetctl was imported"
"""


def _run_artifact(fmt, path, images, tmp_path):
    """The artifact run by its runtime, written here from the runtimes' documentation."""
    if fmt == "keras":  # a Python that has Keras and never imports resnetctl
        np.save(tmp_path / "in.npy", images)
        subprocess.run(
            [sys.executable, "-c", PLAIN_KERAS, path, tmp_path / "in.npy", tmp_path / "out.npy"],
            check=True,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        return np.load(tmp_path / "out.npy")
    if fmt == "saved-model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return loaded.serve(tf.constant(images)).numpy()
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter  # LiteRT, what deployers run

        interpreter = Interpreter(model_path=str(path))
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


@pytest.mark.parametrize(
    "fmt,name",
    [
        ("keras", "model.keras"),
        ("saved-model", "saved"),
        ("tflite", "model.tflite"),
        pytest.param("onnx", "model.onnx", marks=[needs("tf2onnx"), needs("onnxruntime")]),
    ],
)
def test_every_export_format_round_trips(fmt, name, tiny, tiny_run, val_jpegs, photo_predictions, tmp_path):
    root, _ = val_jpegs
    out = tmp_path / name
    report = json.loads(run_in_process("export", "--run", tiny_run, "--format", fmt, "--out", out, "--json").stdout)
    assert report["top1_agreement"] == 1.0 and report["max_abs_difference"] <= 1e-4
    assert report["checked_on"] == "tiny-imagenet/test" and report["checked_images"] == 64
    meta = json.loads((tiny / "meta.json").read_text())
    assert Path(report["labels"]).read_text().splitlines() == meta["classes"]

    names, images = _photos(root)
    probs = _run_artifact(fmt, out, images, tmp_path)
    assert probs.shape == (len(names), len(meta["classes"]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # probabilities, not logits
    predicted = {r["file"].rsplit("/", 1)[1]: r["predictions"][0] for r in photo_predictions[0]}
    for row, file in zip(probs, names, strict=True):
        best = predicted[file]
        assert meta["classes"][int(row.argmax())] == best["class"]
        assert row.max() == pytest.approx(best["probability"], abs=1e-4)


def test_export_never_replaces_what_is_not_an_export(tiny_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "model.keras").write_text("a file of the user's")
    one_line_error(
        run_in_process("export", "--run", tiny_run, "--format", "saved-model", "--out", mine, "--force", check=False),
        1,
        "--force replaces only an earlier output",
    )
    one_line_error(
        run_in_process("export", "--run", tiny_run, "--out", tmp_path / "model.keras", check=False), 1, "already exists"
    )
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "model.keras").read_text() == "a file of the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model.keras"]  # no temp left behind
    (tmp_path / "exp").mkdir()  # a relative --out: the self-check must not resolve it twice
    run_in_process("export", "--run", tiny_run.resolve(), "--out", "exp/m.keras", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["m.keras", "m.labels.txt"]


@pytest.mark.e2e
@needs("tf2onnx")
@needs("onnxruntime")
def test_formats_exported_side_by_side_share_their_labels_and_onnx_carries_them_inside(tmp_path):
    """`export --format onnx --out m.onnx`, then tflite and keras beside it: the second was refused
    because m.labels.txt existed. One model's exports share the side file that says the same; ONNX
    also holds the class names in its metadata, where onnxruntime reads them."""
    import onnxruntime

    data, model = pets_world(tmp_path)
    out = tmp_path / "exports"
    out.mkdir()
    base = ("export", "--model", model, "--dataset", "pets", "--data-dir", data, "--json")
    reports = [
        json.loads(run_in_process(*base, "--format", fmt, "--out", out / f"m.{suffix}").stdout)
        for fmt, suffix in (("onnx", "onnx"), ("tflite", "tflite"), ("keras", "keras"))
    ]
    assert sorted(p.name for p in out.iterdir()) == ["m.keras", "m.labels.txt", "m.onnx", "m.tflite"]
    assert {r["labels"] for r in reports} == {str(out / "m.labels.txt")}
    assert (out / "m.labels.txt").read_text().splitlines() == ["cat", "dog"]
    session = onnxruntime.InferenceSession(str(out / "m.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == ["cat", "dog"]
    assert reports[0]["labels_inside"] == "metadata_props['classes']"
    (out / "m.keras").unlink()  # a side file that says something else is the user's: refused, unchanged
    (out / "m.labels.txt").write_text("bird\nfish\n")
    one_line_error(run_in_process(*base, "--out", out / "m.keras", check=False), 1, "m.labels.txt already exists")
    assert (out / "m.labels.txt").read_text() == "bird\nfish\n" and not (out / "m.keras").exists()


# --------------------------------------------------------------------------- fine-tuning
def test_fine_tuning_a_20_class_run_into_a_3_class_folder(tiny_run, tmp_path):
    folder = tmp_path / "three"
    with zipfile.ZipFile(TINY_MINI) as z:
        wnids = z.read("tiny-imagenet-200/wnids.txt").decode().split()[:3]
        for name in z.namelist():
            parts = name.split("/")
            if len(parts) == 5 and parts[1] == "train" and parts[2] in wnids and name.endswith(".JPEG"):
                (folder / parts[2]).mkdir(parents=True, exist_ok=True)
                (folder / parts[2] / parts[4]).write_bytes(z.read(name))
    data, runs = tmp_path / "data", tmp_path / "runs"
    run_cli("prepare", "folder", "--source", folder, "--data-dir", data, "--size", 64)
    # a learning rate of 1e-9: after one epoch the loaded weights are still the source's
    run_in_process(
        "train",
        "resnet8",
        "--dataset",
        "three",
        "--data-dir",
        data,
        "--runs-dir",
        runs,
        "--run",
        "ft",
        "--init-from",
        tiny_run,
        "--epochs",
        1,
        "--lr",
        1e-9,
        "--warmup-epochs",
        0,
    )
    init = json.loads((runs / "ft" / "config.json").read_text())["init"]
    assert init["source"] == str((tiny_run / "best.keras").resolve()) and init["epoch"] == 1
    assert init["loaded_layers"] >= 10
    assert [s["layer"] for s in init["skipped"]] == ["logits"]

    import keras

    import resnetctl

    resnetctl.register_keras_objects()
    source = keras.saving.load_model(tiny_run / "best.keras", compile=False)
    tuned = keras.saving.load_model(runs / "ft" / "last.keras", compile=False)
    assert tuned.get_layer("logits").kernel.shape == (64, 3) and source.get_layer("logits").kernel.shape == (64, 20)
    convs = [layer.name for layer in source.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) >= 7
    for name in convs:
        np.testing.assert_allclose(tuned.get_layer(name).kernel, source.get_layer(name).kernel, atol=1e-6)
    result = json.loads(run_in_process("evaluate", "--run", runs / "ft", "--data-dir", data, "--json").stdout)
    matrix = np.asarray(result["confusion_matrix"])
    assert result["k"] == 3 and result["rank_1"] == pytest.approx(np.trace(matrix) / matrix.sum())
    one_line_error(
        run_in_process(
            "train",
            "resnet8",
            "--dataset",
            "three",
            "--data-dir",
            data,
            "--runs-dir",
            runs,
            "--init-from",
            tmp_path / "missing.keras",
            check=False,
        ),
        1,
        "no file at",
    )

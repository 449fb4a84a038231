"""The model zoo: every registered model builds, runs, saves and reloads; counts are pinned."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import resnetctl
from resnetctl.models import create_model, get_spec, list_models
from resnetctl.models.profile import profile_spec
from tests.helpers import invoke, run_cli, run_in_process

# He et al. 2015, table 6 (parameters) and the per-image MACs published for these models.
PAPER = {
    "resnet20": (0.27e6, 40.81e6),
    "resnet32": (0.46e6, 69.12e6),
    "resnet44": (0.66e6, 97.44e6),
    "resnet56": (0.85e6, 125.75e6),
    "resnet110": (1.7e6, 252.89e6),
}
PINNED_TRAINABLE = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
}


def keras_counts(model) -> tuple[int, int, int]:
    """(all weights, trainable weights, MACs of conv and dense layers) read off a built model."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            macs += h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.kernel.shape[0] * layer.kernel.shape[1]
    size = lambda ws: sum(int(np.prod(w.shape)) for w in ws)  # noqa: E731
    return size(model.weights), size(model.trainable_weights), int(macs)


# The deepest graph, resnet1202 (~4,200 layers in one chain), proves build, save and reload under
# checkpoints.deep_graph_recursion. preact-resnet1202 and preact-resnet1001 are left out: their
# blocks are those of preact-resnet110 (preact_basic) and preact-resnet164 (preact_bottleneck), both
# here, and their chains are no longer than resnet1202's; they took about 110 s and 60 s on 2 cores.
DEEP_DUPLICATES = ("preact-resnet1202", "preact-resnet1001")


@pytest.mark.e2e
@pytest.mark.parametrize("name", [n for n in list_models() if n not in DEEP_DUPLICATES])
def test_models_build_run_save_and_reload(name, tmp_path):
    spec = get_spec(name)
    size = 32 if spec.stem != "imagenet" else 64  # any input size works; keep it small
    # zero_init_last: untrained 1000-layer networks overflow in inference mode without it
    model = create_model(name, input_size=size, num_classes=7, augmentation="crop-flip", seed=0, zero_init_last=True)
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    probs = keras.ops.convert_to_numpy(model(images, training=False))
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = resnetctl.load_model(path, compile=False)
    again = keras.ops.convert_to_numpy(reloaded(images, training=False))
    np.testing.assert_allclose(again, probs, rtol=1e-5, atol=1e-6)
    assert "stage1_block1_add" in [layer.name for layer in reloaded.layers]  # named by stage and block


@pytest.mark.parametrize("name", sorted(PAPER))
def test_cifar_resnets_match_the_paper(name):
    profile = profile_spec(get_spec(name))
    paper_params, paper_macs = PAPER[name]
    assert profile.trainable_params == PINNED_TRAINABLE[name]
    assert round(profile.trainable_params / 1e6, 2 if paper_params < 1e6 else 1) == paper_params / 1e6
    assert abs(profile.macs - paper_macs) / paper_macs < 0.02
    assert profile.depth == int(name.removeprefix("resnet"))


def test_imagenet_resnets_match_published_counts():
    for name, params, gmacs in (("resnet18", 11_689_512, 1.82), ("resnet50", 25_557_032, 4.09)):
        profile = profile_spec(get_spec(name))
        assert profile.trainable_params == params  # torchvision's counts
        assert abs(profile.macs / 1e9 - gmacs) / gmacs < 0.02


def test_shortcut_kinds_change_parameters_as_expected():
    a = create_model("resnet20", shortcut="A")
    b = create_model("resnet20", shortcut="B")
    avg = create_model("resnet20", shortcut="avgpool")
    count = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    # option B adds two 1x1 projections (16->32, 32->64) with their batch norms
    assert count(b) - count(a) == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    assert count(avg) == count(b)
    assert "stage2_block1_shortcut_pool" in [layer.name for layer in avg.layers]


def test_weight_decay_reaches_every_kernel():
    model = create_model("resnet20", weight_decay=2e-4)
    kernels = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)]
    assert kernels and all(layer.kernel_regularizer is not None for layer in kernels)
    assert kernels[0].kernel_regularizer.get_config()["l2"] == pytest.approx(1e-4)


def test_wide_preact_and_tiny_imagenet_architectures():
    wide = create_model("preact-resnet56-wide")
    assert wide.get_layer("stem_conv").kernel.shape == (3, 3, 3, 64)
    assert wide.get_layer("stage3_block9_conv3").kernel.shape[-1] == 256
    assert wide.get_layer("stage3_block9_conv2").kernel.shape[-1] == 64  # inner width a quarter
    tiny = create_model("tiny-imagenet-resnet41")
    assert tiny.get_layer("stem_conv").kernel.shape == (5, 5, 3, 64)
    assert tiny.get_layer("stem_pool").output.shape[1:3] == (32, 32)
    assert tiny.get_layer("stage3_block6_add").output.shape[1:] == (8, 8, 512)
    assert tiny.output_shape == (None, 200)


def test_unknown_model_and_bad_options_are_clear_errors():
    result = invoke("build", "resnet57")
    assert result.exit_code != 0
    assert "Unknown model 'resnet57'" in str(result.exception)
    result = invoke("build", "resnet20", "--shortcut", "Z")
    assert result.exit_code != 0 and "shortcut" in str(result.exception)


def test_build_counts_the_network_its_shortcut_flags_name():
    report = json.loads(invoke("build", "resnet20", "--shortcut", "avgpool", "--no-shortcut-bn", "--json").stdout)
    model = create_model("resnet20", shortcut="avgpool", shortcut_bn=False)  # the notebook's network
    assert (report["params"], report["trainable_params"]) == keras_counts(model)[:2]
    assert not [layer for layer in model.layers if layer.name.endswith("_shortcut_bn")]


@pytest.mark.e2e  # two Python processes that import TensorFlow: 15 s
def test_build_cli_json_and_save_with_zero_init_last(tmp_path):
    out = tmp_path / "r20.keras"
    cmd = (
        "build",
        "resnet20",
        "--input-size",
        "32",
        "--num-classes",
        "10",
        "--zero-init-last",
        "--json",
        "--save",
        out,
    )
    report = json.loads(run_in_process(*cmd).stdout)
    assert report["name"] == "resnet20"
    assert report["trainable_params"] == PINNED_TRAINABLE["resnet20"]
    assert report["input_shape"] == [32, 32, 3] and report["num_classes"] == 10
    assert [s["name"] for s in report["stages"]] == ["stem", "stage1", "stage2", "stage3", "head"]
    # reloadable with plain Keras after `import resnetctl`, in a fresh Python; --zero-init-last kept
    code = (
        f"import resnetctl, keras, numpy; m = keras.saving.load_model({str(out)!r}); "
        "print(m.count_params(), numpy.abs(keras.ops.convert_to_numpy(m.get_layer('stage1_block1_2_bn').gamma)).max())"
    )
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    params, gamma = proc.stdout.split()[-2:]
    assert int(params) == report["params"] and float(gamma) == 0.0


def test_build_list_answers_from_the_specs_without_keras():
    code = (
        "import sys; from resnetctl.cli import main; sys.argv = ['resnetctl', 'build', '--list', '--json']\n"
        "try: main()\nfinally: print('KERAS' if 'keras' in sys.modules else 'NO-KERAS', file=sys.stderr)"
    )
    proc = run_cli(launcher=("-c", code))
    rows = json.loads(proc.stdout)
    assert [row["name"] for row in rows] == list_models() and "NO-KERAS" in proc.stderr
    r1202 = next(r for r in rows if r["name"] == "resnet1202")
    assert round(r1202["trainable_params"] / 1e6, 1) == 19.4  # He et al. 2015, table 6


def test_importing_the_cli_leaves_keras_out_and_every_command_answers_help():
    import subprocess
    import sys

    code = "import sys, resnetctl.cli; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False False"
    assert run_cli("--version").stdout.startswith("resnetctl ")
    for command in ("prepare", "build", "train", "resume", "evaluate", "summary"):
        assert "Usage" in run_cli(command, "-h").stdout


@pytest.mark.parametrize(
    "name,changes,size,classes",
    [
        ("resnet8", {}, 32, 10),  # basic, option A, CIFAR stem
        ("resnet20", {"shortcut": "B"}, 32, 10),
        ("resnet20", {"shortcut": "avgpool", "shortcut_bn": False}, 32, 10),  # keras-resnet20: no BN on the projection
        ("preact-resnet20", {"shortcut": "avgpool"}, 32, 100),  # pre-activation basic, no stem BN
        ("preact-resnet164", {"stages": (3, 2, 2)}, 32, 10),  # pre-activation bottleneck, fewer blocks
        ("tiny-imagenet-resnet41", {}, 64, 20),  # the Tiny ImageNet stem (pad + valid pool)
        ("resnet18", {}, 64, 1000),  # ImageNet stem, basic
        ("resnet50", {"shortcut": "avgpool", "stages": (2, 1, 1, 2)}, 96, 7),  # ImageNet stem, bottleneck
    ],
)
def test_analytic_counts_equal_the_built_keras_model(name, changes, size, classes):
    spec = get_spec(name).replace(**changes)
    profile = profile_spec(spec, size, classes)
    model = create_model(name, input_size=size, num_classes=classes, **changes)
    assert (profile.params, profile.trainable_params, profile.macs) == keras_counts(model)
    for row in profile.stages[1:-1]:
        last = model.get_layer(f"{row.name}_block{row.repeats}_add").output.shape
        assert row.output_size == f"{last[1]}x{last[2]}"


def test_macs_count_convolutions_and_dense_only():
    spec = get_spec("resnet20").replace(stages=(1, 1, 1))
    manual = 32 * 32 * 9 * 3 * 16  # stem
    manual += 2 * 32 * 32 * 9 * 16 * 16  # stage 1
    manual += 16 * 16 * 9 * 16 * 32 + 16 * 16 * 9 * 32 * 32  # stage 2
    manual += 8 * 8 * 9 * 32 * 64 + 8 * 8 * 9 * 64 * 64  # stage 3
    manual += 64 * 10
    assert profile_spec(spec, 32, 10).macs == manual


@pytest.mark.parametrize("name", ["resnet20", "preact-resnet20", "resnet50"])
def test_zero_init_last_makes_every_residual_branch_start_at_zero(name):
    model = create_model(name, input_size=32, zero_init_last=True)
    last = [
        layer
        for layer in model.layers
        if layer.name.endswith(("_2_bn", "_3_bn", "_conv2", "_conv3")) and layer.name.split("_")[1].startswith("block")
    ]
    spec = get_spec(name)
    suffix = ("_conv3" if spec.bottleneck else "_conv2") if spec.preact else ("_3_bn" if spec.bottleneck else "_2_bn")
    weights = [
        layer.gamma if isinstance(layer, keras.layers.BatchNormalization) else layer.kernel
        for layer in last
        if layer.name.endswith(suffix)
    ]
    assert len(weights) == sum(spec.stages)
    assert all(float(np.abs(keras.ops.convert_to_numpy(w)).max()) == 0.0 for w in weights)
    default = create_model(name, input_size=32)  # the papers' initialisation stays the default
    assert float(np.abs(keras.ops.convert_to_numpy(default.get_layer(f"stage1_block1{suffix}").weights[0])).max()) > 0

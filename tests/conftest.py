"""Session fixtures: the real-format datasets in ../shared/datasets, prepared once through the CLI.

Tiers: ``pytest -m "not e2e and not slow"`` runs the fast tier (about a minute on 2 cores);
``pytest`` runs all, including the tests that train real models through the CLI (``e2e``: in
process through ``tests.helpers.run_in_process``, or as real subprocesses where the process is the
subject) and the real processes that train nothing (``slow``: archives and folders, stores that
refuse or hang, processes at once).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import CIFAR_SUBSET, SMALL_RUN, TINY_MINI, run_cli, run_in_process

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One JAX compilation cache for the whole session: the controller sets it before pytest-xdist
# starts its workers, and every JAX process of the suite inherits it. A resume, the second worker
# of a two-process run and a test that repeats another's model and batch load the compiled step
# instead of compiling it again (a resnet8 train of 2 epochs: 25 s instead of 40, on 2 cores).
# JAX keys an entry on the program, its shapes and the backend versions, so what runs is the same.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="resnetctl-tests-jax-cache-")
    _OWN_JAX_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
else:
    _OWN_JAX_CACHE = None


def pytest_unconfigure(config):
    if _OWN_JAX_CACHE and not hasattr(config, "workerinput"):  # the controller, once the workers are done
        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The tests that train first, then the other slow ones, then the fast tier, each in file
    order. pytest-xdist hands out tests in this order, so the long journeys start while both
    workers are busy and the short tests fill the end: in file order, a 150-s journey could start
    last and leave the other worker idle for minutes (in file order the suite took 22 min and used
    39 of its 44 core-minutes)."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def cifar(data_dir) -> Path:
    """The shared CIFAR-10 subset, prepared once through the CLI."""
    assert CIFAR_SUBSET.exists(), f"missing fixture {CIFAR_SUBSET}"
    run_cli("prepare", "cifar10", "--source", CIFAR_SUBSET, "--data-dir", data_dir)
    return data_dir / "cifar10"


@pytest.fixture(scope="session")
def cifar_small(data_dir, tmp_path_factory) -> Path:
    """1,000 train and 1,000 val images, 100 of each class in each, and the subset's 1,000 test
    images: the real images of the first 40 of each class in each of the subset's five batches,
    written back in the official pickle layout and prepared through the CLI with a stratified
    --val-split 0.5. Training tests stay short (16 steps at batch 64) and so does each epoch's
    validation (it was 4,000 images: a 3-epoch run took about 20% longer, 26 s of CPU against 21)."""
    source = _balanced_cifar_archive(tmp_path_factory.mktemp("cifar-source") / "cifar-small.tar.gz", per_class=40)
    run_cli(
        "prepare",
        "cifar10",
        "--source",
        source,
        "--data-dir",
        data_dir,
        "--name",
        "cifar-small",
        "--val-split",
        "0.5",
    )
    return data_dir / "cifar-small"


def _balanced_cifar_archive(path: Path, per_class: int) -> Path:
    """The CIFAR subset with each data batch cut to its first ``per_class`` images of each class."""
    import io
    import pickle
    import tarfile

    import numpy as np

    with tarfile.open(CIFAR_SUBSET) as source, tarfile.open(path, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.rsplit("/", 1)[-1].startswith("data_batch_"):
                batch = pickle.loads(data, encoding="bytes")
                labels = np.asarray(batch[b"labels"])
                keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
                assert keep.size == 10 * per_class, f"{member.name} has fewer than {per_class} images of a class"
                batch = {**batch, b"labels": labels[keep].tolist(), b"data": batch[b"data"][keep]}
                data = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(member.name)
            info.type, info.mtime, info.size = member.type, member.mtime, len(data or b"")
            target.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture(scope="session")
def two_class_data(tmp_path_factory) -> Path:
    """The data dir of ``tiny``: 2 classes of 16 px images (bright, dark), 12 train, 4 val and 8 test,
    prepared through the CLI: runs of a few seconds (tune's trials, train's batch search, seeds)."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("two-class")
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("bright", "dark")):
        (root / "src" / cls).mkdir(parents=True)
        for i in range(12):
            image = rng.integers(0, 128, (16, 16, 3), dtype=np.uint8) + 127 * (1 - c)
            cv2.imwrite(str(root / "src" / cls / f"{i}.png"), image.astype(np.uint8))
    run_cli("prepare", "folder", "--source", root / "src", "--name", "tiny", "--data-dir", root / "data", "--size", 16,
            "--val-split", 0.25, "--test-split", 0.34)  # fmt: skip
    return root / "data"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The shared Tiny ImageNet mini, prepared once into its own data dir (order-independent)."""
    root = tmp_path_factory.mktemp("tiny-data")
    run_cli("prepare", "tiny-imagenet", "--source", TINY_MINI, "--data-dir", root)
    return root / "tiny-imagenet"


@pytest.fixture(scope="session")
def small_run(cifar_small, data_dir, tmp_path_factory):
    """One finished real run shared by the session: resnet8 on cifar-small for ``SMALL_RUN``
    (3 epochs at batch 64, a checkpoint every epoch, no warmup), trained once through the CLI.
    Read it, never change it: a test that resumes or damages it works on
    ``tests.helpers.copy_run(small_run, its_runs_dir)``."""
    runs = tmp_path_factory.mktemp("shared-runs")
    run_in_process("train", "resnet8", "--dataset", "cifar-small", "--data-dir", data_dir, "--runs-dir", runs,
            "--run", "small", *SMALL_RUN)  # fmt: skip
    from resnetctl.runs import RunDir

    run = RunDir(runs / "small")
    before = _files(run.path)
    yield run
    assert _files(run.path) == before, "a test changed the shared run: work on tests.helpers.copy_run instead"


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}

"""Shared folders: locks that can't be fooled, temporaries matched exactly, ownership by marker.

In process (no Keras): the library calls the CLI makes, on real folders, links and locks.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from resnetctl import locks
from resnetctl.data.prepare import prepare_dataset
from resnetctl.data.store import MARKER, open_dataset
from resnetctl.errors import Busy, DatasetError, ResnetctlError
from resnetctl.runs import RunDir


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(
                cv2.imencode(".png", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))[1].tobytes()
            )
    return root


def _prepare(source, data, name="x", **options):
    return prepare_dataset(
        "folder", source, name=name, data_dir=data, size=16, val_split=0, test_split=0, workers=1, **options
    )


def _tree(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(source, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's words")
    (data / ".x.lock").symlink_to(victim)
    with pytest.raises(ResnetctlError, match=r"lock file .*\.x\.lock is a symbolic link; resnetctl does not follow"):
        _prepare(source, data)
    os.link(victim, data / ".y.lock")  # a hard link: the pid would be written into the victim
    with pytest.raises(ResnetctlError, match=r"lock file .*\.y\.lock is not a plain file of its own"):
        _prepare(source, data, name="y")
    assert victim.read_text() == "the user's words"
    assert sorted(p.name for p in data.iterdir()) == [".x.lock", ".y.lock"]


def test_two_names_of_one_run_share_one_lock(tmp_path):
    (tmp_path / "r20").mkdir()
    (tmp_path / "twin").symlink_to(tmp_path / "r20")
    with RunDir(tmp_path / "r20").lock():
        with pytest.raises(Busy, match=f"in use by pid {os.getpid()}"), RunDir(tmp_path / "twin").lock():
            pass
        assert locks.holder(tmp_path / "twin") == os.getpid()
    assert locks.holder(tmp_path / "twin") is None


def test_stale_temporaries_are_matched_exactly_and_removed_under_their_own_lock(source, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    other = data / ".x.tmp-1.tmp-4242"  # a running `prepare --name x.tmp-1` writes here
    other.mkdir()
    (other / "train.h5").write_bytes(b"being written")
    stale = data / ".x.tmp-999999"  # what a killed `prepare --name x` left
    stale.mkdir()
    with locks.exclusive(data / "x.tmp-1", "Dataset"):
        _prepare(source, data)
        assert (other / "train.h5").read_bytes() == b"being written"
        assert (data / ".x.tmp-1.lock").read_text() == str(os.getpid())
        with pytest.raises(Busy):
            _prepare(source, data, name="x.tmp-1")
    assert not stale.exists()
    assert open_dataset("x", data).splits == {"train": 6}


def test_a_run_writer_cleans_the_temporaries_of_a_killed_writer(tmp_path):
    run = RunDir(tmp_path / "r")
    run.checkpoint_dir.mkdir(parents=True)
    leftovers = [run.path / ".last.keras.tmp-77.keras", run.checkpoint_dir / ".epoch_0002.keras.tmp-78.keras"]
    for p in [*leftovers, run.path / ".history.csv.tmp-79"]:
        p.write_bytes(b"half")
    kept = [run.path / "notes.tmp-3", run.checkpoint_dir / "epoch_0002.keras", run.path / ".last.keras"]
    for p in kept:
        p.write_bytes(b"mine")
    with run.lock():
        pass
    assert not any(p.exists() for p in leftovers) and not (run.path / ".history.csv.tmp-79").exists()
    assert all(p.read_bytes() == b"mine" for p in kept)


def test_ownership_is_proven_by_the_marker_not_by_a_meta_json(source, tmp_path):
    data = tmp_path / "data"
    (data / "foo").mkdir(parents=True)
    (data / "foo" / "meta.json").write_text(json.dumps({"format_version": 1, "name": "another tool"}))
    (data / "foo" / "results.csv").write_text("the user's results")
    before = _tree(data / "foo")
    for force in (False, True):
        with pytest.raises(DatasetError, match="is not a dataset made by resnetctl; it is left untouched"):
            _prepare(source, data, name="foo", force=force)
    assert _tree(data / "foo") == before

    made = _prepare(source, data, name="ours").path
    assert json.loads((made / MARKER).read_text())["made_by"] == "resnetctl"
    (made / "notes.txt").write_text("added by the user")
    with pytest.raises(DatasetError, match="also holds 1 file.s. that resnetctl did not write, e.g. notes.txt"):
        _prepare(source, data, name="ours", force=True)
    assert (made / "notes.txt").read_text() == "added by the user"

    (made / "notes.txt").unlink()
    (made / MARKER).unlink()  # a dataset made before the marker: its meta.json says resnetctl made it
    _prepare(source, data, name="ours", force=True)
    assert (made / MARKER).is_file() and open_dataset("ours", data).splits == {"train": 6}

"""The run dir's own rules, on real files (fast tier: no Keras, no training)."""

from __future__ import annotations

from resnetctl.runs import RunDir


def test_keeping_the_newest_checkpoints_deletes_only_older_epoch_files(tmp_path):
    run = RunDir(tmp_path / "r")
    run.checkpoint_dir.mkdir(parents=True)
    for epoch in (1, 2, 10, 3, 12):
        run.epoch_path(epoch).write_bytes(b"checkpoint")
    mine = ["notes.txt", "epoch_0001.keras.bak", "epoch_1.keras", "my_epoch_0002.keras"]
    for name in mine:
        (run.checkpoint_dir / name).write_text("the user's")
    run.best_path.write_bytes(b"best")
    run.last_path.write_bytes(b"last")

    # every 5th epoch and the 2 newest: by epoch number, not by name or age
    assert run.prune_epoch_files(every=5, recent=2, keep=None) == [1, 2, 3]
    assert [e for e, _ in run.epoch_files()] == [10, 12]
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == sorted(
        [*mine, "epoch_0010.keras", "epoch_0012.keras"]
    )
    assert run.best_path.exists() and run.last_path.exists()
    assert run.prune_epoch_files(every=5, recent=2, keep=None) == []
    assert run.prune_epoch_files(every=5, recent=2, keep=1) == [10]  # at most `keep`, the newest

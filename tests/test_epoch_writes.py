"""Per-epoch writes off the critical path keep the fault contract: monitor.png is drawn in a
background thread, and its failure is still one line with what was kept."""

from __future__ import annotations

import pytest

from resnetctl.runs import RunDir, checkpoint_info
from tests.helpers import one_line_error, run_cli

pytestmark = pytest.mark.e2e


def test_a_plot_that_cannot_be_written_fails_the_run_in_one_line(cifar_small, data_dir, tmp_path):
    common = ["--data-dir", data_dir, "--runs-dir", tmp_path]
    run_cli("train", "resnet8", "--dataset", "cifar-small", *common, "--run", "plot", "--epochs", 1, "--batch-size", 64)
    run = RunDir(tmp_path / "plot")
    assert run.monitor_path.stat().st_size > 10_000  # written in the background, there at the end
    run.monitor_path.unlink()
    run.monitor_path.mkdir()  # a folder where the plot goes: its atomic rename fails
    proc = run_cli("resume", "--run", "plot", "--epochs", 2, *common, check=False)
    one_line_error(proc, 1, "Cannot write")
    assert "resnetctl resume --run" in proc.stderr
    assert [r["epoch"] for r in run.history()] == [1, 2]  # the epoch's checkpoint and row were kept
    assert checkpoint_info(run.last_path)["epoch"] == 2
    assert run.state()["state"] == "failed"
    assert not list(run.path.glob(".*.tmp-*"))

"""`runsmon serve --once` on runs Guild AI 0.9 wrote, judged by a real TensorBoard."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from tb import TensorBoardProcess

from runsmon.sources.guild import GuildRuns

FIXTURE = Path(__file__).parent / "data" / "guild-0.9" / "runs"

STATUS = {
    "completed": "STATUS_SUCCESS",
    "terminated": "STATUS_SUCCESS",
    "error": "STATUS_FAILURE",
    "running": "STATUS_RUNNING",  # Guild knows: its LOCK names a live process
}


def _expected_hparams(run) -> dict:
    out = {}
    for name, value in run.hparams().items():
        out[name] = value
    return out


@pytest.mark.tb
@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_serve_once_on_guild_runs(tmp_path, load_fast):
    logdir = tmp_path / "logdir"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runsmon",
            "serve",
            "--once",
            "--no-tensorboard",
            "--include-batch",  # every fixture run, the batch run too
            "--logdir",
            str(logdir),
            str(FIXTURE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    runs = GuildRuns(str(FIXTURE))()
    assert len(runs) >= 6
    with TensorBoardProcess(logdir, load_fast=load_fast) as tb:
        table = tb.wait_for(lambda t: len(t) == len(runs), timeout=30)
        exp = tb.experiment()
        columns = {h["name"]: h for h in exp["hparamInfos"]}
        by_id = {name.split()[0]: row for name, row in table.items()}
        for run in runs:
            row = by_id[run.short_id]
            expected = _expected_hparams(run)
            for name, value in expected.items():
                column = columns[name]
                if column.get("type") == "DATA_TYPE_STRING" and not isinstance(value, str):
                    value = str(value).lower() if isinstance(value, bool) else str(value)
                got = row["hparams"][name]
                if isinstance(value, float):
                    assert math.isclose(got, value), (run.id, name)
                else:
                    assert got == value, (run.id, name)
            assert set(row["hparams"]) == set(expected), run.id
            assert row["status"] == STATUS.get(run.status, "STATUS_UNKNOWN"), run.id
            if run.status == "completed" and run.operation == "train.py":
                # Guild parsed `loss: ...` output lines into its .guild event file.
                assert ("loss", "") in row["metrics"], run.id
            if run.duration is not None:
                assert row["metrics"][("time", "")] == pytest.approx(run.duration, abs=1e-3)
        assert set(tb.table(tb.dashboard_filters())) == set(table)

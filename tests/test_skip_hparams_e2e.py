"""`runsmon serve --skip-hparams`: the logdir links the runs' files only, as
`guild tensorboard --skip-hparams` does; TensorBoard shows no HParams rows and
every scalar still."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runsmon.logdir import EXPERIMENT_PREFIX, SESSION_FILE
from runsmon.sources.guild import GuildRuns

HOME = Path(__file__).parent / "data" / "guild-0.9" / "attrs-home"


def _serve_once(logdir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "runsmon", "serve", "--once", "--no-tensorboard",
         "--logdir", str(logdir), *args, str(HOME)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def _written(logdir: Path) -> tuple[int, int, int]:
    """Run directories, session files and experiments in the logdir."""
    dirs = [d for d in logdir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    sessions = [d for d in dirs if (d / SESSION_FILE).exists()]
    experiments = [d for d in logdir.iterdir() if d.name.startswith(EXPERIMENT_PREFIX)]
    return len(dirs), len(sessions), len(experiments)


def test_skip_hparams_and_back_on_one_logdir(tmp_path):
    logdir = tmp_path / "logdir"
    shown = len(GuildRuns(str(HOME / "runs"))()) - 1  # the batch run is left out
    _serve_once(logdir)
    assert _written(logdir) == (shown, shown, 1)
    said = _serve_once(logdir, "--skip-hparams")  # sessions and experiment go; links stay
    assert f"runsmon: {shown} runs, links only (--skip-hparams) in " in said
    assert _written(logdir) == (shown, 0, 0)
    links = sorted(p.name for p in logdir.glob("*/events.out.tfevents.*.vm.*"))
    assert len(links) == shown
    _serve_once(logdir)
    assert _written(logdir) == (shown, shown, 1)


@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_no_hparams_rows_and_every_scalar(tmp_path, tensorboard, load_fast):
    logdir = tmp_path / "logdir"
    _serve_once(logdir, "--skip-hparams")
    runs = [r for r in GuildRuns(str(HOME / "runs"))() if not r.operation.endswith("+")]
    tb = tensorboard(logdir, load_fast=load_fast)
    tags = tb.wait_for(
        lambda t: len(t) == len(runs), fetch=lambda: tb.get("/data/plugin/scalars/tags")
    )
    assert all("loss" in run_tags for run_tags in tags.values())
    assert tb.session_groups().get("sessionGroups", []) == []
    assert tb.experiment().get("hparamInfos", []) == []

"""Runs their tool records as running show STATUS_RUNNING, then their final status.

Each run is made by the tool itself (MLflow with its file store and its SQLite
store, wandb offline) in a child process that stays in the run until told to
end it.  The dashboard (a real TensorBoard, both loaders) shows the row as
Running; once the run ends its end status shows within a reload and 2 s,
and the row is there at every poll (0.3 s) meanwhile.  Guild's running runs
are covered by test_gapless_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tb import TensorBoardProcess, poll

from runsmon import MLflowRuns, MLflowSQLiteRuns, RunsMonitor, WandbRuns
from sample_projects.layouts import mlflow_sqlite, wandb_offline

RELOAD = 1.0

_MLFLOW = textwrap.dedent(
    """
    import sys
    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient()
    exp = client.create_experiment("live")
    run_id = client.create_run(exp, run_name="live").info.run_id
    client.log_batch(run_id, params=[Param("lr", "0.1"), Param("opt", "adam")])
    client.log_metric(run_id, "loss", 1.0, step=0)
    print("started", flush=True)
    final = sys.stdin.readline().strip()
    client.log_metric(run_id, "loss", 0.5, step=1)
    client.set_terminated(run_id, final)
    print("ended", flush=True)
    """
)

_WANDB = textwrap.dedent(
    """
    import sys
    import wandb

    run = wandb.init(project="demo", dir=sys.argv[1], config={"lr": 0.1, "opt": "adam"},
                     name="live", mode="offline", settings=wandb.Settings(console="off"))
    run.log({"loss": 1.0})
    print("started", flush=True)
    code = int(sys.stdin.readline())
    run.log({"loss": 0.5})
    run.finish(exit_code=code)
    print("ended", flush=True)
    """
)


class Tool:
    """A child process in a run of the tool until it is told how to end it."""

    def __init__(self, code: str, root: Path, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=root,
            env={k: v for k, v in {**os.environ, **env}.items() if k != "WANDB_API_KEY"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._expect("started", timeout=180)

    def _expect(self, word: str, timeout: float) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"the tool exited before {word!r}: {self.proc.wait()}")
            if line.strip() == word:
                return
        raise AssertionError(f"no {word!r} within {timeout} s")

    def end(self, how: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(how + "\n")
        self.proc.stdin.flush()
        self._expect("ended", timeout=120)
        self.proc.stdin.close()
        self.proc.wait(120)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _running_then_final(
    tmp_path: Path, source: Callable, tool: Tool, how: str, final: str, load_fast: bool
) -> None:
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), source, watch=False)
    with TensorBoardProcess(logdir, load_fast=load_fast) as tb:

        def synced_table():
            monitor.run_once()
            return tb.table()

        # (wandb writes its log behind the process: the run's config may come
        # a moment after its directory.)
        table = poll(
            synced_table,
            lambda t: len(t) == 1 and all(r["hparams"] for r in t.values()),
            timeout=60,
            what="the live run",
        )
        (name,) = table
        assert table[name]["status"] == "STATUS_RUNNING", table
        assert table[name]["hparams"] == {"lr": 0.1, "opt": "adam"}
        tool.end(how)
        monitor.run_once()
        assert monitor.run_dirs != monitor.run_names  # a new generation holds the end
        table = tb.wait_without_gap(
            lambda t: t[name]["status"] == final and t[name]["metrics"].get(("loss", "")) == 0.5,
            rows=1,
            timeout=RELOAD + 2,
            what=f"the run ended ({final})",
        )
        assert list(table) == [name] and len(table[name]["sessions"]) == 1


@pytest.mark.tb
@pytest.mark.parametrize("load_fast", [True, False], ids=["load_fast", "python_loader"])
@pytest.mark.parametrize("store", ["file", "sqlite"])
def test_a_running_mlflow_run_shows_running_then_its_end(tmp_path, store, load_fast):
    if not mlflow_sqlite.available():
        pytest.skip("mlflow is not installed")
    root = tmp_path / "mlflow"
    root.mkdir()
    uri = f"file:{root / 'mlruns'}" if store == "file" else "sqlite:///mlflow.db"
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
        "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 keeps the file store on request
    }
    tool = Tool(_MLFLOW, root, env)
    try:
        source = MLflowRuns(str(root)) if store == "file" else MLflowSQLiteRuns(str(root))
        _running_then_final(tmp_path, source, tool, "FAILED", "STATUS_FAILURE", load_fast)
    finally:
        tool.kill()


@pytest.mark.tb
@pytest.mark.parametrize("load_fast", [True, False], ids=["load_fast", "python_loader"])
def test_a_running_wandb_run_shows_running_then_its_end(tmp_path, load_fast):
    if not wandb_offline.available():
        pytest.skip("wandb is not installed")
    root = tmp_path / "wb"
    root.mkdir()
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    tool = Tool(_WANDB, root, env, str(root))
    try:
        # The log has the run's start and no exit yet: wandb says it runs
        # (idle_after only tells a dead process from a quiet one).
        source = WandbRuns(str(root), idle_after=600)
        _running_then_final(tmp_path, source, tool, "0", "STATUS_SUCCESS", load_fast)
    finally:
        tool.kill()

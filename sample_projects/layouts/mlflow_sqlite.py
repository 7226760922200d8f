"""An MLflow 3 project: runs in ``mlflow.db`` (SQLite), artifacts in ``mlruns/``, written by MLflow.

:func:`make` runs MLflow itself (in a child process, so the caller's process
is left alone and need not import mlflow) with
``MLFLOW_TRACKING_URI=sqlite:///mlflow.db`` in the project directory, what
``mlflow.log_param`` does there by default.  Through ``MlflowClient``, which
the fluent API calls, so that times are fixed: experiment ``demo`` with a
finished run, a failed run and a deleted run, experiment ``second`` with a
killed run and a run still running, and a deleted experiment with a run.
:func:`run_mlflow` runs more MLflow code in the same project (a test logs
more to the running run and ends it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

from sample_projects.layouts._events import T0

#: What each run logs: name -> (experiment, params, metrics {name: values by step}, status).
RUNS = {
    "bold-fox": (
        "demo",
        {"lr": 0.01, "epochs": 3, "optimizer": "adam", "use_bn": True, "model/depth": 4},
        {"loss": [0.9, 0.5, 0.3], "accuracy": [0.6, 0.75, 0.82], "val/loss": [1.0, 0.7]},
        "FINISHED",
    ),
    "calm-owl": (
        "demo",
        {"lr": 0.1, "epochs": 3, "optimizer": "sgd", "use_bn": False, "model/depth": 2},
        {"loss": [1.2, 2.5], "accuracy": [0.4, 0.3]},
        "FAILED",
    ),
    "gone-gnu": ("demo", {"lr": 0.5}, {"loss": [9.0]}, "DELETED"),
    "quiet-elk": (
        "second",
        {"lr": 0.001, "batch_size": 64, "optimizer": "adam"},
        {"loss": [0.8, 0.6]},
        "KILLED",
    ),
    "live-lynx": (
        "second",
        {"lr": 0.003, "batch_size": 32, "optimizer": "adam"},
        {"loss": [0.7]},
        "RUNNING",
    ),
    "lost-yak": ("trashed", {"lr": 0.2}, {"loss": [5.0]}, "FINISHED"),
}

#: Experiments deleted after their runs were logged.
DELETED_EXPERIMENTS = ("trashed",)

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    runs, deleted_experiments, t0 = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    t0 = int(float(t0) * 1000)
    client = MlflowClient()
    experiments, out = {}, {}
    for i, (name, (exp, params, metrics, status)) in enumerate(runs.items()):
        if exp not in experiments:
            experiments[exp] = client.create_experiment(exp)
        start = t0 + i * 60_000
        run = client.create_run(experiments[exp], start_time=start, run_name=name)
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        steps = max(len(v) for v in metrics.values())
        for step in range(steps):
            for key, values in metrics.items():
                if step < len(values):
                    client.log_metric(run_id, key, values[step], start + step * 1000, step)
        if i == 0:
            client.log_text(run_id, "a note", "notes.txt")
        if status == "DELETED":
            client.set_terminated(run_id, "FINISHED", start + steps * 1000)
            client.delete_run(run_id)
        elif status != "RUNNING":
            client.set_terminated(run_id, status, start + steps * 1000)
        out[name] = run_id
    for exp in deleted_experiments:
        client.delete_experiment(experiments[exp])
    print(json.dumps(out))
    """
)


def available() -> bool:
    """Whether mlflow is installed."""
    return importlib.util.find_spec("mlflow") is not None


def run_mlflow(root: str, code: str, *args: str, uri: str = "sqlite:///mlflow.db") -> str:
    """Run Python ``code`` in ``root`` with MLflow tracking to ``uri`` (by
    default ``root/mlflow.db``; a file store is allowed too); returns its stdout."""
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=uri,
        GIT_PYTHON_REFRESH="quiet",
        MLFLOW_ENABLE_ASYNC_LOGGING="false",
        MLFLOW_ALLOW_FILE_STORE="true",
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        env=env,
        cwd=root,
        timeout=300,
        capture_output=True,
        text=True,
    )
    return done.stdout


def make(root: str) -> dict[str, str]:
    """Let MLflow log :data:`RUNS` into ``root/mlflow.db``; returns {run name: run id}."""
    os.makedirs(root, exist_ok=True)
    out = run_mlflow(
        root, _SCRIPT, json.dumps(RUNS), json.dumps(list(DELETED_EXPERIMENTS)), repr(T0)
    )
    return json.loads(out.strip().splitlines()[-1])

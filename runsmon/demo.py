"""``runsmon demo``: a small sweep of sample runs, made in a temporary directory.

The runs come from ``sample_projects/demo/train.py``, run the way Guild runs
a script (see :mod:`runsmon.testing`): flags of every type, metrics at the
root and in ``train/`` and ``val/``, one run that fails, and one that is still
running when the sweep is served and ends a while later.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

DEMO_PROJECT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_projects", "demo"
)

SWEEP: list[dict[str, Any]] = [
    {"lr": 0.001, "optimizer": "adam", "layers": 2, "dropout": 0.1, "augment": True},
    {"lr": 0.01, "optimizer": "adam", "layers": 3, "dropout": 0.2, "augment": True},
    {"lr": 0.1, "optimizer": "sgd", "layers": 2, "dropout": 0.0, "augment": False},
    {"lr": 0.003, "optimizer": "sgd", "layers": 4, "dropout": 0.3, "augment": False},
    {"lr": 0.03, "optimizer": "rmsprop", "layers": 1, "dropout": 0.2, "augment": True},
]
FAILING = {
    "lr": 1.0,
    "optimizer": "sgd",
    "layers": 2,
    "dropout": 0.5,
    "augment": False,
    "fail_at": 2,
}
RUNNING = {"lr": 0.005, "optimizer": "adam", "layers": 3, "dropout": 0.15, "augment": True}


def make_demo(root: str | None = None, running_seconds: float = 60.0) -> str:
    """Make the demo runs under ``root`` (default: a new temporary directory).

    Returns the runs directory. The last run keeps running in the background
    for about ``running_seconds`` and then ends.
    """
    from runsmon.testing import Project

    if not os.path.isdir(DEMO_PROJECT):
        raise FileNotFoundError(
            f"the demo project is not at {DEMO_PROJECT}; run the demo from a source checkout"
        )
    root = root or tempfile.mkdtemp(prefix="runsmon-demo-")
    runs_dir = os.path.join(root, "runs")
    project = Project(DEMO_PROJECT, runs_dir=runs_dir)
    epochs = 8
    jobs = [dict(flags, epochs=epochs) for flags in SWEEP] + [dict(FAILING, epochs=epochs)]
    threads = [
        threading.Thread(target=project.run, args=("train.py", flags), kwargs={"quiet": True})
        for flags in jobs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    running = dict(RUNNING, epochs=epochs, epoch_seconds=running_seconds / epochs)
    threading.Thread(
        target=project.run,
        args=("train.py", running),
        kwargs={"quiet": True, "timeout": None},
        daemon=True,
    ).start()
    return runs_dir

"""``runsmon demo``: a small sweep of sample runs, made in a temporary directory.

The runs come from ``runsmon/demo_project/train.py``, run the way Guild runs
a script (see :mod:`runsmon.testing`): float, int, string and boolean flags,
metrics at the root (Guild's output scalars) and in ``train/`` and ``val/``,
one run that fails, and one that is still running when the sweep is served
and ends a while later.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from typing import Any

DEMO_PROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_project")
EPOCHS = 8

#: label -> flags of the runs that complete.
SWEEP: dict[str, dict[str, Any]] = {
    "baseline": {"lr": 0.001, "optimizer": "adam", "layers": 2, "dropout": 0.1,
                 "augment": True, "activation": "relu", "batch_norm": False, "batch_size": 32},
    "wider": {"lr": 0.01, "optimizer": "adam", "layers": 3, "dropout": 0.2,
              "augment": True, "activation": "gelu", "batch_norm": True, "batch_size": 64},
    "sgd-fast": {"lr": 0.1, "optimizer": "sgd", "layers": 2, "dropout": 0.0,
                 "augment": False, "activation": "relu", "batch_norm": True, "batch_size": 128},
    "sgd-deep": {"lr": 0.003, "optimizer": "sgd", "layers": 4, "dropout": 0.3,
                 "augment": False, "activation": "tanh", "batch_norm": False, "batch_size": 64},
    "rmsprop": {"lr": 0.03, "optimizer": "rmsprop", "layers": 1, "dropout": 0.2,
                "augment": True, "activation": "gelu", "batch_norm": False, "batch_size": 16},
}  # fmt: skip
#: The run that fails (its loss diverges at epoch 2).
FAILING = (
    "diverges",
    {"lr": 1.0, "optimizer": "sgd", "layers": 2, "dropout": 0.5, "augment": False,
     "activation": "relu", "batch_norm": False, "batch_size": 256},
)  # fmt: skip
#: The run still running when the sweep is served.
RUNNING = (
    "long-run",
    {"lr": 0.005, "optimizer": "adam", "layers": 3, "dropout": 0.15, "augment": True,
     "activation": "gelu", "batch_norm": True, "batch_size": 64},
)  # fmt: skip


def all_runs() -> dict[str, dict[str, Any]]:
    """label -> flags (``epochs`` included) of every demo run."""
    runs = {label: dict(flags, epochs=EPOCHS) for label, flags in SWEEP.items()}
    for label, flags in (FAILING, RUNNING):
        runs[label] = dict(flags, epochs=EPOCHS)
    return runs


class DemoSweep:
    """The demo runs on disk; :meth:`close` stops the running run and, unless
    the directory was given, removes it."""

    def __init__(self, root: str, owned: bool) -> None:
        self.root = root
        self.runs_dir = os.path.join(root, "runs")
        self.owned = owned
        self.running_id = uuid.uuid4().hex
        self._thread: threading.Thread | None = None

    @property
    def running_dir(self) -> str:
        return os.path.join(self.runs_dir, self.running_id)

    def close(self) -> None:
        """Stop the running run if it still runs; remove a temporary sweep."""
        lock = os.path.join(self.running_dir, ".guild", "LOCK")
        with contextlib.suppress(OSError, ValueError), open(lock) as f:
            os.kill(int(f.read().strip()), signal.SIGTERM)
        if self._thread is not None:
            self._thread.join(1.0)
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DemoSweep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_demo(root: str | None = None, running_seconds: float = 60.0) -> DemoSweep:
    """Make the demo runs under ``root`` (default: a new temporary directory).

    The completed and failed runs are made at once (in parallel); the last
    run goes on in the background for about ``running_seconds`` and then ends.
    """
    from runsmon.testing import Project

    if not os.path.isfile(os.path.join(DEMO_PROJECT, "train.py")):
        raise FileNotFoundError(
            f"the demo project is not at {DEMO_PROJECT}; reinstall runsmon (pip install runsmon)"
        )
    owned = root is None
    root = root or tempfile.mkdtemp(prefix="runsmon-demo-")
    sweep = DemoSweep(os.path.abspath(root), owned)
    project = Project(DEMO_PROJECT, runs_dir=sweep.runs_dir)
    runs = all_runs()
    jobs: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        (label, runs[label], {}) for label in SWEEP
    ]
    jobs.append((FAILING[0], runs[FAILING[0]], {"DEMO_FAIL_AT": "2"}))
    threads = [
        threading.Thread(
            target=project.run,
            args=("train.py", flags),
            kwargs={"label": label, "env": env, "quiet": True},
        )
        for label, flags, env in jobs
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:  # interrupted: leave nothing behind
        for t in threads:
            t.join(10)
        if owned:
            shutil.rmtree(root, ignore_errors=True)
        raise
    label, _ = RUNNING
    env = {"DEMO_EPOCH_SECONDS": f"{running_seconds / EPOCHS:g}"}

    def run_on() -> None:
        # Stopped early by close(), which may remove the directory meanwhile.
        with contextlib.suppress(Exception):
            project.run(
                "train.py",
                runs[label],
                label=label,
                env=env,
                quiet=True,
                timeout=None,
                run_id=sweep.running_id,
            )

    sweep._thread = threading.Thread(target=run_on, name="runsmon-demo", daemon=True)
    sweep._thread.start()
    # Serve it only once it runs (its LOCK names the process), so the first
    # sync shows every demo run.
    lock = os.path.join(sweep.running_dir, ".guild", "LOCK")
    deadline = time.monotonic() + 30
    while not os.path.exists(lock) and sweep._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return sweep

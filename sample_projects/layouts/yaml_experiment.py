"""A YAML-configured experiment: ``config.yaml`` at the run root, events in ``train/``, ``val/``.

Metrics: ``(loss, train)`` and ``(loss, val)``.
"""

from __future__ import annotations

import os

import yaml

from sample_projects.layouts._events import T0, write_events, write_text

RUNS = {
    "run-a": {"model": {"name": "mlp", "layers": 2}, "lr": 0.01, "batch_size": 32, "augment": True},
    "run-b": {
        "model": {"name": "mlp", "layers": 4},
        "lr": 0.001,
        "batch_size": 64,
        "augment": False,
    },
}


def make(root: str) -> dict[str, dict]:
    """Write two runs under ``root``; returns {run dir name: config}."""
    for i, (name, config) in enumerate(RUNS.items()):
        run = os.path.join(root, name)
        start = T0 + i * 1000
        write_text(os.path.join(run, "config.yaml"), yaml.safe_dump(config, sort_keys=False), start)
        base = 1.0 + i
        write_events(os.path.join(run, "train"), {"loss": [base, base / 2, base / 4]}, start)
        write_events(os.path.join(run, "val"), {"loss": [base * 1.1, base / 1.5]}, start + 5)
    return RUNS

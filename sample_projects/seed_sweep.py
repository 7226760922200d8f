"""A sweep run with several seeds per configuration.

12 YAML-configured runs (``config.yaml`` at the root, events in ``val/``):
2 learning rates x 2 optimizers, each with ``seed`` 0, 1 and 2. ``val#acc``
is 0.80, plus 0.05 for ``lr`` 0.01 and 0.03 for ``adam``, plus a seed's
noise: -0.004, 0.0 and +0.004 (each configuration's mean is exact).
"""

from __future__ import annotations

import os

import yaml

from sample_projects.layouts._events import T0, write_events, write_text

LRS = (0.001, 0.01)
OPTIMIZERS = ("adam", "sgd")
SEEDS = (0, 1, 2)
NOISE = {0: -0.004, 1: 0.0, 2: 0.004}


def accuracy(lr: float, optimizer: str, seed: int) -> float:
    better = (0.05 if lr == 0.01 else 0.0) + (0.03 if optimizer == "adam" else 0.0)
    return 0.80 + better + NOISE[seed]


def make(root: str, seeds: tuple[int, ...] = SEEDS) -> dict[str, dict]:
    """Write the runs under ``root`` (``run-NN``); returns {run: config}."""
    runs = {}
    combos = [(lr, opt, s) for lr in LRS for opt in OPTIMIZERS for s in seeds]
    for i, (lr, optimizer, seed) in enumerate(combos):
        config = {"lr": lr, "optimizer": optimizer, "seed": seed}
        run = os.path.join(root, f"run-{i:02d}")
        start = T0 + i * 60
        write_text(os.path.join(run, "config.yaml"), yaml.safe_dump(config, sort_keys=False), start)
        acc = accuracy(lr, optimizer, seed)
        write_events(os.path.join(run, "val"), {"acc": [acc / 2, acc]}, start)
        runs[f"run-{i:02d}"] = config
    return runs

"""A sweep whose answer to "which hparams matter" is known.

40 YAML-configured runs (``config.yaml`` at the root, events in ``val/``):
every combination of 5 learning rates, 2 optimizers and augmentation on or
off, twice (``seed`` 0 and 1), each with an ``activation`` drawn at random
and the same ``epochs``.

- ``val#loss`` depends on ``lr`` alone: it falls by 0.2 for each tenfold
  ``lr``, plus noise (standard deviation 0.05).
- ``val#acc`` rises with ``lr`` (0.03 for each tenfold), is 0.08 higher with
  ``adam`` and 0.04 higher with ``augment``, plus noise (0.01); ``activation``
  and ``seed`` play no part in either.
"""

from __future__ import annotations

import math
import os
import random

import yaml

from sample_projects.layouts._events import T0, write_events, write_text

LRS = (0.0001, 0.0003, 0.001, 0.003, 0.01)
OPTIMIZERS = ("adam", "sgd")
ACTIVATIONS = ("relu", "gelu", "tanh")


def loss(lr: float, noise: float) -> float:
    return 1.0 - 0.2 * math.log10(lr / LRS[0]) + noise


def accuracy(lr: float, optimizer: str, augment: bool, noise: float) -> float:
    return (
        0.7
        + 0.03 * math.log10(lr / LRS[0])
        + (0.08 if optimizer == "adam" else 0.0)
        + (0.04 if augment else 0.0)
        + noise
    )


def make(root: str, seed: int = 0) -> dict[str, tuple[dict, dict[str, float]]]:
    """Write the 40 runs under ``root``; returns {run: (config, {metric: last value})}."""
    rng = random.Random(seed)
    runs = {}
    combos = [
        (lr, opt, aug, s)
        for s in (0, 1)
        for lr in LRS
        for opt in OPTIMIZERS
        for aug in (True, False)
    ]
    for i, (lr, optimizer, augment, run_seed) in enumerate(combos):
        config = {
            "lr": lr,
            "optimizer": optimizer,
            "augment": augment,
            "seed": run_seed,
            "activation": rng.choice(ACTIVATIONS),
            "epochs": 10,
        }
        last = {
            "val#loss": loss(lr, rng.gauss(0.0, 0.05)),
            "val#acc": accuracy(lr, optimizer, augment, rng.gauss(0.0, 0.01)),
        }
        run = os.path.join(root, f"run-{i:02d}")
        start = T0 + i * 60
        write_text(os.path.join(run, "config.yaml"), yaml.safe_dump(config, sort_keys=False), start)
        write_events(
            os.path.join(run, "val"),
            {
                "loss": [last["val#loss"] + 1.0, last["val#loss"]],
                "acc": [last["val#acc"] / 2, last["val#acc"]],
            },
            start,
        )
        runs[f"run-{i:02d}"] = (config, last)
    return runs

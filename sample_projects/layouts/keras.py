"""A Keras ``TensorBoard`` callback layout: ``logs/fit/<time>/{train,validation}/``.

Each holds ``epoch_accuracy`` and ``epoch_loss``; the event files end in
``.v2`` as Keras names them.  There is no flags file.
"""

from __future__ import annotations

import os

from sample_projects.layouts._events import T0, write_events

RUN_NAMES = ("20240102-030405", "20240102-040000")


def make(root: str) -> list[str]:
    """Write two Keras runs under ``root/logs/fit``; returns their paths."""
    runs = []
    for i, name in enumerate(RUN_NAMES):
        run = os.path.join(root, "logs", "fit", name)
        start = T0 + i * 3600
        acc = [0.5 + 0.1 * k + 0.01 * i for k in range(3)]
        loss = [1.0 - 0.2 * k for k in range(3)]
        write_events(
            os.path.join(run, "train"),
            {"epoch_accuracy": acc, "epoch_loss": loss},
            start,
            suffix=".v2",
        )
        write_events(
            os.path.join(run, "validation"),
            {"epoch_accuracy": [a - 0.05 for a in acc], "epoch_loss": [x + 0.1 for x in loss]},
            start + 1,
            suffix=".v2",
        )
        runs.append(run)
    return runs

"""PyTorch Lightning's ``TensorBoardLogger``: ``lightning_logs/version_N/hparams.yaml``."""

from __future__ import annotations

import os

from sample_projects.layouts._events import T0, write_events, write_text

#: hparams.yaml as Lightning writes it (``save_hyperparameters``), including a tuple.
HPARAMS = (
    """hidden_dim: 128
learning_rate: 0.0003
optimizer:
  name: adamw
  weight_decay: 0.01
betas: !!python/tuple
- 0.9
- 0.999
use_bn: true
""",
    """hidden_dim: 256
learning_rate: 0.001
optimizer:
  name: sgd
  weight_decay: 0.0
betas: !!python/tuple
- 0.9
- 0.99
use_bn: false
""",
)


def make(root: str) -> list[str]:
    """Write ``version_0`` and ``version_1`` under ``root/lightning_logs``."""
    runs = []
    for i, text in enumerate(HPARAMS):
        run = os.path.join(root, "lightning_logs", f"version_{i}")
        start = T0 + i * 900
        write_text(os.path.join(run, "hparams.yaml"), text, start)
        write_events(
            run,
            {"train_loss": [0.9, 0.6, 0.4 + i / 10], "val_loss": [1.0, 0.7, 0.5 + i / 10]},
            start,
        )
        runs.append(run)
    return runs

"""PyTorch Lightning's ``TensorBoardLogger``: ``lightning_logs/version_N/hparams.yaml``."""

from __future__ import annotations

import os

from sample_projects.layouts._events import T0, write_events, write_text
from sample_projects.layouts.torch_hparams import hparams_summaries

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


#: ``hp_metric`` as each version logs it: Lightning's placeholder -1 at step 0
#: (``default_hp_metric``), which only version_1's training code replaces.
HP_METRIC = ([-1.0], [-1.0, 0.5, 0.45])


def make(root: str) -> list[str]:
    """Write ``version_0`` and ``version_1`` under ``root/lightning_logs``.

    As ``TensorBoardLogger.log_hyperparams`` does, the event file holds the
    hparams summaries and ``hp_metric = -1`` at step 0, then the curves.
    """
    runs = []
    for i, text in enumerate(HPARAMS):
        run = os.path.join(root, "lightning_logs", f"version_{i}")
        start = T0 + i * 900
        write_text(os.path.join(run, "hparams.yaml"), text, start)
        write_events(
            run,
            {
                "hp_metric": HP_METRIC[i],
                "train_loss": [0.9, 0.6, 0.4 + i / 10],
                "val_loss": [1.0, 0.7, 0.5 + i / 10],
            },
            start,
            summaries=hparams_summaries(_top_scalars(text), {"hp_metric": -1.0}),
        )
        runs.append(run)
    return runs


def _top_scalars(text: str) -> dict[str, object]:
    """The top-level numbers and words of an hparams.yaml (enough for its summaries)."""
    out: dict[str, object] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" ") and not value.startswith("!!"):
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out

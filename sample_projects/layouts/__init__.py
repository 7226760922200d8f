"""One module per run layout; each ``make(root)`` writes that layout with real event files.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     written = make_all(tmp)
...     sorted(written)
['hydra', 'keras', 'knowit', 'lightning', 'mlflow', 'torch', 'yaml']
"""

from __future__ import annotations

import os

from sample_projects.layouts import (
    hydra_multirun,
    keras,
    knowit_sweep,
    lightning,
    mlflow_sqlite,
    mlflow_store,
    torch_hparams,
    wandb_offline,
    yaml_experiment,
)

#: Subdirectory name -> the layout module writing it.
LAYOUTS = {
    "yaml": yaml_experiment,
    "keras": keras,
    "knowit": knowit_sweep,
    "torch": torch_hparams,
    "hydra": hydra_multirun,
    "lightning": lightning,
    "mlflow": mlflow_store,
}


def make_all(root: str, wandb: bool = False, mlflow_db: bool = False) -> dict[str, str]:
    """Write every layout into its own subdirectory of ``root``.

    The wandb runs (which need wandb installed and take a few seconds) are
    written only with ``wandb=True``; MLflow's SQLite store (``mlflow_db``,
    written by MLflow) only with ``mlflow_db=True`` and mlflow installed.
    Returns {layout name: its directory}.
    """
    out = {}
    for name, module in LAYOUTS.items():
        target = os.path.join(root, name)
        os.makedirs(target, exist_ok=True)
        module.make(target)
        out[name] = target
    if wandb:
        target = os.path.join(root, "wandb")
        os.makedirs(target, exist_ok=True)
        if wandb_offline.available():
            wandb_offline.make(target)
        else:
            wandb_offline.make_legacy(target)
        out["wandb"] = target
    if mlflow_db and mlflow_sqlite.available():
        target = os.path.join(root, "mlflow_db")
        mlflow_sqlite.make(target)
        out["mlflow_db"] = target
    return out

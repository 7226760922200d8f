"""A KnowIt-style grid sweep: one directory per combination.

``<sweep>/<combination>/model_args.yaml`` holds the combination's arguments
and ``lightning_logs/version_0/`` the Lightning event files (with Lightning's
own ``hparams.yaml``, empty as a model without ``save_hyperparameters``
leaves it).
"""

from __future__ import annotations

import itertools
import os
import shutil

import yaml

from sample_projects.layouts._events import T0, write_events, write_text

GRID = {"learning_rate": [0.01, 0.001], "batch_size": [16, 64]}


def model_args(lr: float, batch: int) -> dict:
    return {
        "arch": {"name": "MLP", "arch_hps": {"depth": 3, "dropout": 0.1}},
        "data": {"name": "synth_2", "task": "regression", "in_components": ["x1", "x2"]},
        "trainer": {"learning_rate": lr, "batch_size": batch, "max_epochs": 3, "optim": "Adam"},
    }


def make(root: str, sweep: str = "lr_sweep") -> dict[str, dict]:
    """Write the sweep under ``root/<sweep>``; returns {combination: model_args}."""
    out = {}
    for i, (lr, batch) in enumerate(itertools.product(*GRID.values())):
        combo = f"learning_rate-{lr}-batch_size-{batch}"
        run = os.path.join(root, sweep, combo)
        args = model_args(lr, batch)
        start = T0 + i * 600
        write_text(os.path.join(run, "model_args.yaml"), yaml.safe_dump(args), start)
        version = os.path.join(run, "lightning_logs", "version_0")
        write_text(os.path.join(version, "hparams.yaml"), "{}\n", start)
        loss = [1.0 / (k + 1) + lr * 10 for k in range(3)]
        write_events(
            version,
            {"train_loss": loss, "valid_loss": [v + 0.05 for v in loss], "epoch": [0, 1, 2]},
            start,
        )
        out[combo] = args
    return out


def make_consolidated(root: str, model: str = "my_model", sweep: str = "lr_sweep") -> dict:
    """A sweep whose best run was consolidated into its model directory, as KnowIt does.

    ``models/<model>/sweeps/<sweep>/<combination>/`` holds every run of the
    sweep (as :func:`make` writes them); KnowIt's ``consolidate_sweep`` then
    copies the best run's ``model_args.yaml``, ``lightning_logs/`` and
    checkpoint into ``models/<model>/``.  Returns {"model_dir", "best",
    "runs": {combination: model_args}}.
    """
    model_dir = os.path.join(root, "models", model)
    runs = make(os.path.join(model_dir, "sweeps"), sweep)
    best = min(runs, key=lambda c: runs[c]["trainer"]["learning_rate"])  # lowest final loss
    best_dir = os.path.join(model_dir, "sweeps", sweep, best)
    shutil.copy2(os.path.join(best_dir, "model_args.yaml"), model_dir)
    shutil.copytree(
        os.path.join(best_dir, "lightning_logs"), os.path.join(model_dir, "lightning_logs")
    )
    write_text(os.path.join(model_dir, "bestmodel-epoch=2-valid_loss=0.38.ckpt"), "weights\n", T0)
    return {"model_dir": model_dir, "best": best, "runs": runs}

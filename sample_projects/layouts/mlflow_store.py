"""An MLflow file store (``mlruns/``) with the Default experiment and two runs.

Written as MLflow's ``FileStore`` writes it: ``<exp id>/meta.yaml``,
``<exp id>/<run id>/meta.yaml``, ``params/<name>`` (the value as text, no
newline), ``metrics/<name>`` (lines ``<ms timestamp> <value> <step>``) and
``tags/<name>``.  Names with ``/`` are files in subdirectories.
"""

from __future__ import annotations

import os

import yaml

from sample_projects.layouts._events import T0, write_text

EXPERIMENT_ID = "471134151386237617"
RUNS = {
    "0f2a9c4e5b6d47f8a1b2c3d4e5f60718": {
        "name": "bold-fox-42",
        "status": 3,  # FINISHED
        "params": {
            "lr": "0.01",
            "epochs": "3",
            "optimizer": "adam",
            "use_bn": "True",
            "weight_decay": "1e-05",
            "model/depth": "4",
        },
        "metrics": {"loss": [0.9, 0.5, 0.3], "accuracy": [0.6, 0.75, 0.82], "val/loss": [1.0, 0.7]},
    },
    "9e8d7c6b5a4f43e2b1a0f9e8d7c6b5a4": {
        "name": "calm-owl-7",
        "status": 4,  # FAILED
        "params": {
            "lr": "0.1",
            "epochs": "3",
            "optimizer": "sgd",
            "use_bn": "False",
            "weight_decay": "0.0",
            "model/depth": "2",
        },
        "metrics": {"loss": [1.2, 2.5], "accuracy": [0.4, 0.3]},
    },
}


def _meta(path: str, data: dict) -> None:
    write_text(path, yaml.safe_dump(data))


def make(root: str) -> dict[str, dict]:
    """Write ``root/mlruns``; returns {run id: what was logged}."""
    store = os.path.join(root, "mlruns")
    uri = "file://" + os.path.abspath(store)
    ms = int(T0 * 1000)
    _meta(
        os.path.join(store, "0", "meta.yaml"),
        {
            "artifact_location": f"{uri}/0",
            "creation_time": ms,
            "experiment_id": "0",
            "last_update_time": ms,
            "lifecycle_stage": "active",
            "name": "Default",
        },
    )
    exp = os.path.join(store, EXPERIMENT_ID)
    _meta(
        os.path.join(exp, "meta.yaml"),
        {
            "artifact_location": f"{uri}/{EXPERIMENT_ID}",
            "creation_time": ms,
            "experiment_id": EXPERIMENT_ID,
            "last_update_time": ms,
            "lifecycle_stage": "active",
            "name": "demo",
        },
    )
    for i, (run_id, spec) in enumerate(RUNS.items()):
        run = os.path.join(exp, run_id)
        start = ms + i * 60_000
        points = max(len(v) for v in spec["metrics"].values())
        end = start + points * 1000
        _meta(
            os.path.join(run, "meta.yaml"),
            {
                "artifact_uri": f"{uri}/{EXPERIMENT_ID}/{run_id}/artifacts",
                "end_time": end,
                "entry_point_name": "",
                "experiment_id": EXPERIMENT_ID,
                "lifecycle_stage": "active",
                "run_id": run_id,
                "run_name": spec["name"],
                "run_uuid": run_id,
                "source_name": "",
                "source_type": 4,
                "source_version": "",
                "start_time": start,
                "status": spec["status"],
                "tags": [],
                "user_id": "alice",
            },
        )
        os.makedirs(os.path.join(run, "artifacts"), exist_ok=True)
        for name, value in spec["params"].items():
            write_text(os.path.join(run, "params", *name.split("/")), value)
        for name, values in spec["metrics"].items():
            lines = "".join(f"{start + k * 1000} {v} {k}\n" for k, v in enumerate(values))
            write_text(os.path.join(run, "metrics", *name.split("/")), lines)
        tags = {
            "mlflow.runName": spec["name"],
            "mlflow.user": "alice",
            "mlflow.source.name": "train.py",
            "mlflow.source.type": "LOCAL",
        }
        for name, value in tags.items():
            write_text(os.path.join(run, "tags", name), value)
    return RUNS

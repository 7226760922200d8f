"""A Hydra multirun: ``multirun/<date>/<time>/<job number>/.hydra/``.

Each job directory holds ``.hydra/config.yaml`` (the composed config),
``.hydra/overrides.yaml`` (what the command line set), ``.hydra/hydra.yaml``
(Hydra's own config, abridged), the job's log and its event files in ``tb/``.
The sweep directory holds ``multirun.yaml``.
"""

from __future__ import annotations

import os

import yaml

from sample_projects.layouts._events import T0, write_events, write_text

JOBS = [
    ["optimizer.lr=0.1", "model=resnet"],
    ["optimizer.lr=0.01", "model=vit", "+trainer.precision=16"],
]
MODELS = {"resnet": {"name": "resnet", "depth": 18}, "vit": {"name": "vit", "depth": 12}}
DATE, TIME = "2024-01-02", "03-04-05"


def job_config(overrides: list[str]) -> dict:
    config: dict = {
        "model": dict(MODELS["resnet"]),
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "trainer": {"max_epochs": 3},
        "seed": 7,
    }
    for item in overrides:
        key, _, value = item.lstrip("+").partition("=")
        if key == "model":
            config["model"] = dict(MODELS[value])
            continue
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return config


def hydra_config(sweep_dir: str, num: int, overrides: list[str]) -> dict:
    return {
        "hydra": {
            "run": {"dir": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"},
            "sweep": {
                "dir": "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}",
                "subdir": "${hydra.job.num}",
            },
            "mode": "MULTIRUN",
            "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": overrides},
            "job": {
                "name": "train",
                "chdir": None,
                "override_dirname": ",".join(overrides),
                "id": str(num),
                "num": num,
                "config_name": "config",
            },
            "runtime": {
                "version": "1.3.2",
                "output_dir": os.path.join(sweep_dir, str(num)),
                "choices": {"model": "vit" if "model=vit" in overrides else "resnet"},
            },
            "verbose": False,
        }
    }


def make(root: str) -> dict[str, tuple[dict, list[str]]]:
    """Write the multirun under ``root``; returns {job dir: (config, overrides)}."""
    sweep = os.path.join(root, "multirun", DATE, TIME)
    write_text(
        os.path.join(sweep, "multirun.yaml"),
        yaml.safe_dump(hydra_config(sweep, 0, ["optimizer.lr=0.1,0.01"]), sort_keys=False),
    )
    out = {}
    for num, overrides in enumerate(JOBS):
        job = os.path.join(sweep, str(num))
        start = T0 + num * 100
        config = job_config(overrides)
        hydra = os.path.join(job, ".hydra")
        write_text(
            os.path.join(hydra, "config.yaml"), yaml.safe_dump(config, sort_keys=False), start
        )
        write_text(os.path.join(hydra, "overrides.yaml"), yaml.safe_dump(overrides), start)
        write_text(
            os.path.join(hydra, "hydra.yaml"),
            yaml.safe_dump(hydra_config(sweep, num, overrides), sort_keys=False),
            start,
        )
        write_text(os.path.join(job, "train.log"), "[INFO] - training\n", start)
        write_events(os.path.join(job, "tb"), {"loss": [1.0, 0.5 - num / 10]}, start)
        out[job] = (config, overrides)
    return out

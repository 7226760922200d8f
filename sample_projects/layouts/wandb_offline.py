"""Weights & Biases offline runs, written by wandb itself.

:func:`make` runs wandb (in a child process, so the caller's process is left
alone) in offline mode: two runs, the second also syncing a TensorBoard
logdir as ``sync_tensorboard=True`` does.  :func:`make_legacy` writes the
layout older wandb versions left: ``files/config.yaml`` (values under
``value:``), ``files/wandb-summary.json`` and ``files/wandb-metadata.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

from sample_projects.layouts._events import T0, write_text

CONFIGS = [
    {"lr": 0.01, "model": {"depth": 3, "act": "relu"}, "use_bn": True, "name": "small"},
    {"lr": 0.1, "model": {"depth": 5, "act": "gelu"}, "use_bn": False, "name": "big"},
]

_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import wandb
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    root, configs = sys.argv[1], json.loads(sys.argv[2])
    for i, config in enumerate(configs):
        run = wandb.init(project="demo", dir=root, config=config, name=f"run-{i}",
                         mode="offline", settings=wandb.Settings(console="off"))
        for step in range(3):
            wandb.log({"loss": 1.0 / (step + 1) + i, "acc": 0.1 * step + i / 10})
        if i == 1:
            # What sync_tensorboard does for a SummaryWriter: wandb is told the
            # logdir, links its event files into files/ and logs their scalars.
            logdir = os.path.join(root, "tb", "train")
            w = EventFileWriter(logdir)
            for step in range(3):
                s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
                    tag="tb_loss", simple_value=2.0 / (step + 1))])
                w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=s))
            w.close()
            run._tensorboard_callback(logdir, save=True, root_logdir=os.path.join(root, "tb"))
            time.sleep(1.0)
        run.finish(exit_code=i)
    """
)


def available() -> bool:
    """Whether wandb is installed."""
    return importlib.util.find_spec("wandb") is not None


def make(root: str) -> list[str]:
    """Run wandb offline twice under ``root``; returns the run directories (in order)."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_GIT="true")
    env.pop("WANDB_API_KEY", None)
    subprocess.run(
        [sys.executable, "-c", _SCRIPT, root, json.dumps(CONFIGS)],
        check=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    wandb_dir = os.path.join(root, "wandb")
    runs = sorted(e for e in os.listdir(wandb_dir) if e.startswith("offline-run-"))
    return [os.path.join(wandb_dir, r) for r in runs]


def make_legacy(root: str, name: str = "offline-run-20240102_030405-abc123xy") -> str:
    """Write one run as older wandb versions did; returns its directory."""
    run = os.path.join(root, "wandb", name)
    config = (
        "wandb_version: 1\n\n"
        "_wandb:\n  desc: null\n  value:\n    cli_version: 0.15.12\n    python_version: 3.10.12\n"
        "batch_size:\n  desc: null\n  value: 64\n"
        "lr:\n  desc: null\n  value: 0.003\n"
        "optimizer:\n  desc: null\n  value:\n    name: adam\n    beta1: 0.9\n"
    )
    write_text(os.path.join(run, "files", "config.yaml"), config, T0 + 60)
    summary = {
        "loss": 0.25,
        "acc": 0.91,
        "_step": 99,
        "_runtime": 60.5,
        "_timestamp": T0 + 60,
        "media": {"_type": "image-file"},
    }
    write_text(os.path.join(run, "files", "wandb-summary.json"), json.dumps(summary), T0 + 60)
    metadata = {"os": "Linux", "python": "3.10.12", "startedAt": "2024-01-02T03:04:05.000000"}
    write_text(os.path.join(run, "files", "wandb-metadata.json"), json.dumps(metadata), T0)
    return run

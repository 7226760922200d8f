"""What the MLflow benchmarks share: the runs MLflow logs, and how results are kept.

``MAKE`` has MLflow's own client log ``runs`` runs of ``metrics`` metrics x
``steps`` steps (5 params, ``log_batch`` requests); ``APPEND`` logs one more
value to one run. ``report`` prints a table and, asked to, puts it in
``benchmarks/RESULTS.md`` as a section of its own.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # noqa: E402  (benchmarks/run.py: RESULTS.md sections)

MAKE = """
import sys, time
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
runs, metrics, steps = (int(a) for a in sys.argv[1:4])
client = MlflowClient()
exp = client.create_experiment("bench")
t0 = int(time.time() * 1000) - runs * 60_000
for i in range(runs):
    start = t0 + i * 60_000
    run = client.create_run(exp, start_time=start, run_name=f"run-{i}").info.run_id
    params = [Param(k, str(v)) for k, v in
              {"lr": 0.001 * (i % 10 + 1), "batch_size": 2 ** (i % 4 + 4), "seed": i,
               "optimizer": ("adam", "sgd")[i % 2], "dropout": (i % 5) / 10}.items()]
    points = [Metric(f"m{k}" if k % 2 else f"val/m{k}", 1.0 / (s + 1) + k, start + s * 1000, s)
              for s in range(steps) for k in range(metrics)]
    for j in range(0, len(points), 1000):
        client.log_batch(run, metrics=points[j:j + 1000], params=params if j == 0 else [])
    client.set_terminated(run, "FINISHED", start + steps * 1000)
"""

APPEND = """
import sys
from mlflow import MlflowClient
MlflowClient().log_metric(sys.argv[1], "m1", 0.5, step=10_000)
"""


def arguments(description: str, runs: int) -> argparse.Namespace:
    """The options both MLflow benchmarks take (``runs`` by default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    return parser.parse_args()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def report(
    key: str, title: str, intro: str, header: list[str], rows: list[list[str]], write: bool
) -> None:
    """Print ``rows`` as a table under ``title``; with ``write`` also as the
    section ``key`` of RESULTS.md."""
    body = f"## {title}\n\n{intro}\n\n{bench._table(header, rows)}\n"
    print(body)
    if write:
        bench.write_results({key: body})
        print(f"wrote {os.path.relpath(bench.RESULTS)}")

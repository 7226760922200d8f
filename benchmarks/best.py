"""What ``--best`` and ``serve --importance`` cost: the same syncs with and without them.

On the benchmark's generated Guild-layout runs (``benchmarks/run.py``: a root,
``train/`` and ``val/`` event file per run, 20 steps), each configuration in
a fresh process of its own, alternating, best of ``--trials``:

- ``first``: the first sync (a full check that writes the whole logdir);
- ``full``: a full check with nothing changed (``run_once``);
- ``append``: a full check after a new point was appended to every run's
  ``val/`` file (what a sweep of running runs costs at each poll), which
  appends a new best wherever the point is one.

Configurations: no option; ``--best val#loss=min --best val#acc=max``;
``--best '*=min'`` (every scalar); ``--importance val#loss`` (its ranking
time is reported too). Usage:
``python benchmarks/best.py [--runs 1000] [--trials 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run import generated_runs  # noqa: E402
from runsmon.logdir import temporary_root  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "best": {"best": ["val#loss=min", "val#acc=max"]},
    "best-all": {"best": ["*=min"]},
    "importance": {"importance": "val#loss"},
}


def child(runs_dir: str, logdir: str, config: str) -> dict[str, Any]:
    """One monitor process: its first sync, a full check, a full check after appends."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from runsmon import GuildRuns, RunsMonitor
    from runsmon.hparams import Selection
    from runsmon.reduce import parse_best
    from runsmon.testing import write_event_file

    options = CONFIGS[config]
    selection = Selection(
        best=tuple(parse_best(s) for s in options.get("best", ())),
        importance=options.get("importance"),
    )
    monitor = RunsMonitor(logdir, GuildRuns(runs_dir), selection=selection, freeze_heap=True)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    out["runs"] = monitor.run_once().runs
    out["first"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    monitor.run_once()
    out["full"] = time.perf_counter() - t0
    # A new point in every run's val/ file (the runs are restored afterwards by the parent).
    for run_dir in monitor._by_dir:  # noqa: SLF001 - the runs' directories
        val = os.path.join(run_dir, "val")
        (name,) = [n for n in os.listdir(val) if "tfevents" in n]
        write_event_file(val, {"loss": [(99, 0.001)], "acc": [(99, 0.999)]}, name, mode="ab")
    t0 = time.perf_counter()
    monitor.run_once()
    out["append"] = time.perf_counter() - t0
    ranking = monitor.experiment.ranking
    out["ranking"] = ranking.seconds if ranking is not None else None
    return out


def measure(runs: int, trials: int, seed: int) -> dict[str, dict[str, float]]:
    source = generated_runs(runs, seed)
    results: dict[str, dict[str, float]] = {}
    for _ in range(trials):
        for config in CONFIGS:
            # Runs and logdir in memory, where `runsmon serve` makes its logdir.
            work = tempfile.mkdtemp(prefix="runsmon-bench-best-", dir=temporary_root())
            try:
                runs_dir = os.path.join(work, "runs")
                shutil.copytree(source, runs_dir, symlinks=True)
                logdir = os.path.join(work, "logdir")
                done = subprocess.run(
                    [sys.executable, __file__, "--child", runs_dir, logdir, config],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            finally:
                shutil.rmtree(work, ignore_errors=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            best = results.setdefault(config, {})
            for key, value in r.items():
                if isinstance(value, float):
                    best[key] = min(best.get(key, value), value)
                else:
                    best[key] = value
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, metavar=("RUNS", "LOGDIR", "CONFIG"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)), flush=True)
        return 0
    results = measure(args.runs, args.trials, args.seed)
    plain = results["plain"]
    print(f"{args.runs} runs, best of {args.trials}")
    print(f"{'config':<12}{'first':>10}{'full':>10}{'append':>10}   vs plain (first/full/append)")
    for config, r in results.items():
        ratios = "/".join(f"{r[k] / plain[k] - 1:+.0%}" for k in ("first", "full", "append"))
        line = f"{config:<12}{r['first']:>9.2f}s{r['full']:>9.3f}s{r['append']:>9.3f}s   {ratios}"
        if r.get("ranking") is not None:
            line += f"   (ranking {r['ranking'] * 1000:.0f} ms)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

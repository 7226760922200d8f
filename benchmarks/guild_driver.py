"""Drive Guild AI 0.9.0's RunsMonitor over a runs directory; run with Guild's own Python.

Usage: ``python guild_driver.py RUNS_DIR LOGDIR POLLS``. Prints one JSON line:
``first_sync`` (seconds of the first ``run_once``), ``polls`` (seconds of each
further ``run_once`` with nothing changed), ``runs`` and ``peak_rss_kb``.

The run listing is what ``guild tensorboard`` uses by default: Guild's own run
objects for every run directory (``guild.var.runs``), newest first, batch runs
left out. This script imports nothing from runsmon: it runs in Guild's venv.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def peak_rss_kb() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str]) -> int:
    runs_dir, logdir, polls = argv[0], argv[1], int(argv[2])
    logging.basicConfig(level=logging.ERROR)
    from guild import batch_util, tensorboard, var

    def list_runs() -> list:
        runs = var.runs(runs_dir, sort=["-timestamp"])
        return [run for run in runs if not batch_util.is_batch(run)]

    monitor = tensorboard.RunsMonitor(logdir, list_runs, interval=5)
    t0 = time.perf_counter()
    monitor.run_once(exit_on_error=True)
    first = time.perf_counter() - t0
    times = []
    for _ in range(polls):
        t0 = time.perf_counter()
        monitor.run_once(exit_on_error=True)
        times.append(time.perf_counter() - t0)
    out = {
        "first_sync": first,
        "polls": times,
        "runs": len(list_runs()),
        "peak_rss_kb": peak_rss_kb(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

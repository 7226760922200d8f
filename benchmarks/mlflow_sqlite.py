"""What reading MLflow 3's SQLite store costs: a first read and the polls after it.

MLflow itself writes the database (in a child process; cached under
``.bench/``): ``--runs`` runs in one experiment, each with ``--metrics``
metrics of ``--steps`` steps (logged with ``log_batch``, as Lightning's and
Keras' MLflow loggers do) and 5 params.  Measured in this process:

- the source's first read (fresh source, median of 3), and a monitor's first
  sync (``run_once`` into a logdir in memory);
- an unchanged poll: the source called again (median and worst of 200); a
  monitor's poll as ``runsmon serve`` makes it every ``interval``
  (``sync_changes``: the runs not ended and one share of the safety net,
  1/24 of the runs; two rounds); a monitor's full check (``run_once``);
- a poll after MLflow appended one metric value to one run.

    python benchmarks/mlflow_sqlite.py --runs 1000
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mlflow_bench import APPEND, MAKE, arguments, ms, report  # noqa: E402

from runsmon import RunsMonitor  # noqa: E402
from runsmon.sources.mlflow_sqlite import MLflowSQLiteRuns  # noqa: E402
from sample_projects.layouts.mlflow_sqlite import run_mlflow  # noqa: E402


def main() -> None:
    args = arguments(__doc__.splitlines()[0], runs=1000)
    cache = ROOT / ".bench" / f"mlflow-sqlite-{args.runs}x{args.metrics}x{args.steps}"
    if not (cache / "mlflow.db").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        t = time.monotonic()
        run_mlflow(str(cache), MAKE, str(args.runs), str(args.metrics), str(args.steps))
        print(f"MLflow wrote {args.runs} runs in {time.monotonic() - t:.0f} s", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="runsmon-mlflow-bench-"))
    try:
        project = work / "project"
        shutil.copytree(cache, project)
        size = os.path.getsize(project / "mlflow.db")
        rows: list[tuple[str, str]] = []

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        firsts = []
        for _ in range(3):
            src = MLflowSQLiteRuns(str(project))
            t = time.perf_counter()
            runs = src()
            firsts.append(time.perf_counter() - t)
        assert len(runs) == args.runs, len(runs)
        points = sum(len(list(r.scalars())) for r in runs[:10]) // 10
        rows.append(("first read (source), median of 3", ms(statistics.median(firsts))))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        rows.append(("peak RSS growth over those reads", f"{grown / 1024:.0f} MB"))
        polls = []
        for _ in range(200):
            t = time.perf_counter()
            same = src()
            polls.append(time.perf_counter() - t)
            assert same is runs
        rows.append(
            (
                "unchanged poll (source), median / worst of 200",
                f"{ms(statistics.median(polls))} / {ms(max(polls))}",
            )
        )
        run_mlflow(str(project), APPEND, runs[0].id)
        t = time.perf_counter()
        moved = src()
        rows.append(("poll after MLflow logged one value", ms(time.perf_counter() - t)))
        assert moved is not runs

        logdir_parent = os.environ.get("XDG_RUNTIME_DIR") or "/dev/shm"
        logdir = tempfile.mkdtemp(prefix="runsmon-bench-logdir-", dir=logdir_parent)
        try:
            shutil.rmtree(logdir)
            monitor = RunsMonitor(logdir, MLflowSQLiteRuns(str(project)))
            t = time.perf_counter()
            stats = monitor.run_once()
            rows.append(("monitor first sync (run_once, logdir in memory)", ms(stats.seconds)))
            assert stats.runs == args.runs
            syncs = []
            for _ in range(5):
                t = time.perf_counter()
                monitor.run_once()
                syncs.append(time.perf_counter() - t)
            rows.append(
                (
                    "monitor full check of every run (run_once), median of 5",
                    ms(statistics.median(syncs)),
                )
            )
            # What `runsmon serve` does every `interval`: one share of the safety net.
            monitor.sync_changes(sweep=True)
            polls = []
            for _ in range(2 * 24):
                t = time.perf_counter()
                stats = monitor.sync_changes(sweep=True)
                polls.append(time.perf_counter() - t)
                assert stats.added == stats.sessions == 0, stats
            rows.append(
                (
                    "monitor unchanged poll (sync_changes), median / worst of 2 rounds",
                    f"{ms(statistics.median(polls))} / {ms(max(polls))}",
                )
            )
        finally:
            shutil.rmtree(logdir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(
        f"mlflow-sqlite-{args.runs}",
        f"MLflow SQLite store (`mlflow.db`): {args.runs} runs x {args.metrics} metrics x "
        f"{args.steps} steps",
        f"Written by `python benchmarks/mlflow_sqlite.py --runs {args.runs} --write-results` "
        "(MLflow itself writes the database once, under `.bench/`). Database "
        f"{size / 1e6:.0f} MB; {points} metric points a run. Of a monitor's first sync, the "
        "source's read is the smaller part; the rest is encoding the metric points as "
        "scalar events in the logdir, as for the file store.",
        ["measure", "measured"],
        [list(r) for r in rows],
        args.write_results,
    )


if __name__ == "__main__":
    main()

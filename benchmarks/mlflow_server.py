"""What reading an MLflow tracking server costs: a first sync and the polls after it.

Starts ``mlflow server`` (SQLite backend, one worker, on 127.0.0.1) and has
MLflow's client log ``--runs`` runs into it (cached under ``.bench/``; each
run ``--metrics`` metrics of ``--steps`` steps in ``log_batch`` requests, 5
params).  Measured in this process, with the requests the source made:

- the source's first read (fresh source, median of 3) and a monitor's first
  sync (``run_once`` into a logdir in memory);
- an unchanged poll: the source called again (median and worst of 20), and
  a monitor's poll as ``runsmon serve`` makes it every ``interval``
  (``sync_changes``, median and worst of 10);
- a poll after MLflow logged one value to one run.

    python benchmarks/mlflow_server.py --runs 300
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mlflow_bench import APPEND, MAKE, arguments, ms, report  # noqa: E402

from runsmon import RunsMonitor  # noqa: E402
from runsmon.sources.mlflow_server import MLflowServerRuns  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on a database, for as long as the ``with`` lasts."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.url = f"http://127.0.0.1:{free_port()}"

    def __enter__(self) -> Server:
        exe = Path(sys.executable).parent / "mlflow"
        self.proc = subprocess.Popen(
            [
                str(exe if exe.exists() else "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.db}",
                "--default-artifact-root",
                str(self.db.parent / "art"),
                "--host",
                "127.0.0.1",
                "--port",
                self.url.rsplit(":", 1)[1],
                "--workers",
                "1",
            ],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("mlflow server did not start")

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(20)

    def log(self, code: str, *args: str) -> None:
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.url}
        subprocess.run(
            [sys.executable, "-c", code, *args], env=env, check=True, stdout=subprocess.DEVNULL
        )


def spent(src: MLflowServerRuns, before: dict[str, int]) -> str:
    moved = {k: v - before.get(k, 0) for k, v in src.requests.items() if v != before.get(k, 0)}
    return ", ".join(f"{k} {v}" for k, v in sorted(moved.items())) or "none"


def main() -> None:
    args = arguments(__doc__.splitlines()[0], runs=300)
    cache = ROOT / ".bench" / f"mlflow-server-{args.runs}x{args.metrics}x{args.steps}"
    if not (cache / "mlflow.db").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        with Server(cache / "mlflow.db") as server:
            t = time.monotonic()
            server.log(MAKE, str(args.runs), str(args.metrics), str(args.steps))
            print(
                f"MLflow logged {args.runs} runs in {time.monotonic() - t:.0f} s", file=sys.stderr
            )
    work = Path(tempfile.mkdtemp(prefix="runsmon-mlflow-server-bench-"))
    rows: list[tuple[str, str, str]] = []
    try:
        shutil.copy(cache / "mlflow.db", work / "mlflow.db")
        with Server(work / "mlflow.db") as server:
            firsts = []
            for _ in range(3):
                src = MLflowServerRuns(server.url)
                t = time.perf_counter()
                runs = src()
                firsts.append(time.perf_counter() - t)
            assert len(runs) == args.runs, len(runs)
            rows.append(
                ("first read (source), median of 3", ms(statistics.median(firsts)), spent(src, {}))
            )
            polls = []
            before = dict(src.requests)
            for _ in range(20):
                t = time.perf_counter()
                same = src()
                polls.append(time.perf_counter() - t)
                assert same is runs
            rows.append(
                (
                    "unchanged poll (source), median / worst of 20",
                    f"{ms(statistics.median(polls))} / {ms(max(polls))}",
                    spent(src, before) + " (20 polls)",
                )
            )
            server.log(APPEND, runs[0].id)
            before = dict(src.requests)
            t = time.perf_counter()
            moved = src()
            rows.append(
                (
                    "poll after MLflow logged one value",
                    ms(time.perf_counter() - t),
                    spent(src, before),
                )
            )
            assert moved is not runs

            logdir = tempfile.mkdtemp(dir=os.environ.get("XDG_RUNTIME_DIR") or "/dev/shm")
            shutil.rmtree(logdir)
            try:
                src = MLflowServerRuns(server.url)
                monitor = RunsMonitor(logdir, src)
                stats = monitor.run_once()
                assert stats.runs == args.runs
                rows.append(
                    (
                        "monitor first sync (run_once, logdir in memory)",
                        ms(stats.seconds),
                        spent(src, {}),
                    )
                )
                before = dict(src.requests)
                polls = []
                for _ in range(10):
                    t = time.perf_counter()
                    stats = monitor.sync_changes(sweep=True)
                    polls.append(time.perf_counter() - t)
                    assert stats.added == stats.sessions == 0, stats
                rows.append(
                    (
                        "monitor unchanged poll (sync_changes), median / worst of 10",
                        f"{ms(statistics.median(polls))} / {ms(max(polls))}",
                        spent(src, before) + " (10 polls)",
                    )
                )
            finally:
                shutil.rmtree(logdir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(
        f"mlflow-server-{args.runs}",
        f"MLflow tracking server: {args.runs} runs x {args.metrics} metrics x {args.steps} steps",
        f"Written by `python benchmarks/mlflow_server.py --runs {args.runs} --write-results`: "
        "`mlflow server` (SQLite backend, one worker) on 127.0.0.1, the runs logged by "
        "MLflow's own client once (cached under `.bench/`); requests counted by the "
        'source. Targets (issue "Runs beyond one machine"): first sync under 10 s; an '
        "unchanged poll one `search_runs` page per 1,000 runs and no history calls.",
        ["measure", "measured", "requests"],
        [list(r) for r in rows],
        args.write_results,
    )


if __name__ == "__main__":
    main()

"""The two logdir layouts side by side: first sync, what the logdir holds, what TensorBoard opens.

``python benchmarks/layouts.py --runs 1000`` takes ``run.py``'s generated
Guild-layout runs (a root, ``train/`` and ``val/`` event file of 20 steps
each, under ``.bench/``) and, for ``--layout linked`` and ``--layout
compact``:

1. times the first sync (``RunsMonitor.run_once`` on a fresh logdir in
   memory, ``/dev/shm``), in a process of its own, best of ``--trials``
   (wall clock, and the CPU time of that process: on a shared machine the
   steadier of the two);
2. counts what that logdir holds per run: directories, regular files,
   symlinks, bytes of runsmon's own files (links count as their size, the
   name of their target) and the event files TensorBoard opens;
3. with ``--tensorboard``, serves the runs with ``runsmon serve --port 0``
   and each loader (the data server, ``-O load_fast=false``) and reports
   when the HParams plugin first lists every run and the data server's open
   files (``/proc/<pid>/fd``).

Prints one JSON line per measure, then a table. Linux only (``/proc``).
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import open_files  # noqa: E402  (benchmarks/open_files.py: listed, children)
import run as bench  # noqa: E402  (benchmarks/run.py: the generator, tables)

LAYOUTS = ("linked", "compact")


def first_sync(runs_dir: str, layout: str) -> dict[str, Any]:
    """In this process: one first sync into a fresh in-memory logdir, and its footprint."""
    from runsmon import RunsMonitor
    from runsmon.sources import GuildRuns

    root = tempfile.mkdtemp(prefix="layouts-", dir="/dev/shm")
    try:
        logdir = os.path.join(root, "logdir")
        monitor = RunsMonitor(
            logdir, GuildRuns(runs_dir), layout=layout, freeze_heap=True, watch=False
        )
        t0 = time.perf_counter()
        cpu = time.process_time()
        stats = monitor.run_once()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu
        out = {"layout": layout, "runs": stats.runs, "first_sync_s": round(seconds, 3)}
        out["first_sync_cpu_s"] = round(cpu, 3)
        out.update(footprint(logdir), event_files=monitor.event_files())
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def footprint(logdir: str) -> dict[str, int]:
    """Directories, files, symlinks and bytes under ``logdir`` (links not followed)."""
    dirs = files = links = size = 0
    for dirpath, dirnames, filenames in os.walk(logdir):
        dirs += len(dirnames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if os.path.islink(os.path.join(dirpath, name)):
                links += 1
            else:
                files += 1
            size += st.st_size
    return {"dirs": dirs, "files": files, "links": links, "bytes": size}


def child_sync(runs_dir: str, layout: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", runs_dir, layout],
        check=True,
        capture_output=True,
        text=True,
        cwd=bench.ROOT,
        env={**os.environ, "PYTHONPATH": bench.ROOT},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def served(runs_dir: str, n: int, layout: str, fast: bool, poll: float) -> dict[str, Any]:
    """``runsmon serve`` on the runs: seconds until every run is listed, open files."""
    cmd = [sys.executable, "-m", "runsmon", "serve", "--port", "0", "--layout", layout]
    cmd += ["-O", f"load_fast={'true' if fast else 'false'}", runs_dir]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=bench.ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": bench.ROOT},
    )
    out: dict[str, Any] = {"layout": layout, "loader": "data server" if fast else "Python"}
    try:
        url = open_files.served_url(proc, t0)
        out["url_after_s"] = round(time.monotonic() - t0, 1)
        all_at = None
        deadline = time.monotonic() + poll
        while url and time.monotonic() < deadline and all_at is None:
            if open_files.listed(url) == n:
                all_at = time.monotonic() - t0
            else:
                time.sleep(0.25)
        fds = [len(os.listdir(f"/proc/{c}/fd")) for c in open_files.children(proc.pid)]
        out["all_listed_after_s"] = None if all_at is None else round(all_at, 1)
        out["data_server_fds"] = max(fds) if fds and fast else None
    finally:
        open_files.stop(proc)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--trials", type=int, default=3, help="first syncs timed (best of)")
    p.add_argument("--tensorboard", action="store_true", help="also serve each with TensorBoard")
    p.add_argument("--poll", type=float, default=300.0, help="seconds to wait for every run")
    p.add_argument("--child", nargs=2, metavar=("RUNS_DIR", "LAYOUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(first_sync(*args.child)), flush=True)
        return 0
    runs_dir = bench.generated_runs(args.runs, 0)
    syncs = {}
    for layout in LAYOUTS:
        trials = [child_sync(runs_dir, layout) for _ in range(args.trials)]
        syncs[layout] = min(trials, key=lambda r: r["first_sync_s"])
        print(json.dumps(syncs[layout]), flush=True)
    n = args.runs
    header = ["layout", "first sync", "its CPU time", "dirs / run", "files / run",
              "links / run", "bytes / run", "event files TensorBoard opens / run"]  # fmt: skip
    rows = [
        [
            layout,
            f"{r['first_sync_s']:.2f} s",
            f"{r['first_sync_cpu_s']:.2f} s",
            f"{r['dirs'] / n:.1f}",
            f"{r['files'] / n:.1f}",
            f"{r['links'] / n:.1f}",
            f"{r['bytes'] / n:,.0f}",
            f"{r['event_files'] / n:.2f}",
        ]
        for layout, r in syncs.items()
    ]
    print(bench._table(header, rows))
    if args.tensorboard:
        rows = []
        for layout in LAYOUTS:
            for fast in (True, False):
                r = served(runs_dir, n, layout, fast, args.poll)
                print(json.dumps(r), flush=True)
                rows.append(
                    [
                        layout,
                        r["loader"],
                        "never"
                        if r["all_listed_after_s"] is None
                        else f"{r['all_listed_after_s']} s",
                        "-" if r["data_server_fds"] is None else f"{r['data_server_fds']:,}",
                    ]
                )
        print(bench._table(["layout", "loader", "every run listed after", "data server fds"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

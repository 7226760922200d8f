"""Open files TensorBoard needs for runsmon's logdir, and how many runs it serves.

``python benchmarks/open_files.py 200:1024:fast 1500:1024 10000:1024:300`` makes
each many Guild-layout runs (``run.py``'s generator: a root, ``train/`` and
``val/`` event file each, under ``.bench/``), serves them with
``runsmon serve --port 0`` under that open-file limit (soft and hard; ``fast``
forces TensorBoard's data server with ``-O load_fast=true``, else runsmon
picks the loader), then for ``--poll`` seconds (or the case's last number)
asks the HParams plugin how many runs it lists, and reports: the open files
of the data server (``/proc/<pid>/fd``), when every run was first listed and
whether every later answer listed them all, and the "Too many open files"
lines.
``--write-results`` adds the table to ``RESULTS.md`` (section "open-files").
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import select
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run as bench  # noqa: E402  (benchmarks/run.py: the generator, RESULTS.md)

from runsmon.serve import ALL_STATUSES as STATUSES  # noqa: E402
from runsmon.serve import stop_process  # noqa: E402


def runs_dir(n: int) -> str:
    """``n`` Guild-layout runs, made once under ``.bench/``."""
    base = os.path.join(bench.BENCH_DIR, f"open-files-{n}")
    path = os.path.join(base, "runs")
    stamp = os.path.join(base, ".complete")
    if not os.path.exists(stamp):
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(path)
        rng = random.Random(0)
        for i in range(n):
            bench.write_run(path, rng, i)
        open(stamp, "w").close()
    return path


def listed(url: str) -> int | str:
    body = {
        "experimentName": "",
        "allowedStatuses": STATUSES,
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 1,
    }
    request = urllib.request.Request(
        url + "data/plugin/hparams/session_groups",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return int(json.load(r).get("totalSize", 0))
    except OSError as e:
        return type(e).__name__


def children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(name))
    return out


def served_url(proc: subprocess.Popen[str], t0: float, timeout: float = 600) -> str | None:
    """The URL ``runsmon serve`` prints once TensorBoard lists the runs (None: it did not)."""
    assert proc.stdout is not None
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        if select.select([proc.stdout], [], [], 1)[0]:
            m = re.search(r"TensorBoard at (\S+)#hparams", proc.stdout.readline())
            if m:
                return m.group(1)
    return None


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop ``runsmon serve`` (and so its TensorBoard)."""
    stop_process(proc, timeout=10)


def measure(n: int, limit: int, fast: bool, poll: float, layout: str = "linked") -> dict[str, Any]:
    path = runs_dir(n)
    err_path = os.path.join(bench.BENCH_DIR, f"open-files-{n}-{limit}.err")
    cmd = [sys.executable, "-m", "runsmon", "serve", "--port", "0", "--layout", layout, path]
    if fast:
        cmd[4:4] = ["-O", "load_fast=true"]

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    t0 = time.monotonic()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=bench.ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=lower,
        )
    out: dict[str, Any] = {"runs": n, "limit": limit, "loader": "fast" if fast else "runsmon's"}
    try:
        url = served_url(proc, t0)
        seen: list[int | str] = []
        all_at = None
        deadline = time.monotonic() + poll
        while url and time.monotonic() < deadline:
            seen.append(listed(url))
            if seen[-1] == n and all_at is None:
                all_at = time.monotonic() - t0
            time.sleep(1)
        fds = [len(os.listdir(f"/proc/{c}/fd")) for c in children(proc.pid)]
        after = seen[seen.index(n) :] if n in seen else seen
        out.update(
            data_server_fds=max(fds) if fds else None,
            runsmon_fds=len(os.listdir(f"/proc/{proc.pid}/fd")),
            all_listed_after_s=None if all_at is None else round(all_at, 1),
            listed=seen,
            steady=n in seen and all(s == n for s in after),
            listed_min=min((s for s in after if isinstance(s, int)), default=None),
        )
    finally:
        stop(proc)
    with open(err_path) as f:
        text = f.read()
    out["too_many_open_files_lines"] = text.count("Too many open files")
    said = [line for line in text.splitlines() if "open files" in line and "runsmon:" in line]
    out["runsmon_says"] = said[0] if said else ""
    return out


def table(results: list[dict[str, Any]]) -> str:
    header = [
        "runs",
        "limit",
        "loader",
        "data server fds",
        "all listed after",
        "then listed at every poll",
        "Too many open files",
    ]
    rows = [
        [
            f"{r['runs']:,}",
            f"{r['limit']:,}",
            r["loader"] if r["data_server_fds"] else "Python (runsmon's choice)",
            "-" if r["data_server_fds"] is None else f"{r['data_server_fds']:,}",
            "never" if r["all_listed_after_s"] is None else f"{r['all_listed_after_s']:.0f} s",
            "yes" if r["steady"] else f"no (as few as {r['listed_min']})",
            f"{r['too_many_open_files_lines']:,}",
        ]
        for r in results
    ]
    return bench._table(header, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases", nargs="+", metavar="RUNS:LIMIT[:fast]")
    p.add_argument("--poll", type=float, default=20.0, help="seconds of polling (default 20)")
    p.add_argument(
        "--layout",
        choices=("linked", "compact", "auto"),
        default="linked",
        help="runsmon serve --layout (default linked: the layout this table was made for)",
    )
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args(argv)
    results = []
    for case in args.cases:
        n, limit, *rest = case.split(":")
        polls = [float(r) for r in rest if r.replace(".", "", 1).isdigit()]
        poll = polls[0] if polls else args.poll
        results.append(measure(int(n), int(limit), "fast" in rest, poll, args.layout))
        print(json.dumps(results[-1]), flush=True)
    text = table(results)
    print(text)
    if args.write_results:
        body = (
            "## Open files (runsmon serve, generated Guild-layout runs)\n\n"
            "TensorBoard's data server keeps every event file open: 4 a run here "
            "(3 linked, 1 session) and about 9 of its own. `limit` is the soft and "
            "hard RLIMIT_NOFILE runsmon started with; the plugin is asked every second "
            f"for {args.poll:.0f} s after the URL (longer for the largest case). Where the "
            "runs do not fit, the data server's count was taken just after it had dropped "
            "every file, as it does in a loop.\n\n" + text
        )
        bench.write_results({"open-files": body})
    return 0


if __name__ == "__main__":
    sys.exit(main())

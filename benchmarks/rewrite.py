"""What rewriting one session costs, for a run with a large event file.

A session that must change is written into a new directory (links made anew)
and the old one deleted; TensorBoard then reads the run's event files again.
This writes one run with one ~30 MB event file (``scanner.write_file``:
215,000 events x 10 scalar tags), syncs it into a logdir in memory, serves it
with a real TensorBoard (``--reload_interval 1``, each loader), changes the
run's flags and times:

- the sync that rewrites the session (runsmon's side), beside an unchanged one;
- until the HParams row shows the new flag value (the row is polled every
  0.1 s and must be there at every poll);
- until the Scalars tab's series of the new directory reaches the last step
  (TensorBoard re-reading the file), and how long the row was missing;
- the same with the old directory deleted at once (``handover_delay`` 0), for
  the data server.

Usage: ``python benchmarks/rewrite.py [--events 215000] [--write-results]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.scanner import write_file  # noqa: E402
from runsmon import Run, RunsMonitor  # noqa: E402
from runsmon.logdir import temporary_root  # noqa: E402
from runsmon.serve import ALL_STATUSES as STATUSES  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def _post(url: str, path: str, body: dict) -> Any:
    req = urllib.request.Request(
        url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _get(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read())


def _rows(url: str) -> list[dict]:
    body = {
        "experimentName": "",
        "allowedStatuses": STATUSES,
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 10,
    }
    return _post(url, "/data/plugin/hparams/session_groups", body).get("sessionGroups", [])


def _metric(row: dict, tag: str) -> float | None:
    for m in row.get("metricValues", []):
        if m["name"].get("tag") == tag and not m["name"].get("group"):
            return m.get("value")
    return None


def _last_step(url: str, run: str, tag: str) -> int | None:
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    try:
        points = _get(url, f"/data/plugin/scalars/scalars?{query}")
    except Exception:  # not loaded yet (404) or being read
        return None
    return int(points[-1][1]) if points else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(
    events: int, tags: int, handover: float = 3.0, loaders: tuple[bool, ...] = (True, False)
) -> dict[str, Any]:
    work = tempfile.mkdtemp(prefix="runsmon-rewrite-", dir=temporary_root())
    try:
        run_dir = os.path.join(work, "runs", "big")
        os.makedirs(run_dir)
        path = write_file(run_dir, events, tags)
        size = os.path.getsize(path)
        flags = {"lr": 0.1}
        out: dict[str, Any] = {
            "events": events,
            "tags": tags,
            "mb": size / 1e6,
            "handover": handover,
        }

        def runs() -> list[Run]:
            return [
                Run(
                    "big",
                    run_dir,
                    flags=dict(flags),
                    status="completed",
                    started=1.7e9,
                    stopped=1.7e9 + 60,
                )  # fmt: skip
            ]

        for load_fast in loaders:
            flags["lr"] = 0.1
            logdir = os.path.join(work, f"logdir-{load_fast}")
            # Two reloads of the TensorBoard below, and a second.
            monitor = RunsMonitor(logdir, runs, watch=False, handover_delay=handover)
            t0 = time.perf_counter()
            monitor.run_once()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            monitor.run_once()
            unchanged = time.perf_counter() - t0
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            tb = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tensorboard.main",
                    "--logdir",
                    logdir,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--reload_interval",
                    "1",
                    f"--load_fast={'true' if load_fast else 'false'}",
                ],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                name = monitor.run_names["big"]
                last = events - 1
                t_start = time.monotonic()
                while True:
                    try:
                        rows = _rows(url)
                        if rows and _last_step(url, monitor.run_dirs["big"], "m0") == last:
                            break
                    except OSError:
                        pass
                    time.sleep(0.1)
                load = time.monotonic() - t_start
                final_value = _metric(_rows(url)[0], "m0")
                flags["lr"] = 0.2
                t0 = time.perf_counter()
                stats = monitor.run_once()
                rewrite = time.perf_counter() - t0
                assert stats.rewrites == 1, stats
                new_dir = monitor.run_dirs["big"]
                old_dir = os.path.join(logdir, name)
                t_change = time.monotonic()
                old_gone = None
                absent = 0.0  # seconds the row was missing (polls without it)
                last_poll = 0.0
                shown = metric_back = scalars_back = None
                metric_gap = 0.0
                while scalars_back is None or shown is None or metric_back is None or not old_gone:
                    monitor.run_once()  # what the running monitor does on its timer
                    rows = _rows(url)
                    now = time.monotonic() - t_change
                    if old_gone is None and not os.path.exists(old_dir):
                        old_gone = now
                    if not rows:
                        absent += now - last_poll
                        last_poll = now
                        time.sleep(0.1)
                        continue
                    last_poll = now
                    assert len(rows) == 1 and rows[0]["name"] == name, (load_fast, now, rows)
                    if shown is None and rows[0]["hparams"].get("lr") == 0.2:
                        shown = now
                    if _metric(rows[0], "m0") == final_value:
                        if shown is not None and metric_back is None:
                            metric_back = now
                    elif shown is not None:
                        metric_gap = now
                    if scalars_back is None and _last_step(url, new_dir, "m0") == last:
                        scalars_back = now
                    assert now < 300, "TensorBoard did not show the rewrite"
                    time.sleep(0.1)
                out[load_fast] = {
                    "first_sync": first,
                    "unchanged_sync": unchanged,
                    "rewrite_sync": rewrite,
                    "tb_first_load": load,
                    "new_value_shown": shown,
                    "metric_back": metric_back,
                    "metric_missing_until": metric_gap,
                    "scalars_back": scalars_back,
                    "old_gone": old_gone,
                    "absent": absent,
                }
            finally:
                os.killpg(tb.pid, 15)
                tb.wait(30)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(result: dict[str, Any], gap: dict[str, Any] | None = None) -> str:
    def ms(s: float | None) -> str:
        if s is None:
            return "-"
        return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"

    loaders = [k for k in (True, False) if k in result]
    head = {True: "data server (`load_fast=true`)", False: "Python loader (`load_fast=false`)"}
    lines = [
        "<!-- rewrite -->",
        "## Rewriting a session (one run, one large event file)",
        "",
        f"One run with one {result['mb']:.0f} MB event file ({result['events']:,} events x "
        f"{result['tags']} scalar tags), logdir in memory, a TensorBoard of its own "
        "(`--reload_interval 1`, polled every 0.1 s); then the run's flags change, so its "
        "session is written anew in a second directory and the first deleted, "
        f"`handover_delay` = {result['handover']:g} s later (`benchmarks/rewrite.py`). "
        "runsmon's side costs milliseconds (links, not copies); TensorBoard reads the "
        "run's events again from the start, and shows the new values once it has read "
        "the new directory.",
        "",
        "| | " + " | ".join(head[k] for k in loaders) + " |",
        "|---|" + "---|" * len(loaders),
    ]
    rows = [
        ("runsmon: first sync (scans the file)", "first_sync"),
        ("runsmon: unchanged sync", "unchanged_sync"),
        ("runsmon: the sync that rewrites the session", "rewrite_sync"),
        ("TensorBoard: first load of the run (whole series)", "tb_first_load"),
        ("after the rewrite: old directory deleted", "old_gone"),
        ("after the rewrite: new flag value in the row", "new_value_shown"),
        ("after the rewrite: Scalars series of the new directory complete", "scalars_back"),
        ("after the rewrite: row missing from the dashboard (total)", "absent"),
    ]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(ms(result[k][key]) for k in loaders) + " |")
    if gap is not None and True in gap:
        lines += [
            "",
            "Without the handover (the old directory deleted at once, `handover_delay` 0) "
            f"the data server showed no row for {ms(gap[True]['absent'])}: it drops the old "
            "run at once and shows the new one only once it has read all of it. So the old "
            "directory of a run with more than 1 MB of event files stays `handover_delay` "
            "seconds (two reloads and one second: 3 s with `runsmon serve`'s TensorBoard, "
            "11 s with one of your own); smaller runs are read in milliseconds and the old "
            "directory goes at once.",
        ]
    lines.append("<!-- /rewrite -->")
    return "\n".join(lines) + "\n"


def write_results(section: str) -> None:
    with open(RESULTS, encoding="utf-8") as f:
        text = f.read()
    start, end = text.find("<!-- rewrite -->"), text.find("<!-- /rewrite -->")
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len("<!-- /rewrite -->\n") :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(RESULTS, "w", encoding="utf-8") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=215_000)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--handover", type=float, default=3.0)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    gap = measure(args.events, args.tags, handover=0.0, loaders=(True,))
    print(json.dumps({str(k): v for k, v in gap.items()}))
    result = measure(args.events, args.tags, handover=args.handover)
    print(json.dumps({str(k): v for k, v in result.items()}))
    section = report(result, gap)
    print(section)
    if args.write_results:
        write_results(section)


if __name__ == "__main__":
    main()

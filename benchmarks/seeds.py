"""What ``--group-seeds`` costs: the same sync with and without seed groups.

Generates ``--runs`` Guild-layout runs (``benchmarks/run.py``'s event files:
a root, ``train/`` and ``val/`` file of 20 steps each) that form seed groups:
every configuration (``lr``, ``optimizer``, ``batch_size``, ``dropout``) three
times with another ``seed``, and one run in ten tagged (``guild tag``) so the
tag columns are paid for too. Then, in a fresh process for each measurement
(the heap frozen after the first sync, as ``runsmon serve`` does), alternating
the two modes ``--trials`` times:

- the first sync on a fresh logdir in memory (where ``runsmon serve`` makes
  its temporary one);
- a full check of every unchanged run (``run_once`` again);
- an unchanged timed poll (``sync_changes``, one share of the safety net),
  the worst of a whole round;
- a seed joining a group of three: the sync that writes its session and
  rewrites its group's three others (with seed groups), or writes its session
  alone (without).

Prints the medians (wall time, and the process's CPU time, which a shared
machine's load disturbs less) and the ratio grouped / plain; the target is
at most 1.2 (issue 13: ``--group-seeds`` costs no more than 20% over the
same sync). The time spent in :class:`runsmon.seeds.Shaper` (tag columns
and seed groups, the only work ``--group-seeds`` adds to a sync besides
the sessions a join rewrites) is timed apart.

Usage: ``python benchmarks/seeds.py [--runs 1000] [--trials 3] [--write-results]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import run as bench  # noqa: E402 (benchmarks/run.py: the generator and the results file)

SEEDS = 3
TAGGED_EVERY = 10
GENERATOR_VERSION = "1"
TARGET_RATIO = 1.2


def write_runs(runs_dir: str, n: int, seed: int) -> None:
    """``n`` runs: ``n / SEEDS`` configurations, each with ``SEEDS`` seeds."""
    from runsmon.testing import make_guild_run

    rng = random.Random(seed)
    config: dict[str, Any] = {}
    for i in range(n):
        if i % SEEDS == 0:
            config = {
                "batch_size": rng.choice((16, 32, 64, 128)),
                "dropout": round(rng.uniform(0.0, 0.5), 2),
                "lr": float(f"{10 ** rng.uniform(-4, -1):.2g}"),
                "optimizer": rng.choice(("adam", "sgd", "rmsprop")),
            }
        flags = {**config, "seed": i % SEEDS}
        start = 1_700_000_000.0 + i * 60
        name = f"events.out.tfevents.{int(start)}.bench.{i}.0"
        files = {}
        for group in ("", "train", "val"):
            tags = ("loss", "acc") if group else ("loss", "acc", "lr")
            files[f"{group}/{name}" if group else name] = bench.event_file_bytes(
                rng, start, tags, bench.STEPS
            )
        attrs = {"tags": ["baseline"]} if i % TAGGED_EVERY == 0 else {}
        make_guild_run(
            runs_dir,
            f"{rng.getrandbits(128):032x}",
            flags,
            scalars={},
            started=start,
            duration=600.0,
            project="/bench/project",
            attrs=attrs,
            event_files=files,
        )


def generated(n: int, seed: int) -> str:
    base = os.path.join(bench.BENCH_DIR, f"seeds-{n}-seed{seed}")
    runs_dir = os.path.join(base, "runs")
    stamp = os.path.join(base, ".complete")
    if bench._read(stamp) == GENERATOR_VERSION:
        return runs_dir
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(runs_dir)
    t0 = time.perf_counter()
    write_runs(runs_dir, n, seed)
    bench._write(stamp, GENERATOR_VERSION)
    print(f"generated {n} runs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return runs_dir


def child(runs_dir: str, logdir: str, grouped: bool) -> int:
    """One measurement, in a process of its own."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from runsmon import GuildRuns, RunsMonitor
    from runsmon.seeds import SeedGroups

    monitor = RunsMonitor(
        logdir,
        GuildRuns(runs_dir),
        freeze_heap=True,
        seed_groups=SeedGroups() if grouped else None,
    )
    # The shaper's own time (tag columns; seed groups): what grouping adds,
    # measured apart from the noise of a shared machine's file system.
    spent = [0.0]
    shaper = monitor.shaper
    for name in ("note", "remove", "settle"):
        setattr(shaper, name, _timed(getattr(shaper, name), spent))
    t0, c0 = time.perf_counter(), time.process_time()
    first = monitor.run_once()
    first_s, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    first_shaping = spent[0]
    t0, c0 = time.perf_counter(), time.process_time()
    full = monitor.run_once()
    full_s, full_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert full.sessions == 0, full
    polls = []
    for _ in range(math.ceil(monitor.full_check_interval / monitor.interval) + 1):
        t0 = time.perf_counter()
        stats = monitor.sync_changes(sweep=True)
        polls.append(time.perf_counter() - t0)
        assert stats.sessions == 0, stats
    # A seed joins the first configuration (seeds 0-2 are there).
    from runsmon.testing import make_guild_run

    first_run = sorted(monitor.run_names)[0]
    flags = dict(next(r for r in monitor.source() if r.id == first_run).flags)
    flags["seed"] = SEEDS + 1
    joined = make_guild_run(runs_dir, flags=flags, scalars={"loss": [(0, 1.0)]})
    try:
        t0 = time.perf_counter()
        stats = monitor.sync_changes(sweep=False)
        join_s = time.perf_counter() - t0
        assert stats.added == 1, stats
    finally:
        shutil.rmtree(joined)
    # A tag name no run had: every session says it (false) from now on.
    from runsmon.testing import write_attr

    tagged = next(r for r in monitor.source() if r.id == first_run)
    write_attr(tagged.dir, "tags", ["baseline", "fresh"])
    try:
        t0 = time.perf_counter()
        retag = monitor.run_once()
        retag_s = time.perf_counter() - t0
    finally:
        write_attr(tagged.dir, "tags", ["baseline"] if "baseline" in tagged.tags else [])
    print(
        json.dumps(
            {
                "new_tag": retag_s,
                "new_tag_rewrites": retag.rewrites,
                "runs": first.runs,
                "first_sync": first_s,
                "first_cpu": first_cpu,
                "first_shaping": first_shaping,
                "full_check": full_s,
                "full_cpu": full_cpu,
                "poll": max(polls),
                "join": join_s,
                "join_sessions": stats.sessions,
                "peak_rss_kb": bench.peak_rss_kb(),
            }
        ),
        flush=True,
    )
    return 0


def _timed(f: Any, spent: list[float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    return timed


def measure(runs_dir: str, grouped: bool) -> dict[str, Any]:
    logdir = bench._fresh_logdir("seeds-grouped" if grouped else "seeds-plain")
    out = subprocess.run(
        [sys.executable, __file__, "--child", runs_dir, logdir, "1" if grouped else "0"],
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)),
    )
    shutil.rmtree(logdir, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


KEYS = (
    ("first_sync", "First sync"),
    ("first_cpu", "First sync, CPU time of the process"),
    ("first_shaping", "of which tag columns and seed groups (`seeds.Shaper`)"),
    ("full_check", "Full check, nothing changed"),
    ("full_cpu", "Full check, CPU time of the process"),
    ("poll", "Unchanged timed poll (worst of a round)"),
    ("join", "A seed joins a group of 3 (the poll that finds it)"),
    ("new_tag", "A tag name new to every run (full check: each session rewritten)"),
)


def report(
    n: int, trials: int, plain: list[dict], grouped: list[dict], load: tuple[float, float]
) -> tuple[str, bool]:
    rows = []
    met = True
    for key, what in KEYS:
        a = statistics.median(r[key] for r in plain)
        b = statistics.median(r[key] for r in grouped)
        ratio = b / a if a else math.nan
        target = key in ("first_sync", "first_cpu", "full_check", "full_cpu", "poll")
        if key == "first_shaping":
            first = statistics.median(r["first_sync"] for r in plain)
            rows.append(
                f"| {what} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | "
                f"+{(b - a) / first:.1%} of the first sync | | |"
            )
            continue
        ok = ratio <= TARGET_RATIO if target else None
        met = met and ok is not False
        shown = "" if ok is None else ("yes" if ok else "no")
        rows.append(
            f"| {what} | {a * 1000:.0f} ms | {b * 1000:.0f} ms | {ratio:.2f} | "
            f"{'at most 1.2' if target else ''} | {shown} |"
        )
    rss_a = statistics.median(r["peak_rss_kb"] for r in plain) / 1024
    rss_b = statistics.median(r["peak_rss_kb"] for r in grouped) / 1024
    rows.append(f"| Peak RSS | {rss_a:.0f} MB | {rss_b:.0f} MB | {rss_b / rss_a:.2f} | | |")
    head = (
        f"## Seed groups: {n} runs ({n // SEEDS} configurations x {SEEDS} seeds, "
        f"one in {TAGGED_EVERY} tagged)\n"
        f"`python benchmarks/seeds.py --runs {n} --trials {trials}`: medians of {trials} "
        "fresh processes each (after one not counted), the modes alternating (ABBA); the "
        "logdir in memory. "
        f"The join rewrites {grouped[0]['join_sessions'] - 1} sessions of its group "
        f"with seed groups ({plain[0]['join_sessions']} session without); the new tag "
        f"name rewrites {grouped[0]['new_tag_rewrites']} sessions. Load average "
        f"{load[0]:.1f} before and {load[1]:.1f} after, on {os.cpu_count()} cores: "
        "wall times move with the machine's other work, CPU times much less.\n\n"
        "| Sync | Without | `--group-seeds` | Ratio | Target | Met |\n"
        "|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(rows), met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runs_dir, logdir, grouped = args.child
        return child(runs_dir, logdir, grouped == "1")
    runs_dir = generated(args.runs, args.seed)
    plain: list[dict] = []
    grouped: list[dict] = []
    load_before = os.getloadavg()[0]
    measure(runs_dir, False)  # warm-up (the page cache), not counted
    for i in range(args.trials):
        # Which mode goes first alternates too: each pays for the other's
        # logdir being deleted as often.
        order = ((False, plain), (True, grouped))
        for mode, into in order if i % 2 == 0 else order[::-1]:
            into.append(measure(runs_dir, mode))
            print(f"trial {i + 1} {'grouped' if mode else 'plain'}: {into[-1]}", file=sys.stderr)
    load = (load_before, os.getloadavg()[0])
    text, met = report(args.runs, args.trials, plain, grouped, load)
    print(text)
    if args.write_results:
        bench.write_results({f"seed-groups-{args.runs}": text})
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""runsmon against Guild AI 0.9.0's RunsMonitor on generated Guild runs.

``make bench`` runs ``python benchmarks/run.py --runs 1000``. It

1. generates ``--runs`` seeded Guild-layout runs under ``.bench/`` (attrs with
   flags, label, started, stopped and exit_status, an opref, a root event file
   and ``train/`` + ``val/`` event files of 20 steps each), once per size;
2. measures runsmon in a process of its own (no TensorBoard in it): the first
   sync on a fresh logdir; a full check of every run (``run_once`` again);
   two rounds of unchanged timed polls (``sync_changes``) with nothing
   watched and with the monitor running, each re-checking one share of the
   safety net; a wake-up on a watcher report of nothing; then, with the
   monitor running at its default settings, the
   time from a new run's files being written to its session file being in
   the logdir and from a running run's exit status being written to its end
   file; and the peak RSS of that process;
3. measures Guild's ``guild.tensorboard.RunsMonitor`` the same way (first
   ``run_once``, then unchanged ones, peak RSS) in a virtual env of its own
   (``.bench/guild-venv``, made here with ``pip install guildai==0.9.0``);
4. times the event-file scanner against TensorBoard's loader
   (``benchmarks/scanner.py``);

and prints a table: metric, runsmon, Guild/TensorBoard, ratio, target, met.
Each logdir goes where ``runsmon serve`` makes its temporary one (in memory:
``$XDG_RUNTIME_DIR`` or ``/dev/shm``), for both tools; the first syncs are also
measured with both logdirs on disk, under ``.bench/``.
``--scaling`` also measures 1k, 2k, 5k and 10k runs and prints each cost per
run; ``--write-results`` puts the tables into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The monitor process of --plain-install imports the runsmon installed in its venv.
if os.environ.get("RUNSMON_BENCH_INSTALLED") != "1":
    sys.path.insert(0, ROOT)

BENCH_DIR = os.path.join(ROOT, ".bench")
GUILD_VENV = os.path.join(BENCH_DIR, "guild-venv")
PLAIN_VENV = os.path.join(BENCH_DIR, "plain-venv")
GUILD_SPEC = "guildai==0.9.0"
RESULTS = os.path.join(HERE, "RESULTS.md")
GENERATOR_VERSION = "1"
STEPS = 20
SCALING_SIZES = (1000, 2000, 5000, 10000)

# Targets (issue "Speed and scale").
FIRST_SYNC_RATIO = 20.0
POLL_RATIO = 50.0
# A plain `pip install .` (issue "The dashboard itself at 10,000 runs").
PLAIN_FIRST_SYNC_RATIO = 25.0
PLAIN_ONCE_RATIO = 50.0
LATENCY_S = 1.0
LARGE = 10_000
LARGE_FIRST_SYNC_S = 10.0
LARGE_POLL_S = 0.100
LARGE_RSS_MB = 150.0
SCANNER_RATIO = 10.0
LINEAR_SLACK = 1.5  # cost per run at the largest size vs the smallest, at most
FIRST_ONLY = -1  # "polls" for a monitor process that times its first sync alone


# -- generating runs ---------------------------------------------------------

try:
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - google-crc32c is a test dependency
    _crc32c = None


def _masked_crc(data: bytes) -> int:
    if _crc32c is None:
        from runsmon.events import masked_crc32c

        return masked_crc32c(data)
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return b"".join(
        (
            header,
            struct.pack("<I", _masked_crc(header)),
            data,
            struct.pack("<I", _masked_crc(data)),
        )
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(key: int, payload: bytes) -> bytes:
    return bytes([key]) + _varint(len(payload)) + payload


def _scalar_event(wall_time: float, step: int, values: list[tuple[str, float]]) -> bytes:
    """A serialized Event with one ``simple_value`` per (tag, value), by hand."""
    summary = b"".join(
        _field(0x0A, _field(0x0A, tag.encode()) + b"\x15" + struct.pack("<f", value))
        for tag, value in values
    )
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + _field(0x2A, summary)


def event_file_bytes(rng: random.Random, wall: float, tags: tuple[str, ...], steps: int) -> bytes:
    """A whole event file: the file_version record, then ``steps`` scalar events."""
    version = b"\x09" + struct.pack("<d", wall) + _field(0x1A, b"brain.Event:2")
    parts = [_record(version)]
    base = rng.uniform(0.5, 2.0)
    for step in range(steps):
        values = [(t, base / (1 + step) + rng.random() * 0.05) for t in tags]
        parts.append(_record(_scalar_event(wall + step, step, values)))
    return b"".join(parts)


@dataclasses.dataclass
class GenRun:
    run_id: str
    run_dir: str


def _read(path: str) -> str:
    """A text file's content, or "" when there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _write(path: str, data: bytes | str) -> None:
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_run(
    runs_dir: str,
    rng: random.Random,
    index: int,
    *,
    running_pid: int | None = None,
    started: float | None = None,
) -> GenRun:
    """One Guild-layout run; running (a LOCK naming ``running_pid``) or ended.

    Written by :func:`runsmon.testing.make_guild_run`; the event files are
    framed here, by hand (TensorBoard's own writer is too slow for 10,000 runs).
    """
    # Imported here: the measured monitor process imports only what it uses.
    from runsmon.testing import make_guild_run

    run_id = f"{rng.getrandbits(128):032x}"
    flags = {
        "batch_size": rng.choice((16, 32, 64, 128)),
        "dropout": round(rng.uniform(0.0, 0.5), 2),
        "epochs": STEPS,
        "layers": rng.choice((1, 2, 3, 4)),
        "lr": float(f"{10 ** rng.uniform(-4, -1):.2g}"),
        "optimizer": rng.choice(("adam", "sgd", "rmsprop")),
    }
    start = started if started is not None else 1_700_000_000.0 + index * 60
    started_us = int(start * 1_000_000)
    attrs = {
        "initialized": started_us - 500_000,
        "sourcecode_digest": f"{rng.getrandbits(128):032x}",
        "host": "bench",
        "user": "bench",
        "cmd": ["python", "-um", "train"],
    }
    name = f"events.out.tfevents.{int(start)}.bench.{index}.0"
    event_files = {}
    for group in ("", "train", "val"):
        tags = ("loss", "acc") if group else ("loss", "acc", "lr")
        event_files[f"{group}/{name}" if group else name] = event_file_bytes(
            rng, start, tags, STEPS
        )
    if running_pid is None:
        stopped = start + rng.uniform(60, 3600)
        status = "completed" if rng.random() < 0.95 else "error"
    else:
        stopped, status = start, "running"
    run_dir = make_guild_run(
        runs_dir,
        run_id,
        flags,
        status=status,
        scalars={},
        label=" ".join(f"{k}={v}" for k, v in flags.items()),
        started=start,
        duration=stopped - start,
        project="/bench/project",
        attrs=attrs,
        event_files=event_files,
        pid=running_pid,
    )
    return GenRun(run_id, run_dir)


def finish_run(run_dir: str, stopped: float, exit_status: int = 0) -> None:
    """What Guild writes when a run ends: exit_status, stopped, LOCK removed."""
    from runsmon.testing import finish_guild_run

    finish_guild_run(run_dir, exit_status, int(stopped * 1_000_000))


def generated_runs(n: int, seed: int) -> str:
    """The runs directory holding ``n`` seeded runs (made once, then reused)."""
    base = os.path.join(BENCH_DIR, f"runs-{n}-seed{seed}")
    runs_dir = os.path.join(base, "runs")
    stamp = os.path.join(base, ".complete")
    if _read(stamp) == GENERATOR_VERSION:
        return runs_dir
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(runs_dir)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for i in range(n):
        write_run(runs_dir, rng, i)
    _write(stamp, GENERATOR_VERSION)
    print(f"generated {n} runs in {time.perf_counter() - t0:.1f} s: {runs_dir}", flush=True)
    return runs_dir


# -- measuring runsmon (in a process of its own) ------------------------------


def peak_rss_kb() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def runsmon_child(runs_dir: str, logdir: str, polls: int, serve: bool) -> int:
    """The monitor process: measure syncs; with ``serve``, keep running until told."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from runsmon import GuildRuns, RunsMonitor

    # Default settings, and the heap frozen after the first sync as
    # ``runsmon serve`` does (a daemon's long-lived state is not GC-scanned).
    monitor = RunsMonitor(logdir, GuildRuns(runs_dir), freeze_heap=True)
    t0 = time.perf_counter()
    first = monitor.run_once()
    first_s = time.perf_counter() - t0
    if polls == FIRST_ONLY:
        _emit({"runs": first.runs, "first_sync": first_s, "peak_rss_kb": peak_rss_kb()})
        return 0
    # run_once() in a caller's loop: the second call sets the watch on the
    # runs' trees (and checks every run); later ones cost what changed.
    t0 = time.perf_counter()
    second = monitor.run_once()
    second_s = time.perf_counter() - t0
    once = _run_once_polls(monitor, polls, full=False)
    monitor.watch = False  # nothing watched: every call checks every run
    full = _run_once_polls(monitor, polls, full=True)
    monitor.watch = True
    # A round of the safety net: the roots listed again, then one share of
    # the runs a poll, full_check_interval / interval polls in all.
    round_polls = math.ceil(monitor.full_check_interval / monitor.interval) + 1
    # Nothing watched (a network filesystem): each timed poll re-checks the
    # roots, the runs that have not ended and the next share.
    polled = _timed_polls(monitor, 2 * round_polls, sweep=True)
    # The running monitor at its default settings: first (full) pass done,
    # then each wake-up syncs what the watchers reported (nothing here), and
    # each timed poll also re-checks the next share of the safety net.
    before = monitor.last_stats
    monitor.start()
    deadline = time.monotonic() + 600
    while monitor.last_stats is before and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    watched = _timed_polls(monitor, max(polls, 20), sweep=False)
    timed = _timed_polls(monitor, 2 * round_polls, sweep=True)
    result = {
        "runs": first.runs,
        "first_sync": first_s,
        "second_once": second_s,
        "second_full": second.full,
        "once_polls": once,
        "full_polls": full,
        "watched_polls": watched,
        "timed_polls": timed,
        "polled_polls": polled,
        "peak_rss_kb": peak_rss_kb(),
        "logdir_kb": tree_kb(logdir),
    }
    if not serve:
        monitor.stop()
        _emit(result)
        return 0
    _emit({"ready": True, **result})
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    monitor.stop()
    _emit({"peak_rss_kb": peak_rss_kb()})
    return 0


def _run_once_polls(monitor: Any, count: int, full: bool) -> list[float]:
    """Seconds of ``count`` unchanged ``run_once()`` calls; each a full check or not."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        stats = monitor.run_once()
        times.append(time.perf_counter() - t0)
        assert stats.added == stats.sessions == 0 and not stats.experiment_written, stats
        assert getattr(stats, "full", True) == full or not hasattr(stats, "checked"), stats
    return times


def tree_kb(path: str) -> int:
    """What a directory tree takes on its filesystem (blocks of every entry)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total // 1024


def _timed_polls(monitor: Any, count: int, sweep: bool) -> list[float]:
    """Seconds of ``count`` unchanged polls (``sync_changes``), one after another."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        stats = monitor.sync_changes(sweep=sweep)
        times.append(time.perf_counter() - t0)
        assert stats.added == stats.sessions == 0 and not stats.experiment_written, stats
    return times


def logdir_base(where: str) -> str:
    """Where a measured logdir goes: ``memory``, where ``runsmon serve`` makes
    its temporary logdir (a RAM-backed directory when the machine has one),
    or ``disk``, under ``.bench/`` (what ``--logdir`` on this disk costs)."""
    if where == "memory":
        from runsmon.logdir import temporary_root

        return temporary_root() or tempfile.gettempdir()
    return BENCH_DIR


def _fresh_logdir(tag: str, where: str = "memory") -> str:
    """An empty logdir path; the disk settled first (see :func:`settle`)."""
    path = os.path.join(logdir_base(where), f"runsmon-bench-logdir-{tag}")
    shutil.rmtree(path, ignore_errors=True)
    settle()
    return path


def settle() -> None:
    """Flush dirty pages first, so no one measurement pays for an earlier one's writes."""
    os.sync()
    time.sleep(1.0)


def _child_cmd(runs_dir: str, logdir: str, polls: int, serve: bool) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", runs_dir, logdir, str(polls)]
    return cmd + (["--serve"] if serve else [])


def measure_runsmon(runs_dir: str, polls: int, where: str = "memory") -> dict[str, Any]:
    """Syncs and peak RSS of a monitor process (no latency trials)."""
    logdir = _fresh_logdir("runsmon", where)
    out = subprocess.run(
        _child_cmd(runs_dir, logdir, polls, serve=False),
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    shutil.rmtree(logdir, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait_for(path: str, timeout: float) -> float | None:
    """Seconds (monotonic clock) when ``path`` exists, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return time.monotonic()
        time.sleep(0.002)
    return None


def _wait_for_any(paths: list[str], timeout: float) -> float | None:
    """Seconds (monotonic clock) when one of ``paths`` exists, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(os.path.exists(p) for p in paths):
            return time.monotonic()
        time.sleep(0.002)
    return None


def measure_runsmon_live(runs_dir: str, polls: int, trials: int, seed: int) -> dict[str, Any]:
    """Everything :func:`measure_runsmon` does, plus new-run and final-status latency."""
    from runsmon.monitor import END_FILE, SESSION_FILE
    from runsmon.naming import default_run_name, safe_name
    from runsmon.sources.guild import GuildRuns

    logdir = _fresh_logdir("runsmon-live")
    proc = subprocess.Popen(
        _child_cmd(runs_dir, logdir, polls, serve=True),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    added: list[str] = []
    try:
        result = json.loads(proc.stdout.readline())
        if not result.get("ready"):
            raise RuntimeError(f"monitor process failed: {result}")
        reader = GuildRuns(runs_dir)
        rng = random.Random(seed + 1)
        new_run, final = [], []
        for i in range(trials):
            time.sleep(0.5)
            t0 = time.monotonic()
            gen = write_run(
                runs_dir, rng, 1_000_000 + i, running_pid=os.getpid(), started=time.time()
            )
            added.append(gen.run_dir)
            run = reader.read_run(gen.run_dir)
            assert run is not None
            run_logdir = os.path.join(logdir, safe_name(default_run_name(run)))
            seen = _wait_for(os.path.join(run_logdir, SESSION_FILE), 30)
            new_run.append(math.inf if seen is None else seen - t0)
            time.sleep(0.5)
            t0 = time.monotonic()
            finish_run(gen.run_dir, time.time())
            # The run was shown running: its end is a new generation (the
            # session file of NAME~); an end file where it was not.
            seen = _wait_for_any(
                [os.path.join(run_logdir, END_FILE), os.path.join(run_logdir + "~", SESSION_FILE)],
                30,
            )
            final.append(math.inf if seen is None else seen - t0)
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        end = json.loads(proc.stdout.readline())
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for run_dir in added:
            shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)
    result["peak_rss_kb"] = max(result["peak_rss_kb"], end["peak_rss_kb"])
    result["new_run_latency"] = new_run
    result["final_status_latency"] = final
    return result


# -- measuring Guild ------------------------------------------------------------


def guild_python() -> tuple[str | None, str]:
    """Guild's venv python (made when missing), or None and why not."""
    python = os.path.join(GUILD_VENV, "bin", "python")
    stamp = os.path.join(GUILD_VENV, ".installed")
    if os.path.exists(stamp):
        return python, ""
    print(f"installing {GUILD_SPEC} into {GUILD_VENV} (once) ...", flush=True)
    shutil.rmtree(GUILD_VENV, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", GUILD_VENV], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", GUILD_SPEC],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        subprocess.run([python, "-c", "import guild.tensorboard"], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = (getattr(e, "stderr", None) or str(e)).strip().splitlines()
        return None, f"cannot install {GUILD_SPEC}: {detail[-1] if detail else e}"
    _write(stamp, GUILD_SPEC)
    return python, ""


def measure_guild(python: str, runs_dir: str, polls: int, where: str = "memory") -> dict[str, Any]:
    logdir = _fresh_logdir("guild", where)
    os.makedirs(logdir)
    env = dict(os.environ, GUILD_HOME=os.path.join(BENCH_DIR, "guild-home"))
    try:
        out = subprocess.run(
            [python, os.path.join(HERE, "guild_driver.py"), runs_dir, logdir, str(polls)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- a plain install -----------------------------------------------------------------


def plain_python() -> tuple[str | None, str]:
    """A venv with runsmon as a plain ``pip install .`` (no extras, not editable)."""
    python = os.path.join(PLAIN_VENV, "bin", "python")
    try:
        if not os.path.exists(os.path.join(PLAIN_VENV, ".installed")):
            shutil.rmtree(PLAIN_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", PLAIN_VENV], check=True)
            pip = [python, "-m", "pip", "install", "-q", ROOT]
        else:  # dependencies in place: this tree's runsmon again
            pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", ROOT]
        subprocess.run(pip, check=True, cwd=BENCH_DIR, capture_output=True, text=True)
        _write(os.path.join(PLAIN_VENV, ".installed"), "runsmon")
        where = subprocess.run(
            [python, "-c", "import runsmon, os; print(os.path.dirname(runsmon.__file__))"],
            check=True,
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        detail = (getattr(e, "stderr", None) or str(e)).strip().splitlines()
        return None, f"cannot make {PLAIN_VENV}: {detail[-1] if detail else e}"
    if where.startswith(ROOT + os.sep + "runsmon"):
        return None, f"the plain venv imports runsmon from this tree ({where})"
    return python, ""


def plain_packages(python: str) -> str:
    out = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    keep = ("runsmon", "tensorboard", "protobuf", "numpy", "watchdog", "pyyaml", "google-crc32c")
    return ", ".join(
        line.replace("==", " ") for line in out.split() if line.split("==")[0].lower() in keep
    )


def measure_plain(python: str, runs_dir: str, polls: int, trials: int) -> dict[str, Any]:
    """First syncs and unchanged run_once calls in the plain venv (logdir in memory)."""
    env = dict(os.environ, RUNSMON_BENCH_INSTALLED="1")

    def child(polls_arg: int) -> dict[str, Any]:
        logdir = _fresh_logdir("plain")
        try:
            out = subprocess.run(
                [python, os.path.abspath(__file__), "--child", runs_dir, logdir, str(polls_arg)],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=BENCH_DIR,
            )
        finally:
            shutil.rmtree(logdir, ignore_errors=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = child(polls)
    firsts = [result["first_sync"]] + [child(FIRST_ONLY)["first_sync"] for _ in range(trials - 1)]
    result["first_syncs"] = firsts
    result["first_sync"] = statistics.median(firsts)
    result["packages"] = plain_packages(python)
    return result


def plain_table(
    plain: dict[str, Any], rs: dict[str, Any], guild: dict[str, Any] | None
) -> tuple[str, bool]:
    g_first = guild["first_sync"] if guild else None
    g_poll = statistics.median(guild["polls"]) if guild and guild["polls"] else None
    once = statistics.median(plain["once_polls"])
    rows = [
        [
            "first sync, logdir in memory, median",
            _spread(plain["first_sync"], plain["first_syncs"]),
            _s(rs["first_sync"]),
            _spread(g_first, guild.get("first_syncs")) if guild else "-",
            _ratio(plain["first_sync"], g_first),
            f">= {PLAIN_FIRST_SYNC_RATIO:g}x faster",
        ],
        [
            "run_once, unchanged, after the second call (median)",
            _s(once),
            _s(statistics.median(rs["once_polls"])) if rs.get("once_polls") else "-",
            _s(g_poll),
            _ratio(once, g_poll),
            f">= {PLAIN_ONCE_RATIO:g}x faster",
        ],
        [
            "run_once, unchanged, nothing watched (full check)",
            _s(statistics.median(plain["full_polls"])),
            _s(statistics.median(rs["full_polls"])),
            _s(g_poll),
            _ratio(statistics.median(plain["full_polls"]), g_poll),
            "-",
        ],
    ]
    verdicts = []
    for r, (ours, theirs, target) in zip(
        rows[:2],
        ((plain["first_sync"], g_first, PLAIN_FIRST_SYNC_RATIO), (once, g_poll, PLAIN_ONCE_RATIO)),
        strict=True,
    ):
        ok = None if theirs is None else theirs / ours >= target
        r.append(_yes(ok))
        if ok is not None:
            verdicts.append(ok)
    rows[2].append("-")
    header = [
        "metric",
        "runsmon, plain pip install",
        "runsmon, bench venv",
        "Guild 0.9.0",
        "ratio (plain)",
        "target",
        "met?",
    ]
    return _table(header, rows), all(verdicts)


# -- the scanner ----------------------------------------------------------------


def measure_scanner() -> dict[str, Any] | None:
    try:
        sys.path.insert(0, HERE)
        import scanner  # benchmarks/scanner.py
    except ImportError:
        return None
    run = getattr(scanner, "run", None)
    return run(repeat=2) if callable(run) else None


# -- tables ---------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "timed out"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.2f} ms"


def _spread(value: float | None, values: list[float] | None) -> str:
    """A median with the range of the trials behind it."""
    if value is None or not values or len(values) < 2:
        return _s(value)
    return f"{_s(value)} ({_s(min(values))}-{_s(max(values))})"


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f} MB"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a <= 0:
        return "-"
    return f"{b / a:.0f}x" if b / a >= 10 else f"{b / a:.1f}x"


def _yes(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def main_table(
    n: int,
    rs: dict[str, Any],
    guild: dict[str, Any] | None,
    guild_note: str,
    scan: dict[str, Any] | None,
) -> tuple[str, bool]:
    """The side-by-side table, and whether every target that applies was met."""
    large = n >= LARGE
    rs_full = statistics.median(rs["full_polls"])
    rs_watched = statistics.median(rs["watched_polls"])
    g_poll = statistics.median(guild["polls"]) if guild and guild["polls"] else None
    rows: list[list[str]] = []
    verdicts: list[bool] = []

    def row(
        metric: str,
        ours: str,
        theirs: str,
        ratio: str,
        target: str,
        ok: bool | None,
        judged: bool = True,
    ) -> None:
        rows.append([metric, ours, theirs, ratio, target, _yes(ok) + ("" if judged else "*")])
        if ok is not None and judged:
            verdicts.append(ok)

    def vs(ratio_target: float, ours: float, theirs: float | None) -> bool | None:
        if large or theirs is None:
            return None
        return theirs / ours >= ratio_target

    # The default logdir (in memory) is judged; the same on disk is shown,
    # not judged (marked *): there it is bound by the disk's inode cost.
    for label, ours, theirs, judged in (
        (f"first sync, logdir in memory ({_fs_type('memory')}), median", rs, guild, True),
        (
            f"first sync, logdir on disk ({_fs_type('disk')}), median",
            rs["disk"],
            guild["disk"] if guild else None,
            False,
        ),
    ):
        first = ours["first_sync"]
        g = theirs["first_sync"] if theirs else None
        row(
            label,
            _spread(first, ours.get("first_syncs")),
            _spread(g, theirs.get("first_syncs")) if theirs else guild_note,
            _ratio(first, g),
            f"< {LARGE_FIRST_SYNC_S:g} s" if large else f">= {FIRST_SYNC_RATIO:g}x faster",
            first < LARGE_FIRST_SYNC_S if large else vs(FIRST_SYNC_RATIO, first, g),
            judged,
        )
    for key, label in (
        ("timed_polls", "unchanged poll, monitor running (worst of 2 rounds)"),
        ("polled_polls", "unchanged poll, nothing watched (worst of 2 rounds)"),
    ):
        worst = max(rs[key])
        row(
            label,
            _s(worst),
            _s(g_poll) if guild else "-",
            _ratio(worst, g_poll),
            f"< {LARGE_POLL_S * 1000:g} ms" if large else f">= {POLL_RATIO:g}x faster",
            worst < LARGE_POLL_S if large else vs(POLL_RATIO, worst, g_poll),
        )
    row(
        "wake-up on a watcher report, nothing changed",
        _s(rs_watched),
        "- (Guild has no watcher)",
        _ratio(rs_watched, g_poll),
        "-",
        None,
    )
    row(
        "full check of every run at once (run_once, nothing watched)",
        _s(rs_full),
        _s(g_poll) if guild else "-",
        _ratio(rs_full, g_poll),
        "-",
        None,
    )
    if rs.get("once_polls"):
        once = statistics.median(rs["once_polls"])
        row(
            "run_once, unchanged, after the second call (median)",
            f"{_s(once)} (worst {_s(max(rs['once_polls']))})",
            _s(g_poll) if guild else "-",
            _ratio(once, g_poll),
            f">= {PLAIN_ONCE_RATIO:g}x faster",
            vs(PLAIN_ONCE_RATIO, once, g_poll),
        )
        row(
            "run_once, second call (sets the tree watch; checks every run)",
            _s(rs["second_once"]),
            "-",
            "-",
            "-",
            None,
        )
    for key, label in (
        ("new_run_latency", "new run -> session in logdir"),
        ("final_status_latency", "run ends -> end info in logdir"),
    ):
        values = rs.get(key)
        if not values:
            continue
        worst = max(values)
        row(
            f"{label} (worst of {len(values)})",
            f"{_s(worst)} (median {_s(statistics.median(values))})",
            "- (polls every 5 s or more)",
            "-",
            f"<= {LATENCY_S:g} s",
            worst <= LATENCY_S,
        )
    row(
        "peak RSS, monitor process",
        _mb(rs["peak_rss_kb"]),
        _mb(guild["peak_rss_kb"]) if guild else "-",
        "-",
        f"< {LARGE_RSS_MB:g} MB" if large else "-",
        rs["peak_rss_kb"] / 1024 < LARGE_RSS_MB if large else None,
    )
    if "logdir_kb" in rs:
        row(
            f"logdir size ({_fs_type('memory')}; RAM, not the process's RSS)",
            _mb(rs["logdir_kb"]),
            "-",
            "-",
            "-",
            None,
        )
    if scan is not None:
        checks = "checksums verified" if scan["checksums_verified"] else "checksums NOT verified"
        row(
            f"scanner, {scan['file_bytes'] / 1e6:.0f} MB event file ({checks})",
            f"{scan['runsmon_mb_s']:.0f} MB/s",
            f"{scan['tensorboard_mb_s']:.1f} MB/s (TensorBoard loader)",
            f"{scan['ratio']:.0f}x",
            f">= {SCANNER_RATIO:g}x faster",
            scan["ratio"] >= SCANNER_RATIO and bool(scan.get("results_match", True)),
        )
    header = ["metric", "runsmon", "Guild 0.9.0 / TensorBoard", "ratio", "target", "met?"]
    note = (
        "\n\n\\* not judged: a logdir given on this disk (`--logdir`), bound by the "
        "time the disk takes to make a file (see above); runsmon's own temporary "
        "logdir is the judged row."
    )
    return _table(header, rows) + note, all(verdicts)


def _fs_type(where: str) -> str:
    """The filesystem type under a logdir location (from /proc/mounts)."""
    path = os.path.realpath(logdir_base(where))
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mount = parts[1].rstrip("/") + "/" if len(parts) > 2 else None
            if mount and (path + "/").startswith(mount) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


def scaling_table(results: list[tuple[int, dict[str, Any]]]) -> tuple[str, bool]:
    rows = []
    base_n, base_kb = results[0][0], results[0][1]["peak_rss_kb"]
    for n, r in results:
        full = statistics.median(r["full_polls"])
        rows.append(
            [
                str(n),
                _s(r["first_sync"]),
                f"{r['first_sync'] / n * 1e6:.0f} us",
                _s(full),
                f"{full / n * 1e6:.1f} us",
                f"{_s(max(r['timed_polls']))} ({_s(statistics.median(r['timed_polls']))})",
                f"{_s(max(r['polled_polls']))} ({_s(statistics.median(r['polled_polls']))})",
                _mb(r["peak_rss_kb"]),
                "-" if n == base_n else f"{(r['peak_rss_kb'] - base_kb) / (n - base_n):.1f} KB",
            ]
        )
    (n0, r0), (n1, r1) = results[0], results[-1]
    ok = True
    for key in ("first_sync", "full_polls", "timed_polls"):
        c0 = _cost(r0, key) / n0
        c1 = _cost(r1, key) / n1
        ok = ok and c1 <= LINEAR_SLACK * c0
    header = [
        "runs",
        "first sync",
        "per run",
        "full check",
        "per run",
        "unchanged poll, running: worst (median)",
        "nothing watched: worst (median)",
        "peak RSS",
        "per added run",
    ]
    verdict = (
        f"linear: {'yes' if ok else 'NO'} (cost per run at {n1} runs within "
        f"{LINEAR_SLACK:g}x of that at {n0}, for the first sync, the full check "
        "and the running monitor's median poll; a poll's share is capped, so its "
        "cost per run falls past 6,000 runs)"
    )
    return _table(header, rows) + "\n\n" + verdict, ok


def _cost(r: dict[str, Any], key: str) -> float:
    v = r[key]
    return statistics.median(v) if isinstance(v, list) else v


# -- the machine and RESULTS.md -----------------------------------------------


def machine() -> str:
    from importlib import metadata

    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    versions = []
    for pkg in (
        "runsmon",
        "tensorboard",
        "protobuf",
        "numpy",
        "watchdog",
        "PyYAML",
        "google-crc32c",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{pkg} {metadata.version(pkg)}")
    guild = os.path.join(GUILD_VENV, "bin", "python")
    if os.path.exists(guild):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [
                    guild,
                    "-c",
                    "import guild, tensorboard; print(guild.__version__, tensorboard.__version__)",
                ],
                check=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            ).stdout.split()
            versions.append(f"guildai {out[0]} (with tensorboard {out[1]}, its own venv)")
    return "\n".join(
        [
            f"- cores: {os.cpu_count()} ({cpu or platform.machine()})",
            f"- memory: {mem}",
            f"- OS: {platform.system()} {platform.release()}",
            f"- Python: {platform.python_version()} ({platform.python_implementation()})",
            f"- packages: {', '.join(versions)}",
        ]
    )


def _section(key: str, body: str) -> str:
    return f"<!-- {key} -->\n{body.rstrip()}\n<!-- /{key} -->"


def write_results(sections: dict[str, str]) -> None:
    """Replace the measured sections of RESULTS.md, keeping the others."""
    old = _read(RESULTS)
    kept: dict[str, str] = {}
    order = [
        "machine",
        "runs-1000",
        "runs-10000",
        "scaling",
        "mlflow-sqlite-1000",
        "open-files",
        "rewrite",
        "seed-groups-1000",
        "seed-groups-10000",
        "plain-install",
        "dashboard-1000",
        "dashboard-10000",
        "dashboard-15000",
        "s3-1000",
    ]
    # Every section of the file is kept (other benchmarks write theirs), the
    # known ones in this order and the others after them as they stand.
    for m in re.finditer(r"<!-- ([\w.-]+) -->\n(.*?)\n<!-- /\1 -->", old, re.S):
        kept[m.group(1)] = m.group(2).strip("\n")
        if m.group(1) not in order:
            order.append(m.group(1))
    for key, body in sections.items():
        kept[key] = body
        if key not in order:
            order.append(key)
    parts = [
        "# Benchmark results",
        "Written by `python benchmarks/run.py --write-results` (`make bench`, "
        "`make bench BENCH_RUNS=10000`, `--scaling`, `--plain-install`) and "
        "`python benchmarks/dashboard.py --write-results` (the time to a full dashboard); "
        "each section is replaced when it is measured again. Targets are from the issues "
        '"Speed and scale" and "The dashboard itself at 10,000 runs".',
        "Where the logdir lives decides a first sync. Both tools' logdirs are measured "
        "where `runsmon serve` makes its temporary logdir (in memory: "
        "`$XDG_RUNTIME_DIR` or `/dev/shm`, tmpfs here), and both first syncs again "
        "with the logdirs on this machine's disk (ext4, under `.bench/`). A run needs "
        "about eight new inodes in the logdir (its directory, `train/` and `val/`, "
        "manifest, session file, three links); on this disk a new inode costs "
        "15-450 us depending on load from outside this machine, so a first sync of "
        "1,000 runs spends 0.1-3.5 s making files there, and about 20 ms in memory. "
        "Guild's monitor makes about as many, but its first sync is bound by its own "
        "CPU work. The CPU itself is shared too: a fixed pure-Python loop took "
        "0.8-1.2 s at different times of one day, so each first sync is the median "
        "of three, each in a fresh process on a fresh logdir, with the range beside it.",
        '"Unchanged poll" is what the running monitor does each `interval` (5 s): '
        "sync what the watchers reported, then re-check the next share of the safety "
        "net (`full_check_interval / interval` = 120 s / 5 s = 24 polls to a round, at "
        'most 250 runs a poll). "Nothing watched" is the same poll where no watch '
        "could be set (a network filesystem): it also re-checks the runs that have "
        "not ended and lists a root again once its mtime moved. Both are the worst "
        'poll of two whole rounds. "Full check" (`run_once` on an unchanged logdir '
        "with nothing watched, `watch=False`) checks every run at once, which no poll "
        "does any more; it is shown beside Guild's poll, which does exactly that. "
        '"run_once, unchanged, after the second call" is what a tool calling '
        "`run_once()` in a loop of its own pays once the second call has set the watch "
        "on the runs' trees: what changed since the call before, here nothing.",
    ]
    parts += [_section(k, kept[k]) for k in order if k in kept]
    _write(RESULTS, "\n\n".join(parts) + "\n")


# -- main -------------------------------------------------------------------------


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _timed(what: str) -> Iterator[None]:
    _progress(f"... {what}")
    t0 = time.perf_counter()
    yield
    _progress(f"    done in {time.perf_counter() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs to generate (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--polls", type=int, default=5, help="unchanged polls timed (median)")
    parser.add_argument("--trials", type=int, default=5, help="new-run / final-status trials")
    parser.add_argument(
        "--first-trials",
        type=int,
        default=3,
        help="first syncs timed, each on a fresh logdir in a fresh process (median)",
    )
    parser.add_argument("--guild-polls", type=int, default=3)
    parser.add_argument(
        "--guild-max-runs",
        type=int,
        default=1000,
        help="measure Guild only up to this many runs (its first sync of 10k takes ~10 min)",
    )
    parser.add_argument("--skip-guild", action="store_true")
    parser.add_argument(
        "--plain-install",
        action="store_true",
        help="also measure runsmon as a plain `pip install .` (no extras) in a venv of its own",
    )
    parser.add_argument("--skip-scanner", action="store_true")
    parser.add_argument("--scaling", action="store_true", help="also measure 1k, 2k, 5k, 10k runs")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument(
        "--child", nargs=3, metavar=("RUNS_DIR", "LOGDIR", "POLLS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runs_dir, logdir, polls = args.child
        return runsmon_child(runs_dir, logdir, int(polls), args.serve)

    os.makedirs(BENCH_DIR, exist_ok=True)
    n = args.runs
    with _timed(f"generating {n} runs"):
        runs_dir = generated_runs(n, args.seed)

    guild = None
    guild_note = ""
    if args.skip_guild:
        guild_note = "skipped (--skip-guild)"
    elif n > args.guild_max_runs:
        guild_note = f"not measured above {args.guild_max_runs} runs (--guild-max-runs)"
    else:
        python, why = guild_python()
        if python is None:
            guild_note = "skipped: " + why
            print(f"Guild's column skipped: {why}", flush=True)
        else:
            try:
                with _timed(f"Guild RunsMonitor on {n} runs, logdir in memory"):
                    guild = measure_guild(python, runs_dir, args.guild_polls, "memory")
                    guild["first_syncs"] = [guild["first_sync"]] + [
                        measure_guild(python, runs_dir, 0, "memory")["first_sync"]
                        for _ in range(args.first_trials - 1)
                    ]
                    guild["first_sync"] = statistics.median(guild["first_syncs"])
                with _timed(f"Guild RunsMonitor on {n} runs, logdir on disk"):
                    guild["disk"] = measure_guild(python, runs_dir, 0, "disk")
            except (OSError, subprocess.CalledProcessError) as e:
                guild, guild_note = None, f"failed: {e}"
                print(f"Guild's column skipped: {e}", flush=True)
    with _timed(f"runsmon on {n} runs (syncs, latency, RSS), logdir in memory"):
        rs = measure_runsmon_live(runs_dir, args.polls, args.trials, args.seed)
        rs["first_syncs"] = [rs["first_sync"]] + [
            measure_runsmon(runs_dir, FIRST_ONLY, "memory")["first_sync"]
            for _ in range(args.first_trials - 1)
        ]
        rs["first_sync"] = statistics.median(rs["first_syncs"])
    with _timed(f"runsmon on {n} runs, logdir on disk"):
        disk = [
            measure_runsmon(runs_dir, FIRST_ONLY, "disk")["first_sync"]
            for _ in range(args.first_trials)
        ]
        rs["disk"] = {"first_sync": statistics.median(disk), "first_syncs": disk}
    scan = None
    if not args.skip_scanner:
        with _timed("scanner vs TensorBoard's loader"):
            scan = measure_scanner()

    table, ok = main_table(n, rs, guild, guild_note, scan)
    title = f"## {n} runs (seed {args.seed})"
    print()
    print(title)
    print()
    print(table)
    sections = {f"runs-{n}": f"{title}\n\n{table}"}

    if args.plain_install:
        python, why = plain_python()
        if python is None:
            print(f"plain install skipped: {why}", flush=True)
        else:
            with _timed(f"runsmon as a plain pip install on {n} runs, logdir in memory"):
                plain = measure_plain(python, runs_dir, args.polls, args.first_trials)
            ptable, pok = plain_table(plain, rs, guild)
            ok = ok and pok
            ptitle = f"## A plain install: {n} runs (seed {args.seed})"
            pintro = (
                "`python benchmarks/run.py --plain-install`: runsmon installed with a plain, "
                f"non-editable `pip install .` (no extras) into `.bench/plain-venv` "
                f"({plain['packages']}), measured as above beside the benchmark's own venv "
                "(editable, with the test extra) and Guild's monitor."
            )
            print()
            print(ptitle)
            print()
            print(ptable)
            sections["plain-install"] = f"{ptitle}\n\n{pintro}\n\n{ptable}"

    if args.scaling:
        results = []
        for size in SCALING_SIZES:
            with _timed(f"scaling: {size} runs"):
                results.append((size, measure_runsmon(generated_runs(size, args.seed), args.polls)))
        stable, linear = scaling_table(results)
        ok = ok and linear
        print()
        print("## Scaling (runsmon)")
        print()
        print(stable)
        sections["scaling"] = f"## Scaling (runsmon, seed {args.seed})\n\n{stable}"

    print()
    print("every target met" if ok else "NOT every target met")
    if args.write_results:
        sections["machine"] = "## Machine\n\n" + machine()
        write_results(sections)
        print(f"wrote {os.path.relpath(RESULTS, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

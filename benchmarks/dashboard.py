"""Time to a full dashboard: ``runsmon serve`` and ``guild tensorboard`` end to end.

``make bench-dashboard`` (part of ``make bench``) runs
``python benchmarks/dashboard.py --runs 1000``. On the generated Guild-layout
runs of ``benchmarks/run.py`` (under ``.bench/``) it launches each tool as a
user would, a real process tree (``runsmon serve``: runsmon, TensorBoard in
it and TensorBoard's data server; ``guild tensorboard``: Guild, TensorBoard
in it and its data server), and asks TensorBoard's HParams plugin over HTTP
what the HPARAMS tab asks: ``experiment``, then ``session_groups`` with one
``colParams`` entry per hparam and metric. Each poll asks TensorBoard to count
the rows that show every required metric (``excludeMissingValues`` on those
columns, one row long: what a page costs the plugin); a count that reaches
the goal is confirmed by fetching every row, page by page (``sliceSize``),
and checking that each has every metric. Until that confirmation passes the
dashboard is not full. So:

- *full dashboard*: every run is listed, each with a value for every
  ``loss`` and ``acc`` metric of the experiment (the generated runs log both
  at their root, in ``train/`` and in ``val/``); seconds from launch;
- *steady*: ``--steady-polls`` further polls, one a second, each list every
  run so;
- *a page*: seconds one ``session_groups`` request of 100 rows (the HPARAMS
  tab's first request) takes to answer, during those polls;
- *a new run*: seconds from a new (ended) run's files being written into the
  runs directory until it is listed with its metrics (the run is removed
  afterwards);
- *peak RSS* of the whole process tree: the launched process and every
  descendant, summed over ``/proc`` every 0.2 s, while the dashboard is asked
  as the HPARAMS tab asks (pages of 100 rows); the peak while the benchmark
  fetches every row at once (no browser does) is given beside it;
- "Too many open files" lines the tree printed (TensorBoard's data server at
  the open-file limit).

Every wait has a timeout (``--timeout``; a dashboard that never completes is
reported as "never within T s", with the count of "Too many open files"
lines). ``--layout X`` is passed to ``runsmon serve`` when its ``--help``
offers the option. Guild is measured up to ``--guild-max-runs`` runs (its
first sync of 10,000 runs takes over ten minutes); ``guild tensorboard`` runs
with ``GUILD_HOME`` at the generated runs, from ``.bench/guild-venv`` (made by
``benchmarks/run.py``). Each tool's logdir is where the tool puts it by
default (runsmon: in memory; Guild: ``$TMPDIR``, ``/tmp`` here).
``--write-results`` puts the table into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run as bench  # noqa: E402  (benchmarks/run.py: the generator, tables, RESULTS.md)

from runsmon.serve import ALL_STATUSES  # noqa: E402  (the statuses the HPARAMS tab allows)

PAGE = 100  # rows the HPARAMS tab asks for at once
CHECK_MORE = 1000  # a completeness poll asks for this many rows more than runs (then pages on)
PYTHON_LOADER = "serving them with its Python loader instead"  # runsmon serve's one line
METRIC_TAGS = ("loss", "acc")  # every generated run logs them at its root, train/ and val/
TOO_MANY = "Too many open files"

# Targets (issue "The dashboard itself at 10,000 runs").
FULL_RATIO = 25.0  # 1,000 runs: full dashboard at least 25x sooner than guild tensorboard
NEW_RUN_S = 2.0
LARGE = 10_000
LARGE_FULL_S = 20.0
LARGE_PAGE_S = 1.0
LARGE_TREE_MB = 1024.0


# -- the process tree --------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process in /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants."""
    kids = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_name(pid: int) -> str:
    """What the process is: the data server, TensorBoard's own process (runsmon
    starts it with ``tensorboard_child``), or the launched tool itself."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(argv)
    if b"tensorboard_data_server" in text:
        return "data server"
    if b"tensorboard_child" in text:
        return "TensorBoard"
    words = [os.path.basename(a.decode(errors="replace")) for a in argv if a]
    if "runsmon" in words:
        return "runsmon"
    if any(w == "guild" or w.endswith("/guild") for w in words):
        return "guild"
    return words[0] if words else "?"


#: Set while the benchmark fetches every row (a request no browser sends: the
#: HPARAMS tab asks for pages of 100): RSS sampled meanwhile counts only in
#: the peak "with the benchmark's checks".
FULL_CHECK = threading.Event()
#: Seconds after a full check whose samples still count only with the checks.
SETTLE_S = 2.0


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process tree until stopped; keeps the peak
    as the HPARAMS tab drives it (``peak_kb``, outside :data:`FULL_CHECK`)
    and with the benchmark's full-table checks too (``peak_all_kb``)."""

    def __init__(self, root: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak_kb = 0
        self.peak_all_kb = 0
        self._quiet_from = 0.0  # samples before this count only with the full checks
        self.peak_procs = 0
        self.peak_parts: dict[str, int] = {}  # process name -> its RSS at the peak (kB)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            checking = FULL_CHECK.is_set()
            pids = tree_pids(self.root)
            each = {p: rss_kb(p) for p in pids}
            total = sum(each.values())
            self.peak_all_kb = max(self.peak_all_kb, total)
            if checking or FULL_CHECK.is_set():
                self._quiet_from = time.monotonic() + SETTLE_S
            elif total > self.peak_kb and time.monotonic() >= self._quiet_from:
                self.peak_kb, self.peak_procs = total, len(pids)
                parts: dict[str, int] = {}
                for pid, kb in each.items():
                    name = proc_name(pid)
                    parts[name] = parts.get(name, 0) + kb
                self.peak_parts = parts
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# -- the HParams plugin, as the HPARAMS tab asks it -----------------------------------


def _post(url: str, body: dict[str, Any], timeout: float) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def experiment(base: str, timeout: float) -> dict[str, Any]:
    return _post(base + "/data/plugin/hparams/experiment", {"experimentName": ""}, timeout) or {}


def col_params(exp: dict[str, Any]) -> list[dict[str, Any]]:
    """What the HPARAMS tab sends on first load: every hparam and metric, no filter."""
    cols: list[dict[str, Any]] = [
        {"hparam": h["name"], "includeInResult": True} for h in exp.get("hparamInfos", [])
    ]
    cols += [{"metric": m["name"], "includeInResult": True} for m in exp.get("metricInfos", [])]
    return cols


def page(base: str, cols: list[dict[str, Any]], start: int, size: int, timeout: float) -> Any:
    body = {
        "experimentName": "",
        "allowedStatuses": ALL_STATUSES,
        "colParams": cols,
        "startIndex": start,
        "sliceSize": size,
    }
    return _post(base + "/data/plugin/hparams/session_groups", body, timeout)


def all_groups(
    base: str, cols: list[dict[str, Any]], size: int, timeout: float
) -> list[dict[str, Any]]:
    """Every session group, ``size`` rows a request until ``totalSize`` is reached.

    The plugin works out every group for each request, whatever its slice:
    one large slice costs what one page does."""
    groups: list[dict[str, Any]] = []
    while True:
        answer = page(base, cols, len(groups), size, timeout) or {}
        got = answer.get("sessionGroups", [])
        groups += got
        if not got or len(groups) >= int(answer.get("totalSize", 0)):
            return groups


def _metric_key(name: dict[str, Any]) -> tuple[str, str]:
    return name.get("tag", ""), name.get("group", "")


def _base(tag: str) -> str:
    return tag.rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def required_metrics(exp: dict[str, Any]) -> set[tuple[str, str]]:
    """The experiment's ``loss`` and ``acc`` metrics, however the tool names them."""
    out = set()
    for info in exp.get("metricInfos", []):
        tag, group = _metric_key(info["name"])
        if _base(tag) in METRIC_TAGS:
            out.add((tag, group))
    return out


def declared(required: set[tuple[str, str]], need: int) -> bool:
    """Whether the experiment declares every metric the runs log: ``need`` of
    them (runsmon: ``loss`` and ``acc`` of the root, ``train/`` and ``val/``,
    6; Guild: one per tag, its group's sessions averaged, 2), both tags."""
    return len(required) >= need and {_base(tag) for tag, _ in required} == set(METRIC_TAGS)


def complete_rows(
    groups: list[dict[str, Any]], required: set[tuple[str, str]], need: int
) -> set[str]:
    """The names of the rows that show a value for every required metric."""
    if not declared(required, need):
        return set()  # the experiment does not declare the runs' metrics (yet)
    rows = set()
    for g in groups:
        have = {_metric_key(v["name"]) for v in g.get("metricValues", []) if "value" in v}
        if required <= have:
            rows.add(g["name"])
    return rows


@dataclasses.dataclass
class Poll:
    """One look at the dashboard: how many rows are complete, and what it cost."""

    at: float  # seconds after launch
    complete: int  # rows with every metric value
    seconds: float  # the whole poll (experiment + every request)
    error: str = ""


def look(base: str, t0: float, n: int, timeout: float, need: int) -> Poll:
    """Every row fetched, page after page, and checked here: the rows with every metric."""
    start = time.monotonic()
    FULL_CHECK.set()
    try:
        exp = experiment(base, timeout)
        groups = all_groups(base, col_params(exp), n + CHECK_MORE, timeout) if exp else []
    except (OSError, ValueError, urllib.error.URLError) as e:
        return Poll(time.monotonic() - t0, 0, time.monotonic() - start, str(e)[:200])
    finally:
        FULL_CHECK.clear()
    done = complete_rows(groups, required_metrics(exp), need)
    return Poll(time.monotonic() - t0, len(done), time.monotonic() - start)


def count_look(base: str, t0: float, timeout: float, need: int) -> Poll:
    """The rows complete, as TensorBoard counts them: the HPARAMS tab's own
    request (every hparam and metric) with ``excludeMissingValues`` on each
    required metric, one row long; its ``totalSize`` is the answer.

    It costs the plugin what a page costs, where :func:`look` also has it
    encode every row as JSON (several seconds at 10,000 rows, in the process
    that syncs); a full look confirms each count that reaches the goal."""
    start = time.monotonic()
    try:
        exp = experiment(base, timeout)
        required = required_metrics(exp)
        count = 0
        if declared(required, need):
            cols = col_params(exp)
            for col in cols:
                if "metric" in col and _metric_key(col["metric"]) in required:
                    col["excludeMissingValues"] = True
            count = int((page(base, cols, 0, 1, timeout) or {}).get("totalSize", 0))
    except (OSError, ValueError, urllib.error.URLError) as e:
        return Poll(time.monotonic() - t0, 0, time.monotonic() - start, str(e)[:200])
    return Poll(time.monotonic() - t0, count, time.monotonic() - start)


def confirmed(base: str, t0: float, n: int, goal: int, counted: Poll, need: int) -> bool:
    """Whether a count that reached ``goal`` holds up, every row fetched."""
    return counted.complete >= goal and look(base, t0, n, 120, need).complete >= goal


# -- one tool, launched and measured ---------------------------------------------------


def warm(runs_dir: str) -> float:
    """Read every file of the runs once, so that each tool starts with them in
    the page cache (this machine's kernel reclaims pages left cold for a few
    minutes: a launch after that read 10,000 runs from disk, at a third of
    the speed). Seconds it took."""
    start = time.monotonic()
    for top, _, files in os.walk(runs_dir):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(top, name), "rb") as f:
                while f.read(1 << 20):
                    pass
    return time.monotonic() - start


@dataclasses.dataclass
class Tool:
    name: str
    argv: list[str]
    env: dict[str, str]
    note: str = ""
    metrics: int = 6  # metric columns a full row has (see declared)


def _wait_ready(base: str, proc: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(base + "/data/plugins_listing", timeout=5):
                return True
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the tree we started (its own process group), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def measure(
    tool: Tool,
    runs_dir: str,
    n: int,
    *,
    port: int,
    timeout: float,
    steady_polls: int,
    trials: int,
    seed: int,
    log_path: str,
) -> dict[str, Any]:
    """Launch ``tool``, wait for the full dashboard, then measure it; stop it."""
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"tool": tool.name, "note": tool.note, "timeout": timeout}
    result["warm_s"] = warm(runs_dir)
    added: list[str] = []
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            tool.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=tool.env,
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            deadline = t0 + timeout
            ready = _wait_ready(base, proc, deadline)
            result["answers_s"] = time.monotonic() - t0 if ready else None
            polls: list[Poll] = []
            full_at = None
            while ready and time.monotonic() < deadline and proc.poll() is None:
                p = count_look(base, t0, 120, tool.metrics)
                polls.append(p)
                if confirmed(base, t0, n, n, p, tool.metrics):
                    full_at = p.at
                    break
                time.sleep(max(0.0, 0.5 - p.seconds))
            result["full_s"] = full_at
            result["most_rows_complete"] = max((p.complete for p in polls), default=0)
            result["fewest_after_most"] = _fewest_after_peak(polls)
            result["looks"] = len(polls)
            if full_at is None and ready and proc.poll() is None:
                result["page_s"] = _pages_now(base, 3)  # what a page costs all the same
            if full_at is not None:
                result.update(_steady(base, t0, n, steady_polls, tool.metrics))
                result["new_run_s"], result["new_run_asked_s"] = _new_runs(
                    base, t0, runs_dir, n, trials, seed, added, tool.metrics
                )
        finally:
            for run_dir in added:
                shutil.rmtree(run_dir, ignore_errors=True)
            _stop(proc)
            sampler.stop()
    result["exit"] = proc.returncode
    result["peak_rss_kb"] = sampler.peak_kb
    result["peak_all_kb"] = sampler.peak_all_kb
    result["peak_procs"] = sampler.peak_procs
    result["peak_parts"] = sampler.peak_parts
    with open(log_path, "rb") as f:
        text = f.read().decode(errors="replace")
    result["too_many_open_files"] = text.count(TOO_MANY)
    result["python_loader"] = PYTHON_LOADER in text
    result["log_tail"] = text[-600:] if result.get("full_s") is None else ""
    return result


def _fewest_after_peak(polls: list[Poll]) -> int | None:
    """Rows complete at the worst poll after the best one (a table that empties again)."""
    if not polls:
        return None
    best = max(range(len(polls)), key=lambda i: polls[i].complete)
    later = [p.complete for p in polls[best + 1 :]]
    return min(later) if later else None


def _steady(base: str, t0: float, n: int, count: int, need: int) -> dict[str, Any]:
    """``count`` polls a second apart: does each list every run? And a page's time."""
    steady, pages, fewest = 0, [], n
    exp = experiment(base, 60)
    cols = col_params(exp)
    for i in range(count):
        time.sleep(1.0)
        # Counted by TensorBoard; the last poll fetches every row and checks it here.
        p = look(base, t0, n, 120, need) if i == count - 1 else count_look(base, t0, 120, need)
        fewest = min(fewest, p.complete)
        steady += p.complete >= n
        start = time.monotonic()
        page(base, cols, 0, PAGE, 60)
        pages.append(time.monotonic() - start)
    return {"steady": steady, "steady_of": count, "steady_fewest": fewest, "page_s": pages}


def _pages_now(base: str, count: int) -> list[float]:
    """Seconds each of ``count`` first pages (the HPARAMS tab's request) took."""
    times = []
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
        cols = col_params(experiment(base, 120))
        for _ in range(count):
            start = time.monotonic()
            page(base, cols, 0, PAGE, 120)
            times.append(time.monotonic() - start)
    return times


def _new_runs(
    base: str,
    t0: float,
    runs_dir: str,
    n: int,
    trials: int,
    seed: int,
    added: list[str],
    need: int,
) -> tuple[list[float], list[float]]:
    """Seconds from a new run written until an answer lists it with its metrics,
    per trial; and when that answer was asked for (the run was listed between)."""
    rng = random.Random(seed + 7)
    out, asked = [], []
    expected = n
    for i in range(trials):
        time.sleep(1.0)
        start = time.monotonic()
        gen = bench.write_run(runs_dir, rng, 2_000_000 + i, started=time.time())
        added.append(gen.run_dir)
        expected += 1
        seen = math.inf
        while time.monotonic() - start < NEW_RUN_TIMEOUT_S:
            sent = time.monotonic() - start
            p = count_look(base, t0, 120, need)
            if confirmed(base, t0, n + 1, expected, p, need):
                seen = t0 + p.at - start  # when the count that listed it answered
                asked.append(sent)
                break
            time.sleep(0.05)
        out.append(seen)
        if math.isinf(seen):
            break
    return out, asked


NEW_RUN_TIMEOUT_S = 180.0


# -- the tools ------------------------------------------------------------------------


def _help_offers(argv: list[str], option: str, env: dict[str, str]) -> bool:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [*argv, "--help"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
        return option in out
    return False


def runsmon_tool(runs_dir: str, port: int, layout: str | None, extra: list[str]) -> Tool:
    env = dict(os.environ, PYTHONPATH=bench.ROOT)
    env.pop("TMPDIR", None)  # runsmon's default: its temporary logdir in memory
    serve = [sys.executable, "-m", "runsmon", "serve"]
    argv = [*serve, runs_dir, "--host", "127.0.0.1", "--port", str(port)]
    note = ""
    if layout:
        if _help_offers(serve, "--layout", env):
            argv += ["--layout", layout]
            note = f"--layout {layout}"
        else:
            note = f"--layout {layout} asked, not offered by this runsmon (linked layout)"
    if extra:
        argv += extra
        note = " ".join([note, *extra]).strip()
    return Tool("runsmon serve", argv, env, note)


def guild_tool(runs_dir: str, port: int) -> Tool | None:
    python, why = bench.guild_python()
    if python is None:
        print(f"guild tensorboard skipped: {why}", flush=True)
        return None
    guild = os.path.join(os.path.dirname(python), "guild")
    env = dict(os.environ, GUILD_HOME=os.path.dirname(runs_dir))
    argv = [guild, "tensorboard", "--no-open", "--host", "127.0.0.1", "--port", str(port)]
    return Tool("guild tensorboard", argv, env, metrics=2)


# -- the table --------------------------------------------------------------------------


def _never(r: dict[str, Any]) -> str:
    most = r.get("most_rows_complete", 0)
    fewest = r.get("fewest_after_most")
    seen = f"; at most {most:,} rows complete" + (
        f", then {fewest:,}" if fewest is not None and fewest < most else ""
    )
    return f"never within {r['timeout']:g} s{seen}"


def _pages(r: dict[str, Any]) -> str:
    pages = r.get("page_s")
    if not pages:
        return "-"
    return f"{bench._s(statistics.median(pages))} (worst {bench._s(max(pages))})"


def _new(r: dict[str, Any]) -> str:
    values = r.get("new_run_s")
    if not values:
        return "-"
    worst = max(values)
    asked = r.get("new_run_asked_s") or []
    # The answer that listed it was asked for this long after the run was written.
    when = f"; asked at {bench._s(asked[values.index(worst)])}" if len(asked) == len(values) else ""
    if len(values) == 1:
        return f"{bench._s(worst)}{when}"
    median = bench._s(statistics.median(values))
    return f"{bench._s(worst)} (worst of {len(values)}{when}; median {median})"


def _loader(r: dict[str, Any]) -> str:
    note = r.get("note", "").replace(" ", "")
    if "load_fast=false" in note:
        return "Python (-O load_fast=false)"
    if "load_fast=true" in note:
        return "fast (-O load_fast=true)"
    return "Python (runsmon's choice: too many files)" if r.get("python_loader") else "default"


def _rss(r: dict[str, Any]) -> str:
    parts = sorted(r.get("peak_parts", {}).items(), key=lambda kv: -kv[1])
    each = ", ".join(f"{name} {bench._mb(kb)}" for name, kb in parts)
    text = f"{bench._mb(r['peak_rss_kb'])} ({r['peak_procs']}" + (f": {each})" if each else ")")
    if r.get("peak_all_kb", 0) > r["peak_rss_kb"]:
        text += f"; {bench._mb(r['peak_all_kb'])} with the benchmark's full-table checks"
    return text


def table(n: int, rs: dict[str, Any], guild: dict[str, Any] | None, guild_note: str) -> str:
    large = n >= LARGE
    rows: list[list[str]] = []

    def cell(r: dict[str, Any] | None, text: str) -> str:
        return text if r is not None else guild_note

    def row(metric: str, ours: str, theirs: str, ratio: str, target: str, ok: bool | None):
        rows.append([metric, ours, theirs, ratio, target, bench._yes(ok)])

    rs_full, g_full = rs.get("full_s"), guild.get("full_s") if guild else None
    row(
        "TensorBoard answers (s after launch)",
        bench._s(rs.get("answers_s")),
        cell(guild, bench._s(guild.get("answers_s")) if guild else ""),
        "-",
        "-",
        None,
    )
    if large:
        target, ok = f"< {LARGE_FULL_S:g} s", rs_full is not None and rs_full < LARGE_FULL_S
    else:
        target = f">= {FULL_RATIO:g}x sooner"
        ok = None if rs_full is None or g_full is None else g_full / rs_full >= FULL_RATIO
        if rs_full is None:
            ok = False
    row(
        "full dashboard: every run listed with its metrics (s after launch)",
        bench._s(rs_full) if rs_full is not None else _never(rs),
        cell(guild, (bench._s(g_full) if g_full is not None else _never(guild)) if guild else ""),
        bench._ratio(rs_full, g_full),
        target,
        ok,
    )
    steady_ok = rs.get("steady") == rs.get("steady_of") if rs_full is not None else False
    row(
        f"steady: of {rs.get('steady_of', '-')} further polls (1 s apart), those listing every run",
        f"{rs['steady']} of {rs['steady_of']}" if "steady" in rs else "-",
        cell(
            guild,
            f"{guild['steady']} of {guild['steady_of']}" if guild and "steady" in guild else "-",
        ),
        "-",
        "every poll",
        steady_ok,
    )
    page_ok = None
    if large and rs.get("page_s"):
        page_ok = max(rs["page_s"]) < LARGE_PAGE_S
    elif large:
        page_ok = False
    row(
        f"a page of {PAGE} session groups answers in (median)",
        _pages(rs),
        cell(guild, _pages(guild) if guild else ""),
        "-",
        f"< {LARGE_PAGE_S:g} s" if large else "-",
        page_ok,
    )
    new_vals = rs.get("new_run_s")
    row(
        "new run written -> an answer lists it with its metrics",
        _new(rs),
        cell(guild, _new(guild) if guild else ""),
        bench._ratio(max(new_vals), max(guild["new_run_s"]))
        if new_vals and guild and guild.get("new_run_s")
        else "-",
        # The target for a new run is at 1,000 runs.
        "-" if large else f"<= {NEW_RUN_S:g} s",
        None
        if large
        else (max(new_vals) <= NEW_RUN_S)
        if new_vals
        else (False if rs_full is not None else None),
    )
    row(
        "peak RSS, whole process tree, asked as the HPARAMS tab asks (processes: each at the peak)",
        _rss(rs),
        cell(guild, _rss(guild) if guild else ""),
        "-",
        f"< {LARGE_TREE_MB:g} MB" if large else "-",
        rs["peak_rss_kb"] / 1024 < LARGE_TREE_MB if large else None,
    )
    row(
        '"Too many open files" lines printed',
        f"{rs['too_many_open_files']:,}",
        cell(guild, f"{guild['too_many_open_files']:,}" if guild else ""),
        "-",
        "0",
        rs["too_many_open_files"] == 0,
    )
    row(
        "TensorBoard's loader",
        _loader(rs),
        cell(guild, "as Guild starts it"),
        "-",
        "-",
        None,
    )
    header = ["metric", "runsmon serve", "guild tensorboard (0.9.0)", "ratio", "target", "met?"]
    return bench._table(header, rows)


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", default=None, help="passed to runsmon serve when offered")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for runsmon serve (repeatable), e.g. --serve-arg=-Oload_fast=true",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a tool has to show the full dashboard (default: 180 for runsmon, "
        "600 for guild tensorboard)",
    )
    parser.add_argument("--steady-polls", type=int, default=10)
    parser.add_argument("--trials", type=int, default=3, help="new-run trials (runsmon)")
    parser.add_argument("--guild-trials", type=int, default=1, help="new-run trials (Guild)")
    parser.add_argument("--guild-max-runs", type=int, default=1000)
    parser.add_argument("--skip-guild", action="store_true")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)

    n = args.runs
    os.makedirs(bench.BENCH_DIR, exist_ok=True)
    runs_dir = bench.generated_runs(n, args.seed)
    logs = os.path.join(bench.BENCH_DIR, "dashboard-logs")
    os.makedirs(logs, exist_ok=True)

    def run(tool: Tool, timeout: float, trials: int, seed: int, name: str) -> dict[str, Any]:
        print(f"... {tool.name} on {n} runs {tool.note}", file=sys.stderr, flush=True)
        result = measure(
            tool,
            runs_dir,
            n,
            port=int(tool.argv[tool.argv.index("--port") + 1]),
            timeout=args.timeout or timeout,
            steady_polls=args.steady_polls,
            trials=trials,
            seed=seed,
            log_path=os.path.join(logs, f"{name}-{n}.log"),
        )
        print(json.dumps(result), file=sys.stderr, flush=True)
        return result

    rs_tool = runsmon_tool(runs_dir, bench_port(), args.layout, args.serve_arg)
    rs = run(rs_tool, 180.0, args.trials, args.seed, "runsmon")
    guild, guild_note = None, ""
    if args.skip_guild:
        guild_note = "skipped (--skip-guild)"
    elif n > args.guild_max_runs:
        guild_note = f"not measured above {args.guild_max_runs:,} runs"
    elif (g_tool := guild_tool(runs_dir, bench_port())) is None:
        guild_note = "skipped: Guild 0.9.0 cannot be installed here"
    else:
        guild = run(g_tool, 600.0, args.guild_trials, args.seed + 1, "guild")

    body = table(n, rs, guild, guild_note) + f"\n\nload average at the end: {_load()}"
    layout = rs_tool.note or "the layout runsmon serve chooses by default"
    title = f"## Time to a full dashboard: {n:,} runs (seed {args.seed})"
    intro = (
        f"`python benchmarks/dashboard.py --runs {n}`: each tool launched as a user would "
        "(a process tree: the tool, TensorBoard (runsmon: in a process of its own; Guild: in "
        "its process) and TensorBoard's data server), then TensorBoard's HParams plugin asked "
        "what the HPARAMS tab asks (`experiment`, then `session_groups` with every hparam and "
        "metric) until every run is listed with a value for each of its `loss` and `acc` "
        "metrics: each poll has the plugin count those rows (`excludeMissingValues` on those "
        "metrics, one row long), and a count that reaches the goal is confirmed by fetching "
        "every row and checking that each has every metric. "
        f"runsmon: {layout}. A run is listed at the time the count that listed it answered, "
        "asked for at the time after `asked at`. Peak RSS "
        "is taken while the plugin is asked as the HPARAMS tab asks it (pages of 100 rows); "
        "beside it, the peak while the benchmark fetched every row at once. Every file of the "
        "runs was read once before each launch (in the page cache, as after a first look). "
        "The machine was "
        "shared: see the load average below the table."
    )
    print()
    print(title)
    print()
    print(body)
    if args.write_results:
        bench.write_results({f"dashboard-{n}": f"{title}\n\n{intro}\n\n{body}"})
        print(f"wrote {os.path.relpath(bench.RESULTS, bench.ROOT)}")
    return 0


def _load() -> str:
    """The 1, 5 and 15 minute load averages (this machine has ``nproc`` cores)."""
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3]) + f" ({os.cpu_count()} cores)"
    return "?"


def bench_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())

"""Run filters and flag-based run names: on real sources and through a real monitor."""

from __future__ import annotations

import datetime
import os
import time

import pytest
import yaml

from runsmon.monitor import RunsMonitor
from runsmon.run import Run
from runsmon.select import (
    Filters,
    RunFilter,
    filtered,
    flags_run_namer,
    parse_since,
    parse_statuses,
)
from runsmon.sources.base import Source
from runsmon.sources.dirs import DirRuns
from runsmon.sources.guild import GuildRuns
from runsmon.testing import Project, write_attr

ECHO = os.path.join(os.path.dirname(__file__), "..", "sample_projects", "hparam-summaries")


def _run(id: str, **kw) -> Run:
    return Run(id=id, dir=f"/runs/{id}", **kw)


def test_parse_since_durations_and_dates():
    now = 1_700_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("30m", now) == now - 1800
    assert parse_since("1.5h", now) == now - 5400
    assert parse_since("2d", now) == now - 2 * 86400
    assert parse_since("1W", now) == now - 7 * 86400
    day = datetime.datetime(2024, 5, 1).timestamp()
    assert parse_since("2024-05-01") == day
    assert parse_since("2024-05-01 13:30") == day + 13.5 * 3600
    assert parse_since("2024-05-01T13:30:15") == day + 13.5 * 3600 + 15
    for bad in ("", "soon", "5 parsecs", "-2h"):
        with pytest.raises(ValueError, match="not a duration or date"):
            parse_since(bad)


def test_parse_statuses():
    assert parse_statuses(["Running, completed", "error,"]) == {"running", "completed", "error"}
    with pytest.raises(ValueError, match="unknown status 'finished'"):
        parse_statuses(["completed,finished"])


def test_filters_each_rule():
    runs = [
        _run("a", operation="train", label="lr=0.1", status="completed", started=100.0),
        _run("b", operation="train", label="lr=0.01", status="error", started=200.0),
        _run("c", operation="prepare", label="", status="running", started=300.0),
        _run("d", operation="mnist:train", label="best", status="completed", started=None),
    ]
    ids = lambda f: [r.id for r in f.apply(runs)]  # noqa: E731
    assert not Filters().active and ids(Filters()) == ["a", "b", "c", "d"]
    # Guild's rule: an operation name matches it in any model (mnist:train)
    assert ids(Filters(operations=("train",))) == ["a", "b", "d"]
    assert ids(Filters(operations=(":train",))) == ["a", "b", "d"]
    assert ids(Filters(operations=("mnist:train",))) == ids(Filters(operations=("^mn",))) == ["d"]
    assert ids(Filters(operations=("*train",))) == ["a", "b", "d"]
    assert ids(Filters(labels=("lr=*",))) == ["a", "b"]
    assert ids(Filters(labels=("best", "lr=0.1"))) == ["a", "d"]
    assert ids(Filters(statuses=frozenset({"completed", "running"}))) == ["a", "c", "d"]
    assert ids(Filters(since=150.0)) == ["b", "c"]  # no start time: left out
    # --limit keeps the newest by start, in the source's order; unknown starts count as oldest
    assert ids(Filters(limit=2)) == ["b", "c"]
    assert ids(Filters(limit=10)) == ["a", "b", "c", "d"]
    assert ids(Filters(statuses=frozenset({"completed"}), limit=1)) == ["a"]
    assert Filters(labels=("x*",), limit=3).describe() == "label x*, newest 3"


def test_run_filter_keeps_the_source_shape(tmp_path):
    source = GuildRuns(str(tmp_path))
    wrapped = filtered(source, Filters(statuses=frozenset({"completed"})))
    assert isinstance(wrapped, RunFilter)
    assert isinstance(wrapped, Source)  # the monitor passes `changed` on
    assert wrapped.knows_roots and wrapped.shares_unchanged
    assert wrapped.roots() == source.roots()
    assert wrapped.reporter is source.reporter
    assert wrapped.describe() == source.describe()
    assert filtered(source, Filters()) is source
    # A plain callable works too (no roots, no changed).
    plain = RunFilter(lambda: [_run("x", status="completed")], Filters(limit=1))
    assert [r.id for r in plain()] == ["x"] and plain.roots() == []
    assert [r.id for r in plain(changed={"/elsewhere"})] == ["x"]
    assert not plain.knows_roots and not plain.shares_unchanged


def test_run_filter_hands_back_the_same_list_while_its_source_does(tmp_path):
    """A filtered source still says "nothing changed" by identity, so a
    watched poll with a filter does not rebuild the monitor's runs."""
    project = Project(ECHO, runs_dir=str(tmp_path / "runs"))
    keep = project.run("echo.py", {"x_flag": 1.0}, label="keep a", quiet=True)
    drop = project.run("echo.py", {"x_flag": 2.0}, label="drop b", quiet=True)
    source = GuildRuns(project.runs_dir)
    wrapped = RunFilter(source, Filters(labels=("keep*",)))
    first = wrapped()
    assert [r.id for r in first] == [keep.id]
    assert wrapped(changed=set()) is first
    assert wrapped(changed={keep.dir}) is first
    # The source has a new list (a run outside the filter changed): the
    # filter's answer holds the very same runs, so it is the same list.
    before = source(changed=set())
    write_attr(drop.dir, "label", "drop c")
    assert wrapped(changed={drop.dir}) is first
    assert source(changed=set()) is not before
    # A run that now matches: a new list.
    write_attr(drop.dir, "label", "keep c")
    second = wrapped(changed={drop.dir})
    assert second is not first and {r.id for r in second} == {keep.id, drop.id}
    assert wrapped() is second


def test_filters_apply_live_in_a_monitor(tmp_path):
    """A label filter through a running monitor: a run whose label changes
    leaves the logdir; a new matching run joins it, without a restart."""
    project = Project(ECHO, runs_dir=str(tmp_path / "runs"))
    keep = project.run("echo.py", {"x_flag": 1.0}, label="keep a", quiet=True)
    project.run("echo.py", {"x_flag": 2.0}, label="drop b", quiet=True)
    source = RunFilter(GuildRuns(project.runs_dir), Filters(labels=("keep*",)))
    logdir = tmp_path / "logdir"
    with RunsMonitor(str(logdir), source, interval=0.2, full_check_interval=0.5) as monitor:
        _wait(lambda: set(monitor.run_names) == {keep.id})
        newer = project.run("echo.py", {"x_flag": 3.0}, label="keep c", quiet=True)
        _wait(lambda: set(monitor.run_names) == {keep.id, newer.id})
        write_attr(keep.dir, "label", "dropped now")
        _wait(lambda: set(monitor.run_names) == {newer.id})
    names = sorted(p for p in os.listdir(logdir) if not p.startswith("."))
    assert len(names) == 1 and names[0].endswith("keep c")


def test_flags_run_namer_names_logdir_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    for name, flags in (("r1", {"lr": 0.1, "opt": {"name": "adam"}}), ("r2", {"lr": 0.01})):
        (runs_dir / name).mkdir(parents=True)
        (runs_dir / name / "flags.yaml").write_text(yaml.safe_dump(flags))
        old = time.time() - 3600
        os.utime(runs_dir / name / "flags.yaml", (old, old))
    monitor = RunsMonitor(
        str(tmp_path / "logdir"),
        DirRuns(str(runs_dir)),
        run_name_cb=flags_run_namer(["opt.name", "lr"]),
        watch=False,
    )
    monitor.run_once()
    names = monitor.run_names
    assert names["r1"].startswith("r1 ") and names["r1"].endswith(" opt.name=adam lr=0.1")
    assert names["r2"].endswith(" lr=0.01")
    assert sorted(os.listdir(tmp_path / "logdir"))[-2:] == sorted(names.values())


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)

"""The source protocol: what the monitor asks of a source, and plain callables as sources."""

from __future__ import annotations

from runsmon.monitor import RunsMonitor
from runsmon.report import Reporter
from runsmon.run import Run
from runsmon.sources.base import CallableSource, CombinedRuns, Source, as_source
from runsmon.sources.guild import GuildRuns


def _run(tmp_path, name: str) -> Run:
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return Run(id=name, dir=str(run_dir), flags={"lr": 0.1}, status="completed")


def test_our_sources_are_sources_as_they_are(tmp_path):
    guild = GuildRuns(str(tmp_path))
    assert as_source(guild) is guild
    combined = CombinedRuns([guild, GuildRuns(str(tmp_path / "other"))])
    assert as_source(combined) is combined
    assert combined.knows_roots and combined.shares_unchanged
    assert combined.roots() == [*guild.roots(), *GuildRuns(str(tmp_path / "other")).roots()]


def test_a_plain_callable_is_called_with_no_argument(tmp_path):
    calls = []
    run = _run(tmp_path, "a")

    def list_runs():
        calls.append(())
        return [run]

    source = as_source(list_runs)
    assert isinstance(source, CallableSource) and isinstance(source, Source)
    assert list(source()) == [run] and list(source(changed={"/x"})) == [run]
    assert len(calls) == 2
    assert source.roots() == [] and not source.knows_roots and not source.shares_unchanged
    assert isinstance(source.reporter, Reporter)
    assert "list_runs" in source.describe()


def test_a_callable_with_some_hooks_keeps_them(tmp_path):
    """An embedder's object with ``roots()`` (and so a ``changed`` argument),
    a reporter and ``shares_unchanged`` but no ``describe`` or ``knows_roots``."""
    run = _run(tmp_path, "a")

    class Listing:
        shares_unchanged = True

        def __init__(self):
            self.reporter = Reporter()
            self.seen = []
            self.runs = [run]

        def roots(self):
            return [str(tmp_path / "runs")]

        def __call__(self, changed=None):
            self.seen.append(changed)
            return self.runs

    listing = Listing()
    source = as_source(listing)
    assert source is not listing  # no knows_roots, no describe: adapted
    assert source.knows_roots and source.shares_unchanged
    assert source.reporter is listing.reporter
    assert source.roots() == [str(tmp_path / "runs")]
    assert source(changed={"/p"}) is listing.runs and source() is listing.runs
    assert listing.seen == [{"/p"}, None]


def test_the_monitor_takes_a_generator_function(tmp_path):
    runs = [_run(tmp_path, "a"), _run(tmp_path, "b")]

    def list_runs():
        yield from runs

    monitor = RunsMonitor(str(tmp_path / "logdir"), list_runs, watch=False)
    assert monitor.list_runs_cb is list_runs
    stats = monitor.run_once()
    assert stats.added == 2 and set(monitor.run_names) == {"a", "b"}
    runs.pop()
    assert monitor.sync_changes(sweep=True).removed == 1
    assert set(monitor.run_names) == {"a"}

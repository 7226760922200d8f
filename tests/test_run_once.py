"""``run_once()`` in a caller's loop: after the first call it costs what changed.

Each change made between two calls must be seen by the next one: a new run,
events appended, a new event directory, a run that ends, flags and labels
changed, a run deleted. Where nothing can be watched exactly, every call is a
full check; each call says which it did (``SyncStats.full``).
"""

from __future__ import annotations

import os
import shutil

import pytest
from test_incremental import (
    CountingFS,
    append,
    finish,
    last_loss,
    make_run,
    monitor_for,
    scalars,
    statuses,
)

from runsmon import DirRuns, GuildRuns, RunsMonitor
from runsmon.testing import write_attr
from runsmon.watch import TreeWatch


@pytest.fixture
def runs(tmp_path) -> str:
    path = tmp_path / "runs"
    path.mkdir()
    return str(path)


def touched(fs: CountingFS, run_dirs: list[str]) -> set[str]:
    """The run directories any filesystem call of the last sync went into."""
    return {d for d in run_dirs if any(p.startswith(d) for p in [*fs.stats, *fs.reads])}


def watching(monitor: RunsMonitor) -> RunsMonitor:
    """The first call (full), then the second (sets the watches, full again)."""
    assert monitor.run_once().full
    assert monitor.run_once().full
    return monitor


def hparams_of(monitor: RunsMonitor, run_id: str) -> dict:
    return next(row["hparams"] for row in monitor.table() if row["run"].id == run_id)


def test_an_unchanged_logdir_costs_nothing_after_the_watches_are_set(tmp_path, runs):
    run_dirs = [make_run(runs, f"{i:032x}", lr=0.1 * (i + 1)) for i in range(8)]
    fs = CountingFS()
    monitor = watching(monitor_for(tmp_path, runs, fs=fs))
    fs.reset()
    stats = monitor.run_once()
    assert not stats.full and stats.checked == 0
    assert touched(fs, run_dirs) == set()  # a full check stats every run's files
    event_file = os.path.join(run_dirs[3], "events.out.tfevents.1.host")
    append(event_file, scalars("loss", [(2, 0.125)]))
    fs.reset()
    stats = monitor.run_once()
    assert not stats.full and stats.checked == 1
    assert touched(fs, run_dirs) == {run_dirs[3]}
    assert last_loss(monitor, f"{3:032x}") == 0.125


def test_every_change_between_two_calls_is_seen_by_the_next(tmp_path, runs):
    ended = make_run(runs, "a" * 32)
    running = make_run(runs, "b" * 32, ended=False)
    doomed = make_run(runs, "c" * 32)
    monitor = watching(monitor_for(tmp_path, runs))
    logdir = tmp_path / "logdir"

    new = make_run(runs, "d" * 32)  # a new run
    stats = monitor.run_once()
    assert not stats.full and "d" * 32 in monitor.run_names
    append(os.path.join(new, "events.out.tfevents.1.host"), scalars("loss", [(2, 0.5)]))
    assert not monitor.run_once().full
    assert last_loss(monitor, "d" * 32) == 0.5  # events appended

    os.makedirs(os.path.join(ended, "val"))  # a new event directory, then its file
    with open(os.path.join(ended, "val", "events.out.tfevents.2.host"), "wb") as f:
        f.write(scalars("loss", [(1, 0.75)], version=True))
    assert not monitor.run_once().full
    assert last_loss(monitor, "a" * 32, "val") == 0.75

    assert statuses(logdir, monitor, "b" * 32) == ["STATUS_RUNNING"]
    finish(running)  # a run ends
    assert not monitor.run_once().full
    assert statuses(logdir, monitor, "b" * 32) == ["STATUS_SUCCESS"]

    write_attr(ended, "flags", {"lr": 0.5, "layers": 3})  # an ended run's flags change
    assert not monitor.run_once().full
    assert hparams_of(monitor, "a" * 32) == {"lr": 0.5, "layers": 3}

    shutil.rmtree(doomed)  # a run deleted
    assert not monitor.run_once().full
    assert "c" * 32 not in monitor.run_names

    # What a full check of the same runs shows, a fresh monitor's first call.
    fresh = RunsMonitor(str(tmp_path / "other"), GuildRuns(runs))
    fresh.run_once()
    assert {(r["run"].id, str(r["metrics"]), str(r["hparams"])) for r in monitor.table()} == {
        (r["run"].id, str(r["metrics"]), str(r["hparams"])) for r in fresh.table()
    }


def test_a_run_nested_deep_in_a_new_directory_of_a_tree(tmp_path):
    tree = tmp_path / "exp"
    tree.mkdir()
    (tree / "lr0.1").mkdir()
    (tree / "lr0.1" / "config.yaml").write_text("lr: 0.1\n")
    monitor = RunsMonitor(str(tmp_path / "logdir"), DirRuns(str(tree)))
    watching(monitor)
    assert len(monitor.run_names) == 1
    (tree / "sweep2").mkdir()
    assert not monitor.run_once().full
    (tree / "sweep2" / "a" / "lr0.3").mkdir(parents=True)
    (tree / "sweep2" / "a" / "lr0.3" / "config.yaml").write_text("lr: 0.3\n")
    assert not monitor.run_once().full
    assert len(monitor.run_names) == 2


def test_without_a_watch_every_call_is_a_full_check(tmp_path, runs):
    make_run(runs, "a" * 32)
    monitor = monitor_for(tmp_path, runs, watch=False)
    assert all(monitor.run_once().full for _ in range(3))
    # A plain callable names no tree to watch.
    source = GuildRuns(runs)
    plain = RunsMonitor(str(tmp_path / "plain"), lambda: source())
    assert all(plain.run_once().full for _ in range(3))
    make_run(runs, "b" * 32)
    assert "b" * 32 in plain.run_names or plain.run_once().full
    assert "b" * 32 in plain.run_names


def test_lost_events_make_one_full_check_and_the_watch_is_set_anew(tmp_path, runs):
    run_dir = make_run(runs, "a" * 32)
    monitor = watching(monitor_for(tmp_path, runs))
    trees = monitor.changes._trees
    assert trees is not None
    trees._lose("the kernel's queue overflowed")  # as an IN_Q_OVERFLOW does
    append(os.path.join(run_dir, "events.out.tfevents.1.host"), scalars("loss", [(2, 0.25)]))
    stats = monitor.run_once()
    assert stats.full and last_loss(monitor, "a" * 32) == 0.25
    assert monitor.changes._trees is not trees and not monitor.run_once().full


def test_a_tree_that_cannot_be_watched_means_full_checks(tmp_path, runs, monkeypatch):
    make_run(runs, "a" * 32)
    monkeypatch.setattr(TreeWatch, "_add", lambda self, top: self._lose("no watches left"))
    monitor = monitor_for(tmp_path, runs)
    assert all(monitor.run_once().full for _ in range(4))


def test_the_daemon_sets_no_tree_watch(tmp_path, runs):
    make_run(runs, "a" * 32)
    monitor = monitor_for(tmp_path, runs)
    assert monitor.sync_changes().full
    assert not monitor.sync_changes().full
    assert monitor.changes._trees is None


def test_a_call_that_did_not_complete_is_followed_by_a_full_check(tmp_path, runs):
    run_dir = make_run(runs, "a" * 32)
    source = GuildRuns(runs)
    failing = {"now": False}

    class Flaky:
        """The source, failing when told (a listing that raises)."""

        def __getattr__(self, name):
            return getattr(source, name)

        def __call__(self, changed=None):
            if failing["now"]:
                raise OSError("the disk went away for a moment")
            return source(changed)

    monitor = watching(RunsMonitor(str(tmp_path / "logdir"), Flaky()))
    append(os.path.join(run_dir, "events.out.tfevents.1.host"), scalars("loss", [(2, 0.25)]))
    failing["now"] = True
    monitor.run_once()  # took the change, then the listing failed
    failing["now"] = False
    assert monitor.run_once().full
    assert last_loss(monitor, "a" * 32) == 0.25


def test_a_run_made_inside_another_runs_directory(tmp_path):
    tree = tmp_path / "exp"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "config.yaml").write_text("lr: 0.1\n")
    monitor = watching(RunsMonitor(str(tmp_path / "logdir"), DirRuns(str(tree))))
    before = set(monitor.run_names)
    (tree / "a" / "b" / "config.yaml").write_text("lr: 0.2\n")  # b becomes a run
    stats = monitor.run_once()
    fresh = RunsMonitor(str(tmp_path / "other"), DirRuns(str(tree)))
    fresh.run_once()
    assert not stats.full
    assert set(monitor.run_names) == set(fresh.run_names) != before


def test_the_tree_watch_follows_new_and_renamed_directories(tmp_path):
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    trees = TreeWatch()
    trees.add_tree(str(top))
    (top / "n" / "m").mkdir(parents=True)  # made before the watch sees it
    assert str(top / "n") in trees.take()[1]
    (top / "n" / "m" / "f").write_text("x")  # watched now, however deep
    assert str(top / "n" / "m" / "f") in trees.take()[0]
    os.rename(top / "n", top / "q")
    changed, entries = trees.take()
    assert {str(top / "n"), str(top / "q")} <= entries
    (top / "q" / "m" / "g").write_text("y")  # reported under its new path
    assert trees.take()[0] == {str(top / "q" / "m" / "g")}
    assert trees.exact
    shutil.rmtree(top)
    trees.take()
    assert not trees.exact  # the top went away: a new one would go unseen
    trees.close()

"""The monitor's incremental paths: only what changed is read, written or re-checked.

Event-level cases (the scanner alone) are in test_events.py; these drive a
RunsMonitor over Guild-layout runs. No timings are asserted.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import pytest
from runs_helpers import session_in

from runsmon import GuildRuns, RunsMonitor
from runsmon import events as ev
from runsmon.changes import Polling
from runsmon.fs import LOCAL, Entry, Stat
from runsmon.monitor import SESSION_FILE
from runsmon.testing import write_attr
from runsmon.watch import Watcher

STARTED = 1_700_000_000


class CountingFS:
    """The local filesystem, counting every call by path; ``hook`` runs before a read."""

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.bytes_read: Counter[str] = Counter()
        self.hook: Callable[[str, int], None] | None = None

    def scandir(self, path: str) -> list[Entry]:
        self.stats[path] += 1
        return LOCAL.scandir(path)

    def stat(self, path: str) -> Stat | None:
        self.stats[path] += 1
        return LOCAL.stat(path)

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        if self.hook is not None:
            self.hook(path, offset)
        data = LOCAL.read_bytes(path, offset, size)
        self.reads[path] += 1
        self.bytes_read[path] += len(data)
        return data

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def local_path(self, path: str) -> str | None:
        return LOCAL.local_path(path)

    def reset(self) -> None:
        self.stats.clear()
        self.reads.clear()
        self.bytes_read.clear()


def scalars(tag: str, points: list[tuple[int, float]], version: bool = False) -> bytes:
    """Framed records of one scalar series (after a file_version record if asked)."""
    return ev.encode_events(
        [ev.scalar_event(tag, value, step, STARTED + step) for step, value in points],
        file_version=version,
        wall_time=STARTED,
    )


def make_run(runs: str, run_id: str, lr: float = 0.1, *, ended: bool = True) -> str:
    """A Guild-layout run with a root event file of ``loss``; running without ``ended``."""
    run_dir = os.path.join(runs, run_id)
    os.makedirs(os.path.join(run_dir, ".guild", "attrs"))
    write_attr(run_dir, "flags", {"lr": lr})
    write_attr(run_dir, "started", STARTED * 1_000_000)
    with open(os.path.join(run_dir, ".guild", "opref"), "w") as f:
        f.write("script:/p '' '' train.py\n")
    with open(os.path.join(run_dir, "events.out.tfevents.1.host"), "wb") as f:
        f.write(scalars("loss", [(0, 1.0), (1, 0.5)], version=True))
    if ended:
        finish(run_dir)
    else:
        with open(os.path.join(run_dir, ".guild", "LOCK"), "w") as f:
            f.write(str(os.getpid()))
    return run_dir


def finish(run_dir: str) -> None:
    """What Guild writes when a run ends."""
    write_attr(run_dir, "exit_status", 0)
    write_attr(run_dir, "stopped", (STARTED + 60) * 1_000_000)
    lock = os.path.join(run_dir, ".guild", "LOCK")
    if os.path.exists(lock):
        os.remove(lock)


def append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def last_loss(monitor: RunsMonitor, run_id: str, group: str = "") -> float | None:
    for row in monitor.table():
        if row["run"].id == run_id:
            return row["metrics"].get(("loss", group))
    return None


def statuses(logdir, monitor: RunsMonitor, run_id: str) -> list[str] | None:
    """The end infos of a run's session in the logdir, as TensorBoard reads them."""
    try:
        return session_in(logdir / monitor.run_dirs[run_id])["statuses"]  # type: ignore[return-value]
    except (KeyError, OSError):
        return None  # not there yet, or a generation going away under the read


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def runs(tmp_path) -> str:
    path = tmp_path / "runs"
    path.mkdir()
    return str(path)


def monitor_for(tmp_path, runs: str, fs=LOCAL, **kwargs) -> RunsMonitor:
    return RunsMonitor(str(tmp_path / "logdir"), GuildRuns(runs, fs=fs), fs=fs, **kwargs)


# -- appended events, growing and truncated files ----------------------------------


def test_appended_events_are_read_once_each(tmp_path, runs):
    run_dir = make_run(runs, "a" * 32)
    event_file = os.path.join(run_dir, "events.out.tfevents.1.host")
    fs = CountingFS()
    monitor = monitor_for(tmp_path, runs, fs=fs)
    monitor.run_once()
    assert last_loss(monitor, "a" * 32) == 0.5
    for step in range(2, 6):
        append(event_file, scalars("loss", [(step, 1.0 / step)]))
        monitor.run_once()
        assert last_loss(monitor, "a" * 32) == pytest.approx(1.0 / step)
    # Every byte was read once: each sync read only what was appended.
    assert fs.bytes_read[event_file] == os.path.getsize(event_file)


def test_a_file_growing_while_it_is_read(tmp_path, runs):
    run_dir = make_run(runs, "b" * 32)
    event_file = os.path.join(run_dir, "events.out.tfevents.1.host")
    fs = CountingFS()
    monitor = monitor_for(tmp_path, runs, fs=fs)
    monitor.run_once()
    append(event_file, scalars("loss", [(2, 0.25)]))
    grown = []

    def grow(path: str, offset: int) -> None:
        # The writer appends one record and half of the next during the read.
        if path == event_file and not grown:
            grown.append(offset)
            record = scalars("loss", [(4, 0.0625)])
            append(event_file, scalars("loss", [(3, 0.125)]) + record[:10])
            grown.append(record[10:])

    fs.hook = grow
    monitor.run_once()
    assert last_loss(monitor, "b" * 32) in (0.25, 0.125)  # what was complete when read
    fs.hook = None
    append(event_file, grown[1])
    monitor.run_once()
    assert last_loss(monitor, "b" * 32) == 0.0625
    assert fs.bytes_read[event_file] <= os.path.getsize(event_file) + 16


@pytest.mark.parametrize("cut", [5, 12, 20])
def test_a_truncated_last_record_is_completed_later(tmp_path, runs, caplog, cut):
    run_dir = make_run(runs, "c" * 32)
    event_file = os.path.join(run_dir, "events.out.tfevents.1.host")
    record = scalars("loss", [(2, 0.25)])
    append(event_file, record[:cut])
    monitor = monitor_for(tmp_path, runs)
    monitor.run_once()
    assert last_loss(monitor, "c" * 32) == 0.5  # the half record waits
    append(event_file, record[cut:])
    monitor.run_once()
    assert last_loss(monitor, "c" * 32) == 0.25
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_event_files_added_to_an_existing_run(tmp_path, runs):
    run_dir = make_run(runs, "d" * 32)
    monitor = monitor_for(tmp_path, runs)
    monitor.run_once()
    name = monitor.run_names["d" * 32]
    os.makedirs(os.path.join(run_dir, "val"))
    val_file = os.path.join(run_dir, "val", "events.out.tfevents.2.host")
    with open(val_file, "wb") as f:
        f.write(scalars("loss", [(0, 2.0), (1, 1.5)], version=True))
    stats = monitor.run_once()
    assert stats.sessions == 0 and stats.rewrites == 0  # the session stays as it is
    link = tmp_path / "logdir" / name / "val" / "events.out.tfevents.2.host"
    assert link.is_symlink() and os.path.realpath(link) == os.path.realpath(val_file)
    assert last_loss(monitor, "d" * 32, "val") == 1.5
    _, metrics = monitor.experiment_columns()
    assert ("loss", "val") in metrics


# -- what a poll costs ------------------------------------------------------------


class FakeFeed(Polling):
    """A change feed that reports what the test tells it (a watcher, minus inotify)."""

    watches = True
    running = True

    def __init__(self) -> None:
        self.reported: set[str] = set()
        self.watched: set[tuple[str, bool]] = set()

    def report(self, path: str) -> None:
        self.reported.add(path)

    def take(self) -> set[str]:
        taken, self.reported = self.reported, set()
        return taken

    def set_watches(self, wanted):
        self.watched = set(wanted)
        return set()


def test_a_watched_sync_rechecks_only_the_changed_run(tmp_path, runs):
    run_dirs = [make_run(runs, f"{i:032x}", lr=0.1 * (i + 1)) for i in range(8)]
    fs = CountingFS()
    monitor = monitor_for(tmp_path, runs, fs=fs)
    monitor.run_once()
    feed = FakeFeed()
    assert monitor.changes.use(feed)
    monitor.sync_changes()  # the first poll: the watches are set
    monitor.sync_changes()  # the next: what changed before they were set is looked at
    assert feed.watched == {(root, False) for root in monitor.source.roots()}  # runs ended
    fs.reset()
    monitor.sync_changes()
    assert sum(fs.stats.values()) == sum(fs.reads.values()) == 0  # nothing changed
    event_file = os.path.join(run_dirs[3], "events.out.tfevents.1.host")
    append(event_file, scalars("loss", [(2, 0.125)]))
    feed.report(event_file)  # as a watcher would report it
    monitor.sync_changes()
    touched = {p for p in [*fs.stats, *fs.reads] if p.startswith(runs)}
    assert touched and all(p.startswith(run_dirs[3]) for p in touched)
    assert last_loss(monitor, f"{3:032x}") == 0.125


def test_manifests_are_written_once_per_new_run_and_never_when_unchanged(tmp_path, runs):
    for i in range(5):
        make_run(runs, f"{i:032x}", lr=0.1 * (i + 1))
    make_run(runs, "f" * 32, ended=False)
    monitor = monitor_for(tmp_path, runs)
    saves: Counter[str] = Counter()
    by_dir: Counter[str] = Counter()
    save = monitor.logdir.save_manifest

    def counting(manifest) -> None:
        saves[manifest.run_id] += 1
        by_dir[manifest.name] += 1
        save(manifest)

    monitor.logdir.save_manifest = counting  # type: ignore[method-assign]
    stats = monitor.run_once()
    assert stats.sessions == 6 and stats.ended == 5
    assert set(saves.values()) == {1} and len(saves) == 6
    saves.clear()
    stats = monitor.run_once()
    assert (stats.sessions, stats.ended, stats.experiment_written) == (0, 0, False)
    assert not saves
    by_dir.clear()
    name = monitor.run_names["f" * 32]
    finish(os.path.join(runs, "f" * 32))
    stats = monitor.run_once()
    assert (stats.ended, stats.rewrites) == (1, 1)
    # It was shown running: its end is a new generation, whose manifest is
    # saved before anything goes in and once it is whole; the old one never.
    assert dict(saves) == {"f" * 32: 2} and dict(by_dir) == {name + "~": 2}


def test_a_restarted_monitor_makes_links_it_announced_but_never_made(tmp_path, runs):
    make_run(runs, "e" * 32)
    monitor = monitor_for(tmp_path, runs)
    monitor.run_once()
    name = monitor.run_names["e" * 32]
    link = tmp_path / "logdir" / name / "events.out.tfevents.1.host"
    link.unlink()  # a kill between the manifest and the link
    again = monitor_for(tmp_path, runs)
    assert again.run_once().sessions == 0
    assert link.is_symlink()


# -- the watcher, and the safety net behind it ---------------------------------------


def test_a_running_monitor_follows_new_and_ending_runs_by_its_watches(tmp_path, runs):
    make_run(runs, "1" * 32)
    logdir = tmp_path / "logdir"
    # No full check during the test: what happens comes from the watches.
    with monitor_for(tmp_path, runs, interval=30, full_check_interval=3600) as monitor:
        assert wait_for(lambda: "1" * 32 in monitor.run_names)
        run_dir = make_run(runs, "2" * 32, ended=False)
        assert wait_for(
            lambda: (logdir / monitor.run_names.get("2" * 32, "?") / SESSION_FILE).exists()
        )
        assert statuses(logdir, monitor, "2" * 32) == ["STATUS_RUNNING"]
        finish(run_dir)
        assert wait_for(lambda: statuses(logdir, monitor, "2" * 32) == ["STATUS_SUCCESS"])


def test_changes_the_watcher_missed_are_caught_by_the_full_check(tmp_path, runs, monkeypatch):
    run_dir = make_run(runs, "3" * 32, ended=False)
    monkeypatch.setattr(Watcher, "take", lambda self: set())  # inotify loses every event
    logdir = tmp_path / "logdir"
    with monitor_for(tmp_path, runs, interval=0.1, full_check_interval=0.5) as monitor:
        assert wait_for(lambda: "3" * 32 in monitor.run_names)
        append(os.path.join(run_dir, "events.out.tfevents.1.host"), scalars("loss", [(2, 0.125)]))
        finish(run_dir)
        make_run(runs, "4" * 32)
        assert wait_for(lambda: statuses(logdir, monitor, "3" * 32) == ["STATUS_SUCCESS"])
        assert wait_for(lambda: last_loss(monitor, "3" * 32) == 0.125)
        assert wait_for(lambda: "4" * 32 in monitor.run_names)


def test_the_safety_net_is_spread_over_the_polls_of_a_round(tmp_path, runs):
    """Each timed poll re-checks 1/k of the runs; a round covers them all and
    catches what no watcher reported (here: an ended run's file grew)."""
    run_dirs = [make_run(runs, f"{i:032x}", lr=0.1 * (i + 1)) for i in range(12)]
    fs = CountingFS()
    # 4 polls to a round (full_check_interval / interval): 3 runs a poll.
    monitor = monitor_for(tmp_path, runs, fs=fs, interval=1.0, full_check_interval=4.0)
    monitor.run_once()
    append(os.path.join(run_dirs[7], "events.out.tfevents.1.host"), scalars("loss", [(2, 0.25)]))
    seen: list[set[str]] = []
    for _ in range(5):  # the roots listed again, then four shares of the runs
        fs.reset()
        monitor.sync_changes(sweep=True)
        seen.append({d for d in run_dirs if any(p.startswith(d) for p in fs.stats)})
    assert seen[0] == set()
    assert [len(s) for s in seen[1:]] == [3, 3, 3, 3]
    assert set().union(*seen) == set(run_dirs)
    assert last_loss(monitor, f"{7:032x}") == 0.25
    fs.reset()
    monitor.sync_changes(sweep=False)  # between timed polls: only the roots (nothing watched)
    assert not [p for p in [*fs.stats, *fs.reads] if p.startswith(tuple(run_dirs))]


def test_a_poll_lists_a_root_again_only_once_its_mtime_moved(tmp_path, runs):
    for i in range(3):
        make_run(runs, f"{i:032x}")
    monitor = monitor_for(tmp_path, runs)  # not started: nothing watched
    source = monitor.list_runs_cb
    listings = Counter()
    list_run_dirs = source.list_run_dirs

    def counting() -> list[str]:
        listings["n"] += 1
        return list_run_dirs()

    source.list_run_dirs = counting
    monitor.run_once()
    # Just listed: an mtime this recent proves nothing (same clock tick).
    monitor.sync_changes(sweep=False)
    assert listings["n"] == 2
    old = time.time() - 30
    os.utime(runs, (old, old))
    monitor.run_once()
    listings.clear()
    for _ in range(3):
        monitor.sync_changes(sweep=False)
    assert listings["n"] == 0  # the root's mtime held: no listing
    make_run(runs, "9" * 32)  # a new entry moves the root's mtime
    monitor.sync_changes(sweep=False)
    assert listings["n"] == 1 and "9" * 32 in monitor.run_names
    source.relist_after = 0.0  # past relist_after, listed whatever the mtime says
    os.utime(runs, (old, old))
    monitor.run_once()
    listings.clear()
    monitor.sync_changes(sweep=False)
    assert listings["n"] == 1


def test_an_unwatched_tree_is_rechecked_every_poll(tmp_path, runs, monkeypatch):
    run_dir = make_run(runs, "5" * 32, ended=False)
    # Nothing can be watched (e.g. a network filesystem): every poll re-checks
    # the roots and the runs that have not ended.
    monkeypatch.setattr(Watcher, "set_watches", lambda self, wanted: set(wanted))
    with monitor_for(tmp_path, runs, interval=0.1, full_check_interval=3600) as monitor:
        assert wait_for(lambda: "5" * 32 in monitor.run_names)
        finish(run_dir)
        logdir = tmp_path / "logdir"
        assert wait_for(lambda: statuses(logdir, monitor, "5" * 32) == ["STATUS_SUCCESS"])

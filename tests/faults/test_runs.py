"""Runs that go away, move, repeat or collide, and callbacks that fail."""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Any

from faults.conftest import FAULT_ID, GOOD, Faults
from runsmon import Run
from runsmon.naming import MAX_NAME_BYTES


class _MidSync:
    """A source that does something to the tree after listing, before the monitor reads."""

    def __init__(self, faults: Faults, action: Any) -> None:
        self.inner = faults.source()
        self.action = action
        self.calls = 0

    def __call__(self) -> list[Run]:
        runs = list(self.inner())
        self.calls += 1
        if self.calls == 1:
            self.action()
        return runs


def test_a_run_directory_deleted_mid_sync(faults: Faults) -> None:
    faults.add()
    faults.snapshot()
    source = _MidSync(faults, lambda: shutil.rmtree(faults.fault_dir))
    faults.sync(faults.monitor(source))
    faults.before = {k: v for k, v in faults.before.items() if not k.startswith(FAULT_ID)}
    faults.check(warn=None, shown=False)


def test_a_run_directory_renamed_mid_sync(faults: Faults) -> None:
    faults.add()
    faults.snapshot()
    new_id = "0e110e110e110e110e110e110e110e11"
    source = _MidSync(faults, lambda: os.rename(faults.fault_dir, faults.runs_dir / new_id))
    faults.sync(faults.monitor(source))
    names = faults.check(warn=None, shown=False, unchanged=False)
    assert new_id in names


def test_a_run_listed_twice(faults: Faults) -> None:
    faults.add()
    inner = faults.source()

    def twice() -> list[Run]:
        runs = inner()
        return runs + [r for r in runs if r.id == FAULT_ID]

    faults.sync(faults.monitor(twice))
    faults.check(warn="listed twice", shown=True)


def test_two_runs_whose_names_collide(faults: Faults) -> None:
    # Same first 8 hex digits, operation, start time and label: the same name.
    twin = FAULT_ID[:8] + "0" * 24
    faults.add(label="same")
    from guild_fake import make_guild_run

    make_guild_run(faults.runs_dir, twin, label="same")
    faults.sync()
    names = faults.check(warn=None, shown=True)
    assert names[twin] != names[FAULT_ID]
    assert names[twin].startswith(names[FAULT_ID]) or names[FAULT_ID].startswith(names[twin])


def test_a_run_name_of_300_characters(faults: Faults) -> None:
    faults.add(label="é" * 300)
    monitor = faults.sync()
    names = faults.check(warn=None, shown=True)
    assert len(names[FAULT_ID].encode()) <= MAX_NAME_BYTES
    assert monitor.run_names[FAULT_ID] == names[FAULT_ID]


def test_a_run_name_callback_of_300_characters(faults: Faults) -> None:
    faults.add()
    faults.sync(faults.monitor(run_name_cb=lambda run: run.id + "/x" * 150))
    names = faults.check(warn=None, shown=True)
    assert all(len(n.encode()) <= MAX_NAME_BYTES and "/" not in n for n in names.values())


def test_a_run_name_callback_that_raises(faults: Faults) -> None:
    faults.add()

    def name(run: Run) -> str:
        if run.id == FAULT_ID:
            raise KeyError("no such flag")
        return run.id

    faults.sync(faults.monitor(run_name_cb=name))
    faults.check(warn="cannot name it", shown=False)


def test_the_runs_directory_disappears_and_comes_back(faults: Faults) -> None:
    faults.add()
    faults.snapshot()
    monitor = faults.sync()
    away = faults.tmp_path / "away"
    os.rename(faults.runs_dir, away)
    faults.sync(monitor)
    assert set(monitor.run_names) == set()  # gone is gone
    os.rename(away, faults.runs_dir)
    faults.sync(monitor)
    faults.check(warn="cannot list", shown=True, subject=str(faults.runs_dir))


def test_a_callback_that_raises(faults: Faults) -> None:
    faults.add()
    inner = faults.source()
    calls = []

    def flaky() -> list[Run]:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("database is locked")
        return inner()

    faults.sync(faults.monitor(flaky))
    faults.check(warn="run listing failed: database is locked", shown=True, subject=None)


def test_a_callback_that_hangs(faults: Faults) -> None:
    faults.add()
    inner = faults.source()
    release = threading.Event()
    calls = []

    def stuck() -> list[Run]:
        calls.append(1)
        if len(calls) == 2:
            release.wait(30)
        return inner()

    monitor = faults.monitor(stuck, callback_timeout=0.3)
    t0 = time.monotonic()
    faults.sync(monitor)
    assert time.monotonic() - t0 < 10  # time-limited: the monitor went on
    faults.check(warn="did not answer within", shown=True, subject=None)
    release.set()
    time.sleep(0.1)
    monitor.run_once()
    assert set(monitor.run_names) == {*GOOD, FAULT_ID}


def test_a_run_whose_process_was_killed_is_seen_without_a_file_changing(faults: Faults) -> None:
    """kill -9 leaves Guild's LOCK behind: the status moves with no file event."""
    import subprocess
    import sys

    from guild_fake import end_status_of, logdir_runs

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        faults.add(status="running")
        (faults.fault_dir / ".guild" / "LOCK").write_text(str(proc.pid))
        faults.snapshot()
        # Watched, with no full check in sight: only the watcher or a poll can tell.
        monitor = faults.monitor(interval=0.1, watch=True, full_check_interval=3600)
        with monitor:
            deadline = time.monotonic() + 10
            while FAULT_ID not in logdir_runs(faults.logdir):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            run_logdir = faults.logdir / logdir_runs(faults.logdir)[FAULT_ID]
            assert end_status_of(run_logdir) == "STATUS_RUNNING"  # Guild's LOCK says so
            proc.kill()
            proc.wait()
            deadline = time.monotonic() + 10
            while end_status_of(faults.logdir / monitor.run_dirs[FAULT_ID]) != "STATUS_FAILURE":
                assert time.monotonic() < deadline, "the dead run still shows as running"
                time.sleep(0.05)
            assert not run_logdir.exists()  # its session was rewritten in a new directory
    finally:
        proc.kill()
        proc.wait()
    faults.check(warn=None, shown=True)

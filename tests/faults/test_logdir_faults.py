"""The logdir under attack: deleted, read-only, full."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import time
from typing import Any

import pytest
from guild_fake import logdir_runs, session_of

import runsmon.logdir
from faults.conftest import FAULT_ID, GOOD, Faults, permissions_enforced
from runsmon.logdir import TMP_PREFIX


def _wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:  # caught mid-write: look again
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _complete(path: str) -> bool:
    """Whether every record of an event file is whole."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        pos += length + 16
    return pos == len(data)


def _all_complete(logdir: str) -> None:
    for dirpath, _dirs, files in os.walk(logdir):
        for name in files:
            path = os.path.join(dirpath, name)
            assert not name.startswith(TMP_PREFIX), path
            if "tfevents" in name and not os.path.islink(path):
                assert _complete(path), f"half-written: {path}"


def test_logdir_deleted_while_the_daemon_runs(faults: Faults, no_thread_left) -> None:
    faults.add()
    faults.snapshot()
    monitor = faults.monitor(interval=0.1)
    with monitor:
        _wait(lambda: len(logdir_runs(faults.logdir)) == 3)
        shutil.rmtree(faults.logdir)
        _wait(
            lambda: (
                os.path.isdir(faults.logdir)
                and len(logdir_runs(faults.logdir)) == 3
                and all(session_of(faults.logdir / n) for n in logdir_runs(faults.logdir).values())
                and len([d for d in os.listdir(faults.logdir) if d.startswith(".runsmon-exp")]) == 1
            )
        )
    faults.check(warn=None, shown=True)


def test_logdir_made_read_only(faults: Faults) -> None:
    monitor = faults.sync()
    faults.add()
    faults.snapshot()
    os.chmod(faults.logdir, 0o555)
    try:
        with permissions_enforced():
            faults.sync(monitor)
    finally:
        os.chmod(faults.logdir, 0o755)
    assert FAULT_ID not in logdir_runs(faults.logdir)
    faults.sync(monitor)  # writable again: retried
    faults.check(warn="permission denied", shown=True)


def test_run_directory_made_read_only(faults: Faults) -> None:
    from guild_fake import end_status_of, write_attr

    faults.add(status="running")
    monitor = faults.sync()
    run_logdir = faults.logdir / logdir_runs(faults.logdir)[FAULT_ID]
    assert end_status_of(run_logdir) == "STATUS_RUNNING"
    os.remove(faults.fault_dir / ".guild" / "LOCK")  # the run ends
    write_attr(faults.fault_dir, "exit_status", 0)
    write_attr(faults.fault_dir, "stopped", 1_700_000_100_000_000)
    faults.snapshot()
    os.chmod(run_logdir, 0o555)
    try:
        with permissions_enforced():
            faults.sync(monitor)
        # Its end is a new generation beside it; the old one cannot go yet.
        twin = faults.logdir / monitor.run_dirs[FAULT_ID]
        assert twin != run_logdir and end_status_of(twin) == "STATUS_SUCCESS"
        assert end_status_of(run_logdir) == "STATUS_RUNNING"
    finally:
        os.chmod(run_logdir, 0o755)
    faults.sync(monitor)
    faults.check(warn="permission denied", shown=True)
    assert not run_logdir.exists()  # tried again until it went
    assert end_status_of(twin) == "STATUS_SUCCESS"


class _FullDisk:
    """Writes to files in the logdir write half of what they are given, then
    fail with ENOSPC (what a full disk does to ``os.write``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, logdir: str) -> None:
        self.failures = 0
        real = os.write

        def write(fd: int, data: Any) -> int:
            try:
                where = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                where = ""
            if not where.startswith(logdir):
                return real(fd, data)
            real(fd, bytes(data[: len(data) // 2]))
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(runsmon.logdir.os, "write", write)


def test_disk_full(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = faults.sync()
    faults.add(flags={"lr": 0.1, "opt": "adam"})  # no new column: no new experiment
    faults.snapshot()
    with monkeypatch.context() as m:
        disk = _FullDisk(m, os.path.realpath(faults.logdir))
        faults.sync(monitor)
        assert disk.failures > 0
        _all_complete(str(faults.logdir))
        assert FAULT_ID not in logdir_runs(faults.logdir) or not session_of(
            faults.logdir / logdir_runs(faults.logdir)[FAULT_ID]
        )
    faults.sync(monitor)  # space again
    _all_complete(str(faults.logdir))
    faults.check(warn="no space left on device", shown=True, hparams={"lr": 0.1, "opt": "adam"})
    assert set(logdir_runs(faults.logdir)) == {*GOOD, FAULT_ID}


def test_disk_full_for_a_new_experiment(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = faults.sync()
    experiments = sorted(d for d in os.listdir(faults.logdir) if d.startswith(".runsmon-exp"))
    faults.add(flags={"lr": 0.5, "new_flag": 3})  # a new column: a new experiment
    faults.snapshot()
    with monkeypatch.context() as m:
        _FullDisk(m, os.path.realpath(faults.logdir))
        faults.sync(monitor)
        # The old experiment stays until a new one is whole.
        now = sorted(d for d in os.listdir(faults.logdir) if d.startswith(".runsmon-exp"))
        assert experiments[0] in now
        _all_complete(str(faults.logdir))
    faults.sync(monitor)
    now = [d for d in os.listdir(faults.logdir) if d.startswith(".runsmon-exp")]
    assert len(now) == 1 and now != experiments
    # Two lines: the run that could not be written, and the experiment.
    warnings = faults.warnings()
    assert len(warnings) == 2 and all("no space left" in w for w in warnings), warnings
    faults.caplog.clear()
    faults.check(warn=None, shown=True)

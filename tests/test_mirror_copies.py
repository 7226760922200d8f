"""Copies where links are impossible: appended from the copy's end, rewrites noticed."""

from __future__ import annotations

import os
import pathlib

import pytest

from runsmon.monitor import RunsMonitor
from runsmon.sources import detect_source
from runsmon.testing import make_guild_run, read_events, write_event_file


@pytest.fixture
def no_symlinks(monkeypatch):
    """A logdir on a filesystem without symlinks (some network and FAT mounts)."""

    def refuse(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)


def test_copies_grow_by_appends_and_a_rewrite_is_copied_anew(tmp_path, no_symlinks):
    run_dir = make_guild_run(tmp_path / "runs", "r1", {"lr": 0.1})
    local = write_event_file(os.path.join(run_dir, "train"), {"loss": [(0, 1.0)]}, "ev.tfevents")
    monitor = RunsMonitor(str(tmp_path / "logdir"), detect_source(str(tmp_path / "runs")))
    monitor.run_once()

    def copy() -> pathlib.Path:
        return tmp_path / "logdir" / monitor.run_dirs["r1"] / "train" / "ev.tfevents"

    assert not copy().is_symlink()
    assert copy().read_bytes() == pathlib.Path(local).read_bytes()

    write_event_file(os.path.dirname(local), {"loss": [(1, 0.5)]}, "ev.tfevents", "ab")
    monitor.run_once()
    assert copy().read_bytes() == pathlib.Path(local).read_bytes()
    assert [e.step for e in read_events(copy()) if e.summary.value] == [0, 1]

    # Written again from scratch, as long as before: other bytes, same size.
    size = os.path.getsize(local)
    write_event_file(os.path.dirname(local), {"loss": [(0, 3.0), (1, 2.0)]}, "ev.tfevents")
    assert os.path.getsize(local) == size
    os.utime(local, ns=(os.stat(local).st_atime_ns, os.stat(local).st_mtime_ns + 10**9))
    monitor.run_once()
    monitor.run_once()
    assert copy().read_bytes() == pathlib.Path(local).read_bytes()
    assert monitor.table()[0]["metrics"][("loss", "train")] == pytest.approx(2.0)
    dirs = [d for d in os.listdir(tmp_path / "logdir") if d.startswith("r1")]
    assert dirs == [monitor.run_dirs["r1"]]  # the old directory gone: one row

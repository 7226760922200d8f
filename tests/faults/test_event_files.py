"""Bad event files in a run: shown with what could be read, each problem warned once."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest
from guild_fake import write_event_file

from faults.conftest import FAULT_ID, Faults
from runsmon import events
from runsmon.monitor import RunsMonitor

LOSSES = [(i, 1.0 / (i + 1)) for i in range(10)]


def _event_file(faults: Faults, points=LOSSES) -> Path:
    """The faulty run (without scalars of Guild's) and one event file at its root."""
    run_dir = faults.add(scalars={})
    return Path(write_event_file(run_dir, {"loss": points}, name="events.out.tfevents.1.host"))


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, frame size) of each record."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, length + 16))
        pos += length + 16
    return out


def _last_loss(monitor: RunsMonitor) -> float | None:
    for row in monitor.table():
        if row["run"].id == FAULT_ID:
            return row["metrics"].get(("loss", ""))
    return None


def _linked(faults: Faults, names: dict[str, str]) -> list[str]:
    run_logdir = faults.logdir / names[FAULT_ID]
    return sorted(p.name for p in run_logdir.iterdir() if p.is_symlink())


def test_zero_byte_event_file(faults: Faults) -> None:
    run_dir = faults.add(scalars={})
    (run_dir / "events.out.tfevents.1.host").write_bytes(b"")
    monitor = faults.sync()
    faults.check(warn=None, shown=True)
    assert _last_loss(monitor) is None


def test_cut_mid_header(faults: Faults) -> None:
    path = _event_file(faults)
    offset, _ = _records(path)[5]
    path.write_bytes(path.read_bytes()[: offset + 7])
    monitor = faults.sync()
    faults.check(warn=None, shown=True)  # a writer may be in the middle of it
    assert _last_loss(monitor) == pytest.approx(LOSSES[3][1])


def test_cut_mid_record(faults: Faults) -> None:
    path = _event_file(faults)
    offset, frame = _records(path)[5]
    path.write_bytes(path.read_bytes()[: offset + frame - 3])
    monitor = faults.sync()
    faults.check(warn=None, shown=True)
    assert _last_loss(monitor) == pytest.approx(LOSSES[3][1])


def test_bad_length_checksum(faults: Faults) -> None:
    path = _event_file(faults)
    offset, _ = _records(path)[4]
    data = bytearray(path.read_bytes())
    data[offset + 9] ^= 0xFF
    path.write_bytes(bytes(data))
    monitor = faults.sync()
    faults.check(warn="bad length checksum", shown=True)
    assert _last_loss(monitor) == pytest.approx(LOSSES[2][1])


def test_bad_data_checksum(faults: Faults) -> None:
    path = _event_file(faults)
    offset, frame = _records(path)[4]
    data = bytearray(path.read_bytes())
    data[offset + frame - 2] ^= 0xFF
    path.write_bytes(bytes(data))
    monitor = faults.sync()
    faults.check(warn="bad data checksum", shown=True)
    assert _last_loss(monitor) == pytest.approx(LOSSES[-1][1])  # only that record is lost


def test_garbage_bytes(faults: Faults) -> None:
    run_dir = faults.add(scalars={})
    (run_dir / "events.out.tfevents.1.host").write_bytes(bytes(range(256)) * 64)
    faults.sync()
    faults.check(warn="bad length checksum", shown=True)


def test_a_record_that_is_not_an_event(faults: Faults) -> None:
    path = _event_file(faults)
    with open(path, "ab") as f:
        f.write(events.encode_record(b"\xff\xff\xff\xff not a protobuf"))
    monitor = faults.sync()
    faults.check(warn="is not an Event", shown=True)
    assert _last_loss(monitor) == pytest.approx(LOSSES[-1][1])


def test_a_file_that_grows_while_read(faults: Faults) -> None:
    path = _event_file(faults, points=[(0, 5.0)])
    faults.snapshot()
    monitor = faults.monitor()
    done = threading.Event()

    def grow() -> None:
        step = 1
        while not done.is_set():
            write_event_file(path.parent, {"loss": [(step, float(step))]}, path.name, mode="ab")
            step += 1
        write_event_file(path.parent, {"loss": [(step, -1.0)]}, path.name, mode="ab")

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            monitor.run_once()
    finally:
        done.set()
        writer.join()
    faults.sync(monitor, polls=2)
    faults.check(warn=None, shown=True, unchanged=False)
    assert _last_loss(monitor) == pytest.approx(-1.0)


def test_a_file_replaced_by_a_shorter_one(faults: Faults) -> None:
    path = _event_file(faults)
    faults.snapshot()
    monitor = faults.sync()
    assert _last_loss(monitor) == pytest.approx(LOSSES[-1][1])
    os.remove(path)
    write_event_file(path.parent, {"loss": [(0, 42.0)]}, path.name)
    faults.snapshot()
    faults.sync(monitor)
    faults.check(warn=None, shown=True)
    assert _last_loss(monitor) == pytest.approx(42.0)


def test_a_symlink_loop_under_the_run(faults: Faults) -> None:
    run_dir = faults.add()
    os.symlink("loop", run_dir / "loop")
    os.symlink(run_dir / "b", run_dir / "a")
    os.symlink(run_dir / "a", run_dir / "b")
    os.symlink(run_dir, run_dir / "self")
    faults.sync()
    names = faults.check(warn=None, shown=True)
    assert len(_linked(faults, names)) == 1  # Guild's own scalars only


def test_an_event_file_that_is_a_directory(faults: Faults) -> None:
    run_dir = faults.add()
    (run_dir / "events.out.tfevents.2.host").mkdir()
    faults.sync()
    faults.check(warn=None, shown=True)


def test_a_fifo_named_like_an_event_file(faults: Faults) -> None:
    run_dir = faults.add()
    os.mkfifo(run_dir / "events.out.tfevents.3.host")
    faults.sync()
    names = faults.check(warn="not a regular file", shown=True)
    # TensorBoard would block reading a FIFO: it is never linked.
    assert "events.out.tfevents.3.host" not in _linked(faults, names)

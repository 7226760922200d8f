"""``runsmon serve --export-scalars``: every scalar point of the runs as CSV.

The columns are Guild's (``guild tensorboard --export-scalars``): ``run`` (the
run's id), ``path`` (the event file's directory relative to the run, ``.``
for the run's own), ``tag``, ``value``, ``step``; then ``wall_time``
(seconds since the epoch), which Guild leaves out.  The event files are the
ones the monitor shows (:class:`runsmon.runfiles.RunFiles`: Guild's
``.guild`` output scalars, no nested runs, no symlinked directories), and a
tag is a scalar when runsmon's scanner takes it for one.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Iterator, Sequence
from typing import TextIO

from tensorboard.compat.proto import event_pb2

from runsmon.events import scalar_value, split_records
from runsmon.fs import LOCAL, FileSystem
from runsmon.guildselect import newest_first
from runsmon.run import Run
from runsmon.runfiles import RunFiles

COLUMNS = ("run", "path", "tag", "value", "step", "wall_time")
_CHUNK = 1 << 20


def scalar_rows(
    run: Run, fs: FileSystem = LOCAL
) -> Iterator[tuple[str, str, str, float, int, float]]:
    """(run, path, tag, value, step, wall_time) of every scalar point of ``run``,
    file by file (the run's own directory first), in each file's order."""
    files = RunFiles(run.dir, fs, exclude=run.nested, images=False)
    files.refresh()
    root = run.dir.rstrip("/")
    entries = []
    for path, entry in files.files.items():
        if path in files.errors:
            continue
        rel = posixpath.relpath(posixpath.dirname(path), root)
        entries.append((rel != ".", rel, path, entry.scan.scalar_tags))
    for _, rel, path, tags in sorted(entries):
        if not tags:
            continue
        for event in _events(fs, path):
            for value in event.summary.value:
                if value.tag in tags:
                    number = scalar_value(value)
                    if number is not None:
                        yield (run.id, rel, value.tag, number, event.step, event.wall_time)


def _events(fs: FileSystem, path: str) -> Iterator[event_pb2.Event]:
    offset = 0
    buf = b""
    while True:
        try:
            chunk = fs.read_bytes(path, offset, _CHUNK)
        except OSError:
            return
        if not chunk:
            return
        offset += len(chunk)
        buf += chunk
        split = split_records(buf)
        for data in split.records:
            event = event_pb2.Event()
            try:
                event.ParseFromString(data)
            except Exception:  # noqa: BLE001 - a bad record is skipped, as the scanner does
                continue
            if event.HasField("summary"):
                yield event
        if split.framing_lost:
            return
        buf = buf[split.end :]


def export_scalars(runs: Sequence[Run], out: TextIO, fs: FileSystem = LOCAL) -> int:
    """Write the CSV for ``runs`` (newest first, as Guild lists them); returns the row count."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    for run in newest_first(runs):
        for row in scalar_rows(run, fs):
            writer.writerow(row)
            count += 1
    return count

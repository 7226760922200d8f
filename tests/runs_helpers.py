"""Writing runs for tests: real event files, as TensorBoard's writer makes them."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

Point = tuple[int, float]  # (step, value)


def write_scalars(
    directory: str | os.PathLike[str], scalars: Mapping[str, Sequence[Point]], suffix: str = ""
) -> str:
    """Write one event file of scalars into ``directory``; returns its path."""
    os.makedirs(directory, exist_ok=True)
    writer = EventFileWriter(str(directory), filename_suffix=suffix)
    wall = time.time()
    for tag, points in scalars.items():
        for step, value in points:
            summary = summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]
            )
            writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=summary))
    writer.close()
    return _newest_event_file(str(directory))


def _newest_event_file(directory: str) -> str:
    files = [f for f in os.listdir(directory) if "tfevents" in f]
    return os.path.join(
        directory, max(files, key=lambda f: os.path.getmtime(os.path.join(directory, f)))
    )

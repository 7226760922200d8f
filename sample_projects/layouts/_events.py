"""Writing real TensorBoard event files for the samples."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

#: A fixed start time (2024-01-02 03:04:05 UTC) so samples are reproducible.
T0 = 1704164645.0


def scalar_summary(tag: str, value: float) -> summary_pb2.Summary:
    """A ``simple_value`` scalar summary."""
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])


def write_events(
    logdir: str,
    scalars: Mapping[str, Sequence[float]],
    start: float = T0,
    step_secs: float = 10.0,
    summaries: Iterable[summary_pb2.Summary] = (),
    suffix: str = "",
) -> str:
    """Write one event file in ``logdir``: each tag's values at steps 0, 1, ...

    ``summaries`` (e.g. hparams plugin summaries) come first, at step 0.  The
    file is named with ``start`` as its creation time, as TensorBoard's writer
    names it, and its mtime is set to the last point's wall time.  Returns its
    path.
    """
    os.makedirs(logdir, exist_ok=True)
    writer = EventFileWriter(logdir, filename_suffix=suffix)
    written = writer._file_name  # the writer names the file after the clock
    for summary in summaries:
        writer.add_event(event_pb2.Event(wall_time=start, step=0, summary=summary))
    last = start
    steps = max((len(v) for v in scalars.values()), default=0)
    for step in range(steps):
        last = start + step * step_secs
        for tag, values in scalars.items():
            if step < len(values):
                writer.add_event(
                    event_pb2.Event(
                        wall_time=last, step=step, summary=scalar_summary(tag, values[step])
                    )
                )
    writer.close()
    name = re.sub(
        r"tfevents\.\d+", f"tfevents.{int(start):010d}", os.path.basename(written), count=1
    )
    path = os.path.join(logdir, name)
    os.replace(written, path)
    os.utime(path, (last, last))
    return path


def write_text(path: str, text: str, mtime: float | None = None) -> str:
    """Write a text file (making its directory); optionally set its mtime."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path

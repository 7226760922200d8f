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


def session_in(run_dir: str | os.PathLike[str]) -> dict[str, object]:
    """What runsmon's own files in a logdir run directory say, as TensorBoard reads it:
    ``group`` and ``hparams`` of the first start info, ``statuses`` of every end
    info in file-name order (TensorBoard keeps the first), ``files`` read."""
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata as hp_metadata

    from runsmon import events

    out: dict[str, object] = {"group": None, "hparams": None, "statuses": [], "files": []}
    statuses: list[str] = []
    names = sorted(n for n in os.listdir(run_dir) if "runsmon" in n and "tfevents" in n)
    for name in names:
        with open(os.path.join(run_dir, name), "rb") as f:
            split = events.split_records(f.read())
        out["files"].append(name)  # type: ignore[union-attr]
        for record in split.records:
            event = event_pb2.Event.FromString(bytes(record))
            for value in event.summary.value:
                if value.tag == hp_metadata.SESSION_START_INFO_TAG and out["group"] is None:
                    data = value.metadata.plugin_data.content
                    info = hp_metadata.parse_session_start_info_plugin_data(data)
                    out["group"] = info.group_name
                    out["hparams"] = {
                        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                        for k, v in info.hparams.items()
                    }
                elif value.tag == hp_metadata.SESSION_END_INFO_TAG:
                    data = value.metadata.plugin_data.content
                    info = hp_metadata.parse_session_end_info_plugin_data(data)
                    statuses.append(api_pb2.Status.Name(info.status))
    out["statuses"] = statuses
    return out

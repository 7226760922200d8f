"""Guild-layout runs written straight to disk (no scripts run), and logdir readers.

``make_guild_run`` lays a run out as Guild 0.9 does (``.guild/attrs/*`` YAML,
``.guild/opref``, ``LOCK`` with a pid while running, scalars in
``.guild/events.out.tfevents.*``), fast enough to make thousands of runs.
Event files are framed with TensorBoard's own ``RecordWriter``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

from runsmon import events
from runsmon.testing import encode_yaml, read_events

Points = Sequence[tuple[int, float]]

_STATUS_EXIT = {"completed": 0, "error": 1, "terminated": -15}


def event_bytes(scalars: Mapping[str, Points], wall_time: float | None = None) -> list[bytes]:
    """Serialized events: a file_version event, then one event per scalar point."""
    wall = time.time() if wall_time is None else wall_time
    out = [event_pb2.Event(wall_time=wall, file_version="brain.Event:2").SerializeToString()]
    for tag, points in scalars.items():
        for step, value in points:
            summary = summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]
            )
            event = event_pb2.Event(wall_time=wall, step=step, summary=summary)
            out.append(event.SerializeToString())
    return out


def write_event_file(
    directory: str | os.PathLike[str],
    scalars: Mapping[str, Points],
    name: str | None = None,
    mode: str = "wb",
) -> str:
    """Write (or with ``mode="ab"`` append to) an event file; returns its path."""
    os.makedirs(directory, exist_ok=True)
    name = name or f"events.out.tfevents.{int(time.time())}.host.{os.getpid()}.0"
    path = os.path.join(os.fspath(directory), name)
    with open(path, mode) as f:
        writer = RecordWriter(f)
        for data in event_bytes(scalars) if mode == "wb" else event_bytes(scalars)[1:]:
            writer.write(data)
        f.flush()
    return path


def write_attr(run_dir: str | os.PathLike[str], name: str, value: Any) -> None:
    """``.guild/attrs/<name>`` as Guild writes it (YAML and a newline)."""
    path = os.path.join(os.fspath(run_dir), ".guild", "attrs", name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(encode_yaml(value) + "\n")


def make_guild_run(
    runs_dir: str | os.PathLike[str],
    run_id: str | None = None,
    flags: Mapping[str, Any] | None = None,
    status: str = "completed",
    scalars: Mapping[str, Points] | None = None,
    label: str | None = None,
    started: float = 1_700_000_000.0,
    duration: float = 60.0,
    op: str = "train.py",
) -> str:
    """Write one Guild run; returns its directory.

    ``status`` "running" writes a LOCK holding this process's pid.
    ``scalars`` None writes ``loss`` at two steps.
    """
    run_id = run_id or uuid.uuid4().hex
    run_dir = os.path.join(os.fspath(runs_dir), run_id)
    guild = os.path.join(run_dir, ".guild")
    os.makedirs(os.path.join(guild, "attrs"))
    with open(os.path.join(guild, "opref"), "w") as f:
        f.write(f"script:/projects/demo '' '' {op}")
    flags = {"lr": 0.1, "opt": "adam"} if flags is None else flags
    write_attr(run_dir, "id", run_id)
    write_attr(run_dir, "flags", dict(flags))
    write_attr(run_dir, "label", label if label is not None else "")
    write_attr(run_dir, "started", int(started * 1e6))
    if status == "running":
        with open(os.path.join(guild, "LOCK"), "w") as f:
            f.write(str(os.getpid()))
    else:
        write_attr(run_dir, "exit_status", _STATUS_EXIT[status])
        write_attr(run_dir, "stopped", int((started + duration) * 1e6))
    if scalars is None:
        scalars = {"loss": [(0, 1.0), (1, 0.5)]}
    if scalars:
        write_event_file(guild, scalars)
    return run_dir


# -- reading a logdir back -------------------------------------------------------


def session_of(run_logdir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The hparams of a logdir run's session_start_info (None without one)."""
    from runsmon.monitor import SESSION_FILE

    path = os.path.join(os.fspath(run_logdir), SESSION_FILE)
    if not os.path.exists(path):
        return None
    for event in read_events(path):
        for value in event.summary.value:
            if value.tag == hp_metadata.SESSION_START_INFO_TAG:
                return events.decode_session_start_info(value.metadata.plugin_data.content)
    return None


def end_status_of(run_logdir: str | os.PathLike[str]) -> str | None:
    """The status of a logdir run's session_end_info (None without one).

    Looked for in the end file, and in the session file (a run first seen
    ended may get its start and end in one file).
    """
    from runsmon.monitor import END_FILE, SESSION_FILE

    for name in (SESSION_FILE, END_FILE):
        path = os.path.join(os.fspath(run_logdir), name)
        if not os.path.exists(path):
            continue
        for event in read_events(path):
            for value in event.summary.value:
                if value.tag == hp_metadata.SESSION_END_INFO_TAG:
                    info = hp_metadata.parse_session_end_info_plugin_data(
                        value.metadata.plugin_data.content
                    )
                    return api_pb2.Status.Name(info.status)
    return None


def logdir_runs(logdir: str | os.PathLike[str]) -> dict[str, str]:
    """Run id -> directory name of every run directory with a manifest."""
    from runsmon.logdir import MANIFEST, Manifest

    out = {}
    root = os.fspath(logdir)
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, MANIFEST)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            manifest = Manifest.from_json(f.read())
        assert manifest.run_id not in out, f"run {manifest.run_id} twice in the logdir"
        out[manifest.run_id] = name
    return out


def logdir_rows(logdir: str | os.PathLike[str]) -> dict[str, str]:
    """Run id -> the name of its row in the dashboard (its session's group),
    for every run directory with a manifest (a run being rewritten has two)."""
    from runsmon.logdir import MANIFEST, Manifest

    out = {}
    root = os.fspath(logdir)
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, MANIFEST)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            manifest = Manifest.from_json(f.read())
        out[manifest.run_id] = str(manifest.state.get("group") or name)
    return out

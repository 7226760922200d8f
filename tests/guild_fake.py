"""Guild-layout runs written straight to disk (no scripts run), and logdir readers.

The writers are :mod:`runsmon.testing`'s (one writer of fake Guild runs for
the tests, the doctests and the benchmark), named here as the tests import
them; the readers below read a logdir back.
"""

from __future__ import annotations

import os
from typing import Any

from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata

from runsmon import events
from runsmon.testing import (
    Points,
    event_bytes,
    make_guild_run,
    read_events,
    write_attr,
    write_event_file,
)

__all__ = [
    "Points",
    "end_status_of",
    "event_bytes",
    "logdir_runs",
    "make_guild_run",
    "session_of",
    "write_attr",
    "write_event_file",
]


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
        out[manifest.run_id] = str(manifest.state.group or name)
    return out

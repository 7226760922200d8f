"""Runs from Weights & Biases run directories (``wandb/offline-run-*``, ``wandb/run-*``).

Each run directory holds the binary log ``run-<id>.wandb``: a 7-byte header
(``:W&B``, magic ``0xBEE1``, version 0) then LevelDB-log framing in 32 KiB
blocks (records of crc32, length, type FULL/FIRST/MIDDLE/LAST), each logical
record a protobuf ``Record`` of wandb's ``wandb_internal_pb2``.  When the
``wandb`` package is importable it is read for:

- config (the run record's config, then config records): flags, ``_wandb`` dropped;
- the run record: start time, display name (the label), project (the operation);
- history records: :attr:`Run.scalars` (numbers only, ``_*`` keys dropped);
- the exit record: ``completed`` for exit code 0, else ``error``.  A log without
  one is ``running`` while it changed in the last ``idle_after`` seconds and
  ``terminated`` after that (the process died without finishing).

Without wandb (or for an older run whose log says nothing), ``files/config.yaml``
(values under ``value:``) gives the flags and ``files/wandb-summary.json`` the
final values as scalars, and the status follows the idle rule (``completed``
once idle).  Missing wandb is reported once.

Scalars shown once: a run logged with ``sync_tensorboard=True`` has ``tbrecord``
records and wandb links its event files into ``files/``, laid out as in the
user's logdir (seen with wandb 0.31: an offline run links them there and
logs none of their scalars as history).  The monitor shows those event files,
groups relative to ``files/`` (``Run.attrs["events_dir"]``), so history rows
that wandb made from them (rows carrying ``global_step``, as an online run
logs them) are dropped.  They are kept when no event file is under the run
directory.
"""

from __future__ import annotations

import datetime
import json
import os
import struct
import time
import zlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from runsmon.fs import LOCAL, FileSystem
from runsmon.report import Reporter, describe_error
from runsmon.run import (
    COMPLETED,
    ERROR,
    IDLE_RULE,
    RUNNING,
    STATUS_RULE,
    TERMINATED,
    Run,
    ScalarPoint,
    clean_tags,
)
from runsmon.runview import EVENTS_DIR
from runsmon.sources.base import RunSource
from runsmon.sources.flagsfiles import load_yaml

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32768
_REC_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_TB_STEP = "global_step"


def wandb_pb() -> Any:
    """wandb's ``wandb_internal_pb2`` module, or None when wandb is not installed."""
    try:
        from wandb.proto import wandb_internal_pb2
    except Exception:  # ImportError, or a wandb that fails to import
        return None
    return wandb_internal_pb2


class LogError(ValueError):
    """The log is not a wandb log, or a record is damaged."""


def iter_log(data: bytes) -> Iterator[bytes]:
    """The logical records of a ``.wandb`` log; stops quietly at a torn tail.

    Raises :class:`LogError` for a bad header or a checksum mismatch.
    """
    if len(data) < len(HEADER):
        return
    if data[: len(HEADER)] != HEADER:
        raise LogError("not a wandb log (bad header)")
    pos, end = len(HEADER), len(data)
    pending: list[bytes] | None = None
    while True:
        left = BLOCK - pos % BLOCK
        if left < _REC_HEADER:
            pos += left  # zero trailer of the block
        if pos + _REC_HEADER > end:
            return
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        start = pos + _REC_HEADER
        if start + length > end:
            return
        chunk = data[start : start + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            if crc == 0 and length == 0 and kind == 0:
                return  # zeros past the last record: a preallocated or torn tail
            raise LogError(f"damaged record at byte {pos}")
        pos = start + length
        if kind == _FULL:
            pending = None
            yield chunk
        elif kind == _FIRST:
            pending = [chunk]
        elif kind == _MIDDLE and pending is not None:
            pending.append(chunk)
        elif kind == _LAST and pending is not None:
            pending.append(chunk)
            yield b"".join(pending)
            pending = None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def _set_nested(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class _LogInfo:
    """What the non-history records of a log say."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.has_config = False
        self.name = ""
        self.project = ""
        self.wandb_id = ""
        self.started: float | None = None
        self.exit_code: int | None = None
        self.runtime = 0
        self.last_time: float | None = None
        self.tb_synced = False
        self.tags: list[str] = []
        self.notes = ""


class WandbRuns(RunSource):
    """Runs of a wandb directory; ``path`` is ``wandb/``, a directory holding it, or one run."""

    kind = "wandb"

    def __init__(
        self,
        path: str,
        idle_after: float = 300.0,
        fs: FileSystem = LOCAL,
        reporter: Reporter | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(fs, reporter)
        self.path = wandb_dir(path, fs)
        self.idle_after = float(idle_after)
        self.clock = clock
        self._pb = wandb_pb()

    def roots(self) -> list[str]:
        return [self.path]

    def list_run_dirs(self) -> list[str]:
        if is_run_dir_name(os.path.basename(self.path)):
            return [self.path]
        return sorted(
            e.path for e in self.fs.scandir(self.path) if e.is_dir and is_run_dir_name(e.name)
        )

    def _log_path(self, run_dir: str) -> str | None:
        try:
            entries = self.fs.scandir(run_dir)
        except FileNotFoundError:
            return None
        logs = sorted(e.path for e in entries if e.name.endswith(".wandb") and not e.is_dir)
        return logs[0] if logs else None

    def fingerprint(self, run_dir: str) -> Hashable:
        parts: list[Any] = []
        log = self._log_path(run_dir)
        newest = None
        for path in (
            log,
            f"{run_dir}/files",
            f"{run_dir}/files/config.yaml",
            f"{run_dir}/files/wandb-summary.json",
        ):
            st = self.fs.stat(path) if path else None
            parts.append(st.key if st else None)
            if st is not None and path != f"{run_dir}/files":
                newest = max(newest or 0, st.mtime_ns)
        idle = newest is None or self.clock() - newest / 1e9 >= self.idle_after
        parts.append(idle)
        return tuple(parts)

    def read_run(self, run_dir: str) -> Run | None:
        log = self._log_path(run_dir)
        files_dir = f"{run_dir}/files"
        st_files = self.fs.stat(files_dir)
        if log is None and (st_files is None or not st_files.is_dir):
            return None
        name = os.path.basename(run_dir)
        info: _LogInfo | None = None
        if log is not None and self._pb is not None:
            info = self._read_log(run_dir, log)
        elif log is not None:
            self.reporter.warn(
                self.describe(),
                "no-wandb",
                "wandb is not installed: wandb runs show only files/config.yaml and "
                "files/wandb-summary.json (pip install 'runsmon[wandb]' to read run-*.wandb)",
            )
        has_config = info is not None and info.has_config
        flags: dict[str, Any] = info.config if has_config else self._config_yaml(run_dir)
        flags.pop("_wandb", None)

        newest = self._newest(run_dir, log)
        idle = newest is None or self.clock() - newest >= self.idle_after
        started = stopped = None
        # wandb's log records a run's start and its exit: a run it has
        # started and not ended is running (until it goes idle: then its
        # process died).  Without the log the status is a guess from idleness.
        rule: dict[str, str] = {}
        if info is not None and info.exit_code is not None:
            status = COMPLETED if info.exit_code == 0 else ERROR
        elif info is not None and log is not None and (info.started is not None or info.has_config):
            status = TERMINATED if idle else RUNNING
        else:
            status = COMPLETED if idle else RUNNING
            rule = {STATUS_RULE: IDLE_RULE}
        if info is not None:
            started = info.started
        if started is None:
            started = self._metadata_start(run_dir)
        if status != RUNNING:
            candidates = []
            if info is not None and info.last_time is not None:
                candidates.append(info.last_time)
            if info is not None and info.started is not None and info.runtime:
                candidates.append(info.started + info.runtime)
            stopped = max(candidates) if candidates else newest
        wandb_id = (info.wandb_id if info else "") or name.rsplit("-", 1)[-1]
        tb_synced = bool(info and info.tb_synced) and self._has_event_files(files_dir)
        return Run(
            id=name,
            dir=run_dir,
            flags=flags,
            status=status,
            started=started,
            stopped=stopped,
            label=info.name if info else "",
            operation=info.project if info else "",
            attrs={
                "source": self.kind,
                "wandb_id": wandb_id,
                "log": log,
                "tensorboard_synced": tb_synced,
                # wandb mirrors a synced TensorBoard logdir in files/.
                EVENTS_DIR: "files",
                **rule,
            },
            scalars=lambda: list(self.scalars(run_dir, log, tb_synced)),
            fingerprint=self.fingerprint(run_dir),
            tags=clean_tags(info.tags) if info else frozenset(),
            note=info.notes.strip() if info else "",
        )

    # -- the binary log ------------------------------------------------------

    def _records(self, run_dir: str, log: str) -> Iterator[Any]:
        pb = self._pb
        try:
            data = self.fs.read_bytes(log)
        except OSError as e:
            self.reporter.warn(
                run_dir, "log", f"run {run_dir}: cannot read {log}: {describe_error(e)}"
            )
            return
        try:
            for raw in iter_log(data):
                record = pb.Record()
                try:
                    record.ParseFromString(raw)
                except Exception:
                    raise LogError("a record does not parse") from None
                yield record
        except LogError as e:
            self.reporter.warn(run_dir, "log", f"run {run_dir}: {os.path.basename(log)}: {e}")
            return
        self.reporter.clear(run_dir, "log")

    def _read_log(self, run_dir: str, log: str) -> _LogInfo:
        info = _LogInfo()
        for record in self._records(run_dir, log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                info.wandb_id = run.run_id or info.wandb_id
                info.name = run.display_name or info.name
                info.project = run.project or info.project
                # A later run record (tags or notes changed while it ran) says it all again.
                info.tags = list(run.tags)
                info.notes = run.notes
                if run.HasField("start_time"):
                    info.started = run.start_time.seconds + run.start_time.nanos / 1e9
                if run.HasField("config"):
                    self._apply_config(info, run.config)
            elif kind == "config":
                self._apply_config(info, record.config)
            elif kind == "exit":
                info.exit_code = record.exit.exit_code
                info.runtime = record.exit.runtime
            elif kind == "tbrecord":
                info.tb_synced = True
            elif kind in ("history", "summary"):
                items = record.history.item if kind == "history" else record.summary.update
                for item in items:
                    if _item_key(item) == "_timestamp":
                        t = _number(_json(item.value_json))
                        if t is not None:
                            info.last_time = max(info.last_time or t, t)
        return info

    @staticmethod
    def _apply_config(info: _LogInfo, config: Any) -> None:
        for item in config.update:
            path = list(item.nested_key) or [item.key]
            _set_nested(info.config, path, _json(item.value_json))
            info.has_config = True
        for item in config.remove:
            path = list(item.nested_key) or [item.key]
            node: Any = info.config
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(path[-1], None)

    def scalars(self, run_dir: str, log: str | None, tb_synced: bool) -> Iterator[ScalarPoint]:
        """History points (from the log), else the summary's final values."""
        if log is not None and self._pb is not None:
            found = False
            for record in self._records(run_dir, log):
                if record.WhichOneof("record_type") != "history":
                    continue
                found = True
                yield from _history_points(record.history, tb_synced)
            if found:
                return
        yield from self._summary_points(run_dir)

    # -- files written by older versions ---------------------------------------

    def _read_json_or_yaml(self, run_dir: str, rel: str) -> Any:
        path = f"{run_dir}/{rel}"
        st = self.fs.stat(path)
        if st is None or not st.is_file:
            return None
        try:
            text = self.fs.read_text(path)
            data = json.loads(text) if rel.endswith(".json") else load_yaml(text)
        except Exception as e:
            self.reporter.warn(
                run_dir, rel, f"run {run_dir}: cannot read {rel}: {describe_error(e)}"
            )
            return None
        self.reporter.clear(run_dir, rel)
        return data

    def _config_yaml(self, run_dir: str) -> dict[str, Any]:
        data = self._read_json_or_yaml(run_dir, "files/config.yaml")
        if not isinstance(data, Mapping):
            return {}
        flags: dict[str, Any] = {}
        for key, entry in data.items():
            if key in ("_wandb", "wandb_version"):
                continue
            if isinstance(entry, Mapping) and "value" in entry:
                flags[str(key)] = entry["value"]
            else:
                flags[str(key)] = entry
        return flags

    def _summary_points(self, run_dir: str) -> Iterator[ScalarPoint]:
        data = self._read_json_or_yaml(run_dir, "files/wandb-summary.json")
        if not isinstance(data, Mapping):
            return
        step = data.get("_step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else 0
        wall = _number(data.get("_timestamp")) or 0.0
        for key, value in data.items():
            v = _number(value)
            if v is not None and not str(key).startswith("_"):
                yield ScalarPoint(tag=str(key), value=v, step=step, wall_time=wall)

    def _metadata_start(self, run_dir: str) -> float | None:
        data = self._read_json_or_yaml(run_dir, "files/wandb-metadata.json")
        if isinstance(data, Mapping) and isinstance(data.get("startedAt"), str):
            try:
                text = data["startedAt"].replace("Z", "+00:00")
                parsed = datetime.datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.timezone.utc)
            return parsed.timestamp()
        return None

    def _newest(self, run_dir: str, log: str | None) -> float | None:
        times = []
        for path in (log, f"{run_dir}/files/wandb-summary.json", f"{run_dir}/files/config.yaml"):
            st = self.fs.stat(path) if path else None
            if st is not None:
                times.append(st.mtime_ns / 1e9)
        return max(times) if times else None

    def _has_event_files(self, top: str) -> bool:
        stack = [top]
        while stack:
            try:
                entries = self.fs.scandir(stack.pop())
            except OSError:
                continue
            for e in entries:
                if e.is_dir:
                    stack.append(e.path)
                elif "tfevents" in e.name:
                    return True
        return False


def _history_points(history: Any, tb_synced: bool) -> Iterator[ScalarPoint]:
    values: dict[str, Any] = {}
    for item in history.item:
        if item.value_json:
            values[_item_key(item)] = _json(item.value_json)
        else:
            for field, value in item.ListFields():
                if field.name in ("integer", "number"):
                    values[_item_key(item)] = value
    if tb_synced and _TB_STEP in values:
        return  # made from event files the monitor shows itself
    step_value = values.get("_step")
    step = int(step_value) if isinstance(step_value, (int, float)) else history.step.num
    wall = _number(values.get("_timestamp")) or 0.0
    for key, value in values.items():
        v = _number(value)
        if v is None or key.startswith("_"):
            continue
        yield ScalarPoint(tag=key, value=v, step=step, wall_time=wall)


def is_run_dir_name(name: str) -> bool:
    """``offline-run-<date>-<id>`` or ``run-<date>-<id>`` (not ``latest-run``)."""
    return name.startswith(("offline-run-", "run-")) and name.count("-") >= 2


def wandb_dir(path: str, fs: FileSystem = LOCAL) -> str:
    """``path`` itself, or ``path/wandb`` when ``path`` holds one."""
    path = os.path.normpath(path)
    if not is_run_dir_name(os.path.basename(path)):
        st = fs.stat(os.path.join(path, "wandb"))
        if st is not None and st.is_dir:
            return os.path.join(path, "wandb")
    return path

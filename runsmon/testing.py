"""Helpers for doctest suites: Guild-style runs made without Guild, and printers.

:class:`Project` runs a script of a sample project the way ``guild run`` would
and leaves a run directory laid out as Guild 0.9 lays it out::

    <runs dir>/<32-hex id>/
      <script>                      a copy of the script (Guild copies source code)
      .guild/attrs/{id,initialized,cmd,deps,flags,host,label,sourcecode_digest,
                    user,user_flags,started,exit_status,stopped}
      .guild/opref                  script:<project dir> '' '' <script>
      .guild/manifest               s <script> <sha1> <script>
      .guild/output, output.index   the script's output (stdout and stderr merged)
      .guild/events.out.tfevents.<ts>.<host>.<pid>.<n>   scalars parsed from output

Flags reach the script as ``--name value`` arguments, in name order, rendered
as Guild renders them: ``True``/``False`` as ``true``/``false``, numbers as
Python prints them, lists and mappings in YAML flow style (``[1, 2]``),
strings as they are; a ``None`` flag is left out.  A script parses booleans
with e.g. ``type=lambda s: s.lower() in ("true", "yes", "1")``.

Output lines ``key: value`` with a numeric value become scalars, as Guild's
default output scalars do; ``step: N`` sets the step of the scalars after it.

:func:`make_guild_run` writes the same layout straight to disk, no script
run (fast enough for the benchmark's 10,000 runs); it, :class:`Project` and
the tests write a run's attributes, ``opref``, ``LOCK`` and end through the
same few functions (:func:`write_attr`, :func:`write_opref`,
:func:`finish_guild_run`).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from runsmon import hparams as hparams_mod
from runsmon.run import Run
from runsmon.sources.guild import GuildRuns

# Guild's default output scalar pattern (guild/summary.py, 0.9):
# `^(\key):\s+(\value)(?:\s+\(.*\))?$` with \key = [^ \t]+, \value = [0-9\.e\-]+
_SCALAR_RE = re.compile(r"^([^ \t]+):\s+([0-9.e\-]+)(?:\s+\(.*\))?$")

_last_ts = 0
_ts_lock = threading.Lock()


def guild_timestamp() -> int:
    """Microseconds since the epoch, strictly increasing (like Guild's)."""
    global _last_ts
    with _ts_lock:
        ts = max(int(time.time() * 1_000_000), _last_ts + 1)
        _last_ts = ts
        return ts


#: Text ``safe_dump`` may write as it is: what it then checks is whether the
#: text reads back as a string, and the line width (see :func:`_plain_scalar`).
_PLAIN_TEXT = re.compile(r"-?[A-Za-z0-9_](?:[A-Za-z0-9_=.,/+-]| (?! ))*(?<! )")
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
_WIDTH = 80  # safe_dump's line width: a longer plain text is folded


def _plain_scalar(value: Any, column: int = 0) -> str | None:
    """``safe_dump``'s text of a simple scalar starting at ``column``, found
    without dumping; None where it takes more (quotes, folding, escapes).

    >>> [_plain_scalar(v) for v in (3, True, 0.25, 1e-05, "adam", "yes", "a b", "a: b")]
    ['3', 'true', '0.25', None, 'adam', None, 'a b', None]
    """
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        text = repr(value)
        return text if "." in text and "e" not in text else None
    if (
        kind is str
        and column + len(value) <= _WIDTH
        and _PLAIN_TEXT.fullmatch(value)
        and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG
    ):
        return value
    return None


def encode_yaml(value: Any) -> str:
    """An attribute value as Guild writes it (``safe_dump``, block style, stripped).

    Simple scalars, and mappings and lists of them, are written without
    dumping: the very text ``safe_dump`` writes, at a fraction of its cost.

    >>> print(encode_yaml({"lr": 0.1, "opt": "adam", "layers": [64, 32], "on": True}))
    layers:
    - 64
    - 32
    lr: 0.1
    'on': true
    opt: adam
    """
    text = _plain_scalar(value)
    if text is not None:
        return text
    kind = type(value)
    if kind is dict and value and all(type(k) is str for k in value):
        lines = []
        for key in sorted(value):
            k = _plain_scalar(key)
            v = None if k is None else _plain_scalar(value[key], len(k) + 2)
            if v is None:
                break
            lines.append(f"{k}: {v}")
        else:
            return "\n".join(lines)
    elif kind is list and value:
        items = [_plain_scalar(item, 2) for item in value]
        if None not in items:
            return "\n".join(f"- {item}" for item in items)
    return _safe_dump_text(value)


def _safe_dump_text(value: Any) -> str:
    """``yaml.safe_dump`` of ``value`` as Guild writes it, stripped."""
    text = yaml.safe_dump(value, default_flow_style=False, indent=2).strip()
    if text.endswith("\n..."):
        text = text[:-4]
    return text


def encode_flag_arg(value: Any) -> str | None:
    """A flag value as a command-line argument (see the module docstring).

    >>> [encode_flag_arg(v) for v in (True, 0.1, 3, "adam", [64, 32], None)]
    ['true', '0.1', '3', 'adam', '[64, 32]', None]
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


def format_flag_label(value: Any) -> str:
    """A flag value in Guild's default label (``dropout=yes layers='64 32'``)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        plain = value and not re.search(r"[\s'\"]", value)
        return value if plain else "'" + value.replace("'", "'\\''") + "'"
    text = encode_flag_arg(value) or ""
    return text if " " not in text else f"'{text}'"


class Project:
    """A directory of scripts whose runs land in ``runs_dir``.

    ``runs_dir`` defaults to a new temporary directory (removed when the
    project object is collected or at exit), so running a sample project never
    writes into it.  ``list_runs`` is a :class:`GuildRuns` over ``runs_dir``.
    """

    def __init__(self, path: str | os.PathLike[str], runs_dir: str | None = None) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if runs_dir is None:
            runs_dir = tempfile.mkdtemp(prefix="runsmon-runs-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, runs_dir, True)
        self.runs_dir = os.path.abspath(os.fspath(runs_dir))
        os.makedirs(self.runs_dir, exist_ok=True)
        self.list_runs = GuildRuns(self.runs_dir)

    def run(
        self,
        script: str,
        flags: Mapping[str, Any] | None = None,
        label: str | None = None,
        *,
        run_id: str | None = None,
        env: Mapping[str, str] | None = None,
        quiet: bool = False,
        timeout: float | None = 300,
    ) -> Run:
        """Run ``script`` (relative to the project) with ``flags``; print its output.

        ``label=None`` writes Guild's default label (``name=value`` for each
        flag with a value).  Returns the run as :class:`GuildRuns` reads it.
        """
        flags = dict(flags or {})
        src = os.path.join(self.path, script)
        if not os.path.isfile(src):
            raise FileNotFoundError(f"no script {script!r} in {self.path}")
        run_id = run_id or uuid.uuid4().hex
        run_dir = os.path.join(self.runs_dir, run_id)
        guild = os.path.join(run_dir, ".guild")
        os.makedirs(os.path.join(guild, "attrs"))
        write_attr(run_dir, "id", run_id)
        write_attr(run_dir, "initialized", guild_timestamp())
        _touch(os.path.join(guild, "PENDING"))

        dest = os.path.join(run_dir, script)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(src, dest)
        args = [sys.executable, "-u", script]
        for name in sorted(flags):
            arg = encode_flag_arg(flags[name])
            if arg is not None:
                args += [f"--{name}", arg]
        if label is None:
            label = " ".join(
                f"{k}={format_flag_label(v)}" for k, v in sorted(flags.items()) if v is not None
            )
        write_opref(run_dir, script, self.path)
        write_attr(run_dir, "cmd", args)
        write_attr(run_dir, "deps", {})
        write_attr(run_dir, "flags", flags)
        write_attr(run_dir, "host", socket.gethostname())
        write_attr(run_dir, "label", label)
        write_attr(run_dir, "sourcecode_digest", _files_digest([script], run_dir))
        write_attr(run_dir, "user", _user())
        write_attr(run_dir, "user_flags", flags)
        with open(os.path.join(guild, "manifest"), "w") as f:
            f.write(f"s {script} {_sha1(dest)} {script}\n")
        os.remove(os.path.join(guild, "PENDING"))

        write_attr(run_dir, "started", guild_timestamp())
        proc_env = dict(os.environ, **(env or {}))
        proc_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (self.path, proc_env.get("PYTHONPATH", "")) if p
        )
        proc_env["RUN_DIR"] = run_dir
        proc_env["RUN_ID"] = run_id
        proc = subprocess.Popen(
            args,
            cwd=run_dir,
            env=proc_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        with open(os.path.join(guild, "LOCK"), "w") as f:
            f.write(str(proc.pid))
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        try:
            _capture(proc, guild, quiet)
            exit_status = proc.wait()
        finally:
            if timer:
                timer.cancel()
        finish_guild_run(run_dir, exit_status, guild_timestamp())
        run = self.list_runs.read_run(run_dir)
        assert run is not None, run_dir
        return run

    def runs(self) -> list[Run]:
        """Every run in ``runs_dir``, in start order."""
        return sorted(self.list_runs(), key=lambda r: (r.started or 0, r.id))


def write_attr(run_dir: str | os.PathLike[str], name: str, value: Any) -> None:
    """Write ``.guild/attrs/<name>`` as Guild does (YAML, then a newline)."""
    with open(os.path.join(run_dir, ".guild", "attrs", name), "wb") as f:
        f.write((encode_yaml(value) + os.linesep).encode())


def write_opref(run_dir: str | os.PathLike[str], script: str, project: str) -> None:
    """``.guild/opref`` of a script run: ``script:<project> '' '' <script>``."""
    with open(os.path.join(os.fspath(run_dir), ".guild", "opref"), "w") as f:
        f.write(f"script:{_shell_quote(project)} '' '' {_shell_quote(script)}")


def finish_guild_run(
    run_dir: str | os.PathLike[str], exit_status: int, stopped_us: int | None = None
) -> None:
    """What Guild writes when a run ends: ``exit_status``, ``stopped``; ``LOCK`` removed."""
    write_attr(run_dir, "exit_status", exit_status)
    write_attr(run_dir, "stopped", guild_timestamp() if stopped_us is None else stopped_us)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(os.fspath(run_dir), ".guild", "LOCK"))


#: The exit status a status is written as (Guild reads it back so).
GUILD_EXIT_STATUS = {"completed": 0, "error": 1, "terminated": -15}

Points = Sequence[tuple[int, float]]  # (step, value) of one scalar tag


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
    *,
    project: str = "/projects/demo",
    attrs: Mapping[str, Any] | None = None,
    event_files: Mapping[str, bytes] | None = None,
    pid: int | None = None,
) -> str:
    """Write one Guild run straight to disk (no script run); returns its directory.

    ``status`` "running" writes a ``LOCK`` holding ``pid`` (this process's
    by default); else the run has ended ``duration`` seconds after
    ``started`` with the status's exit status.  ``scalars`` (None: ``loss``
    at two steps; empty: none) go to an event file in ``.guild`` as Guild's
    output scalars do.  ``event_files`` are written as given, at paths
    relative to the run directory; ``attrs`` are more attributes (``cmd``,
    ``host``, ...).
    """
    run_id = run_id or uuid.uuid4().hex
    run_dir = os.path.join(os.fspath(runs_dir), run_id)
    guild = os.path.join(run_dir, ".guild")
    os.makedirs(os.path.join(guild, "attrs"))
    write_opref(run_dir, op, project)
    flags = {"lr": 0.1, "opt": "adam"} if flags is None else flags
    write_attr(run_dir, "id", run_id)
    write_attr(run_dir, "flags", dict(flags))
    write_attr(run_dir, "label", label if label is not None else "")
    write_attr(run_dir, "started", int(started * 1e6))
    for name, value in (attrs or {}).items():
        write_attr(run_dir, name, value)
    if scalars is None:
        scalars = {"loss": [(0, 1.0), (1, 0.5)]}
    if scalars:
        write_event_file(guild, scalars)
    for rel, data in (event_files or {}).items():
        path = os.path.join(run_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    if status == "running":
        with open(os.path.join(guild, "LOCK"), "w") as f:
            f.write(str(os.getpid() if pid is None else pid))
    else:
        finish_guild_run(run_dir, GUILD_EXIT_STATUS[status], int((started + duration) * 1e6))
    return run_dir


def event_bytes(scalars: Mapping[str, Points], wall_time: float | None = None) -> list[bytes]:
    """Serialized events: a file_version event, then one event per scalar point."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

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
    """Write (or with ``mode="ab"`` append to) an event file; returns its path.

    Framed by TensorBoard's own ``RecordWriter``.
    """
    from tensorboard.summary.writer.record_writer import RecordWriter

    os.makedirs(directory, exist_ok=True)
    name = name or f"events.out.tfevents.{int(time.time())}.host.{os.getpid()}.0"
    path = os.path.join(os.fspath(directory), name)
    with open(path, mode) as f:
        writer = RecordWriter(f)
        for data in event_bytes(scalars) if mode == "wb" else event_bytes(scalars)[1:]:
            writer.write(data)
        f.flush()
    return path


def _capture(proc: subprocess.Popen[bytes], guild: str, quiet: bool) -> None:
    """Copy output to .guild/output (+ index), print it, write output scalars."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer: EventFileWriter | None = None
    step: int | None = None
    assert proc.stdout is not None
    with (
        open(os.path.join(guild, "output"), "wb") as out,
        open(os.path.join(guild, "output.index"), "wb") as index,
    ):
        try:
            for raw in iter(proc.stdout.readline, b""):
                out.write(raw)
                out.flush()
                # Guild's index: 8-byte time in ms and the stream (0 stdout, 1 stderr).
                index.write(struct.pack("!QB", int(time.time() * 1000), 0))
                index.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                if not quiet:
                    print(line)
                m = _SCALAR_RE.match(line)
                if not m:
                    continue
                try:
                    value = float(m.group(2))
                except ValueError:
                    continue
                if m.group(1) == "step":
                    step = int(value)
                    continue
                if writer is None:
                    writer = EventFileWriter(guild)
                summary = summary_pb2.Summary(
                    value=[summary_pb2.Summary.Value(tag=m.group(1), simple_value=value)]
                )
                writer.add_event(
                    event_pb2.Event(wall_time=time.time(), step=step or 0, summary=summary)
                )
                writer.flush()
        finally:
            if writer is not None:
                writer.close()


def _touch(path: str) -> None:
    open(path, "w").close()


def _shell_quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return ""


def _sha1(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def _files_digest(paths: list[str], root: str) -> str:
    """Guild's ``sourcecode_digest``: md5 over path, NUL, bytes, NUL per file."""
    md5 = hashlib.md5()
    for path in sorted(paths):
        md5.update(path.replace(os.sep, "/").encode("utf-8") + b"\x00")
        with open(os.path.join(root, path), "rb") as f:
            md5.update(f.read())
        md5.update(b"\x00")
    return md5.hexdigest()


# -- printers for doctests ----------------------------------------------------


def ls(path: str | os.PathLike[str], hidden: bool = True) -> None:
    """Print the files under ``path``, one relative path a line, sorted.

    Symlinks print as ``name -> target`` (the target relative to ``path`` when
    it lies inside, else as stored; `` (broken)`` when it does not resolve) and
    are never followed.  Empty directories print with a trailing ``/``.
    ``hidden=False`` leaves out entries whose name starts with a dot.
    """
    root = os.fspath(path)
    for line in _ls_lines(root, hidden):
        print(line)


def _ls_lines(root: str, hidden: bool) -> list[str]:
    lines = []
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        if not hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            filenames = [f for f in filenames if not f.startswith(".")]
        rel_dir = os.path.relpath(dirpath, root)
        names = list(filenames)
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                names.append(d)  # a link to a directory: shown, not followed
                dirnames.remove(d)
        if not names and not dirnames and rel_dir != ".":
            lines.append(rel_dir.replace(os.sep, "/") + "/")
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name)).replace(os.sep, "/")
            if os.path.islink(full):
                target = os.readlink(full)
                resolved = os.path.realpath(full)
                if resolved == real_root or resolved.startswith(real_root + os.sep):
                    target = os.path.relpath(resolved, real_root).replace(os.sep, "/")
                broken = "" if os.path.exists(full) else " (broken)"
                lines.append(f"{rel} -> {target}{broken}")
            else:
                lines.append(rel)
    return sorted(lines)


def iter_event_files(path: str | os.PathLike[str]) -> Iterator[str]:
    """Event files (``*tfevents*``) under ``path`` (or ``path`` itself), sorted."""
    root = os.fspath(path)
    if not os.path.isdir(root):
        yield root
        return
    found = []
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        found += [os.path.join(dirpath, f) for f in files if "tfevents" in f]
    yield from sorted(found, key=lambda p: os.path.relpath(p, root))


def read_events(path: str | os.PathLike[str]) -> Iterator[Any]:
    """The events of one event file (a truncated last record is left out)."""
    from tensorboard.compat.proto import event_pb2

    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        end = pos + 12 + length + 4
        if end > len(data):
            break
        yield event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
        pos = end


def print_events(path: str | os.PathLike[str], times: bool = False) -> None:
    """Print the events of an event file, or of every event file under a dir.

    Under a directory each file starts with its relative path and its events
    follow, indented.  Scalars print as ``tag step value``; hparams plugin
    summaries as their tag and decoded content; other summaries as ``tag
    (plugin)``.  Wall times and session start/end times are left out unless
    ``times`` is true, so that the output is stable.
    """
    root = os.fspath(path)
    is_dir = os.path.isdir(root)
    for file in iter_event_files(root):
        indent = ""
        if is_dir:
            print(os.path.relpath(file, root).replace(os.sep, "/"))
            indent = "  "
        for event in read_events(file):
            for line in _event_lines(event, times):
                print(indent + line)


def _event_lines(event: Any, times: bool) -> list[str]:
    prefix = f"[{event.wall_time:.3f}] " if times else ""
    if event.HasField("file_version"):
        return []
    if not event.HasField("summary"):
        return [prefix + event.WhichOneof("what")] if event.WhichOneof("what") else []
    lines = []
    for value in event.summary.value:
        plugin = value.metadata.plugin_data.plugin_name
        if plugin == "hparams":
            lines.append(prefix + _hparams_line(value, times))
        elif value.HasField("simple_value"):
            lines.append(f"{prefix}{value.tag} {event.step} {_num(value.simple_value)}")
        elif plugin == "scalars" and value.HasField("tensor"):
            from tensorboard.util import tensor_util

            scalar = float(tensor_util.make_ndarray(value.tensor))
            lines.append(f"{prefix}{value.tag} {event.step} {_num(scalar)}")
        else:
            lines.append(f"{prefix}{value.tag} ({plugin or value.WhichOneof('value')})")
    return lines


def _num(value: float) -> str:
    """Shortest form that survives float32 (``0.1``, not ``0.10000000149``)."""
    return f"{value:.7g}"


def _hparams_line(value: Any, times: bool) -> str:
    from tensorboard.plugins.hparams import api_pb2, metadata

    content = value.metadata.plugin_data.content
    tag = value.tag
    try:
        if tag == metadata.EXPERIMENT_TAG:
            exp = metadata.parse_experiment_plugin_data(content)
            hparams = " ".join(_hparam_info(h) for h in exp.hparam_infos)
            metrics = " ".join(
                hparams_mod.metric_key((m.name.tag, m.name.group)) for m in exp.metric_infos
            )
            return f"{tag} hparams: {hparams} metrics: {metrics}".rstrip()
        if tag == metadata.SESSION_START_INFO_TAG:
            info = metadata.parse_session_start_info_plugin_data(content)
            hparams = " ".join(
                f"{k}={_hparam_value(info.hparams[k])}" for k in sorted(info.hparams)
            )
            text = f"{tag} group={info.group_name!r}"
            if times and info.start_time_secs:
                text += f" start={info.start_time_secs:.3f}"
            return f"{text} {hparams}".rstrip()
        if tag == metadata.SESSION_END_INFO_TAG:
            info = metadata.parse_session_end_info_plugin_data(content)
            text = f"{tag} status={api_pb2.Status.Name(info.status)}"
            if times and info.end_time_secs:
                text += f" end={info.end_time_secs:.3f}"
            return text
    except Exception as e:  # a damaged summary is shown, not raised
        return f"{tag} (unreadable hparams data: {e})"
    return f"{tag} (hparams)"


def _hparam_value(value: Any) -> str:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return _float(value.number_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "string_value":
        return repr(value.string_value)
    return "null"


def _float(value: float) -> str:
    return repr(float(value))


def _hparam_info(info: Any) -> str:
    from tensorboard.plugins.hparams import api_pb2

    kind = api_pb2.DataType.Name(info.type).removeprefix("DATA_TYPE_").lower()
    text = f"{info.name}:{kind}"
    if info.HasField("domain_interval"):
        d = info.domain_interval
        text += f"[{_float(d.min_value)},{_float(d.max_value)}]"
    elif info.HasField("domain_discrete"):
        text += "{" + ",".join(_hparam_value(v) for v in info.domain_discrete.values) + "}"
    return text


# -- object storage: moto's S3 server and requests counted ----------------------

#: Credentials moto takes (any); set for the server's clients by :class:`MotoServer`.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    """moto's S3 server as a real HTTP endpoint on 127.0.0.1, in a process of its own.

    ``env`` is what a client needs to reach it (credentials and
    ``AWS_ENDPOINT_URL``); :meth:`apply` puts it into ``os.environ`` until
    :meth:`stop`.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port or _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**MOTO_ENV, "AWS_ENDPOINT_URL": self.endpoint}
        self._proc: subprocess.Popen[bytes] | None = None
        self._saved: dict[str, str | None] = {}

    def start(self, timeout: float = 30.0) -> MotoServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(self.stop)  # never left behind, whatever fails meanwhile
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self._proc.returncode})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not listen on {self.port} within {timeout:g} s")

    @property
    def pid(self) -> int:
        """The server's process id (it must be started)."""
        assert self._proc is not None, "moto server not started"
        return self._proc.pid

    def apply(self) -> MotoServer:
        for key, value in self.env.items():
            self._saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        return self

    def stop(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}
        proc, self._proc = self._proc, None
        if proc is not None:
            from runsmon.serve import stop_process

            stop_process(proc)

    def __enter__(self) -> MotoServer:
        return self.start().apply()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_requests(store: Any) -> dict[str, int]:
    """A live count of the HTTP requests an s3fs filesystem sends, by operation
    (``ListObjectsV2``, ``GetObject``, ``HeadObject``...), retries included."""
    from fsspec.asyn import sync

    counts: dict[str, int] = {}

    def seen(event_name: str = "", **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        counts[op] = counts.get(op, 0) + 1

    client = sync(store.loop, store.set_session)
    client.meta.events.register("before-send.s3", seen)
    return counts

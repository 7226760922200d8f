"""Runs from a plain tree of run directories (Lightning, Hydra, Keras, sweeps, ...).

A *run* is a directory that holds a recognised flags file (see
:mod:`runsmon.sources.flagsfiles`), or that holds event files (a name
containing ``tfevents``) and is not inside another run, or whose
``train``/``validation``/``val``/``eval``/``test`` subdirectories hold event
files (Keras).  Not runs: a directory whose only event files hold just an
experiment summary (``hp.hparams_config``: the runs are below it), and one
whose only flags file is a Hydra config tree's ``config.yaml`` (a
``defaults:`` list: a project's source config, not a run's).

Below a run, everything belongs to it (``lightning_logs/version_0/`` inside a
sweep combination, the timestamp subdirectory of
``SummaryWriter.add_hparams``, Keras' ``train/``), except a run nested in it:
a directory, at most :data:`NESTED_DEPTH` levels down, holding a flags file
of the same name as the run's (a sweep's runs under the model directory its
best run was consolidated into).  A nested run is a run of its own, and its
files are not its parent's.  Hidden directories are not walked, and a
directory holding ``.runsmon`` (a runsmon logdir) is skipped.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata

from runsmon import events
from runsmon.fs import LOCAL, Entry, FileSystem
from runsmon.report import Reporter, describe_error
from runsmon.run import COMPLETED, ERROR, IDLE_RULE, RUNNING, STATUS_RULE, Run
from runsmon.sources.base import RunSource
from runsmon.sources.flagsfiles import (
    GUILD_FLAGS,
    HYDRA_CONFIG,
    find_flags_file,
    load_yaml,
    parse_hydra_overrides,
    read_flags,
)

#: Subdirectory names that make their parent one run (Keras' TensorBoard callback).
GROUP_DIRS = frozenset({"train", "training", "validation", "val", "valid", "eval", "test"})

#: Event files larger than this are not searched for ``add_hparams`` summaries.
HPARAMS_SCAN_LIMIT = 4 << 20

#: How deep below a run (with a flags file) runs nested in it are looked for.
NESTED_DEPTH = 4

#: Directories of a run that hold no runs nested in it (besides its event groups).
_NO_RUNS_INSIDE = frozenset({"checkpoints", "wandb", "lightning_logs"})

#: An event file holding just an experiment summary is smaller than this.
_EXPERIMENT_SCAN_LIMIT = 64 << 10

#: A Hydra primary config: a defaults list (or Hydra's own settings) at the top.
_HYDRA_SOURCE_RE = re.compile(r"^(?:defaults|hydra)\s*:", re.MULTILINE)

#: Directories inside a run that are walked although hidden.
_HIDDEN_WALKED = frozenset({".guild"})

_TS_RE = re.compile(r"tfevents\.(\d{9,}(?:\.\d+)?)")
_SESSION_START_TAG = hp_metadata.SESSION_START_INFO_TAG
_SESSION_END_TAG = hp_metadata.SESSION_END_INFO_TAG
_EXPERIMENT_TAG = hp_metadata.EXPERIMENT_TAG

#: TensorBoard's session end status -> run status (running and unknown say nothing).
_END_STATUS = {
    api_pb2.STATUS_SUCCESS: COMPLETED,
    api_pb2.STATUS_FAILURE: ERROR,
}


def is_event_file(name: str) -> bool:
    """Whether ``name`` is a TensorBoard event file name."""
    return "tfevents" in name


def event_file_time(name: str) -> float | None:
    """The creation time written into an event file's name, if any.

    >>> event_file_time("events.out.tfevents.1700000000.host.1.0")
    1700000000.0
    >>> event_file_time("events.out.tfevents.host") is None
    True
    """
    m = _TS_RE.search(name)
    return float(m.group(1)) if m else None


class _Tree:
    """What one read found inside a run: its directories and event files."""

    def __init__(self) -> None:
        self.dirs: list[str] = []
        self.events: list[str] = []
        self.flags_path: str | None = None
        self.flags_rel: str | None = None
        #: The earliest start seen: an mtime (no time in a file's name) only grows.
        self.started: float | None = None
        #: The runs nested in this one (left out of its walk), as listed.
        self.nested: frozenset[str] = frozenset()
        #: The event file whose session info gave the run's hparams (and end).
        self.session_path: str | None = None


class DirRuns(RunSource):
    """Runs from a directory tree.

    Status rule (the tree has no status of its own): a run is ``running``
    while its newest event file (or, with none, its flags file) changed less
    than ``idle_after`` seconds ago, and ``completed`` after that.  It is
    ``running`` again as soon as an event file changes.  ``started`` is the
    earliest event file's creation time (the timestamp in its name, else its
    mtime); ``stopped`` the newest mtime, for an ended run.

    Flags come from the flags file, else from ``_hparams_/session_start_info``
    in an event file (PyTorch's ``SummaryWriter.add_hparams``, TensorBoard's
    ``hp.hparams`` and ``hp.KerasCallback``; numbers are floats, as stored).
    A ``_hparams_/session_end_info`` beside it (``hp.KerasCallback``) gives
    the run's status and end: success is completed, failure is error.  Hydra
    runs name their command-line overrides in ``user_flags``.  Nothing is
    ever written into a run's directory.
    """

    kind = "dirs"
    path_ids = True

    def __init__(
        self,
        path: str,
        flags_file: str | None = None,
        idle_after: float = 300.0,
        fs: FileSystem = LOCAL,
        reporter: Reporter | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(fs, reporter)
        self.path = os.path.normpath(path)
        self.flags_file = flags_file.strip("/") if flags_file else None
        self.idle_after = float(idle_after)
        self.clock = clock
        self._walked: list[str] = [self.path]
        self._trees: dict[str, _Tree] = {}
        self._session_cache: dict[str, tuple[Hashable, _SessionInfo]] = {}
        #: Run dir -> the runs nested in it, from the last listing.
        self._nested: dict[str, frozenset[str]] = {}
        #: Event file -> whether it holds just an experiment summary; a file
        #: that held anything else keeps doing so (event files only grow).
        self._experiment_files: dict[str, bool] = {}
        #: config.yaml -> (stat key, whether it is a Hydra source config).
        self._hydra_sources: dict[str, tuple[Hashable, bool]] = {}

    # -- listing ---------------------------------------------------------------

    def roots(self) -> list[str]:
        """The root and every directory above a run seen in the last listing."""
        return list(self._walked)

    runs_nest = True

    def watch_trees(self) -> list[str] | None:
        """The whole tree below PATH: a run may appear anywhere in it."""
        return [self.path] if os.path.isdir(self.path) else []

    def list_run_dirs(self) -> list[str]:
        runs: list[str] = []
        walked: list[str] = []
        nested: dict[str, set[str]] = {}
        # (directory, its entries, the run it is inside with that run's flags
        # file, levels below that run); None outside runs.
        stack: list[tuple[str, list[Entry], tuple[str, str] | None, int]] = [
            (self.path, self.fs.scandir(self.path), None, 0)
        ]
        seen_events: set[str] = set()
        while stack:
            d, entries, owner, depth = stack.pop()
            files, dirs = _split(entries)
            if ".runsmon" in files or ".runsmon" in dirs:
                continue
            flags_rel = find_flags_file(self.fs, d, files, dirs, self.flags_file)
            if owner is not None:
                if flags_rel is not None and flags_rel == owner[1]:
                    runs.append(d)
                    nested.setdefault(owner[0], set()).add(d)
                    owner, depth = (d, flags_rel), 0
                if depth < NESTED_DEPTH:
                    children = self._children(entries, in_run=True)
                    stack.extend((p, sub, owner, depth + 1) for p, sub in reversed(children))
                continue
            if flags_rel is not None and not (
                flags_rel == "config.yaml" and self._hydra_source(d, entries)
            ):
                runs.append(d)
                children = self._children(entries, in_run=True)
                stack.extend((p, sub, (d, flags_rel), 1) for p, sub in reversed(children))
                continue
            event_files = [e.path for e in entries if is_event_file(e.name) and not e.is_dir]
            if event_files:
                seen_events.update(event_files)
                if not all(self._experiment_only(p) for p in event_files):
                    runs.append(d)  # nothing nests in a run of event files alone
                    continue
            children = self._children(entries)
            if any(self._is_group(p, sub) for p, sub in children):
                runs.append(d)
                continue
            walked.append(d)
            stack.extend((p, sub, None, 0) for p, sub in reversed(children))
        # Where nested runs are, new ones may come: those directories are roots too.
        inside: set[str] = set()
        for parent, inner in nested.items():
            for run_dir in inner:
                up = os.path.dirname(run_dir)
                while len(up) > len(parent) and up not in inside:
                    inside.add(up)
                    up = os.path.dirname(up)
        walked.extend(sorted(inside - set(runs)))
        self._walked = walked or [self.path]
        self._nested = {k: frozenset(v) for k, v in nested.items()}
        self._experiment_files = {
            p: v for p, v in self._experiment_files.items() if p in seen_events
        }
        gone = set(self._trees) - set(runs)
        for d in gone:
            self._trees.pop(d, None)
        return sorted(runs)

    def _children(
        self, entries: list[Entry], in_run: bool = False
    ) -> list[tuple[str, list[Entry]]]:
        """(path, entries) of the subdirectories a walk goes into.

        Inside a run, its event groups (``train/``, ...) and checkpoints hold
        no runs: they are not listed.
        """
        out = []
        for e in entries:
            if not e.is_dir or e.name.startswith(".") or e.name == "__pycache__":
                continue
            if in_run and (e.name.lower() in GROUP_DIRS or e.name in _NO_RUNS_INSIDE):
                continue
            sub = self._scandir(e.path)
            if sub is not None:
                out.append((e.path, sub))
        return out

    def _is_group(self, path: str, entries: list[Entry]) -> bool:
        """Whether ``path`` is a Keras-style group (``train/``) of the run above it."""
        if os.path.basename(path).lower() not in GROUP_DIRS:
            return False
        if not any(is_event_file(e.name) and not e.is_dir for e in entries):
            return False
        files, dirs = _split(entries)
        return find_flags_file(self.fs, path, files, dirs, self.flags_file) is None

    def _experiment_only(self, path: str) -> bool:
        """Whether an event file holds just an experiment summary (``hp.hparams_config``)."""
        if self._experiment_files.get(path) is False:
            return False
        try:
            data = self.fs.read_bytes(path, 0, _EXPERIMENT_SCAN_LIMIT + 1)
            found = experiment_only(data) if len(data) <= _EXPERIMENT_SCAN_LIMIT else False
        except Exception:  # OSError, protobuf's DecodeError: a run's file, reported there
            return False
        if found is not None:  # no summary yet: look again next time
            self._experiment_files[path] = found
        return bool(found)

    def _hydra_source(self, d: str, entries: list[Entry]) -> bool:
        """Whether ``d/config.yaml`` is a Hydra config tree's primary config.

        A run's own config (``.hydra/config.yaml``, or one a script saved) is
        composed: it has no ``defaults:`` list.  A directory with event files
        is a run whatever its config says.
        """
        if any(is_event_file(e.name) for e in entries):
            return False
        path = f"{d}/config.yaml"
        st = self.fs.stat(path)
        if st is None:
            return False
        cached = self._hydra_sources.get(path)
        if cached is not None and cached[0] == st.key:
            return cached[1]
        try:
            found = bool(_HYDRA_SOURCE_RE.search(self.fs.read_text(path)))
        except (OSError, UnicodeDecodeError):
            found = False
        self._hydra_sources[path] = (st.key, found)
        return found

    def _scandir(self, path: str) -> list[Entry] | None:
        try:
            return self.fs.scandir(path)
        except OSError as e:
            if not isinstance(e, FileNotFoundError):
                self.reporter.warn(path, "list", f"cannot list {path}: {describe_error(e)}")
            return None

    # -- one run -------------------------------------------------------------

    def run_id(self, run_dir: str) -> str:
        """The run's id: its path relative to the root (the root's name for the root),
        after ``id_prefix/`` when one is set (several PATHs, see ``combine``)."""
        rel = os.path.relpath(run_dir, self.path)
        if rel == ".":
            return self.id_prefix or os.path.basename(self.path) or self.path
        rel = rel.replace(os.sep, "/")
        return f"{self.id_prefix}/{rel}" if self.id_prefix else rel

    def describe(self) -> str:
        return f"{self.kind} runs in {self.path}"

    def fingerprint(self, run_dir: str) -> Hashable:
        tree = self._trees.get(run_dir)
        if tree is None or tree.nested != self._nested.get(run_dir, frozenset()):
            tree = self._scan_run(run_dir)
            if tree is None:
                return None
        dir_times = tuple(_mtime(self.fs, d) for d in tree.dirs)
        flags_key = None
        if tree.flags_path is not None:
            st = self.fs.stat(tree.flags_path)
            flags_key = st.key if st else None
        elif tree.session_path is not None:
            # Its session info may end the run (hp.KerasCallback appends it).
            st = self.fs.stat(tree.session_path)
            flags_key = st.key if st else None
        newest = self._newest(tree)
        idle = newest is None or self.clock() - newest >= self.idle_after
        # An ended run ends at its last write: one that came (an append moves
        # no directory's mtime) and went idle again between two checks moves it.
        return (dir_times, flags_key, idle, newest if idle else None, tree.nested)

    def _scan_run(self, run_dir: str) -> _Tree | None:
        """Walk a run afresh (and remember it); None when it is gone."""
        try:
            entries = self.fs.scandir(run_dir)
        except FileNotFoundError:
            self._trees.pop(run_dir, None)
            return None
        files, dirs = _split(entries)
        flags_rel = find_flags_file(self.fs, run_dir, files, dirs, self.flags_file)
        nested = self._nested.get(run_dir, frozenset())
        tree = self._walk_run(run_dir, entries, nested)
        tree.nested = nested
        tree.flags_rel = flags_rel
        tree.flags_path = f"{run_dir}/{flags_rel}" if flags_rel else None
        old = self._trees.get(run_dir)
        if old is not None:
            tree.started = old.started
        self._trees[run_dir] = tree
        return tree

    def read_run(self, run_dir: str) -> Run | None:
        tree = self._scan_run(run_dir)
        if tree is None:
            return None
        flags_rel = tree.flags_rel
        if flags_rel is None and not tree.events:
            self._trees.pop(run_dir, None)
            return None
        run_id = self.run_id(run_dir)

        flags: dict[str, Any] = {}
        user_flags: frozenset[str] | None = None
        label = operation = ""
        extra: dict[str, Any] = {"path_label": self.id_prefix} if self.id_prefix else {}
        session = _NO_SESSION
        if flags_rel is not None:
            flags = self._read_flags(run_dir, run_id, flags_rel)
            if flags_rel == HYDRA_CONFIG:
                user_flags, label, operation = self._hydra_extras(run_dir, run_id, extra)
            elif flags_rel == GUILD_FLAGS:
                user_flags = self._guild_user_flags(run_dir)
        else:
            session = self._session_info(run_dir, run_id, tree)
            flags = session.hparams or {}

        started, stopped, status = self._times(tree)
        rule = {STATUS_RULE: IDLE_RULE}
        if flags_rel is None and session.status is not None:
            status = session.status
            stopped = session.end_time if session.end_time is not None else stopped
            rule = {}
        return Run(
            id=run_id,
            dir=run_dir,
            flags=flags,
            status=status,
            started=started,
            stopped=stopped,
            label=label,
            operation=operation,
            attrs={
                "source": self.kind,
                "flags_file": flags_rel,
                "event_files": len(tree.events),
                **rule,
                **extra,
            },
            user_flags=user_flags,
            fingerprint=self.fingerprint(run_dir),
            nested=frozenset(os.path.relpath(d, run_dir).replace(os.sep, "/") for d in tree.nested),
        )

    def _walk_run(self, run_dir: str, entries: list[Entry], nested: frozenset[str]) -> _Tree:
        tree = _Tree()
        stack: list[tuple[str, list[Entry] | None]] = [(run_dir, entries)]
        while stack:
            d, ents = stack.pop()
            if ents is None:
                ents = self._scandir(d)
                if ents is None:
                    continue
            tree.dirs.append(d)
            for e in ents:
                if e.is_dir:
                    if (not e.name.startswith(".") or e.name in _HIDDEN_WALKED) and (
                        not nested or e.path not in nested
                    ):
                        stack.append((e.path, None))
                elif is_event_file(e.name):
                    tree.events.append(e.path)
        tree.events.sort()
        return tree

    def _newest(self, tree: _Tree) -> float | None:
        times = [t for t in (_mtime(self.fs, p) for p in tree.events) if t is not None]
        if not times and tree.flags_path is not None:
            t = _mtime(self.fs, tree.flags_path)
            times = [t] if t is not None else []
        return max(times) / 1e9 if times else None

    def _times(self, tree: _Tree) -> tuple[float | None, float | None, str]:
        starts: list[float] = []
        for p in tree.events:
            t = event_file_time(os.path.basename(p))
            if t is None:
                m = _mtime(self.fs, p)
                t = m / 1e9 if m is not None else None
            if t is not None:
                starts.append(t)
        newest = self._newest(tree)
        if not starts and newest is not None:
            starts = [newest]
        started = min(starts) if starts else None
        if tree.started is not None and (started is None or tree.started < started):
            # A growing file's mtime is no start time: keep the first one seen,
            # or the run's name and session would move with every write.
            started = tree.started
        tree.started = started
        if newest is None or self.clock() - newest < self.idle_after:
            return started, None, RUNNING
        return started, newest, COMPLETED

    # -- flags ---------------------------------------------------------------

    def _read_flags(self, run_dir: str, run_id: str, rel: str) -> dict[str, Any]:
        try:
            flags = read_flags(self.fs, f"{run_dir}/{rel}")
        except (OSError, ValueError) as e:
            self.reporter.warn(
                run_dir, "flags", f"run {run_id}: cannot read {rel}: {describe_error(e)}"
            )
            return {}
        self.reporter.clear(run_dir, "flags")
        return flags

    def _read_optional_yaml(self, run_dir: str, run_id: str, rel: str) -> tuple[bool, Any]:
        """(found, data) for an optional YAML file; a bad one warns and counts as absent."""
        path = f"{run_dir}/{rel}"
        st = self.fs.stat(path)
        if st is None or not st.is_file:
            return False, None
        try:
            return True, load_yaml(self.fs.read_text(path))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            cause = describe_error(e)
        except Exception as e:  # yaml.YAMLError and friends
            cause = describe_error(e)
        self.reporter.warn(run_dir, rel, f"run {run_id}: cannot read {rel}: {cause}")
        return False, None

    def _hydra_extras(
        self, run_dir: str, run_id: str, attrs: dict[str, Any]
    ) -> tuple[frozenset[str] | None, str, str]:
        """(user flags, label, operation); ``attrs`` gets what names the run:
        its overrides and, for a multirun job, its job number."""
        user_flags: frozenset[str] | None = None
        label = operation = ""
        found, data = self._read_optional_yaml(run_dir, run_id, ".hydra/overrides.yaml")
        if found:
            try:
                texts, user_flags = parse_hydra_overrides(data)
                label = " ".join(texts)
                attrs["hydra_overrides"] = texts
            except ValueError as e:
                self.reporter.warn(run_dir, "overrides", f"run {run_id}: {e}")
        found, data = self._read_optional_yaml(run_dir, run_id, ".hydra/hydra.yaml")
        if found and isinstance(data, Mapping):
            job = (
                (data.get("hydra") or {}).get("job")
                if isinstance(data.get("hydra"), Mapping)
                else None
            )
            if isinstance(job, Mapping) and isinstance(job.get("name"), str):
                operation = job["name"]
            num = job.get("num") if isinstance(job, Mapping) else None
            mode = data["hydra"].get("mode") if isinstance(data.get("hydra"), Mapping) else None
            if isinstance(num, int) and not isinstance(num, bool) and mode in (None, "MULTIRUN"):
                attrs["hydra_job"] = num
        return user_flags, label, operation

    def _guild_user_flags(self, run_dir: str) -> frozenset[str] | None:
        found, data = self._read_optional_yaml(run_dir, run_dir, ".guild/attrs/user_flags")
        if not found:
            return None
        if isinstance(data, Mapping):
            return frozenset(str(k) for k in data)
        if isinstance(data, list):
            return frozenset(str(k) for k in data)
        return None

    def _session_info(self, run_dir: str, run_id: str, tree: _Tree) -> _SessionInfo:
        """The first session info (hparams, and its end) in the run's small event files."""
        sized = []
        for p in tree.events:
            st = self.fs.stat(p)
            if st is not None and st.size <= HPARAMS_SCAN_LIMIT:
                sized.append((st.size, p, st.key))
        for _, path, key in sorted(sized):
            cached = self._session_cache.get(path)
            if cached is not None and cached[0] == key:
                found = cached[1]
            else:
                try:
                    found = session_info(self.fs.read_bytes(path))
                except Exception as e:  # OSError, protobuf's DecodeError
                    self.reporter.warn(
                        run_dir, "events", f"run {run_id}: cannot read {path}: {describe_error(e)}"
                    )
                    continue
                self._session_cache[path] = (key, found)
            if found.hparams is not None:
                tree.session_path = path
                return found
        return _NO_SESSION


class _SessionInfo(NamedTuple):
    """What an event file's hparams session info says of its run."""

    hparams: dict[str, Any] | None
    status: str | None = None  # from a session end info
    end_time: float | None = None


_NO_SESSION = _SessionInfo(None)


def session_info(data: bytes) -> _SessionInfo:
    """The first ``session_start_info`` in event-file bytes, with the last end info.

    The end info of a file that also holds an experiment is no end: PyTorch's
    and tensorboardX's ``add_hparams`` write experiment, start and a
    "success" end at once, whenever it is called (often at a run's start).
    """
    hparams = status = end_time = None
    experiment = False
    for record in events.split_records(data, verify=False).records:
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name != hp_metadata.PLUGIN_NAME:
                continue
            content = value.metadata.plugin_data.content
            if value.tag == _SESSION_START_TAG and hparams is None:
                hparams = events.decode_session_start_info(content)
            elif value.tag == _SESSION_END_TAG:
                data_pb = plugin_data_pb2.HParamsPluginData.FromString(content)
                end = data_pb.session_end_info
                status = _END_STATUS.get(end.status)
                end_time = (end.end_time_secs or None) if status is not None else None
            elif value.tag == _EXPERIMENT_TAG:
                experiment = True
    if experiment:
        return _SessionInfo(hparams)
    return _SessionInfo(hparams, status, end_time)


def session_start_hparams(data: bytes) -> dict[str, Any] | None:
    """The hparams of the first ``_hparams_/session_start_info`` in event-file bytes."""
    return session_info(data).hparams


def experiment_only(data: bytes) -> bool | None:
    """Whether event-file bytes hold an experiment summary and no other summary.

    None while they hold no summary at all (a writer's first record only).
    """
    found = None
    for record in events.split_records(data, verify=False).records:
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            if value.tag != _EXPERIMENT_TAG:
                return False
            found = True
    return found


def _split(entries: list[Entry]) -> tuple[set[str], set[str]]:
    """(file names, directory names); a symlink counts as a file."""
    files = {e.name for e in entries if not e.is_dir}
    dirs = {e.name for e in entries if e.is_dir}
    return files, dirs


def _mtime(fs: FileSystem, path: str) -> int | None:
    st = fs.stat(path)
    return st.mtime_ns if st is not None else None

"""RunsMonitor: keeps a logdir in step with a run-listing callback.

Each sync asks the callback for the runs, works out what changed (new,
changed, ended or removed runs, new event files or tags) and writes only
that: links to new event files, a session for a new run, an end info for a
run that ended, a new experiment when a column or metric changed. See
ARCHITECTURE.md for the logdir layout and why sessions are written once.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from runsmon import events, hparams, runview, sessions
from runsmon.changes import SHARE_MAX, Changes
from runsmon.fs import LOCAL, FileSystem
from runsmon.logdir import (
    END_FILE,
    EXPERIMENT_FILE,
    SCALARS_FILE,
    SESSION_FILE,
    Logdir,
    LogdirError,
    Manifest,
)
from runsmon.mirror import Mirror
from runsmon.naming import RunNamer, default_run_name, safe_name
from runsmon.report import Reporter, describe_error
from runsmon.run import RUNNING, Run
from runsmon.runfiles import RunFiles
from runsmon.runstate import RunState, Writes
from runsmon.sources.base import as_source
from runsmon.watch import Watcher

log = logging.getLogger("runsmon")

__all__ = [
    "SHARE_MAX",
    "END_FILE",
    "EXPERIMENT_FILE",
    "SCALARS_FILE",
    "SESSION_FILE",
    "RunsMonitor",
    "SyncStats",
]

RunsCallback = Callable[..., Iterable[Run]]


@dataclasses.dataclass
class SyncStats:
    """What one sync did."""

    runs: int = 0
    added: int = 0
    removed: int = 0
    updated: int = 0
    sessions: int = 0
    ended: int = 0
    rewrites: int = 0  # sessions written anew in a new directory (see sessions.py)
    experiment_written: bool = False
    seconds: float = 0.0

    @property
    def resets(self) -> int:
        """The old name of :attr:`rewrites`."""
        return self.rewrites


class RunsMonitor:
    """Keeps ``logdir`` in step with the runs ``list_runs_cb`` returns.

    ``run_once()`` syncs synchronously; ``start()``/``stop()`` run syncs in a
    background thread every ``interval`` seconds and at once when a watched
    file changes. Usable as a context manager (started on enter).
    """

    def __init__(
        self,
        logdir: str | Logdir,
        list_runs_cb: RunsCallback,
        interval: float = 5.0,
        run_name_cb: Callable[[Run], str] | None = None,
        *,
        watch: bool = True,
        full_check_interval: float = 120.0,
        handover_delay: float = 11.0,
        reset_delay: float | None = None,
        callback_timeout: float = 120.0,
        fs: FileSystem = LOCAL,
        reporter: Reporter | None = None,
        progress: Callable[[int, int], None] | None = None,
        selection: hparams.Selection | None = None,
        freeze_heap: bool = False,
        on_new_columns: Callable[[list[str], list[hparams.Metric]], None] | None = None,
    ) -> None:
        self.logdir = logdir if isinstance(logdir, Logdir) else Logdir(logdir)
        self.list_runs_cb = list_runs_cb
        self.source = as_source(list_runs_cb)
        self.interval = interval
        self.run_name_cb = run_name_cb or default_run_name
        self.watch = watch
        self.full_check_interval = full_check_interval
        self.handover_delay = handover_delay
        """Seconds the old directory of a rewritten run with large event files
        stays beside the new one (two reloads of the TensorBoard reading the
        logdir, and one more second): TensorBoard's data server shows a run
        only once it has read all of it (see sessions.py)."""
        if reset_delay is not None:
            warnings.warn(
                "RunsMonitor(reset_delay=...) is deprecated: sessions are rewritten with no "
                "gap; the value is taken as handover_delay",
                DeprecationWarning,
                stacklevel=2,
            )
            self.handover_delay = reset_delay
        self.callback_timeout = callback_timeout
        self.fs = fs
        self.reporter = reporter or self.source.reporter
        self.progress = progress
        self.selection = selection or hparams.Selection()
        self.freeze_heap = freeze_heap
        """After the first full check, ``gc.freeze()`` what is alive: the
        cyclic GC then never scans the monitor's long-lived state again (a
        full collection at 10,000 runs otherwise stalls a poll for ~150 ms).
        Process-wide, so for a process that is the monitor (``runsmon serve``)."""
        self.on_new_columns = on_new_columns
        """Called with the hparams and metrics an experiment adds to the one
        before it (a dashboard already open shows them only once reloaded)."""
        self.last_stats = SyncStats()

        self._lock = threading.RLock()
        self._runs: dict[str, RunState] = {}
        self._columns = hparams.Columns()
        self._namer = RunNamer()
        self._regen: set[str] = set()  # runs whose session must go to a new directory
        self._vacated = sessions.Vacated()  # directory names deleted lately
        # Old generations still there (name -> run id, manifest, when they may go).
        self._leftovers: dict[str, tuple[str, Manifest, float]] = {}
        self._experiment: tuple[str, bytes] | None = None  # (dirname, file bytes)
        self._experiment_gen = 0
        self._experiment_names: frozenset[Any] | None = None  # its columns, once written here
        self._restored: dict[str, Manifest] = {}  # an earlier runsmon's runs, not yet seen
        self._dirty: set[str] = set()  # runs whose session may need writing
        self._kinds: dict[str, str] = {}  # column kinds the sessions were written for
        self._created = 0.0
        self._last_runs: list[Run] = []
        self._pending_call: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.writes = Writes(self.reporter)
        self.mirror = Mirror(self.logdir, fs, self.reporter, self.writes)
        self._new: set[str] = set()  # runs named but not in the logdir yet (made with the session)
        self._by_dir: dict[str, str] = {}  # normalised run dir -> run id
        self._listed: dict[str, Run] = {}  # the last listing, by run id
        self._last_out: object = None  # the list the callback returned last
        self._column_map: tuple[int, dict[str, hparams.Column]] = (-1, {})
        self._experiment_key: tuple[int, hparams.Selection] | None = None
        self._synced = False  # a full check has been done
        self.changes = Changes(
            self.source, interval, full_check_interval, self._lock, self._wake.set
        )
        """Where each poll looks: the feed of changed paths, the watches, the safety net."""
        self._metric_sets: dict[frozenset[tuple[str, str]], frozenset[tuple[str, str]]] = {}
        self._restore()

    # -- public API ------------------------------------------------------------

    def run_once(self) -> SyncStats:
        """Sync the logdir now, checking every run (a full check)."""
        if not self.freeze_heap or self._synced:
            return self._sync(changed=None)
        # The first full check builds the long-lived state: no cyclic GC pass
        # walks it while it grows (six full passes at 10,000 runs), and it is
        # frozen once built.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._sync(changed=None)
        finally:
            if self._synced:
                gc.freeze()
            if enabled:
                gc.enable()

    def sync_changes(self, sweep: bool | None = None) -> SyncStats:
        """One poll of the running monitor (what its loop does on each wake-up).

        It re-checks what the watchers reported, and where nothing can be
        watched (no watcher, a network filesystem, an exhausted inotify
        limit) the roots and the runs that have not ended.  With ``sweep``
        (by default: once every ``interval``) it also re-checks the next
        share of the safety net (see :meth:`Changes.next_paths`).  The first
        call is a full check.
        """
        if not self._synced:
            stats = self.run_once()
        else:
            stats = self._sync(changed=self.changes.next_paths(self._run_dirs, sweep))
        self.changes.update_watches()
        return stats

    def start(self) -> RunsMonitor:
        if self._thread is not None:
            return self
        self._stop.clear()
        if self.watch:
            self.changes.use(Watcher(ignore=[self.logdir.path], on_change=self._wake.set))
        self._thread = threading.Thread(target=self._loop, name="runsmon", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.8) -> None:
        """Stop the background thread; returns within about ``timeout`` s."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        deadline = time.monotonic() + timeout
        self.changes.stop()
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> RunsMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def run_names(self) -> dict[str, str]:
        """Run id -> its name: its row in the dashboard, and its home directory."""
        with self._lock:
            return {rid: st.name for rid, st in self._runs.items()}

    @property
    def run_dirs(self) -> dict[str, str]:
        """Run id -> its directory in the logdir now (its name, or after a
        rewrite the name plus ``~``; see sessions.py)."""
        with self._lock:
            return {rid: st.manifest.name for rid, st in self._runs.items()}

    def table(self) -> list[dict[str, Any]]:
        """One row per run: name, status, hparams and last metric values."""
        with self._lock:
            return [
                {
                    "run": st.run,
                    "name": st.name,
                    "hparams": dict(st.hparams),
                    "metrics": runview.last_values(
                        st.run, st.files, runview.read_points(st.run, st.name, self.reporter) or ()
                    ),
                }
                for st in self._runs.values()
            ]

    def experiment_columns(self) -> tuple[list[hparams.Column], list[hparams.Metric]]:
        """The hparam columns and metrics the experiment declares now."""
        with self._lock:
            return self._columns.selected(self.selection)

    def hparam_names(self) -> set[str]:
        """Every hparam of any run, a column of the experiment or not."""
        with self._lock:
            return {c.name for c in self._columns.columns()}

    def event_files(self) -> int:
        """Event files the logdir links or holds: TensorBoard keeps each one open."""
        with self._lock:
            return (self._experiment is not None) + sum(
                len(m.links) + len(m.copies) + sum("tfevents" in f for f in m.files)
                for m in (st.manifest for st in self._runs.values())
            )

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_changes()
            except Exception as e:  # the daemon goes on whatever happens
                log.warning("sync failed: %s", describe_error(e))
                log.debug("sync failure", exc_info=True)
            self._wake.wait(self._next_wait())
            if self._stop.is_set():
                break
            if self._wake.is_set():
                self._wake.clear()
                # Let a burst of writes settle so one sync covers it.
                self._stop.wait(0.1)

    def _next_wait(self) -> float:
        """Seconds to the next poll: ``interval``, or less when an old
        generation may go sooner."""
        with self._lock:
            dues = [due for _, _, due in self._leftovers.values()]
        if not dues:
            return self.interval
        return max(0.05, min(self.interval, min(dues) - time.monotonic() + 0.01))

    def _run_dirs(self) -> list[str]:
        """The directories of the runs shown (the safety net's round)."""
        with self._lock:
            return [st.run.dir for st in self._runs.values()]

    # -- one sync --------------------------------------------------------------

    def _sync(self, changed: set[str] | None) -> SyncStats:
        with self._lock:
            t0 = time.monotonic()
            stats = SyncStats()
            try:
                recreated = self.logdir.ensure()
            except (OSError, LogdirError) as e:
                self.reporter.warn(
                    "logdir",
                    "unusable",
                    f"logdir {self.logdir.path}: {describe_error(e)}; retrying",
                )
                return stats
            self.reporter.clear("logdir", "unusable")
            if recreated and (self._runs or self._experiment is not None):
                # Deleted under us: nothing written is there any more.
                log.info("logdir %s was deleted; writing it again", self.logdir.path)
                for run_id in list(self._runs):
                    self._remove(run_id)
                self._experiment = None
                self._experiment_key = None
                changed = None
            listing = self._list_runs(changed)
            if listing is None:
                return stats
            runs, same = listing
            if same and changed is not None:
                listed = self._listed  # the source re-checked what changed: nothing
            else:
                listed = self._listed = self._dedupe(runs)
                for run_id in [r for r in self._runs if r not in listed]:
                    self._remove(run_id)
                    stats.removed += 1
            touched = self._touched(listed, changed, same)
            if changed is None:
                for i, run in enumerate(listed.values()):
                    if run.id in touched:
                        self._refresh(run, stats)
                    if self.progress is not None and (i % 100 == 0 or i == len(listed) - 1):
                        self.progress(i + 1, len(listed))
            else:
                for run_id in sorted(touched):
                    if run_id in listed:
                        self._refresh(listed[run_id], stats)
            self._write_sessions(stats)
            if self._leftovers:
                now = time.monotonic()
                for run_id, manifest, due in list(self._leftovers.values()):
                    if now >= due:
                        self._remove_old(run_id, manifest)
            self._save_manifests()
            self.writes.settle()
            if changed is None:
                self._drop_unclaimed()
                self._synced = True
            stats.runs = len(self._runs)
            stats.seconds = time.monotonic() - t0
            self.last_stats = stats
            return stats

    def _list_runs(self, changed: set[str] | None) -> tuple[list[Run], bool] | None:
        """Call the callback, time-limited: the runs, and whether they are the
        very list it handed back last (nothing changed); None when it failed."""
        if self._pending_call is not None and self._pending_call.is_alive():
            return None  # still stuck in an earlier call; reported already
        result: dict[str, Any] = {}
        cb = self.source

        def call() -> None:
            try:
                out = cb(changed)
                result["out"] = out
                result["runs"] = out if type(out) is list else list(out)
            except BaseException as e:  # report whatever the callback raised
                result["error"] = e

        thread = threading.Thread(target=call, name="runsmon-list", daemon=True)
        thread.start()
        thread.join(self.callback_timeout)
        if thread.is_alive():
            self._pending_call = thread
            self.reporter.warn(
                "callback",
                "hang",
                f"run listing did not answer within {self.callback_timeout:g} s; "
                "keeping the last list",
            )
            return None
        self._pending_call = None
        self.reporter.clear("callback", "hang")
        if "error" in result:
            self.reporter.warn(
                "callback",
                "error",
                f"run listing failed: {describe_error(result['error'])}; keeping the last list",
            )
            return None
        self.reporter.clear("callback", "error")
        # Our sources hand back the very same list while nothing changed.
        if result["out"] is self._last_out and cb.shares_unchanged:
            return self._last_runs, True
        self._last_out = result["out"]
        runs = [r for r in result["runs"] if isinstance(r, Run)]
        self._last_runs = runs
        return runs, False

    def _dedupe(self, runs: list[Run]) -> dict[str, Run]:
        listed: dict[str, Run] = {}
        for run in runs:
            if run.id in listed:
                self.reporter.warn(
                    run.id, "duplicate", f"run {run.id} listed twice; showing it once"
                )
                continue
            listed[run.id] = run
        return listed

    def _touched(
        self, listed: Mapping[str, Run], changed: set[str] | None, same: bool = False
    ) -> set[str]:
        """Runs to re-check: all on a full check, else new, changed or watched."""
        if changed is None:
            return set(listed)
        touched = {r for r in self._regen if r in listed}
        if same and len(self._runs) < len(listed):
            # Listed but not shown (a failed write, a name that failed): retry.
            touched.update(r for r in listed if r not in self._runs)
        if not same:
            for run in listed.values():
                st = self._runs.get(run.id)
                if st is None:
                    touched.add(run.id)
                elif st.run is not run:
                    # Scalars kept outside files (an MLflow database) move
                    # with no path changing: the source's fingerprint says so.
                    if st.run != run or (
                        run.scalars is not None and run.fingerprint != st.run.fingerprint
                    ):
                        touched.add(run.id)
                    else:
                        st.run = run  # the same run, read again: compare by identity next
        by_dir = self._by_dir
        for path in changed:
            p = os.path.normpath(path)
            run_id = by_dir.get(p)
            if run_id is not None:  # a run directory itself (the safety net names them)
                touched.add(run_id)
                continue
            while True:
                run_id = by_dir.get(p)
                if run_id is not None:
                    touched.add(run_id)
                parent = os.path.dirname(p)
                if parent == p:
                    break
                p = parent
        return touched

    # -- per run ----------------------------------------------------------------

    def _refresh(self, run: Run, stats: SyncStats) -> None:
        st = self._runs.get(run.id)
        files_done = False
        if st is not None and st.run is run and self._written(st):
            # The same run as read before (its source saw no change): only
            # its event files can hold news. Most runs stop here.
            try:
                if not st.files.refresh():
                    return
                files_done = True
            except Exception:  # reported below
                pass
        try:
            asked = safe_name(self.run_name_cb(run))
        except Exception as e:
            self.reporter.warn(run.id, "name", f"run {run.id}: cannot name it: {describe_error(e)}")
            return
        if st is not None and st.manifest.state.get("wanted") != asked:
            self._remove(run.id)  # its name changed (a new label): a new directory
            st = None
        if st is None:
            # A run with scalars of its own writes them now: its directory
            # is made at once. Others get theirs with their session.
            manifest = self._adopt(run.id, asked, create=run.scalars is not None)
            if manifest is None:
                return
            files = RunFiles(runview.files_root(run), self.fs, exclude=run.nested)
            st = self._runs[run.id] = RunState(run, manifest, files)
            stats.added += 1
            log.info("run added: %s", manifest.name)
        elif st.run is not run and st.run != run:
            stats.updated += 1
        if st.run is not run and st.files.root != runview.files_root(run):
            st.files = RunFiles(runview.files_root(run), self.fs)
        if st.run.dir != run.dir and self._by_dir.get(os.path.normpath(st.run.dir)) == run.id:
            del self._by_dir[os.path.normpath(st.run.dir)]
        st.run = run
        st.files.exclude = run.nested
        key = os.path.normpath(run.dir)
        self._by_dir[run.dir if key == run.dir else key] = run.id
        self.changes.set_run(run)
        try:
            if not files_done:
                st.files.refresh()
        except Exception as e:  # never let one run stop the sync
            self.reporter.warn(run.id, "files", f"run {st.name}: {describe_error(e)}")
        runview.report_file_errors(self.reporter, run, st.name, st.files)
        if run.id not in self._new:  # else linked once its directory is made, with its session
            self._rewrite_if(st, self.mirror.sync_links(st))
        self._rewrite_if(st, self.mirror.sync_scalars(st))
        outside = (tuple(m) for m in st.manifest.state.get("synth_metrics", []))
        view = runview.view(run, st.files, outside)
        st.hparams = view.hparams
        st.own_time = view.own_time
        st.metrics = self._shared_metrics(view.metrics)
        self._columns.set_run(run.id, st.hparams, st.metrics, view.user_hparams)
        self._dirty.add(run.id)

    def _shared_metrics(self, metrics: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
        """One object for each distinct set of metrics: most runs share theirs."""
        shared = self._metric_sets.get(metrics)
        if shared is None:
            if len(self._metric_sets) >= 4096:
                self._metric_sets.clear()
            shared = self._metric_sets[metrics] = metrics
        return shared

    def _written(self, st: RunState) -> bool:
        """Whether all a run needs is in the logdir (nothing to retry)."""
        state = st.manifest.state
        return (
            (st.run.scalars is None or st.scalars_of is st.run)
            and st.run.id not in self._new
            and st.run.id not in self._regen
            and state.get("session") is not None
            and (not st.run.ended or state.get("end") is not None)
        )

    def _remove(self, run_id: str) -> None:
        st = self._runs.pop(run_id, None)
        for old_id, old, _ in list(self._leftovers.values()):
            if old_id == run_id:
                self._remove_old(run_id, old)
        self._columns.remove_run(run_id)
        self._namer.release(run_id)
        self._regen.discard(run_id)
        self._dirty.discard(run_id)
        self.writes.unsaved.discard(run_id)
        self.changes.drop_run(run_id)
        fresh = run_id in self._new
        self._new.discard(run_id)
        if st is not None:
            key = os.path.normpath(st.run.dir)
            if self._by_dir.get(key) == run_id:
                del self._by_dir[key]
        if st is not None and fresh:
            log.info("run removed: %s", st.name)  # nothing of it was written yet
        elif st is not None:
            self._remove_manifest(st.manifest)
            self.reporter.clear(run_id)
            log.info("run removed: %s", st.name)

    def _rewrite_if(self, st: RunState, why: str | None) -> None:
        """:meth:`_reset` when there is a ``why``."""
        if why is not None:
            self._reset(st, why)

    def _reset(self, st: RunState, why: str) -> None:
        """Have a run's session and files written anew, in a new directory, at
        the end of this sync (see :meth:`_new_generation`)."""
        if st.run.id not in self._regen:
            log.info("run %s: %s; rewriting it", st.name, why)
        self._regen.add(st.run.id)
        self._dirty.add(st.run.id)

    # -- sessions and the experiment -----------------------------------------

    def _write_sessions(self, stats: SyncStats) -> None:
        """Write the sessions and end infos that are due, then the experiment."""
        version = self._columns.version
        if self._column_map[0] == version:
            columns = self._column_map[1]
            kinds = self._kinds
        else:
            columns = {c.name: c for c in self._columns.columns()}
            self._column_map = (version, columns)
            kinds = {name: c.kind for name, c in columns.items()}
        if kinds != self._kinds:
            # A column changed kind (e.g. a string met a numeric column): every
            # session holding it may now show its value differently.
            moved = {
                n for n in kinds.keys() | self._kinds.keys() if kinds.get(n) != self._kinds.get(n)
            }
            self._dirty.update(
                rid for rid, st in self._runs.items() if moved.intersection(st.hparams)
            )
            self._kinds = kinds
        dirty, self._dirty = self._dirty, set()
        for run_id in dirty:
            st = self._runs.get(run_id)
            if st is not None:
                self._write_session(st, columns, stats)
        if self._experiment_key != (version, self.selection):
            self._write_experiment(columns, stats)

    def _write_session(
        self, st: RunState, columns: Mapping[str, hparams.Column], stats: SyncStats
    ) -> None:
        run, state = st.run, st.manifest.state
        encoded = hparams.encode_hparams(st.hparams, columns)
        written_end = state.get("end")
        written = state.get("session")
        end = sessions.shown_end(run)
        # The key of a new run is worked out once its name is final (below).
        key = None if run.id in self._new else _session_key(encoded, st.name, run.started)
        if run.id not in self._new and (
            run.id in self._regen
            or (
                written is not None
                and (
                    written != key
                    or (written_end is None and end == RUNNING)
                    or (
                        written_end is not None
                        and (written_end != end or state.get("stopped", run.stopped) != run.stopped)
                    )
                )
            )
        ):
            # TensorBoard keeps what it read first of a session: a new one,
            # in a new directory, then the old one goes.
            if run.id not in self._regen:
                log.info("run %s: its hparams, status or end changed; rewriting it", st.name)
            self._regen.add(run.id)
            self._new_generation(st, encoded, key, end, stats)
            return
        before = dict(state)
        write_start = state.get("session") is None
        # A final status can follow a session as an end file that sorts last;
        # "running" only goes with the start info (an end file would stop
        # TensorBoard's Python loader reading the run's growing files).
        write_end = end is not None and written_end is None and (write_start or end != RUNNING)
        # A run seen first when it has already ended gets one file holding
        # its start and end: one file less to make for each run of a sweep.
        end_file = SESSION_FILE if write_start and write_end else END_FILE
        links = None
        if run.id in self._new:
            if not self._make_dir(st):
                return
            # One manifest write announces the session, end info and links
            # before any of them exists (a restart trusts only what is on
            # disk of them). The name is final now: the key follows it.
            key = _session_key(encoded, st.name, run.started)
            links = self.mirror.link_targets(st)
            for rel in dict.fromkeys((SESSION_FILE, end_file) if write_end else (SESSION_FILE,)):
                if rel not in st.manifest.files:
                    st.manifest.files.append(rel)
            st.manifest.links.update(links)
            self.logdir.plan_parents(st.manifest, [*links], fresh=True)
            state["session"] = key
            if write_end:
                state["end"] = end
                state["end_file"] = end_file
                state["stopped"] = run.stopped
            if not self.writes.attempt(
                st, "manifest", lambda: self.logdir.save_manifest(st.manifest)
            ):
                self.writes.unsaved.add(run.id)
            made = self.writes.attempt(
                st, "write", lambda: self.logdir.make_parents(st.manifest, [*links], fresh=True)
            )
            if not made:
                self.writes.unsaved.add(run.id)
            before = dict(state)
            state.pop("session")
            state.pop("end", None)
            state.pop("stopped", None)
        end_events = self._end_events(st) if write_end else []
        if write_start:
            summary = hparams.session_start_summary(encoded, st.name, run.started)
            wall = run.started if run.started is not None else self._created
            evs = [events.summary_event(summary, wall_time=wall)]
            if end_file == SESSION_FILE:
                evs += end_events
            data = events.encode_events(evs, file_version=True, wall_time=wall)
            if self.writes.attempt(
                st, "write", lambda: self.logdir.write_file(st.manifest, SESSION_FILE, data)
            ):
                state["session"] = key
                stats.sessions += 1
                if end_file == SESSION_FILE:
                    state["end"] = end
                    state["end_file"] = SESSION_FILE
                    state["stopped"] = run.stopped
                    stats.ended += int(run.ended)
        if write_end and end_file == END_FILE and state.get("session") is not None:
            wall = run.stopped if run.stopped is not None else self._created
            data = events.encode_events(end_events, file_version=True, wall_time=wall)
            if self.writes.attempt(
                st, "write", lambda: self.logdir.write_file(st.manifest, END_FILE, data)
            ):
                state["end"] = end
                state["end_file"] = END_FILE
                state["stopped"] = run.stopped
                stats.ended += 1
                log.info("run %s: %s", st.name, run.status)
        if links is not None:
            # After the session: TensorBoard's Python loader may skip a file
            # whose name sorts before the one it is reading.
            self.mirror.make_links(st, links, fresh=made)
            self._rewrite_if(st, self.mirror.sync_copies(st))
        if state != before:
            self.writes.unsaved.add(run.id)

    def _new_generation(
        self, st: RunState, encoded: Mapping[str, Any], key: str, end: str | None, stats: SyncStats
    ) -> None:
        """Write a run's session anew in a new directory, then delete the old one.

        The new directory holds all the run shows (session with the same
        group name, links, copies, scalars files) before the old one goes, so
        TensorBoard always has the run's row (see sessions.py).  A kill in
        between leaves two directories; the manifest's ``building`` mark
        tells a restart which one is whole.  On a failure the old directory
        stays and the rewrite is tried again at the next sync.
        """
        run, old = st.run, st.manifest
        group = st.name
        tried: list[str] = []

        def names() -> str:
            tried.append(sessions.next_dir(group, old.name, self._dir_usable(run.id)))
            return tried[-1]

        try:
            made = self.logdir.create_run_as(
                run.id, names, self._foreign(run.id, release=False), save=False
            )
        except (OSError, LogdirError) as e:
            self.writes.failed(
                run.id, f"run {group}: cannot write to the logdir: {describe_error(e)}"
            )
            return
        if made is None:
            return
        dirname = made.name
        self._namer.reserve(run.id, dirname)
        new = made
        new.state = {
            "wanted": old.state.get("wanted"),
            "group": group,
            "gen": sessions.generation(old) + 1,
            "building": True,
        }
        if "synth_metrics" in old.state:
            new.state["synth_metrics"] = old.state["synth_metrics"]
        links = self.mirror.link_targets(st)
        new.files.append(SESSION_FILE)
        new.links.update(links)
        self.logdir.plan_parents(new, [*links], fresh=True)
        summary = hparams.session_start_summary(encoded, group, run.started)
        wall = run.started if run.started is not None else self._created
        evs = [events.summary_event(summary, wall_time=wall)]
        if end is not None:
            evs += self._end_events(st)
        data = events.encode_events(evs, file_version=True, wall_time=wall)
        st.manifest = new
        ok = (
            self.writes.attempt(st, "manifest", lambda: self.logdir.save_manifest(new))
            and self.writes.attempt(
                st, "write", lambda: self.logdir.make_parents(new, [*links], fresh=True)
            )
            and self.writes.attempt(
                st, "write", lambda: self.logdir.write_file(new, SESSION_FILE, data)
            )
        )
        if not ok:
            st.manifest = old
            self._remove_manifest(new)
            self._vacated.add(dirname)
            if dirname != group:
                self._namer.unreserve(run.id, dirname)
            return
        new.state["session"] = key
        if end is not None:
            new.state["end"] = end
            new.state["end_file"] = SESSION_FILE
            new.state["stopped"] = run.stopped
        # After the session: TensorBoard's Python loader may skip a file
        # whose name sorts before the one it is reading.
        self.mirror.make_links(st, links, fresh=True)
        self._rewrite_if(st, self.mirror.sync_copies(st))
        st.scalars_of = None
        self._rewrite_if(st, self.mirror.sync_scalars(st))
        del new.state["building"]
        if not self.writes.attempt(st, "manifest", lambda: self.logdir.save_manifest(new)):
            self.writes.unsaved.add(run.id)  # whole on disk; a restart trusts what is there
        if sessions.needs_handover(self._shown_bytes(st)):
            # TensorBoard's data server shows the new directory only once it
            # has read all of it: the old one stays meanwhile.
            due = time.monotonic() + self.handover_delay
            self._leftovers[old.name] = (run.id, old, due)
        else:
            self._remove_old(run.id, old)
        self._regen.discard(run.id)
        stats.rewrites += 1
        stats.sessions += 1
        stats.ended += int(run.ended and old.state.get("end") != end)
        log.info("run %s: rewritten in %s", group, dirname)

    def _shown_bytes(self, st: RunState) -> int:
        """Bytes of the event files a run's directory shows (what TensorBoard reads)."""
        return sum(f.stat_key[0] for f in st.files.files.values() if f.stat_key is not None)

    def _remove_old(self, run_id: str, manifest: Manifest) -> None:
        """Delete a run's old generation; one that cannot go yet is tried again
        at each sync (its name stays the run's meanwhile)."""
        group = str(manifest.state.get("group") or manifest.name)
        try:
            self.logdir.remove_run(manifest)
        except (OSError, LogdirError) as e:
            self._leftovers[manifest.name] = (run_id, manifest, 0.0)
            self.reporter.warn(
                run_id,
                "remove",
                f"run {group}: cannot remove its old directory {manifest.name!r} from the "
                f"logdir: {describe_error(e)}; trying again",
            )
            return
        if self._leftovers.pop(manifest.name, None) is not None:
            self.reporter.clear(run_id, "remove")
        self._vacated.add(manifest.name)
        if manifest.name != group:
            self._namer.unreserve(run_id, manifest.name)

    def _dir_usable(self, run_id: str) -> Callable[[str], bool]:
        """Whether a name may hold a new directory of ``run_id`` now."""

        def usable(name: str) -> bool:
            owner = self._namer.owner(name)
            return (
                (owner is None or owner == run_id)
                and not self._vacated.recent(name)
                and not os.path.lexists(self.logdir.run_path(name))
            )

        return usable

    def _end_events(self, st: RunState) -> list[Any]:
        """The session end info, and the run's duration as the `time` scalar."""
        run = st.run
        wall = run.stopped if run.stopped is not None else self._created
        evs = [
            events.summary_event(
                hparams.session_end_summary(run.status, run.stopped), wall_time=wall
            )
        ]
        if run.duration is not None and not st.own_time:
            evs.append(events.scalar_event(hparams.TIME_METRIC, run.duration, 0, wall))
        return evs

    def _make_dir(self, st: RunState) -> bool:
        """Make a new run's directory (the name may move off one taken meanwhile)."""
        run_id, manifest = st.run.id, st.manifest
        tries = 0

        def names() -> str:
            nonlocal tries
            tries += 1
            if tries > 1:  # the name meant for it was taken
                manifest.name = self._namer.name_for(run_id, str(manifest.state["wanted"]))
            return manifest.name

        try:
            made = self.logdir.create_run_as(run_id, names, self._foreign(run_id), save=False)
        except (OSError, LogdirError) as e:
            self.reporter.warn(
                run_id,
                "write",
                f"run {manifest.name}: cannot write to the logdir: {describe_error(e)}",
            )
            made = None
        if made is not None:
            self._new.discard(run_id)
            return True
        self._remove(run_id)  # tried again as a new run at the next sync
        return False

    def _save_manifests(self) -> None:
        """Save the manifests that changed in this sync: at most one write each."""
        unsaved, self.writes.unsaved = self.writes.unsaved, set()
        for run_id in unsaved:
            st = self._runs.get(run_id)
            if st is not None and run_id not in self._new:
                self.writes.attempt(
                    st, "manifest", lambda st=st: self.logdir.save_manifest(st.manifest)
                )

    def _write_experiment(self, columns: Mapping[str, hparams.Column], stats: SyncStats) -> None:
        selected, metrics = self._columns.selected(self.selection)
        summary = hparams.experiment_summary(
            selected, metrics, self._created, differs=self._columns.differs
        )
        data = events.encode_events(
            [events.summary_event(summary, wall_time=self._created)],
            file_version=True,
            wall_time=self._created,
        )
        if self._experiment is not None and self._experiment[1] == data:
            self._experiment_key = (self._columns.version, self.selection)
            self._new_columns(selected, metrics)
            return
        self._experiment_gen += 1
        try:
            dirname = self.logdir.write_experiment(self._experiment_gen, data)
        except OSError as e:
            self.reporter.warn(
                "logdir", "experiment", f"cannot write the experiment: {describe_error(e)}"
            )
            return
        self.reporter.clear("logdir", "experiment")
        self._experiment = (dirname, data)
        self._experiment_key = (self._columns.version, self.selection)
        stats.experiment_written = True
        self._new_columns(selected, metrics)

    def _new_columns(self, columns: list[hparams.Column], metrics: list[hparams.Metric]) -> None:
        """Tell ``on_new_columns`` what the experiment now has that it had not."""
        names = frozenset([*(c.name for c in columns), *metrics])
        old, self._experiment_names = self._experiment_names, names
        if old is not None and names - old and self.on_new_columns is not None:
            self.on_new_columns(
                [c.name for c in columns if c.name not in old], [m for m in metrics if m not in old]
            )

    # -- restart -----------------------------------------------------------------

    def _restore(self) -> None:
        """Pick up what an earlier runsmon wrote in this logdir (also after kill -9)."""
        self.logdir.clean_tmp()
        self._created = self.logdir.created()
        by_run: dict[str, list[Manifest]] = {}
        for manifest in self.logdir.manifests():
            by_run.setdefault(manifest.run_id, []).append(manifest)
        for run_id, manifests in by_run.items():
            manifest = manifests[0]
            if len(manifests) > 1:
                # A kill came during a rewrite: keep the whole generation.
                manifest, others = sessions.pick_restored(manifests)
                for other in others:
                    self._remove_manifest(other)
                    self._vacated.add(other.name)
            group = str(manifest.state.get("group") or manifest.name)
            self._namer.restore(run_id, group)
            if group != manifest.name:
                self._namer.reserve(run_id, manifest.name)
            self._restored[run_id] = manifest
        self._experiment_gen, newest, data = self.logdir.newest_experiment()
        if newest is not None and data is not None:
            self._experiment = (newest, data)

    def _adopt(self, run_id: str, asked: str, create: bool = True) -> Manifest | None:
        """The manifest for a run new to this process: restored or created.

        With ``create`` False a new run only gets its name: its directory is
        made with its session (see :meth:`_make_dir`).
        """
        manifest = self._restored.pop(run_id, None)
        if manifest is not None and manifest.state.get("wanted") != asked:
            self._namer.release(run_id)
            self._remove_manifest(manifest)
            manifest = None
        if manifest is not None:
            # Trust only what is really on disk: a kill may have come between
            # the manifest and the file it announces.
            end_file = str(manifest.state.get("end_file", END_FILE))
            for key, rel in (("session", SESSION_FILE), ("end", end_file)):
                if not os.path.exists(self.logdir.run_path(manifest.name, rel)):
                    manifest.state.pop(key, None)
            if "end" in manifest.state and "session" not in manifest.state:
                manifest.state.pop("end")
            if manifest.state.pop("building", None) and "session" in manifest.state:
                self._regen.add(run_id)  # cut short and the only one left: written anew
            for rel in [r for r in manifest.links if not self._exists(manifest, r)]:
                del manifest.links[rel]  # announced, never made: made again
            return manifest
        if not create:
            manifest = Manifest(run_id, self._namer.name_for(run_id, asked))
            manifest.state["wanted"] = asked
            self._new.add(run_id)
            return manifest
        tried: list[str] = []

        def names() -> str:
            tried.append(self._namer.name_for(run_id, asked))
            return tried[-1]

        try:
            manifest = self.logdir.create_run_as(run_id, names, self._foreign(run_id))
        except (OSError, LogdirError) as e:
            self.reporter.warn(
                run_id, "write", f"run {tried[-1]}: cannot write to the logdir: {describe_error(e)}"
            )
            manifest = None
        if manifest is None:
            self._namer.release(run_id)
            return None
        manifest.state["wanted"] = asked
        return manifest

    def _foreign(self, run_id: str, release: bool = True) -> Callable[[str], None]:
        """What to do when something runsmon did not make holds a name meant
        for ``run_id``: leave it be, and keep the name from being given again."""

        def taken(name: str) -> None:
            if release:
                self._namer.release(run_id)
            self._namer.restore(f"\0foreign:{name}", name)

        return taken

    def _exists(self, manifest: Manifest, rel: str) -> bool:
        try:
            return os.path.lexists(self.logdir.run_path(manifest.name, rel))
        except LogdirError:
            return False

    def _remove_manifest(self, manifest: Manifest) -> None:
        try:
            self.logdir.remove_run(manifest)
        except (OSError, LogdirError) as e:
            log.warning(
                "%s: cannot remove it from the logdir: %s", manifest.name, describe_error(e)
            )

    def _drop_unclaimed(self) -> None:
        """After the first full sync: runs an earlier runsmon wrote that are gone."""
        for run_id, manifest in list(self._restored.items()):
            del self._restored[run_id]
            self._namer.release(run_id)
            self._remove_manifest(manifest)


def _session_key(encoded: Mapping[str, Any], name: str, started: float | None) -> str:
    """What a written session shows: a change means it must be written anew."""
    return _digest([sorted(encoded.items()), name, started])


def _digest(value: object) -> str:
    return hashlib.sha1(json.dumps(value, default=str).encode()).hexdigest()

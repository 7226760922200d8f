"""RunsMonitor: keeps a logdir in step with a run-listing callback.

Each sync asks the callback for the runs, works out what changed (new,
changed, ended or removed runs, new event files or tags) and has the others
write only that: where to look next (:mod:`runsmon.changes`), what a run's
directory holds (:mod:`runsmon.mirror`), its session and the experiment
(:mod:`runsmon.sessionwriter`: a session that must change gets a new
directory under the same row name). The logdir's layout (linked, or compact:
one file a run, :mod:`runsmon.compact`) is chosen once, by
:mod:`runsmon.layout`, at the first listing. See ARCHITECTURE.md for the
logdir layouts and the TensorBoard behaviour behind them.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from runsmon import hparams, runview
from runsmon import layout as layouts
from runsmon.changes import SHARE_MAX, Changes
from runsmon.fs import LOCAL, FileSystem
from runsmon.listing import Lister
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
from runsmon.restore import Restored
from runsmon.run import Run, shared
from runsmon.runfiles import RunFiles
from runsmon.runstate import RunState, SyncStats, Writes
from runsmon.seeds import SeedGroups, Shaper
from runsmon.sessionwriter import ExperimentWriter, SessionWriter
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


class RunsMonitor:
    """Keeps ``logdir`` in step with the runs ``list_runs_cb`` returns.

    ``run_once()`` syncs synchronously; ``start()``/``stop()`` run syncs in a
    background thread every ``interval`` seconds and at once when a watched
    file changes. Usable as a context manager (started on enter).
    ``layout``: ``linked``, ``compact`` or ``auto`` (by ``open_files_limit``,
    default this process's soft limit; see :mod:`runsmon.layout`).
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
        layout: str = layouts.AUTO,
        open_files_limit: int | None = None,
        images: bool = True,
        hparams_summaries: bool = True,
        seed_groups: SeedGroups | None = None,
    ) -> None:
        self.logdir = logdir if isinstance(logdir, Logdir) else Logdir(logdir)
        self.list_runs_cb = list_runs_cb
        self.source = as_source(list_runs_cb)
        self.interval = interval
        self.run_name_cb = run_name_cb or default_run_name
        self.watch = watch
        self.full_check_interval = full_check_interval
        if reset_delay is not None:
            warnings.warn(
                "RunsMonitor(reset_delay=...) is deprecated: sessions are rewritten with no "
                "gap; the value is taken as handover_delay",
                DeprecationWarning,
                stacklevel=2,
            )
            handover_delay = reset_delay
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
        if layout not in layouts.LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(layouts.LAYOUTS)}")
        if not hparams_summaries:
            # Links only is the linked layout without sessions: nothing to compact into.
            if layout == layouts.COMPACT:
                raise ValueError("the compact layout holds sessions: it needs hparams_summaries")
            layout = layouts.LINKED
        self.layout: str | None = None if layout == layouts.AUTO else layout
        """``linked`` or ``compact`` (see runsmon/layout.py); under ``auto``,
        None until the first listing chose it (then it stays)."""
        self.layout_note = ""
        """Why ``auto`` chose the layout (one line), once it did."""
        self.planned_event_files: int | None = None
        """Under ``auto``, once it chose: the event files the first sync will
        leave in the logdir (read without the lock while that sync goes on)."""
        self.open_files_limit = open_files_limit
        """The open-file limit ``auto`` chooses by (None: this process's soft limit)."""
        self.images = images  # runs' image files in the Images tab (not with --skip-images)
        self.hparams_summaries = hparams_summaries  # False: links only (--skip-hparams)
        self.shaper = Shaper(seed_groups)
        """What a session shows that depends on the other runs (tag columns, seed groups)."""

        self._lock = threading.RLock()
        self._runs: dict[str, RunState] = {}
        self._columns = hparams.Columns()
        self._namer = RunNamer()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.logdir.clean_tmp()
        created = self.logdir.created()
        self.lister = Lister(self.source, self.reporter, callback_timeout)
        """Asks the source for its runs, time-limited."""
        self.writes = Writes(self.reporter)
        """The writes of one sync, per run (warnings, manifests saved at its end)."""
        self.mirror = Mirror(self.logdir, fs, self.reporter, self.writes)
        """What a run's directory holds besides its session (links, copies, scalars)."""
        self.writer = SessionWriter(
            self.logdir,
            self.reporter,
            self.writes,
            self.mirror,
            self._namer,
            created,
            handover_delay,
            hparams_summaries,
        )
        """The sessions: written when due, rewritten as a new generation."""
        self.experiment = ExperimentWriter(self.logdir, self.reporter, created, hparams_summaries)
        self._new: set[str] = set()  # runs named but not in the logdir yet (made with the session)
        self._by_dir: dict[str, str] = {}  # normalised run dir -> run id
        self._synced = False  # a full check has been done
        self.changes = Changes(
            self.source, interval, full_check_interval, self._lock, self._wake.set
        )
        """Where each poll looks: the feed of changed paths, the watches, the safety net."""
        self._metric_sets: dict[frozenset[tuple[str, str]], frozenset[tuple[str, str]]] = {}
        self._restored = Restored(self.logdir, self._namer, self.writer.vacated)
        """An earlier runsmon's runs in this logdir, until each is listed again."""
        self._walked: dict[str, RunFiles] = {}  # runs' files listed to choose the layout
        if self.layout is not None:
            self._use_layout(self.layout)

    # -- public API ------------------------------------------------------------

    @property
    def handover_delay(self) -> float:
        """Seconds the old directory of a rewritten run with large event files
        stays beside the new one (two reloads of the TensorBoard reading the
        logdir, and one more second): TensorBoard's data server shows a run
        only once it has read all of it (see sessions.py)."""
        return self.writer.handover_delay

    @handover_delay.setter
    def handover_delay(self, seconds: float) -> None:
        self.writer.handover_delay = seconds

    def run_once(self) -> SyncStats:
        """Sync the logdir now. The first call checks every run (``stats.full``);
        the second sets a watch on the runs' trees and checks them all again;
        later ones cost what changed since the last, where the runs can be
        watched exactly (else each is a full check: see ``Changes.since_last_check``).
        Runs in object storage are listed again first (the feed's ``take``: a
        ``ListingFeed`` lists its stores)."""
        with self._lock:
            changed = None
            if self._synced:
                listed = set() if self.changes.feed.watches else self.changes.feed.take()
                changed = self.changes.since_last_check(
                    self.watch, self.fs, self.logdir.path, self._by_dir
                )
                if changed is not None:
                    changed |= listed
            self.changes.full_next = True  # unless this sync completes (changes taken)
            stats = self._full_check() if changed is None else self._sync(changed)
            self.changes.full_next = stats is not self.last_stats
            return stats

    def _full_check(self) -> SyncStats:
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
            stats = self._full_check()
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

    def wake(self) -> None:
        """Poll now, not at the next ``interval`` (a change feed found news)."""
        self._wake.set()

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
                runview.row(st.run, st.name, st.hparams, st.files, self.reporter)
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
            return self.experiment.written + sum(
                len(m.links) + len(m.copies) + sum("tfevents" in f for f in m.files)
                for m in (st.manifest for st in self._runs.values())
            )

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()  # polls start every interval, however long one takes
            try:
                self.sync_changes()
            except Exception as e:  # the daemon goes on whatever happens
                log.warning("sync failed: %s", describe_error(e))
                log.debug("sync failure", exc_info=True)
            self._wake.wait(max(0.05, self._next_wait() - (time.monotonic() - began)))
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
            due = self.writer.next_due()
        if due is None:
            return self.interval
        return max(0.05, min(self.interval, due - time.monotonic() + 0.01))

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
            if recreated and (self._runs or self.experiment.written):
                # Deleted under us: nothing written is there any more.
                log.info("logdir %s was deleted; writing it again", self.logdir.path)
                for run_id in list(self._runs):
                    self._remove(run_id)
                self.experiment.forget()
                changed = None
            listing = self.lister.list(changed)
            if listing is None:
                return stats
            listed = listing.runs
            if self.layout is None:
                self._choose_layout(listed)
            if not (listing.same and changed is not None):
                for run_id in [r for r in self._runs if r not in listed]:
                    self._remove(run_id)
                    stats.removed += 1
            touched = self._touched(listed, changed, listing.same)
            stats.full, stats.checked = changed is None, len(touched)
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
            for st in self.shaper.settle(self._runs):
                self._columns.set_run(st.run.id, st.hparams, st.metrics, st.user)
                self.writer.mark(st.run.id)
            made, unmade = self.writer.write_due(self._runs, self._columns, stats, self._new)
            self._new -= made
            for run_id in unmade:
                self._remove(run_id)  # tried again as a new run at the next sync
            added = self.experiment.write(self._columns, self.selection, stats, self._runs)
            if added is not None and self.on_new_columns is not None:
                self.on_new_columns(*added)
            self.writer.remove_due()
            self._save_manifests()
            self.writes.settle()
            if changed is None:
                self._restored.drop_unclaimed()
                self._walked.clear()
                self._synced = True
            stats.runs = len(self._runs)
            stats.seconds = time.monotonic() - t0
            self.last_stats = stats
            return stats

    def _touched(
        self, listed: Mapping[str, Run], changed: set[str] | None, same: bool = False
    ) -> set[str]:
        """Runs to re-check: all on a full check, else new, changed or watched."""
        if changed is None:
            return set(listed)
        touched = {r for r in self.writer.rewrites() if r in listed}
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
        """One run's step: its files, its name and state, its directory, what it shows."""
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
        asked = self._asked_name(run)
        if asked is None:
            return
        st = self._state_for(run, asked, st, stats)
        if st is None:
            return
        self._track(st, run)
        if not files_done:
            self._read_files(st)
        runview.report_file_errors(self.reporter, run, st.name, st.files)
        if run.id not in self._new:  # else linked once its directory is made, with its session
            self._rewrite_if(st, self.mirror.sync_links(st))
        self._rewrite_if(st, self.mirror.sync_scalars(st))
        self._show(st)
        self.writer.mark(run.id)

    def _asked_name(self, run: Run) -> str | None:
        """The name the naming callback gives ``run`` (None: it failed, reported)."""
        try:
            return safe_name(self.run_name_cb(run))
        except Exception as e:
            self.reporter.warn(run.id, "name", f"run {run.id}: cannot name it: {describe_error(e)}")
            return None

    def _state_for(
        self, run: Run, asked: str, st: RunState | None, stats: SyncStats
    ) -> RunState | None:
        """The run's state: the one kept, or for a run new here (or renamed)
        one restored or named anew (None: it could not be)."""
        if st is not None and st.manifest.state.asked != asked:
            self._remove(run.id)  # its name changed (a new label): a new directory
            st = None
        if st is None:
            # A run with scalars of its own writes them now: its directory
            # is made at once. Others get theirs with their session.
            manifest = self._adopt(
                run.id, asked, create=run.scalars is not None and self.mirror.compact is None
            )
            if manifest is None:
                return None
            files = self._walked.pop(run.id, None) or self._files_of(run)
            st = self._runs[run.id] = RunState(run, manifest, files)
            stats.added += 1
            log.info("run added: %s", manifest.name)
        elif st.run is not run and st.run != run:
            stats.updated += 1
        return st

    def _track(self, st: RunState, run: Run) -> None:
        """Point a run's state at ``run`` as read now: its files' root, its
        directory (paths reported map to it), its watches."""
        if st.run is not run and not runview.files_fit(st.files, run, self.selection.best):
            st.files = self._files_of(run)
        if st.run.dir != run.dir and self._by_dir.get(os.path.normpath(st.run.dir)) == run.id:
            del self._by_dir[os.path.normpath(st.run.dir)]
        st.run = run
        st.files.exclude = run.nested
        key = os.path.normpath(run.dir)
        self._by_dir[run.dir if key == run.dir else key] = run.id
        self.changes.set_run(run)

    def _files_of(self, run: Run) -> RunFiles:
        """A run's files as this monitor reads them (reductions, images, hparams)."""
        return runview.run_files(
            run,
            self.fs,
            self.selection.best,
            images=self.images,
            hparams=self.hparams_summaries,
        )

    def _read_files(self, st: RunState) -> None:
        """Look at the run's event files again (appended bytes, new files)."""
        try:
            st.files.refresh()
        except Exception as e:  # never let one run stop the sync
            self.reporter.warn(st.run.id, "files", f"run {st.name}: {describe_error(e)}")

    def _show(self, st: RunState) -> None:
        """What the dashboard shows of the run: its hparams and metrics, in the columns."""
        outside = (tuple(m) for m in st.manifest.state.synth_metrics or ())
        view = runview.view(st.run, st.files, outside)
        st.base = view.hparams
        st.user = view.user_hparams
        st.own_time = view.own_time
        st.metrics = shared(self._metric_sets, view.metrics, view.metrics)  # most runs share one
        self.shaper.note(st)  # its hparams and row: once every run of the sync is seen

    def _written(self, st: RunState) -> bool:
        """Whether all a run needs is in the logdir (nothing to retry)."""
        state = st.manifest.state
        return (
            (st.run.scalars is None or st.scalars_of is st.run)
            and st.run.id not in self._new
            and not self.writer.rewriting(st.run.id)
            and state.session is not None
            and (not st.run.ended or state.end is not None)
        )

    def _remove(self, run_id: str) -> None:
        st = self._runs.pop(run_id, None)
        self.writer.forget(run_id)
        self.shaper.remove(run_id)
        self._columns.remove_run(run_id)
        self._namer.release(run_id)
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
            self.logdir.discard_run(st.manifest)
            self.reporter.clear(run_id)
            log.info("run removed: %s", st.name)

    def _rewrite_if(self, st: RunState, why: str | None) -> None:
        """Have the run written anew, at the end of this sync, when there is a ``why``."""
        if why is not None:
            self.writer.rewrite(st, why)

    def _save_manifests(self) -> None:
        """Save the manifests that changed in this sync: at most one write each."""
        unsaved, self.writes.unsaved = self.writes.unsaved, set()
        for run_id in unsaved:
            st = self._runs.get(run_id)
            if st is not None and run_id not in self._new:
                self.writes.attempt(
                    st, "manifest", lambda st=st: self.logdir.save_manifest(st.manifest)
                )

    # -- the layout ----------------------------------------------------------------

    def _choose_layout(self, listed: Mapping[str, Run]) -> None:
        """``auto``: choose the layout by the first listing (once per process)."""
        chosen, self.layout_note, self._walked, linked = layouts.choose_for(
            listed.values(), self._files_of, self.open_files_limit
        )
        self.planned_event_files = layouts.planned_event_files(
            chosen, len(listed), linked, bool(self.selection.best)
        )
        log.info("%s", self.layout_note)
        self._use_layout(chosen)

    def _use_layout(self, chosen: str) -> None:
        self.layout = chosen
        self.mirror.use_layout(chosen)
        self.experiment.compact = self.mirror.compact is not None
        self._restored.layout = self.mirror.layout

    # -- a run new to this process ---------------------------------------------

    def _adopt(self, run_id: str, asked: str, create: bool = True) -> Manifest | None:
        """The manifest for a run new to this process: restored or created.

        With ``create`` False a new run only gets its name: its directory is
        made with its session (see :meth:`_make_dir`).
        """
        manifest, cut_short = self._restored.claim(run_id, asked)
        if cut_short:
            self.writer.rewrite_id(run_id)  # written anew
        if manifest is not None:
            return manifest
        if not create:
            manifest = Manifest(run_id, self._namer.name_for(run_id, asked))
            manifest.state.asked = asked
            self._new.add(run_id)
            return manifest
        tried: list[str] = []

        def names() -> str:
            tried.append(self._namer.name_for(run_id, asked))
            return tried[-1]

        def taken(name: str) -> None:
            self._namer.release(run_id)
            self._namer.foreign(name)

        try:
            manifest = self.logdir.create_run_as(run_id, names, taken)
        except (OSError, LogdirError) as e:
            self.reporter.warn(
                run_id, "write", f"run {tried[-1]}: cannot write to the logdir: {describe_error(e)}"
            )
            manifest = None
        if manifest is None:
            self._namer.release(run_id)
            return None
        manifest.state.asked = asked
        return manifest

"""Writing sessions and the experiment: a run's row in the HParams dashboard.

:class:`SessionWriter` writes each run's session (start info, end info and
the `time` scalar) once, when it is due, and when a session must change
writes a new *generation* of the run's directory and then deletes the old one
(the rules are in :mod:`runsmon.sessions`). It keeps which runs are due
(``mark``), which must be written anew (``rewrite``), the names vacated
lately and the old generations still in the logdir. :class:`ExperimentWriter`
writes the logdir's one experiment anew when what it declares moved. Neither
knows when a sync happens or where runs come from; the run's other files are
the :class:`~runsmon.mirror.Mirror`'s.

With ``hparams`` False (``--skip-hparams``, as ``guild tensorboard
--skip-hparams``) neither writes HParams summaries: a run's directory holds
its links (and copies, scalars and images) only, its session is marked
:data:`LINKS_ONLY` in the manifest, and no experiment is written (one an
earlier runsmon wrote is deleted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from runsmon import events, hparams, ranking, sessions
from runsmon.compact import compact_metrics
from runsmon.logdir import END_FILE, SESSION_FILE, UNSET, Logdir, LogdirError, Manifest, RunRecord
from runsmon.mirror import Mirror
from runsmon.naming import RunNamer
from runsmon.report import Reporter, describe_error
from runsmon.run import RUNNING
from runsmon.runstate import RunState, SyncStats, Writes

log = logging.getLogger("runsmon")

LINKS_ONLY = sessions.LINKS_ONLY


class SessionWriter:
    """Writes the sessions that are due (see the module's docstring)."""

    def __init__(
        self,
        logdir: Logdir,
        reporter: Reporter,
        writes: Writes,
        mirror: Mirror,
        namer: RunNamer,
        created: float,
        handover_delay: float,
        hparams: bool = True,
    ) -> None:
        self.logdir = logdir
        self.reporter = reporter
        self.writes = writes
        self.mirror = mirror
        self.hparams = hparams
        """Whether sessions are written (False: links only, ``--skip-hparams``)."""
        self.created = created
        """A fixed time for synthesized events (see :meth:`Logdir.created`)."""
        self.handover_delay = handover_delay
        self._rewrites: set[str] = set()  # runs whose session must go to a new directory
        self.vacated = sessions.Vacated()  # directory names deleted lately
        self._namer = namer
        # Old generations still there (name -> run id, manifest, when they may go).
        self._leftovers: dict[str, tuple[str, Manifest, float]] = {}
        self._dirty: set[str] = set()  # runs whose session may need writing
        self._kinds: dict[str, str] = {}  # column kinds the sessions were written for
        self._column_map: tuple[int, dict[str, hparams.Column]] = (-1, {})

    def mark(self, run_id: str) -> None:
        """``run_id``'s session may need writing: looked at in the next :meth:`write_due`."""
        self._dirty.add(run_id)

    def rewrite(self, st: RunState, why: str) -> None:
        """Have a run's session and files written anew, in a new directory, at
        the next :meth:`write_due` (see :meth:`_new_generation`)."""
        if st.run.id not in self._rewrites:
            log.info("run %s: %s; rewriting it", st.name, why)
        self.rewrite_id(st.run.id)

    def rewrite_id(self, run_id: str) -> None:
        """Have ``run_id`` written anew at the next :meth:`write_due` (a run
        restored cut short, before it has a state)."""
        self._rewrites.add(run_id)
        self._dirty.add(run_id)

    def rewrites(self) -> frozenset[str]:
        """The runs due to be written anew."""
        return frozenset(self._rewrites)

    def rewriting(self, run_id: str) -> bool:
        """Whether ``run_id`` is due to be written anew."""
        return run_id in self._rewrites

    def _rewrite_if(self, st: RunState, why: str | None) -> None:
        if why is not None:
            self.rewrite(st, why)

    def forget(self, run_id: str) -> None:
        """A run is no longer shown: its old generations go, nothing of it is due."""
        for old_id, old, _ in list(self._leftovers.values()):
            if old_id == run_id:
                self._remove_old(run_id, old)
        self._rewrites.discard(run_id)
        self._dirty.discard(run_id)

    def next_due(self) -> float | None:
        """When the first old generation kept for a handover may go (monotonic)."""
        dues = [due for _, _, due in self._leftovers.values()]
        return min(dues) if dues else None

    def remove_due(self) -> None:
        """Delete the old generations whose time has come (or that failed to go)."""
        if self._leftovers:
            now = time.monotonic()
            for run_id, manifest, due in list(self._leftovers.values()):
                if now >= due:
                    self._remove_old(run_id, manifest)

    def write_due(
        self,
        runs: Mapping[str, RunState],
        all_columns: hparams.Columns,
        stats: SyncStats,
        new: frozenset[str] | set[str],
    ) -> tuple[set[str], set[str]]:
        """Write the sessions and end infos that are due.

        ``new``: runs named but not in the logdir yet (their directory is
        made with their session). Returns the new runs whose directory was
        made, and those whose directory could not be made.
        """
        version = all_columns.version
        if self._column_map[0] == version:
            columns = self._column_map[1]
            kinds = self._kinds
        else:
            columns = {c.name: c for c in all_columns.columns()}
            self._column_map = (version, columns)
            kinds = {name: c.kind for name, c in columns.items()}
        if kinds != self._kinds:
            # A column changed kind (e.g. a string met a numeric column): every
            # session holding it may now show its value differently.
            moved = {
                n for n in kinds.keys() | self._kinds.keys() if kinds.get(n) != self._kinds.get(n)
            }
            self._dirty.update(rid for rid, st in runs.items() if moved.intersection(st.hparams))
            self._kinds = kinds
        dirty, self._dirty = self._dirty, set()
        made: set[str] = set()
        unmade: set[str] = set()
        for run_id in dirty:
            st = runs.get(run_id)
            if st is not None:
                fresh = run_id in new
                if self._write_session(st, columns, stats, fresh) is False:
                    unmade.add(run_id)
                elif fresh:
                    made.add(run_id)
        return made, unmade

    def _write_session(
        self,
        st: RunState,
        columns: Mapping[str, hparams.Column],
        stats: SyncStats,
        fresh: bool,
    ) -> bool | None:
        """Write what of the run's session is due. ``fresh``: its directory
        is not made yet; False when it could not be."""
        if not self.hparams:
            return self._write_links_only(st, stats, fresh)
        run, state = st.run, st.manifest.state
        encoded = hparams.encode_hparams(st.hparams, columns)
        written_end = state.end
        written = state.session
        end = sessions.shown_end(run)
        # The key of a new run is worked out once its name is final (below).
        key = None if fresh else session_key(encoded, st.row, run.started)
        if not fresh and (
            run.id in self._rewrites
            or (
                written is not None
                and (
                    written != key
                    or (written_end is None and end == RUNNING)
                    or (
                        written_end is not None
                        and (written_end != end or state.stopped not in (UNSET, run.stopped))
                    )
                )
            )
        ):
            # TensorBoard keeps what it read first of a session: a new one,
            # in a new directory, then the old one goes.
            if run.id not in self._rewrites:
                log.info("run %s: its hparams, status or end changed; rewriting it", st.name)
            self._rewrites.add(run.id)
            self._new_generation(st, encoded, key, end, stats)
            return None
        before = state.copy()
        write_start = state.session is None
        # A final status can follow a session as an end file that sorts last;
        # "running" only goes with the start info (an end file would stop
        # TensorBoard's Python loader reading the run's growing files).
        write_end = end is not None and written_end is None and (write_start or end != RUNNING)
        # A run seen first when it has already ended gets one file holding
        # its start and end: one file less to make for each run of a sweep.
        compact = self.mirror.compact
        # In the compact layout the end info is appended to the run's one file.
        end_file = SESSION_FILE if (write_start and write_end) or compact else END_FILE
        links = None
        if fresh:
            if not self._make_dir(st):
                return False  # tried again as a new run at the next sync
            # One manifest write announces the session, end info and links
            # before any of them exists (a restart trusts only what is on
            # disk of them). The name is final now: the key follows it.
            key = session_key(encoded, st.row, run.started)
            links = self.mirror.link_targets(st)
            for rel in dict.fromkeys((SESSION_FILE, end_file) if write_end else (SESSION_FILE,)):
                if rel not in st.manifest.files:
                    st.manifest.files.append(rel)
            st.manifest.links.update(links)
            parents = [*links, *self.mirror.best.plan(st)]
            self.logdir.plan_parents(st.manifest, parents, fresh=True)
            state.layout = self.mirror.layout
            state.session = key
            if write_end:
                state.end = end
                state.end_file = end_file
                state.stopped = run.stopped
            if not self.writes.attempt(
                st, "manifest", lambda: self.logdir.save_manifest(st.manifest)
            ):
                self.writes.unsaved.add(run.id)
            made = self.writes.attempt(
                st, "write", lambda: self.logdir.make_parents(st.manifest, parents, fresh=True)
            )
            if not made:
                self.writes.unsaved.add(run.id)
            before = state.copy()
            state.session = None
            state.end = None
            state.stopped = UNSET
        end_events = self._end_events(st) if write_end else []
        if write_start:
            summary = hparams.session_start_summary(encoded, st.row, run.started)
            wall = run.started if run.started is not None else self.created
            evs = [events.summary_event(summary, wall_time=wall)]
            if write_end:
                evs += end_events
            data = events.encode_events(evs, file_version=True, wall_time=wall)
            if compact is not None:
                action = lambda: compact.start_whole(st, data)  # noqa: E731
            else:
                action = lambda: self.logdir.write_file(st.manifest, SESSION_FILE, data)  # noqa: E731
            if self.writes.attempt(st, "write", action):
                state.session = key
                stats.sessions += 1
                if write_end:
                    state.end = end
                    state.end_file = SESSION_FILE
                    state.stopped = run.stopped
                    stats.ended += int(run.ended)
        if write_end and not write_start and state.session is not None:
            wall = run.stopped if run.stopped is not None else self.created
            if compact is not None:
                data = events.encode_events(end_events)
                action = lambda: compact.append(st, data)  # noqa: E731
            else:
                data = events.encode_events(end_events, file_version=True, wall_time=wall)
                action = lambda: self.logdir.write_file(st.manifest, END_FILE, data)  # noqa: E731
            if self.writes.attempt(st, "write", action):
                state.end = end
                state.end_file = end_file
                state.stopped = run.stopped
                stats.ended += 1
                log.info("run %s: %s", st.name, run.status)
        if links is not None:
            # After the session: TensorBoard's Python loader may skip a file
            # whose name sorts before the one it is reading.
            self.mirror.make_links(st, links, fresh=made)
        if links is not None or (compact is not None and write_start):
            self._rewrite_if(st, self.mirror.sync_copies(st))
            if compact is not None:
                # The run's scalars follow its session in its one file.
                self._rewrite_if(st, self.mirror.sync_scalars(st))
        if state != before:
            self.writes.unsaved.add(run.id)

    def _write_links_only(self, st: RunState, stats: SyncStats, fresh: bool) -> bool | None:
        """A run's directory without HParams summaries: made with its links
        (a new run; False when it could not be), written anew (a rewrite due,
        or a session written by an earlier runsmon), or left as it is."""
        run, state = st.run, st.manifest.state
        if not fresh and (run.id in self._rewrites or state.session not in (None, LINKS_ONLY)):
            self._rewrites.add(run.id)
            self._new_generation(st, {}, LINKS_ONLY, None, stats)
            return None
        before = state.copy()
        if fresh:
            if not self._make_dir(st):
                return False  # tried again as a new run at the next sync
            links = self.mirror.link_targets(st)
            st.manifest.links.update(links)
            self.logdir.plan_parents(st.manifest, [*links], fresh=True)
            if not self.writes.attempt(
                st, "manifest", lambda: self.logdir.save_manifest(st.manifest)
            ):
                self.writes.unsaved.add(run.id)
            made = self.writes.attempt(
                st, "write", lambda: self.logdir.make_parents(st.manifest, [*links], fresh=True)
            )
            self.mirror.make_links(st, links, fresh=made)
            self._rewrite_if(st, self.mirror.sync_copies(st))
        state.session = LINKS_ONLY
        state.end = LINKS_ONLY if run.ended else None
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
            made = self.logdir.create_run_as(run.id, names, self._namer.foreign, save=False)
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
        new.state = RunRecord(
            asked=old.state.asked,
            group=group,
            gen=sessions.generation(old) + 1,
            building=True,
            synth_metrics=old.state.synth_metrics,
        )
        links = self.mirror.link_targets(st)
        links_only = key == LINKS_ONLY
        if not links_only:
            new.files.append(SESSION_FILE)
        new.links.update(links)
        parents = [*links, *self.mirror.best.plan(st, new)]
        self.logdir.plan_parents(new, parents, fresh=True)
        summary = hparams.session_start_summary(encoded, st.row, run.started)
        wall = run.started if run.started is not None else self.created
        evs = [events.summary_event(summary, wall_time=wall)]
        compact = self.mirror.compact
        head = events.encode_events(evs, file_version=True, wall_time=wall)
        tail = events.encode_events(self._end_events(st)) if end is not None else b""
        if compact is not None:
            # The run's one file: its scalars so far come from the old one (ours).
            body, carried = compact.carried(old, st.own_time)
            if carried is not None:
                new.state.compact = {"read": carried["read"]}
                new.state.scalars = carried["scalars"]
            data = head + body + tail
            action = lambda: compact.start(new, data, carried=carried is not None)  # noqa: E731
        else:
            data = head + tail
            action = lambda: self.logdir.write_file(new, SESSION_FILE, data)  # noqa: E731
        st.manifest = new
        ok = (
            self.writes.attempt(st, "manifest", lambda: self.logdir.save_manifest(new))
            and self.writes.attempt(
                st, "write", lambda: self.logdir.make_parents(new, parents, fresh=True)
            )
            and (links_only or self.writes.attempt(st, "write", action))
        )
        if not ok:
            st.manifest = old
            self.logdir.discard_run(new)
            self.vacated.add(dirname)
            if dirname != group:
                self._namer.unreserve(run.id, dirname)
            return
        new.state.session = key
        if end is not None:
            new.state.end = end
            new.state.end_file = SESSION_FILE
            new.state.stopped = run.stopped
        elif links_only and run.ended:
            new.state.end = LINKS_ONLY
        # After the session: TensorBoard's Python loader may skip a file
        # whose name sorts before the one it is reading.
        self.mirror.make_links(st, links, fresh=True)
        self._rewrite_if(st, self.mirror.sync_copies(st, old))
        st.scalars_of = None
        self._rewrite_if(st, self.mirror.sync_scalars(st))
        new.state.building = False
        if not self.writes.attempt(st, "manifest", lambda: self.logdir.save_manifest(new)):
            self.writes.unsaved.add(run.id)  # whole on disk; a restart trusts what is there
        if sessions.needs_handover(self._shown_bytes(st)):
            # TensorBoard's data server shows the new directory only once it
            # has read all of it: the old one stays meanwhile.
            due = time.monotonic() + self.handover_delay
            self._leftovers[old.name] = (run.id, old, due)
        else:
            self._remove_old(run.id, old)
        self._rewrites.discard(run.id)
        stats.rewrites += 1
        stats.sessions += 1
        stats.ended += int(run.ended and old.state.end != end)
        log.info("run %s: rewritten in %s", group, dirname)

    def _shown_bytes(self, st: RunState) -> int:
        """Bytes of the event files a run's directory shows (what TensorBoard reads)."""
        return sum(f.stat_key[0] for f in st.files.files.values() if f.stat_key is not None)

    def _remove_old(self, run_id: str, manifest: Manifest) -> None:
        """Delete a run's old generation; one that cannot go yet is tried again
        at each sync (its name stays the run's meanwhile)."""
        group = str(manifest.state.group or manifest.name)
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
        self.vacated.add(manifest.name)
        if manifest.name != group:
            self._namer.unreserve(run_id, manifest.name)

    def _dir_usable(self, run_id: str) -> Callable[[str], bool]:
        """Whether a name may hold a new directory of ``run_id`` now."""

        def usable(name: str) -> bool:
            owner = self._namer.owner(name)
            return (
                (owner is None or owner == run_id)
                and not self.vacated.recent(name)
                and not os.path.lexists(self.logdir.run_path(name))
            )

        return usable

    def _end_events(self, st: RunState) -> list[Any]:
        """The session end info, and the run's duration as the `time` scalar."""
        run = st.run
        wall = run.stopped if run.stopped is not None else self.created
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
                manifest.name = self._namer.name_for(run_id, str(manifest.state.asked))
            return manifest.name

        def taken(name: str) -> None:
            self._namer.release(run_id)
            self._namer.foreign(name)

        try:
            made = self.logdir.create_run_as(run_id, names, taken, save=False)
        except (OSError, LogdirError) as e:
            self.reporter.warn(
                run_id,
                "write",
                f"run {manifest.name}: cannot write to the logdir: {describe_error(e)}",
            )
            made = None
        return made is not None


class ExperimentWriter:
    """The logdir's one experiment, written anew (a new generation) when what
    it declares moved."""

    def __init__(
        self, logdir: Logdir, reporter: Reporter, created: float, hparams: bool = True
    ) -> None:
        self.logdir = logdir
        self.reporter = reporter
        self.created = created
        self.hparams = hparams  # False: no experiment (``--skip-hparams``)
        self._gen, newest, data = logdir.newest_experiment()
        # (dirname, file bytes) of the one in the logdir
        self._written: tuple[str, bytes] | None = (
            (newest, data) if newest is not None and data is not None else None
        )
        self._key: tuple[Any, ...] | None = None  # what it was written for
        self._names: frozenset[Any] | None = None  # its columns, once written here
        self.compact = False
        """Whether runs are written in the compact layout: its metrics are
        named as there (:func:`runsmon.compact.compact_metrics`)."""
        self.ranking: ranking.LiveRanking | None = None
        """``serve --importance``: the hparams by importance (made at the first write)."""

    @property
    def written(self) -> bool:
        """Whether the logdir holds one."""
        return self._written is not None

    def forget(self) -> None:
        """The logdir was deleted: nothing written is there any more."""
        self._written = None
        self._key = None

    def write(
        self,
        columns: hparams.Columns,
        selection: hparams.Selection,
        stats: SyncStats,
        runs: Mapping[str, Any] | None = None,
    ) -> tuple[list[str], list[hparams.Metric]] | None:
        """Write the experiment anew when the columns, the selection or the
        hparams' importance (``selection.importance``, ranked over ``runs``)
        moved since it was written. Returns the hparams and metrics it
        declares now that it did not before (None when nothing is new)."""
        ranked = None
        if selection.importance and runs is not None:
            if self.ranking is None or self.ranking.metric != selection.importance:
                self.ranking = ranking.LiveRanking(selection.importance)
            ranked = self.ranking.update(runs, columns, selection)
        key = (columns.version, selection, ranked)
        if self._key == key:
            return None
        if not self.hparams:
            self._remove_written()
            self._key = (columns.version, selection)
            return None
        selected, metrics = columns.selected(selection)
        if self.compact:
            metrics = compact_metrics(metrics)  # named as the dashboard shows them
        summary = hparams.experiment_summary(
            selected,
            metrics,
            self.created,
            differs=ranked.differs if ranked and ranked.first else columns.differs,
            descriptions=ranked.descriptions if ranked else None,
        )
        data = events.encode_events(
            [events.summary_event(summary, wall_time=self.created)],
            file_version=True,
            wall_time=self.created,
        )
        if self._written is not None and self._written[1] == data:
            self._key = key
            return self._new_columns(selected, metrics)
        self._gen += 1
        try:
            dirname = self.logdir.write_experiment(self._gen, data)
        except OSError as e:
            self.reporter.warn(
                "logdir", "experiment", f"cannot write the experiment: {describe_error(e)}"
            )
            return None
        self.reporter.clear("logdir", "experiment")
        self._written = (dirname, data)
        self._key = key
        stats.experiment_written = True
        return self._new_columns(selected, metrics)

    def _remove_written(self) -> None:
        """Delete the experiment an earlier runsmon wrote here (``--skip-hparams``)."""
        for dirname in self.logdir.experiment_dirs():
            try:
                self.logdir.remove_experiment(dirname)
            except OSError as e:
                self.reporter.warn(
                    "logdir", "experiment", f"cannot remove {dirname}: {describe_error(e)}"
                )
        self._written = None

    def _new_columns(
        self, columns: list[hparams.Column], metrics: list[hparams.Metric]
    ) -> tuple[list[str], list[hparams.Metric]] | None:
        """What the experiment now has that it had not (None: nothing, or the first one)."""
        names = frozenset([*(c.name for c in columns), *metrics])
        old, self._names = self._names, names
        if old is not None and names - old:
            return (
                [c.name for c in columns if c.name not in old],
                [m for m in metrics if m not in old],
            )
        return None


def session_key(encoded: Mapping[str, Any], name: str, started: float | None) -> str:
    """What a written session shows: a change means it must be written anew."""
    return _digest([sorted(encoded.items()), name, started])


def _digest(value: object) -> str:
    return hashlib.sha1(json.dumps(value, default=str).encode()).hexdigest()

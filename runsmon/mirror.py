"""What a run's directory in the logdir holds besides its session.

:class:`Mirror` keeps, for one run: links to its event files at the paths
:class:`~runsmon.runfiles.RunFiles` places them (``LINK``; copies where
links are impossible), copies without HParams summaries of files that hold
some (``FILTER``), the scalars files of runs whose source knows scalars
outside event files (MLflow, wandb), the image summaries of the run's
image files (:mod:`runsmon.images`) and the series of its reduced metrics
(best values, :class:`~runsmon.reduce.BestWriter`). In the compact layout
(:mod:`runsmon.compact`) it instead has the :class:`~runsmon.compact.CompactWriter`
append the scalars of the first two to the run's one file (no images).
Every write goes through the sync's :class:`~runsmon.runstate.Writes`. It
knows nothing of sessions, of the experiment or of when a sync happens;
where a run's files can no longer be kept in step in place (an event file
replaced, scalars rewritten) it says why, and the monitor has the run
written anew.
"""

from __future__ import annotations

from collections.abc import Mapping

from runsmon import events, reduce, runview
from runsmon.compact import COMPACT, HPARAMS_MARK, CompactWriter, compact_tag
from runsmon.fs import FileSystem
from runsmon.images import ImageSync
from runsmon.logdir import SCALARS_FILE, Logdir, Manifest
from runsmon.report import Reporter, describe_error
from runsmon.run import Run, ScalarPoint
from runsmon.runfiles import FILTER, LINK
from runsmon.runstate import RunState, Writes

FILTER_CHUNK = 16 << 20
#: Bytes before a copy's end read again with what follows them: a source
#: rewritten in place shows by them (object storage has no appends).
COPY_OVERLAP = 16


class Mirror:
    """Writes what a run's directory mirrors of the run (see the module's docstring)."""

    def __init__(self, logdir: Logdir, fs: FileSystem, reporter: Reporter, writes: Writes) -> None:
        self.logdir = logdir
        self.fs = fs
        self.reporter = reporter
        self.writes = writes
        self.images = ImageSync(logdir, fs, reporter, writes)
        self.best = reduce.BestWriter(logdir, writes)
        self.compact: CompactWriter | None = None
        """The compact layout's writer; None in the linked layout."""

    def use_layout(self, layout: str) -> None:
        """Write ``layout`` ("compact", or else linked) from now on."""
        self.compact = CompactWriter(self.logdir, self.fs) if layout == COMPACT else None

    @property
    def layout(self) -> str | None:
        """The layout a run's manifest records for what this mirror writes (None: linked)."""
        return COMPACT if self.compact is not None else None

    def _other_layout(self, st: RunState) -> bool:
        """Whether the run's directory is of the other layout (it is to be written anew)."""
        return st.manifest.state.layout != self.layout

    def link_targets(self, st: RunState) -> dict[str, str]:
        """rel path in the logdir -> what its link points to."""
        if self.compact is not None:
            return {}
        local = self.fs.local_path
        out = {}
        for rel, path in st.files.placed(LINK).items():
            target = local(path) or path
            out[rel] = path if target == path else target  # one string, not two
        return out

    def sync_links(self, st: RunState) -> str | None:
        """Links (or copies) to the run's event files as they are now, and
        its copies brought up to date; see :meth:`sync_copies` for what it
        returns."""
        if self._other_layout(st):
            return None
        if self.compact is not None:
            return self.sync_copies(st)  # the compact file and the best values
        targets = self.link_targets(st)
        manifest = st.manifest
        current = {**manifest.links, **manifest.copies}
        if current != targets:
            for rel in [r for r in current if r not in targets]:
                self.writes.attempt(st, "link", lambda rel=rel: self.logdir.unlink(manifest, rel))
            # The manifest names a link before it exists: a kill in between
            # leaves nothing runsmon would not know to delete.
            manifest.links.update({r: p for r, p in targets.items() if r not in manifest.copies})
            self.writes.attempt(st, "manifest", lambda: self.logdir.save_manifest(manifest))
            self.make_links(st, targets)
        return self.sync_copies(st)

    def make_links(self, st: RunState, targets: Mapping[str, str], fresh: bool = False) -> None:
        """Link the run's event files; a file with no local path (object
        storage) is copied instead (see :meth:`sync_copies`)."""
        manifest = st.manifest
        copies = dict(manifest.copies)
        link = self.logdir.link
        local = self.fs.local_path
        for rel, target in targets.items():
            if local(target) is None:
                manifest.links.pop(rel, None)
                manifest.copies[rel] = target
                continue
            self.writes.attempt(
                st, "link", lambda r=rel, t=target: link(manifest, r, t, fresh=fresh)
            )
        if manifest.copies != copies:  # links impossible here: copies instead
            self.writes.unsaved.add(st.run.id)

    def sync_copies(self, st: RunState, previous: Manifest | None = None) -> str | None:
        """Bring the run's copies up to date: plain copies (where links are
        impossible, and every file in object storage), copies without HParams
        summaries and the image summaries.
        Returns why the run must be written anew in a new directory, if it
        must. ``previous``: the directory a new one replaces (what it holds
        of unchanged images is copied, not made again).

        In the compact layout: what the run's event files added, appended
        to its file (:meth:`sync_scalars` appends its scalars outside them).
        """
        if self._other_layout(st):
            return None
        if self.compact is not None:
            why = self._sync_compact(st)
            self.best.sync(st)
            return why
        for rel, path in st.manifest.copies.items():
            why = self._sync_copy(st, rel, path)
            if why is not None:
                return why
        why = self._sync_filtered(st) or self.images.sync(st, previous)
        self.best.sync(st)
        return why

    def _sync_compact(self, st: RunState) -> str | None:
        """Append what the run's event files added to its compact file."""
        compact = self.compact
        if compact is None or not compact.ready(st):
            return None
        try:
            found = compact.sync(st)
        except OSError as e:
            self.reporter.warn(st.run.id, "copy", f"run {st.name}: {describe_error(e)}")
            return None
        if isinstance(found, str):
            return found
        data, offsets = found
        if offsets and (
            not data or self.writes.attempt(st, "write", lambda: compact.append(st, data))
        ):
            st.manifest.state.compact["read"].update(offsets)  # type: ignore[index]
            self.writes.unsaved.add(st.run.id)
        return None

    def _sync_copy(self, st: RunState, rel: str, path: str) -> str | None:
        """Append to one copy what its source gained since it was copied.

        The manifest keeps what was copied (bytes, and the source's stat
        key then), so an unchanged source costs no read. A source rewritten
        in place cannot be appended to: one that is not longer than the copy
        (in object storage an overwrite changes the ETag), or whose bytes
        just before the copy's end are no longer the copy's. The run is then
        written anew, its copies made again from the start.
        """
        manifest = st.manifest
        state = manifest.state
        now = self.fs.stat(path)
        if now is None or not now.is_file:
            return None  # gone: the run's files drop it at their next look
        done = (state.copied or {}).get(rel)
        have = self.logdir.copy_size(manifest, rel)
        if done is not None and have == done[0] and list(now.key) == list(done[1] or ()):
            return None
        rewritten = have is not None and (
            now.size < have or (done is not None and have == done[0] and now.size <= have)
        )
        size = now.size
        copied = None

        def read(offset: int) -> bytes:
            nonlocal rewritten
            if offset < COPY_OVERLAP:
                return self.fs.read_bytes(path, offset, size - offset)
            # From a little before the copy's end: those bytes must be the copy's.
            data = self.fs.read_bytes(path, offset - COPY_OVERLAP, size - offset + COPY_OVERLAP)
            if data and data[:COPY_OVERLAP] != self.logdir.copy_tail(manifest, rel, COPY_OVERLAP):
                rewritten = True
                return b""
            return data[COPY_OVERLAP:]

        def copy() -> None:
            nonlocal copied
            copied = self.logdir.copy_update(manifest, rel, path, read)

        if not rewritten:
            self.writes.attempt(st, "copy", copy)
        if rewritten:
            st.files.rescan(path)
            st.files.refresh()  # what it holds now, before the run is shown
            return f"event file {rel} was rewritten"
        if copied is not None:
            if state.copied is None:
                state.copied = {}
            # Whole as listed: remembered with its key; else read again next time.
            state.copied[rel] = [copied, list(now.key) if copied == size else None]
            self.writes.unsaved.add(st.run.id)
        return None

    def _sync_filtered(self, st: RunState) -> str | None:
        """Keep copies, without hparams summaries, of files that hold some."""
        placed = st.files.placed(FILTER)
        if not placed and st.manifest.state.filtered is None:
            return None
        if st.manifest.state.filtered is None:
            st.manifest.state.filtered = {}
        offsets = st.manifest.state.filtered
        for rel, path in placed.items():
            offset = offsets.get(rel, 0)
            try:
                now = self.fs.stat(path)
                if now is None:
                    raise FileNotFoundError(path)
                size = now.size
                if size < offset:
                    return f"event file {rel} was replaced"
                while offset < size:
                    chunk = self.fs.read_bytes(path, offset, FILTER_CHUNK)
                    split = events.split_records(chunk)
                    kept = b"".join(
                        events.encode_record(r)
                        for r in split.records
                        if HPARAMS_MARK not in r and not runview.is_placeholder_record(r)
                    )
                    if kept:
                        self.logdir.append_file(st.manifest, rel, kept)
                    if split.end == 0:
                        break  # an incomplete record (or lost framing): later
                    offset += split.end
            except OSError as e:
                self.reporter.warn(st.run.id, "copy", f"run {st.name}: {rel}: {describe_error(e)}")
            offsets[rel] = offset
        return None

    def sync_scalars(self, st: RunState) -> str | None:
        """Write scalars a source knows outside event files (MLflow, wandb);
        returns why the run must be written anew, if it must.

        Points are appended per metric: the manifest counts what is written
        of each tag in each group, so a value appended to any metric (not only
        the last one a source lists) is written once, where it belongs.
        """
        if self._other_layout(st):
            return None
        compact = self.compact
        if compact is not None and not compact.ready(st):
            return None  # written with its session
        points = runview.read_points(st.run, st.name, self.reporter)
        if points is None:
            return None
        if st.files.best:
            st.point_best = reduce.point_values(points, st.files.best)
            self.best.sync(st)
        by_group: dict[str, dict[str, list[ScalarPoint]]] = {}
        for p in points:
            # Each under the tag it was logged as: MLflow's "val/loss" is the
            # tag "val/loss" at the run's root, as a SummaryWriter writes it.
            tag, group = runview.point_metric(p)
            by_group.setdefault(group, {}).setdefault(tag, []).append(p)
        counts: dict[str, dict[str, int]] = {
            g: dict(c) if isinstance(c, dict) else c
            for g, c in (st.manifest.state.scalars or {}).items()
        }
        if any(not isinstance(c, dict) or g not in by_group for g, c in counts.items()):
            # Written by an older layout (or its scalars were rewritten).
            return "its scalars were laid out anew"
        before = ({g: dict(c) for g, c in counts.items()}, st.manifest.state.synth_metrics)
        synth: set[tuple[str, str]] = set()
        # Sources hand out a new Run when its scalars moved: this one is done once all are written.
        done: Run | None = st.run
        for group, tags in by_group.items():
            have = counts.get(group, {})
            if any(len(tags.get(tag, ())) < n for tag, n in have.items()):
                return "its scalars were rewritten"
            synth.update((tag, group) for tag in tags)
            new = [p for tag, tag_points in tags.items() for p in tag_points[have.get(tag, 0) :]]
            if not new:
                continue
            if compact is not None:
                # One file: the tag tells the groups apart.
                data = events.encode_events(
                    events.scalar_event(compact_tag(p.tag, group), p.value, p.step, p.wall_time)
                    for p in new
                )
                action = lambda data=data: compact.append(st, data)  # noqa: E731
            else:
                rel = f"{group}/{SCALARS_FILE}" if group else SCALARS_FILE
                data = events.encode_events(
                    [events.scalar_event(p.tag, p.value, p.step, p.wall_time) for p in new],
                    file_version=not have,
                )
                action = lambda rel=rel, data=data: self.logdir.append_file(  # noqa: E731
                    st.manifest, rel, data
                )
            if self.writes.attempt(st, "write", action):
                counts[group] = {tag: len(tag_points) for tag, tag_points in tags.items()}
            else:
                done = None
        st.scalars_of = done
        st.manifest.state.scalars = counts
        st.manifest.state.synth_metrics = sorted(synth)
        if (counts, st.manifest.state.synth_metrics) != before:
            self.writes.unsaved.add(st.run.id)
        return None

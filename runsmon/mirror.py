"""What a run's directory in the logdir holds besides its session.

:class:`Mirror` keeps, for one run: links to its event files at the paths
:class:`~runsmon.runfiles.RunFiles` places them (``LINK``; copies where
links are impossible), copies without HParams summaries of files that hold
some (``FILTER``), and the scalars files of runs whose source knows scalars
outside event files (MLflow, wandb). Every write goes through the sync's
:class:`~runsmon.runstate.Writes`. It knows nothing of sessions, of the
experiment or of when a sync happens; where a run's files can no longer be
kept in step in place (an event file replaced, scalars rewritten) it says
why, and the monitor has the run written anew.
"""

from __future__ import annotations

from collections.abc import Mapping

from runsmon import events, runview
from runsmon.fs import FileSystem
from runsmon.logdir import SCALARS_FILE, Logdir
from runsmon.report import Reporter, describe_error
from runsmon.run import Run, ScalarPoint
from runsmon.runfiles import FILTER, LINK
from runsmon.runstate import RunState, Writes

FILTER_CHUNK = 16 << 20
#: Bytes before a copy's end read again with what follows them: a source
#: rewritten in place shows by them (object storage has no appends).
COPY_OVERLAP = 16
#: Bytes found in every record of an HParams summary (the tags' prefix).
HPARAMS_MARK = b"_hparams_/"


class Mirror:
    """Writes what a run's directory mirrors of the run (see the module's docstring)."""

    def __init__(self, logdir: Logdir, fs: FileSystem, reporter: Reporter, writes: Writes) -> None:
        self.logdir = logdir
        self.fs = fs
        self.reporter = reporter
        self.writes = writes

    def link_targets(self, st: RunState) -> dict[str, str]:
        """rel path in the logdir -> what its link points to."""
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

    def sync_copies(self, st: RunState) -> str | None:
        """Bring the run's copies up to date: plain copies (where links are
        impossible, and every file in object storage) and copies without
        HParams summaries. Returns why the run must be written anew in a new
        directory, if it must."""
        manifest = st.manifest
        for rel, path in manifest.copies.items():
            why = self._sync_copy(st, rel, path)
            if why is not None:
                return why
        return self._sync_filtered(st)

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
        points = runview.read_points(st.run, st.name, self.reporter)
        if points is None:
            return None
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
            rel = f"{group}/{SCALARS_FILE}" if group else SCALARS_FILE
            data = events.encode_events(
                [events.scalar_event(p.tag, p.value, p.step, p.wall_time) for p in new],
                file_version=not have,
            )
            if self.writes.attempt(
                st,
                "write",
                lambda rel=rel, data=data: self.logdir.append_file(st.manifest, rel, data),
            ):
                counts[group] = {tag: len(tag_points) for tag, tag_points in tags.items()}
            else:
                done = None
        st.scalars_of = done
        st.manifest.state.scalars = counts
        st.manifest.state.synth_metrics = sorted(synth)
        if (counts, st.manifest.state.synth_metrics) != before:
            self.writes.unsaved.add(st.run.id)
        return None

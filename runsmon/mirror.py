"""What a run's directory in the logdir holds besides its session.

:class:`Mirror` keeps, for one run: links to its event files at the paths
:class:`~runsmon.runfiles.RunFiles` places them (``LINK``; copies where
links are impossible), copies without HParams summaries of files that hold
some (``FILTER``), the scalars files of runs whose source knows scalars
outside event files (MLflow, wandb), and the series of its reduced metrics
(best values, :class:`~runsmon.reduce.BestWriter`). Every write goes through the sync's
:class:`~runsmon.runstate.Writes`. It knows nothing of sessions, of the
experiment or of when a sync happens; where a run's files can no longer be
kept in step in place (an event file replaced, scalars rewritten) it says
why, and the monitor has the run written anew.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from runsmon import events, reduce, runview
from runsmon.fs import FileSystem
from runsmon.logdir import SCALARS_FILE, Logdir
from runsmon.report import Reporter, describe_error
from runsmon.run import Run, ScalarPoint
from runsmon.runfiles import FILTER, LINK
from runsmon.runstate import RunState, Writes

FILTER_CHUNK = 16 << 20
#: Bytes found in every record of an HParams summary (the tags' prefix).
HPARAMS_MARK = b"_hparams_/"


class Mirror:
    """Writes what a run's directory mirrors of the run (see the module's docstring)."""

    def __init__(self, logdir: Logdir, fs: FileSystem, reporter: Reporter, writes: Writes) -> None:
        self.logdir = logdir
        self.fs = fs
        self.reporter = reporter
        self.writes = writes
        self.best = reduce.BestWriter(logdir, writes)

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
        manifest = st.manifest
        copies = dict(manifest.copies)
        link = self.logdir.link
        for rel, target in targets.items():
            self.writes.attempt(
                st, "link", lambda r=rel, t=target: link(manifest, r, t, fresh=fresh)
            )
        if manifest.copies != copies:  # links impossible here: copies instead
            self.writes.unsaved.add(st.run.id)

    def sync_copies(self, st: RunState) -> str | None:
        """Bring the run's copies up to date: plain copies (where links are
        impossible) and copies without HParams summaries. Returns why the
        run must be written anew in a new directory, if it must."""
        manifest = st.manifest
        for rel, path in manifest.copies.items():
            self.writes.attempt(
                st, "copy", lambda r=rel, p=path: self.logdir.copy_update(manifest, r, p)
            )
        why = self._sync_filtered(st)
        self.best.sync(st)
        return why

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
                size = os.path.getsize(path)
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

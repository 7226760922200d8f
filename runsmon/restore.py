"""What an earlier runsmon wrote in this logdir, until each of its runs is seen again.

At start (also after ``kill -9``) the monitor reads every manifest in the
logdir: of two directories of one run (a kill came during a rewrite) the
whole generation is kept and the other deleted, and each run gets its names
back. A run listed again *claims* its manifest, which is trusted only for
what is really on disk. A run written in the other layout (see
:mod:`runsmon.layout`) is written anew, once, as a new generation. After the
first full check, the runs no one claimed (gone from the sources meanwhile)
are deleted.
"""

from __future__ import annotations

import logging
import os

from runsmon import sessions
from runsmon.images import IMAGES_FILE
from runsmon.logdir import END_FILE, SESSION_FILE, Logdir, LogdirError, Manifest
from runsmon.naming import RunNamer

log = logging.getLogger("runsmon")


class Restored:
    """The runs an earlier runsmon wrote, not yet claimed (see the module's docstring)."""

    def __init__(self, logdir: Logdir, namer: RunNamer, vacated: sessions.Vacated) -> None:
        self.logdir = logdir
        self._namer = namer
        self.layout: str | None = None
        """The layout runs are written in now, as a manifest records it (None: linked)."""
        self._manifests: dict[str, Manifest] = {}  # run id -> its manifest
        by_run: dict[str, list[Manifest]] = {}
        for manifest in logdir.manifests():
            by_run.setdefault(manifest.run_id, []).append(manifest)
        for run_id, manifests in by_run.items():
            manifest = manifests[0]
            if len(manifests) > 1:
                # A kill came during a rewrite: keep the whole generation.
                manifest, others = sessions.pick_restored(manifests)
                for other in others:
                    logdir.discard_run(other)
                    vacated.add(other.name)
            group = str(manifest.state.group or manifest.name)
            namer.restore(run_id, group)
            if group != manifest.name:
                namer.reserve(run_id, manifest.name)
            self._manifests[run_id] = manifest

    def claim(self, run_id: str, asked: str) -> tuple[Manifest | None, bool]:
        """The manifest an earlier runsmon wrote for ``run_id`` under the name
        ``asked``, and whether the run must be written anew (its last
        generation was cut short and is the only one left).

        None when there is none, or when it was written under another name
        (then it is deleted and the name released).
        """
        manifest = self._manifests.pop(run_id, None)
        if manifest is None:
            return None, False
        if manifest.state.asked != asked:
            self._namer.release(run_id)
            self.logdir.discard_run(manifest)
            return None, False
        # Trust only what is really on disk: a kill may have come between
        # the manifest and the file it announces.
        state = manifest.state
        end_file = str(state.end_file or END_FILE)
        links_only = state.session == sessions.LINKS_ONLY  # no session file to look for
        if not links_only and not os.path.exists(self.logdir.run_path(manifest.name, SESSION_FILE)):
            state.session = None
        if not links_only and not os.path.exists(self.logdir.run_path(manifest.name, end_file)):
            state.end = None
        if state.end is not None and state.session is None:
            state.end = None
        if state.images and not os.path.exists(self.logdir.run_path(manifest.name, IMAGES_FILE)):
            state.images = None
        building, state.building = state.building, False
        for rel in [r for r in manifest.links if not self._exists(manifest, r)]:
            del manifest.links[rel]  # announced, never made: made again
        if state.layout is not None and state.compact is None:
            state.session = state.end = None  # announced, never written
        if state.session is not None and state.compact is not None:
            self._cut_to_whole(manifest)
        if state.layout != self.layout and state.session is not None:
            log.info(
                "run %s: written in the %s layout; rewriting it",
                manifest.state.group or manifest.name,
                state.layout or "linked",
            )
            return manifest, True
        return manifest, building and state.session is not None

    def _cut_to_whole(self, manifest: Manifest) -> None:
        """A compact file longer than its manifest says (a kill came after an
        append, before the manifest): cut back to what the manifest counts.
        Shorter: written again whole."""
        state = manifest.state
        size = int((state.compact or {}).get("size", 0))
        try:
            have = os.path.getsize(self.logdir.run_path(manifest.name, SESSION_FILE))
            if have > size:
                self.logdir.truncate_file(manifest, SESSION_FILE, size)
        except (OSError, LogdirError):
            have = 0
        if have < size:
            state.session = None
            state.end = None

    def drop_unclaimed(self) -> None:
        """After the first full check: delete the runs no one claimed."""
        for run_id, manifest in list(self._manifests.items()):
            del self._manifests[run_id]
            self._namer.release(run_id)
            self.logdir.discard_run(manifest)

    def _exists(self, manifest: Manifest, rel: str) -> bool:
        try:
            return os.path.lexists(self.logdir.run_path(manifest.name, rel))
        except LogdirError:
            return False

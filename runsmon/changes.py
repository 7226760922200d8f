"""Where to look next: the paths each poll of the monitor re-checks.

:class:`Changes` answers one question for the monitor's loop: which paths
may hold news since the last poll. It draws on three things: what a *feed*
reported (watchdog observers, or nothing where nothing can be watched), the
runs that have not ended where nothing is watched, and a share of the safety
net that re-checks every run within ``full_check_interval``. It keeps the
watches the runs need (their trees while they have not ended, the roots),
counted per run as runs come and go. It knows nothing of the logdir, of
sessions or of what a run holds; the monitor maps the paths it hands back to
runs.

A feed is a strategy behind one small interface (:class:`Feed`): the
:class:`~runsmon.watch.Watcher` reports changed paths; :class:`Polling`
reports none, so each poll lists the roots and re-checks the runs that have
not ended. Swapping one for the other is one line (``Changes.use``), as
watchdog's own ``PollingObserver`` is a one-line variant of its ``Observer``.

:meth:`Changes.since_last_check` answers the same question for
``run_once()`` called in a loop of its caller's, exactly: the paths that
changed since the last call, read from a :class:`~runsmon.watch.TreeWatch`
over the source's whole trees, or None where only a full check can tell.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from runsmon.fs import FileSystem
from runsmon.run import Run
from runsmon.sources.base import Source
from runsmon.watch import TreeWatch

log = logging.getLogger("runsmon")

#: Most runs one poll of the safety net re-checks: past this many runs a round
#: takes longer than ``full_check_interval`` and a poll costs no more.
SHARE_MAX = 250

#: A directory to watch, and whether its whole tree is watched.
WatchKey = tuple[str, bool]

#: Seconds a changed path is looked at again by each ``run_once()``: a file
#: changed twice within one tick of the filesystem's clock keeps its mtime,
#: and Guild's source trusts a run's files once they rested 5 s (``settle``).
RECENT_S = 6.0

#: Filesystems where inotify sees only this machine's changes.
REMOTE_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre")


class Feed(Protocol):
    """What reports changed paths between polls."""

    #: Whether it sets watches at all (:class:`Polling` does not).
    watches: bool

    @property
    def running(self) -> bool:
        """Whether it reports now; while it does not, each poll polls."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def take(self) -> set[str]:
        """The paths reported since the last call."""
        ...

    def set_watches(self, wanted: Iterable[WatchKey]) -> set[WatchKey]:
        """Watch ``wanted`` (and nothing else); returns those it cannot watch."""
        ...

    def retry_failed(self) -> None:
        """Try again, at the next :meth:`set_watches`, what could not be watched."""
        ...


class Polling:
    """The feed where nothing can be watched: it reports nothing, so each poll
    lists the roots and re-checks the runs that have not ended."""

    watches = False
    running = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def take(self) -> set[str]:
        return set()

    def set_watches(self, wanted: Iterable[WatchKey]) -> set[WatchKey]:
        return set()

    def retry_failed(self) -> None:
        pass


class Changes:
    """The paths to re-check at each poll, and the watches that feed them.

    ``lock`` is the monitor's: the run set it is told of (:meth:`set_run`,
    :meth:`drop_run`) changes under it. ``wake`` is called when a new watch
    makes its directory due for a look (what changed before the watch was in
    place was not reported).
    """

    def __init__(
        self,
        source: Source,
        interval: float,
        full_check_interval: float,
        lock: threading.RLock,
        wake: Callable[[], None],
    ) -> None:
        self.source = source
        self.interval = interval
        self.full_check_interval = full_check_interval
        self.feed: Feed = Polling()
        self._lock = lock
        self._wake = wake
        self._keys: dict[str, frozenset[WatchKey]] = {}  # run id -> its watches
        self._count: Counter[WatchKey] = Counter()
        self._keys_moved = True  # the runs' watches moved since the feed was told
        self._watched: set[WatchKey] = set()
        self._unwatched: set[WatchKey] = set()
        self._recheck: set[str] = set()  # paths to re-check next (their watch was just set)
        self._sweep: list[str] = []  # run dirs of this round of the safety net
        self._sweep_pos = 0
        self._sweep_share = 1
        self._next_sweep = 0.0
        self._trees: TreeWatch | None = None  # run_once's exact watch, once set
        self._trees_failed = False  # the trees cannot be watched exactly: never again
        self._recent: dict[str, float] = {}  # path -> when run_once last saw it change
        self._outside: dict[str, str] = {}  # run id -> its dir, not in a watched tree
        self.full_next = False
        """Set when a ``run_once()`` did not complete: the changes it took may be unseen."""

    # -- the feed ----------------------------------------------------------------

    def use(self, feed: Feed) -> bool:
        """Start ``feed`` and take changes from it; False (and polling on)
        where it cannot start (no inotify here)."""
        try:
            feed.start()
        except Exception as e:  # no inotify here: polling does the job
            log.info("file watching unavailable (%s); polling every %ss", e, self.interval)
            return False
        self.feed = feed
        return True

    def stop(self) -> None:
        """Stop the feed; polling from now on."""
        feed, self.feed = self.feed, Polling()
        feed.stop()

    # -- the runs' watches -------------------------------------------------------

    def set_run(self, run: Run) -> None:
        """Keep the watches one run needs: its tree while it has not ended."""
        keys = set()
        if not run.ended:
            keys.add((run.dir, True))
        if not self.source.knows_roots:
            keys.add((os.path.dirname(os.path.normpath(run.dir)), False))
        self._set_keys(run.id, frozenset(keys))
        if self._trees is not None:
            if self._trees.holds(run.dir):
                self._outside.pop(run.id, None)
            else:
                self._outside[run.id] = run.dir

    def drop_run(self, run_id: str) -> None:
        self._set_keys(run_id, frozenset())
        self._outside.pop(run_id, None)

    def _set_keys(self, run_id: str, keys: frozenset[WatchKey]) -> None:
        old = self._keys.get(run_id, frozenset())
        if old == keys:
            return
        for key in old - keys:
            self._count[key] -= 1
            if self._count[key] <= 0:
                del self._count[key]
        for key in keys - old:
            self._count[key] += 1
        if keys:
            self._keys[run_id] = keys
        else:
            self._keys.pop(run_id, None)
        self._keys_moved = True

    def update_watches(self) -> None:
        """Bring the feed's watches in line with the runs, when the runs' needs moved."""
        feed = self.feed
        if not feed.watches:
            return
        with self._lock:
            if not self._keys_moved:
                return
            self._keys_moved = False
            needed = set(self._count)
        needed.update((r, False) for r in self.source.roots())
        needed = {w for w in needed if os.path.isdir(w[0])}
        self._unwatched = feed.set_watches(needed)
        watched = needed - self._unwatched
        # What changed before a new watch was in place was not seen: look.
        added = {path for path, _ in watched - self._watched}
        self._watched = watched
        if added:
            with self._lock:
                self._recheck |= added
            self._wake()

    # -- what to look at ---------------------------------------------------------

    def next_paths(self, run_dirs: Callable[[], list[str]], sweep: bool | None = None) -> set[str]:
        """The paths one poll re-checks.

        What the feed reported; where it reports nothing (polling, or a
        watcher that stopped) the roots and the runs that have not ended;
        the directories that could not be watched; and with ``sweep`` (by
        default: once every ``interval``) the next share of the safety net
        (see :meth:`_next_share`), drawn from ``run_dirs()``.
        """
        changed = self._take()
        if not self.feed.running:
            changed |= self._polled_paths()
        changed |= {path for path, _ in self._unwatched}
        now = time.monotonic()
        if sweep is None:
            sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + self.interval
            changed |= self._next_share(run_dirs)
        return changed

    def _take(self) -> set[str]:
        """The paths the feed reported, and those whose watch was just set."""
        changed = self.feed.take()
        with self._lock:
            changed |= self._recheck
            self._recheck = set()
        return changed

    def _polled_paths(self) -> set[str]:
        """What a poll re-checks where nothing is watched: roots, unended runs.

        The runs that have not ended are those with a recursive watch key
        (kept per run as they come and go): no pass over every run.
        """
        with self._lock:
            paths = {path for path, recursive in self._count if recursive}
        return paths | set(self.source.roots())

    def _next_share(self, run_dirs: Callable[[], list[str]]) -> set[str]:
        """The next share of the safety net: the paths to re-check on this poll.

        The full check behind the feed is spread over
        ``full_check_interval``: a round lists the roots again (runs the
        feed missed), then each poll re-checks the next ``1/k`` of the
        runs, ``k`` polls of ``interval`` to a round, at most
        :data:`SHARE_MAX` runs a poll.  So a missed change is seen within
        about ``full_check_interval`` (longer past ``k * SHARE_MAX`` runs) and
        no poll pays for every run.
        """
        with self._lock:
            if self._sweep_pos < len(self._sweep):
                share = self._sweep[self._sweep_pos : self._sweep_pos + self._sweep_share]
                self._sweep_pos += len(share)
                return set(share)
            self._sweep = run_dirs()
            self._sweep_pos = 0
            polls = max(1, math.ceil(self.full_check_interval / max(self.interval, 1e-3)))
            self._sweep_share = max(1, min(SHARE_MAX, math.ceil(len(self._sweep) / polls)))
            self._keys_moved = True
        self.feed.retry_failed()
        return set(self.source.roots())

    # -- run_once: what changed since the last call ----------------------------------

    def since_last_check(
        self, watch: bool, fs: FileSystem, ignore: str, run_dirs: Mapping[str, str]
    ) -> set[str] | None:
        """The paths that changed since the last call, or None: only a full
        check can tell (and the caller does one now).

        Exact where the source's runs all lie in trees it names
        (``watch_trees()``: Guild's runs directory, a directory tree of runs)
        on a local filesystem (``fs``, the monitor's, local too) and
        ``watch`` is on: the first call sets a
        :class:`~runsmon.watch.TreeWatch` on those trees (before the full
        check it asks for, so nothing between the two is lost); later calls
        read it. Besides what it reports: the paths changed in the last
        :data:`RECENT_S` seconds, the directories of runs outside the trees,
        and where an entry outside every run came or went (``run_dirs``:
        normalised run directory -> run id), or any entry where runs nest
        (``runs_nest``: a tree of runs), the roots, listed again. Where a
        change may have gone unreported (the kernel's queue overflowed, a
        tree's top moved) the watch is set anew and this call is a full
        check, as it is after a call that did not complete
        (:attr:`full_next`: the run listing failed, an error); where the
        trees cannot be watched (the watch limit, no inotify, a network
        filesystem) every call is.
        """
        if not watch or self._trees_failed:
            return None
        trees = self._trees
        if trees is None or not trees.exact:
            if trees is not None:
                log.info("file watching lost changes (%s); checking every run", trees.lost)
                trees.close()
            self._trees = trees = self._watch_trees(fs, ignore)
            if trees is not None:  # runs the trees do not hold are looked at each call
                self._outside = {r: d for d, r in run_dirs.items() if not trees.holds(d)}
            return None
        if self.full_next:
            return None
        changed, entries = trees.take()
        if not trees.exact:
            return self.since_last_check(watch, fs, ignore, run_dirs)
        now = time.monotonic()
        recent = self._recent
        for path in changed:
            recent[path] = now
        paths = set(recent) | set(self._outside.values())
        for path in [p for p, t in recent.items() if now - t >= RECENT_S]:
            del recent[path]  # looked at once more, RECENT_S after its change
        nest = getattr(self.source, "runs_nest", True)  # any entry may be a new run
        if entries and (nest or any(_run_of(p, run_dirs, strictly=True) is None for p in entries)):
            forget = getattr(self.source, "forget_listing", None)
            if forget is not None:
                forget()  # so that the roots named below are listed again
            paths.update(self.source.roots())
        return paths

    def _watch_trees(self, fs: FileSystem, ignore: str) -> TreeWatch | None:
        """A watch on every tree of the source's runs; None (for good) where none can be."""
        trees_of = getattr(self.source, "watch_trees", None)
        tops = trees_of() if trees_of is not None else None
        if not tops:
            self._trees_failed = tops is None  # [] (nothing to watch yet) is tried again
            return None
        why = next((f"{t} is on {kind}" for t in tops if (kind := fs_type(t)) in REMOTE_FS), "")
        if any(fs.local_path(t) is None for t in tops):
            why = "the runs are not on a local filesystem"
        trees = None
        if not why:
            try:
                trees = TreeWatch(ignore=[ignore])
            except OSError as e:
                why = f"no inotify here ({e})"
        if trees is not None:
            for top in tops:
                trees.add_tree(top)
            if not trees.exact:
                why = trees.lost
                trees.close()
                trees = None
        if trees is None:
            log.info("run_once() checks every run each call: %s", why)
            self._trees_failed = True
            return None
        self._outside.clear()
        self._recent.clear()
        return trees


def _run_of(path: str, run_dirs: Mapping[str, str], strictly: bool = False) -> str | None:
    """The run whose directory holds ``path`` (with ``strictly``, not the directory itself)."""
    p = os.path.normpath(path)
    if strictly:
        p = os.path.dirname(p)
    while True:
        run_id = run_dirs.get(p)
        if run_id is not None:
            return run_id
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def fs_type(path: str) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts; "" elsewhere)."""
    real = os.path.realpath(path).rstrip(os.sep) + os.sep
    best, kind = "", ""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].rstrip(os.sep) + os.sep
                if real.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind

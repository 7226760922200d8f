"""What every run source shares: cached listing that re-reads only what changed.

A source is a callable returning the current :class:`~runsmon.run.Run` list.
Called with no argument it does a full check: it lists candidate run
directories and compares a cheap per-run fingerprint (a few ``stat`` calls) to
the last one, re-reading a run only when its fingerprint moved.  Called with
``changed`` (paths a filesystem watcher reported), it trusts the watcher and
re-checks only the runs under those paths, plus the listing when a root
itself changed.

:class:`Source` declares what the monitor and ``runsmon table`` ask of a
source; :func:`as_source` makes one of any plain zero-argument callable
returning runs (what embedders pass), once, when the monitor is built.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Protocol, runtime_checkable

from runsmon.fs import LOCAL, FileSystem
from runsmon.report import Reporter, describe_error
from runsmon.run import Run


@runtime_checkable
class Source(Protocol):
    """What the monitor, the run filters and ``runsmon table`` ask of a source.

    :class:`RunSource`, :class:`CombinedRuns` and :class:`~runsmon.select.RunFilter`
    are sources; :func:`as_source` makes one of a plain callable.
    """

    #: Where the source's warnings go (the monitor's, unless it is given one).
    reporter: Reporter
    #: A call returns the very same list object while nothing changed, so a
    #: caller can tell "no change" by identity.
    shares_unchanged: bool
    #: Whether :meth:`roots` names every directory where a new run can
    #: appear.  Where it does not (a plain callable), the monitor watches the
    #: directory holding each run instead.
    knows_roots: bool

    def __call__(self, changed: Collection[str] | None = None) -> Iterable[Run]:
        """The runs.  ``changed`` (paths a watcher reported) lets a source
        re-check only the runs under them; a source may ignore it."""
        ...

    def roots(self) -> list[str]:
        """Directories whose entries are (or lead to) runs, watched for new runs."""
        ...

    def describe(self) -> str:
        """The source in words, for messages."""
        ...


class CallableSource:
    """A plain callable as a :class:`Source`: what it does not offer, said plainly.

    The callable is called with no argument (with ``changed`` only when it
    has a ``roots()`` method of its own, as before the protocol was
    declared); it has no roots it knows of, a reporter of its own, and its
    answer is never taken as "nothing changed".  The hooks it does have
    (``roots``, ``reporter``, ``describe``, ``shares_unchanged``) are kept.
    """

    def __init__(self, cb: Callable[..., Iterable[Run]]) -> None:
        self.cb = cb
        roots = getattr(cb, "roots", None)
        self._roots = roots if callable(roots) else None
        self.knows_roots = self._roots is not None
        self.reporter: Reporter = getattr(cb, "reporter", None) or Reporter()
        self.shares_unchanged = bool(getattr(cb, "shares_unchanged", False))
        describe = getattr(cb, "describe", None)
        self._describe = describe if callable(describe) else None

    def __call__(self, changed: Collection[str] | None = None) -> Iterable[Run]:
        if changed is not None and self._roots is not None:
            return self.cb(changed)
        return self.cb()

    def roots(self) -> list[str]:
        return list(self._roots()) if self._roots is not None else []

    def describe(self) -> str:
        return self._describe() if self._describe is not None else repr(self.cb)


def as_source(cb: Callable[..., Iterable[Run]]) -> Source:
    """``cb`` itself when it is a :class:`Source`, else a :class:`CallableSource` of it."""
    return cb if isinstance(cb, Source) else CallableSource(cb)


class RunSource:
    """Base class: subclasses say how to find, fingerprint and read runs."""

    #: Short name shown to users ("guild", "dirs", "mlflow", ...).
    kind = "runs"
    #: A call returns the very same list object while nothing changed.
    shares_unchanged = True
    #: :meth:`roots` names where new runs appear (see :class:`Source`).
    knows_roots = True
    #: Seconds a listing is trusted while the roots' mtimes hold (see
    #: :meth:`_roots_unchanged`); past that, a root named changed is listed.
    relist_after = 60.0
    #: Whether run ids are paths below the source's PATH (a tree of run
    #: directories): two PATHs may then hold the same id (see :func:`combine`).
    path_ids = False
    #: Put before every run id as ``PREFIX/``; :func:`combine` sets it.
    id_prefix = ""
    #: (kind, path) of the source that :func:`~runsmon.sources.detect_kind`
    #: would pick for this one's path, when the user named another with
    #: ``--source``: a full check finding no runs then says so, once.
    suggest: tuple[str, str] | None = None

    def __init__(self, fs: FileSystem = LOCAL, reporter: Reporter | None = None) -> None:
        self.fs = fs
        self.reporter = reporter or Reporter()
        self._lock = threading.Lock()
        self._dirs: list[str] | None = None
        self._index: dict[str, str] = {}  # normalised run dir -> run dir
        self._cache: dict[str, tuple[Hashable, Run | None]] = {}
        self._live: set[str] = set()  # cached runs that have not ended (see _live_dirs)
        self._runs: list[Run] | None = None  # the last answer, while it holds
        self._listed: tuple[float, float, tuple | None] = (0.0, 0.0, None)  # wall, mono, keys

    # -- what subclasses provide -------------------------------------------

    def roots(self) -> list[str]:
        """Directories whose entries are (or lead to) runs, watched for new runs."""
        raise NotImplementedError

    def list_run_dirs(self) -> list[str]:
        """Every candidate run directory, found cheaply (no file reads)."""
        raise NotImplementedError

    def fingerprint(self, run_dir: str) -> Hashable:
        """A value that changes whenever ``read_run`` would read something new."""
        raise NotImplementedError

    def read_run(self, run_dir: str) -> Run | None:
        """Read one run; None when the directory is not a run (after all)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} runs in {', '.join(self.roots())}"

    #: Whether a run can appear inside another run's directory (a tree of
    #: runs): then any entry made or removed anywhere may be a new run.
    runs_nest = False

    def watch_trees(self) -> list[str] | None:
        """Directories whose whole trees hold everything :meth:`fingerprint`
        and the runs' event files depend on, and every place a new run can
        appear: watched for ``run_once()`` to check only what changed. None
        where no such trees exist (a database, a server): each ``run_once()``
        is then a full check."""
        return None

    def forget_listing(self) -> None:
        """Make the next call that names a root list the roots again."""
        with self._lock:
            self._listed = (0.0, 0.0, None)

    def want_attrs(self, names: frozenset[str]) -> None:
        """The run filters read these attributes (see
        :meth:`~runsmon.select.Filters.attrs_read`): a source that leaves some
        unread where reading costs requests must read these."""

    # -- the callable --------------------------------------------------------

    def __call__(self, changed: Collection[str] | None = None) -> list[Run]:
        """The runs; with ``changed``, re-checking only the runs under those paths.

        While nothing changed, the same list object is returned again (a
        caller can tell "no change" by identity); treat it as read-only.
        """
        with self._lock:
            if (
                changed is None
                or self._dirs is None
                or (self._touches_roots(changed) and not self._roots_unchanged())
            ):
                self._listed = (time.time(), time.monotonic(), self._root_keys())
                listed = self._list_dirs()
                if listed is None:
                    # The root is unreadable or gone for a moment (remount,
                    # rename): keep showing what was known, lose nothing.
                    return [run for _, run in self._cache.values() if run is not None]
                if listed != self._dirs:
                    self._dirs = listed
                    self._index = {_norm(d): d for d in listed}
                    self._runs = None
            elif not changed and self._runs is not None and not self._live_dirs():
                return self._runs
            dirs = self._dirs
            if changed is None or self._runs is None:
                recheck = None if changed is None else self._recheck(dirs, changed)
                runs: list[Run] = []
                cache: dict[str, tuple[Hashable, Run | None]] = {}
                for run_dir in dirs:
                    cached = self._cache.get(run_dir)
                    if cached is not None and recheck is not None and run_dir not in recheck:
                        entry = cached
                    else:
                        entry = self._check(run_dir, cached)
                    cache[run_dir] = entry
                    if entry[1] is not None:
                        runs.append(entry[1])
                self._cache = cache
                self._live = {d for d, (_, r) in cache.items() if r is not None and not r.ended}
                if not runs and changed is None and self.suggest is not None:
                    self._suggest_other()
                if (
                    self._runs is None
                    or len(runs) != len(self._runs)
                    or any(a is not b for a, b in zip(runs, self._runs, strict=True))
                ):
                    self._runs = runs
                return self._runs
            # A watcher's report on a known listing: only the runs it names
            # (and those whose status may change with no file changing).
            moved = False
            for run_dir in self._recheck(dirs, changed):
                cached = self._cache.get(run_dir)
                entry = self._check(run_dir, cached)
                if cached is None or entry[1] is not cached[1]:
                    moved = True
                self._cache[run_dir] = entry
                if entry[1] is not None and not entry[1].ended:
                    self._live.add(run_dir)
                else:
                    self._live.discard(run_dir)
            if moved:
                self._runs = [e[1] for d in dirs if (e := self._cache[d])[1] is not None]
            return self._runs

    def _list_dirs(self) -> list[str] | None:
        try:
            dirs = self.list_run_dirs()
        except FileNotFoundError as e:
            # Gone is gone: its runs were deleted (they come back if it does).
            self.reporter.warn(
                self.describe(), "list", f"cannot list {self.describe()}: {describe_error(e)}"
            )
            return []
        except OSError as e:
            self.reporter.warn(
                self.describe(), "list", f"cannot list {self.describe()}: {describe_error(e)}"
            )
            return None
        self.reporter.clear(self.describe(), "list")
        return dirs

    def _check(
        self, run_dir: str, cached: tuple[Hashable, Run | None] | None
    ) -> tuple[Hashable, Run | None]:
        try:
            # Kept as its hash: one int per run instead of a tuple of stats.
            fp = hash(self.fingerprint(run_dir))
        except OSError:
            fp = None
        if cached is not None and fp is not None and cached[0] == fp:
            return cached
        try:
            run = self.read_run(run_dir)
        except Exception as e:  # a bad run must never stop the others
            self.reporter.warn(run_dir, "read", f"run {run_dir}: skipped: {describe_error(e)}")
            return (fp, None)
        self.reporter.clear(run_dir, "read")
        return (fp, run)

    def _suggest_other(self) -> None:
        """No runs here: name the source that finds some (once)."""
        from runsmon.sources import describe_kind, detect_source

        kind, path = self.suggest  # type: ignore[misc]
        self.suggest = None
        try:
            found = detect_source(path, kind=kind, fs=self.fs).list_run_dirs()
        except Exception:  # the hint is a courtesy: never a failure
            return
        if found:
            self.reporter.warn(
                self.describe(),
                "suggest",
                f"no {self.kind} runs in {path}; this looks like {describe_kind(kind)}: "
                f"try --source {kind}",
            )

    def _live_dirs(self) -> set[str]:
        """Runs that have not ended: their status may move with time alone.

        A run's process dies (its LOCK stays), a run of a tree rests long
        enough to count as ended: no file changes, so no watcher reports it.
        Their fingerprints hold what moves (pid alive, idle), so they are
        re-checked on every call, not only at the next full check.
        """
        return self._live

    def _recheck(self, dirs: list[str], changed: Collection[str]) -> set[str]:
        # Live runs are cached ones. One a new listing dropped is harmless:
        # that listing's pass checks only the dirs it lists, and a report on
        # an unchanged listing finds every live run in it.
        return self._dirs_under(dirs, changed) | self._live

    def _root_keys(self) -> tuple | None:
        """The roots' (size, mtime), taken before a listing; None if one is gone."""
        keys = []
        for root in self.roots():
            st = self.fs.stat(root)
            if st is None:
                return None
            keys.append(st.key)
        return tuple(keys)

    def _roots_unchanged(self) -> bool:
        """Whether the last listing still holds: no root's mtime moved since.

        A directory's mtime moves when an entry is added, removed or renamed.
        An mtime within a second of the listing proves nothing (a change in
        the same clock tick leaves it as it was), and after
        :attr:`relist_after` seconds the roots are listed anyway (filesystems
        that cache attributes, such as NFS).  So a poll where nothing is
        watched need not list a root of 10,000 runs to find no new one.
        """
        wall, mono, keys = self._listed
        if keys is None or time.monotonic() - mono > self.relist_after:
            return False
        now = self._root_keys()
        return now == keys and all(mtime / 1e9 < wall - 1.0 for _, mtime in keys)

    def _touches_roots(self, changed: Collection[str]) -> bool:
        """Whether a changed path may add or remove an entry of a root.

        A known run directory that is still there does not: the monitor's
        safety net names every run directory in turn, and listing a root of
        10,000 runs for each would cost more than re-checking the runs.
        """
        roots = {os.path.normpath(r) for r in self.roots()}
        index = self._index
        for path in changed:
            norm = os.path.normpath(path)
            if norm in roots:
                return True
            if os.path.dirname(norm) in roots and (
                norm not in index or self.fs.stat(index[norm]) is None
            ):
                return True
        return False

    def _dirs_under(self, dirs: list[str], changed: Collection[str]) -> set[str]:
        """The run directories that hold (or are) one of the changed paths."""
        index = self._index if dirs is self._dirs else {os.path.normpath(d): d for d in dirs}
        hit: set[str] = set()
        for path in changed:
            path = os.path.normpath(path)
            while True:
                if path in index:
                    hit.add(index[path])
                    break
                parent = os.path.dirname(path)
                if parent == path:
                    break
                path = parent
        return hit


def _norm(path: str) -> str:
    """``os.path.normpath``, keeping the same string object when nothing changes."""
    norm = os.path.normpath(path)
    return path if norm == path else norm


class CombinedRuns:
    """Several sources as one callable (``runsmon serve PATH PATH ...``)."""

    knows_roots = True

    def __init__(self, sources: list[RunSource]) -> None:
        self.sources = sources
        self.reporter = sources[0].reporter if sources else Reporter()
        self._last: tuple[list[list[Run]], list[Run]] | None = None

    def roots(self) -> list[str]:
        return [r for s in self.sources for r in s.roots()]

    @property
    def runs_nest(self) -> bool:
        return any(s.runs_nest for s in self.sources)

    def watch_trees(self) -> list[str] | None:
        trees = [s.watch_trees() for s in self.sources]
        return None if any(t is None for t in trees) else [p for t in trees for p in t or ()]

    def forget_listing(self) -> None:
        for s in self.sources:
            s.forget_listing()

    def want_attrs(self, names: frozenset[str]) -> None:
        for s in self.sources:
            s.want_attrs(names)

    def describe(self) -> str:
        return "; ".join(s.describe() for s in self.sources)

    @property
    def shares_unchanged(self) -> bool:
        return all(s.shares_unchanged for s in self.sources)

    def __call__(self, changed: Collection[str] | None = None) -> list[Run]:
        parts = [s(changed) for s in self.sources]
        last = self._last
        if last is not None and all(a is b for a, b in zip(parts, last[0], strict=True)):
            return last[1]
        runs = []
        dirs: set[str] = set()
        for part in parts:
            for run in part:
                # Overlapping PATHs (a tree and a directory inside it) list a
                # run twice: it is one run, shown once.
                key = os.path.normpath(run.dir)
                if key not in dirs:
                    dirs.add(key)
                    runs.append(run)
        self._last = (parts, runs)
        return runs


def path_labels(paths: list[str]) -> list[str]:
    """Short names telling PATHs apart: the last part of each, or as many
    last parts as it takes to make it differ from the others.

    >>> path_labels(["/w/projA", "/w/projB"])
    ['projA', 'projB']
    >>> path_labels(["/a/exp/runs", "/b/exp/runs", "/c/other"])
    ['a/exp/runs', 'b/exp/runs', 'other']
    """
    split = [[p for p in os.path.normpath(os.path.abspath(x)).split(os.sep) if p] for x in paths]
    labels = []
    for i, parts in enumerate(split):
        others = [o for j, o in enumerate(split) if j != i and o != parts]
        n = 1
        while n < len(parts) and any(o[-n:] == parts[-n:] for o in others):
            n += 1
        labels.append("/".join(parts[-n:]) or os.sep)
    return labels


def combine(sources: list[RunSource]) -> RunSource | CombinedRuns:
    """One source as itself, several as a :class:`CombinedRuns`.

    With several tree sources (:attr:`RunSource.path_ids`), their run ids
    start with a short name of its PATH (:func:`path_labels`), so that
    ``projA/lightning_logs/version_0`` and ``projB/lightning_logs/version_0``
    are two runs.  The name depends on the PATHs given only, never on the
    runs, so ids (and the names made from them) stay put while runs come
    and go.
    """
    if len(sources) == 1:
        return sources[0]
    trees = [s for s in sources if s.path_ids]
    if len(trees) > 1:
        labels = path_labels([str(getattr(s, "path", "")) for s in trees])
        for source, label in zip(trees, labels, strict=True):
            source.id_prefix = label
    return CombinedRuns(sources)

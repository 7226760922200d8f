"""Which event files a run has, where they go in the logdir, and what they hold.

:class:`RunFiles` walks a run directory once and then only re-lists a
directory whose mtime moved, and only re-scans an event file whose size or
mtime moved (reading just the appended bytes). Symlinked directories are never
followed (Guild links dependencies, whole datasets among them, into runs).
The same listing names the run's image files (:mod:`runsmon.images`), whose
size and mtime it keeps.
"""

from __future__ import annotations

import dataclasses
import posixpath
import sys
from collections.abc import Sequence

from runsmon import reduce
from runsmon.events import FileScan
from runsmon.fs import Entry, FileSystem
from runsmon.images import MAX_IMAGES, is_image_file

#: Guild keeps the scalars it parsed from a run's output here.
GUILD_DIR = ".guild"


def is_event_file(name: str) -> bool:
    return "tfevents" in name


@dataclasses.dataclass(slots=True)
class EventFile:
    """One event file of a run and the scan of its contents."""

    path: str  # where it is
    rel: str  # where it goes in the run's logdir directory
    stat_key: tuple[int, int] | None = None
    scan: FileScan = dataclasses.field(default_factory=FileScan)

    @property
    def group(self) -> str:
        return posixpath.dirname(self.rel)


#: One directory's listing: (mtime, subdirectories, event files, image files).
Listing = tuple[int, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
_NONE: tuple[str, ...] = ()

#: How an event file reaches the logdir.
LINK = "link"  # a symlink to the run's file
FILTER = "filter"  # a copy without its hparams summaries (they would fight runsmon's)
SKIP = "skip"  # left out: a file that could not be read


class RunFiles:
    """The event files under one run directory, kept up to date cheaply."""

    def __init__(
        self,
        root: str,
        fs: FileSystem,
        max_depth: int = 32,
        exclude: frozenset[str] = frozenset(),
        best: Sequence[reduce.BestSpec] = (),
        *,
        images: bool = True,
        hparams: bool = True,
    ) -> None:
        self.root = root
        #: Reductions the scanner keeps (``--best`` and the run's own), see :mod:`runsmon.reduce`.
        self.best = tuple(best)
        #: Directories (relative to ``root``) left out: runs nested in this one.
        self.exclude = exclude
        self._prefix = root if root.endswith("/") else root + "/"
        self.fs = fs
        self.max_depth = max_depth
        self._dirs: dict[str, Listing] = {}  # rel -> its listing
        self.files: dict[str, EventFile] = {}  # path -> file
        self.errors: dict[str, str] = {}  # path -> why it could not be read
        self.list_images = images
        """Whether image files are listed (``--skip-images``: not)."""
        self.images: dict[str, tuple[str, int, int]] = {}
        """rel path -> (path, size, mtime_ns) of its image files, by rel path, at
        most :data:`~runsmon.images.MAX_IMAGES` (symlinks left out, as Guild does)."""
        self.filter_hparams = hparams
        """Whether files with hparams summaries of their own are copied without
        them (``--skip-hparams``: linked as they are, as Guild does)."""

    def refresh(self) -> bool:
        """Re-list changed directories and re-scan changed files.

        Returns True when the set of files or anything they hold changed.
        """
        seen: dict[str, Listing] = {}
        event_paths: dict[str, str] = {}  # path -> rel in logdir
        self._walk("", 0, seen, event_paths)
        self._dirs = seen
        changed = self._stat_images(seen) if self.list_images else False
        for path in [p for p in self.files if p not in event_paths]:
            del self.files[path]
            changed = True
        for path, rel in event_paths.items():
            entry = self.files.get(path)
            if entry is None or entry.rel != rel:
                entry = self.files[path] = EventFile(path, rel)
                if self.best:
                    entry.scan.reduce_for = reduce.tag_specs(self.best, posixpath.dirname(rel))
                changed = True
            if self._update(entry):
                changed = True
        return changed

    def count(self) -> int:
        """How many event files the run has, listing its directories only
        (kept: the next :meth:`refresh` lists again only what moved)."""
        seen: dict[str, Listing] = {}
        event_paths: dict[str, str] = {}
        self._walk("", 0, seen, event_paths)
        self._dirs = seen
        return len(event_paths)

    def _stat_images(self, seen: dict[str, Listing]) -> bool:
        """Size and mtime of the listed image files; True when they moved."""
        rels = sorted(
            f"{rel}/{name}" if rel else name for rel, listing in seen.items() for name in listing[3]
        )[:MAX_IMAGES]
        images = {}
        for rel in rels:
            path = self._prefix + rel
            st = self.fs.stat(path)
            if st is not None and st.is_file:
                images[rel] = (path, st.size, st.mtime_ns)
        changed = images != self.images
        self.images = images
        return changed

    def _walk(
        self,
        rel: str,
        depth: int,
        seen: dict[str, Listing],
        event_paths: dict[str, str],
    ) -> None:
        path = self._prefix + rel if rel else self.root
        st = self.fs.stat(path)
        if st is None or not st.is_dir:
            return
        cached = self._dirs.get(rel)
        if cached is not None and cached[0] == st.mtime_ns:
            listing = cached
        else:
            try:
                entries = self.fs.scandir(path)
            except OSError:
                return
            listing = _listing(st.mtime_ns, entries, rel, self.list_images and rel != GUILD_DIR)
        seen[rel] = listing
        _, subdirs, files, _ = listing
        base = f"{self._prefix}{rel}/" if rel else self._prefix
        for name in files:
            # Guild's output scalars belong to the run's root.
            event_paths[base + name] = name if rel == GUILD_DIR or not rel else f"{rel}/{name}"
        if rel == GUILD_DIR or depth >= self.max_depth:
            return
        for name in subdirs:
            sub = f"{rel}/{name}" if rel else name
            if not self.exclude or sub not in self.exclude:
                self._walk(sub, depth + 1, seen, event_paths)

    def _update(self, entry: EventFile) -> bool:
        st = self.fs.stat(entry.path)
        if st is None or not st.is_file:
            cause = "vanished" if st is None else "not a regular file"
            changed = self.errors.get(entry.path) != cause
            self.errors[entry.path] = cause
            return changed
        if entry.stat_key == st.key:
            return False
        # Changed at a size that did not grow: maybe rewritten in place (in
        # object storage an overwrite moves the ETag): whoever copies it looks.
        same_size = entry.stat_key is not None and st.size <= entry.stat_key[0]
        entry.stat_key = st.key
        before = (entry.scan.offset, len(entry.scan.tags), entry.scan.has_hparams)
        try:
            entry.scan.update(self.fs, entry.path, st.size)
        except OSError as e:
            self.errors[entry.path] = e.strerror or str(e)
            return True
        self.errors.pop(entry.path, None)
        return same_size or before != (
            entry.scan.offset,
            len(entry.scan.tags),
            entry.scan.has_hparams,
        )

    def rescan(self, path: str) -> None:
        """Read ``path`` again from its first byte at the next :meth:`refresh`
        (it was rewritten in place, at a size its scan cannot tell)."""
        entry = self.files.get(path)
        if entry is not None:
            generation = entry.scan.generation + 1
            entry.scan.reset()
            entry.scan.generation = generation
            entry.stat_key = None

    def modes(self) -> dict[str, str]:
        """How each file (by path) reaches the logdir.

        A file with hparams summaries of its own is copied without them
        (Lightning writes hparams and curves into one file; ``add_hparams``
        writes hparams and the metrics the user chose beside the run's
        curves). A file that could not be read (a FIFO, unreadable) is left
        out: a link to a FIFO would block TensorBoard's reader.
        """
        errors = self.errors
        own = self.filter_hparams
        return {
            path: SKIP if path in errors else FILTER if own and f.scan.has_hparams else LINK
            for path, f in self.files.items()
        }

    def placement(self) -> dict[str, tuple[str, str]]:
        """path -> (mode, rel path in the run's logdir directory).

        A file with hparams summaries in a subdirectory, beside event files
        without any or in a directory named by a timestamp (``add_hparams``
        writes into ``str(time.time())``), is placed at the run's root: the
        metrics it holds are the run's own.
        """
        modes = self.modes()
        files = self.files
        out = {path: (mode, files[path].rel) for path, mode in modes.items()}
        if FILTER in modes.values():
            plain = LINK in modes.values()
            rels = {f.rel for f in files.values()}
            for path, (mode, rel) in out.items():
                if mode == FILTER and "/" in rel:
                    parent, _, base = rel.rpartition("/")
                    if (plain or _is_timestamp(parent)) and base not in rels:
                        out[path] = (mode, base)
        return out

    def placed(self, mode: str) -> dict[str, str]:
        """rel path in the logdir -> path of the run's file, for one mode."""
        return {rel: p for p, (m, rel) in self.placement().items() if m == mode}

    def shown(self) -> list[tuple[EventFile, str]]:
        """The files that reach the logdir, each with its group there."""
        files = self.files
        return [
            (files[p], rel.rpartition("/")[0])
            for p, (m, rel) in self.placement().items()
            if m != SKIP
        ]

    def metrics(self) -> set[tuple[str, str]]:
        """Every scalar tag as (tag, group) over the shown files.

        The group is the file's directory in the run's logdir directory ("" at
        its root); which of these become metrics is the run view's rule
        (:mod:`runsmon.runview`) and the experiment's selection.
        """
        out: set[tuple[str, str]] = set()
        for f, group in self.shown():
            out.update((tag, group) for tag in f.scan.scalar_tags)
        return out

    def last_values(self) -> dict[tuple[str, str], float]:
        """The last value of every scalar as (tag, group), as TensorBoard shows it."""
        best: dict[tuple[str, str], tuple[int, float, float]] = {}
        for f, group in self.shown():
            for tag, v in f.scan.scalars.items():
                key = (tag, group)
                cand = (v.step, v.wall_time, v.value)
                if key not in best or cand[:2] >= best[key][:2]:
                    best[key] = cand
        return {k: v[2] for k, v in best.items()}

    def reduced_values(self) -> dict[tuple[str, str], reduce.Reduced]:
        """Each reduced metric (see :mod:`runsmon.reduce`) over the shown files:
        (step and wall time of its base metric's last point, its value)."""
        parts: dict[tuple[str, str], list[tuple[tuple[int, float], tuple]]] = {}
        for f, group in self.shown():
            reduced = f.scan.reduced
            if not reduced:
                continue
            for tag, runs in reduced.items():
                last = f.scan.scalars.get(tag)
                at = (last.step, last.wall_time) if last is not None else (-1, 0.0)
                parts.setdefault((tag, group), []).append((at, runs))
        out: dict[tuple[str, str], reduce.Reduced] = {}
        for metric, items in parts.items():
            items.sort(key=lambda item: item[0])
            step, wall = items[-1][0]
            for i, running in enumerate(items[0][1]):
                spec = running.spec
                value = reduce.combine(spec, [runs[i] for _, runs in items if len(runs) > i])
                if value is not None:
                    out[reduce.reduced_metric(metric, spec)] = (step, wall, value)
        return out


def _listing(mtime_ns: int, entries: list[Entry], rel: str, images: bool) -> Listing:
    """One directory's :data:`Listing` from its entries, in one pass: its
    subdirectories (hidden ones left out, but ``.guild`` at a run's root, last),
    event files and, with ``images``, image files, each sorted by name.

    >>> e = [Entry(n, n, d, not d, False) for n, d in
    ...      [("val", True), (".guild", True), ("b.tfevents.1", False), ("p.png", False),
    ...       ("a.tfevents.2", False), (".x", True), ("train", True)]]
    >>> _listing(7, e, "", True)
    (7, ('train', 'val', '.guild'), ('a.tfevents.2', 'b.tfevents.1'), ('p.png',))
    >>> _listing(7, e, "sub", False)
    (7, ('train', 'val'), ('a.tfevents.2', 'b.tfevents.1'), ())
    """
    subdirs: list[str] = []
    files: list[str] = []
    found: list[str] = []
    guild = False
    for e in entries:
        name = e.name
        if e.is_dir:
            if name[:1] != ".":
                subdirs.append(sys.intern(name))
            elif name == GUILD_DIR:
                guild = True
            continue
        if "tfevents" in name:
            files.append(name)
        if images and e.is_file and is_image_file(name):
            found.append(name)
    subdirs.sort()
    files.sort()
    found.sort()
    if guild and rel == "":
        subdirs.append(GUILD_DIR)
    return (mtime_ns, tuple(subdirs), tuple(files), tuple(found) if found else _NONE)


def _is_timestamp(name: str) -> bool:
    """Whether a directory name is ``str(time.time())``, as ``add_hparams`` names it.

    >>> _is_timestamp("1704164685.123456"), _is_timestamp("version_0"), _is_timestamp("12")
    (True, False, False)
    """
    head, dot, tail = name.partition(".")
    return bool(dot) and len(head) >= 9 and head.isdigit() and tail.isdigit()

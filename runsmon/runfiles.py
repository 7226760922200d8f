"""Which event files a run has, where they go in the logdir, and what they hold.

:class:`RunFiles` walks a run directory once and then only re-lists a
directory whose mtime moved, and only re-scans an event file whose size or
mtime moved (reading just the appended bytes). Symlinked directories are never
followed (Guild links dependencies, whole datasets among them, into runs).
"""

from __future__ import annotations

import dataclasses
import posixpath
import sys

from runsmon.events import FileScan
from runsmon.fs import FileSystem

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


#: How an event file reaches the logdir.
LINK = "link"  # a symlink to the run's file
FILTER = "filter"  # a copy without its hparams summaries (they would fight runsmon's)
SKIP = "skip"  # left out: a side file of hparams (PyTorch add_hparams' timestamp dir)


class RunFiles:
    """The event files under one run directory, kept up to date cheaply."""

    def __init__(
        self, root: str, fs: FileSystem, max_depth: int = 32, exclude: frozenset[str] = frozenset()
    ) -> None:
        self.root = root
        #: Directories (relative to ``root``) left out: runs nested in this one.
        self.exclude = exclude
        self._prefix = root if root.endswith("/") else root + "/"
        self.fs = fs
        self.max_depth = max_depth
        self._dirs: dict[
            str, tuple[int, tuple[str, ...], tuple[str, ...]]
        ] = {}  # rel -> (mtime, subdirs, files)
        self.files: dict[str, EventFile] = {}  # path -> file
        self.errors: dict[str, str] = {}  # path -> why it could not be read

    def refresh(self) -> bool:
        """Re-list changed directories and re-scan changed files.

        Returns True when the set of files or anything they hold changed.
        """
        seen: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {}
        event_paths: dict[str, str] = {}  # path -> rel in logdir
        self._walk("", 0, seen, event_paths)
        self._dirs = seen
        changed = False
        for path in [p for p in self.files if p not in event_paths]:
            del self.files[path]
            changed = True
        for path, rel in event_paths.items():
            entry = self.files.get(path)
            if entry is None or entry.rel != rel:
                entry = self.files[path] = EventFile(path, rel)
                changed = True
            if self._update(entry):
                changed = True
        return changed

    def _walk(
        self,
        rel: str,
        depth: int,
        seen: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]],
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
            subdirs = sorted(
                sys.intern(e.name) for e in entries if e.is_dir and not e.name.startswith(".")
            )
            files = sorted(e.name for e in entries if is_event_file(e.name) and not e.is_dir)
            if rel == "" and any(e.name == GUILD_DIR and e.is_dir for e in entries):
                subdirs.append(GUILD_DIR)
            listing = (st.mtime_ns, tuple(subdirs), tuple(files))
        seen[rel] = listing
        _, subdirs, files = listing
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
        entry.stat_key = st.key
        before = (entry.scan.offset, len(entry.scan.tags), entry.scan.has_hparams)
        try:
            entry.scan.update(self.fs, entry.path, st.size)
        except OSError as e:
            self.errors[entry.path] = e.strerror or str(e)
            return True
        self.errors.pop(entry.path, None)
        return before != (entry.scan.offset, len(entry.scan.tags), entry.scan.has_hparams)

    def modes(self) -> dict[str, str]:
        """How each file (by path) reaches the logdir.

        A file with hparams summaries of its own is copied without them when
        it is the run's only source of scalars (Lightning writes hparams and
        curves into one file) or holds scalars at the run's root (TensorBoard's
        ``hp.hparams`` in the run's own writer, then the run's metrics), and
        left out when the run has other event files (``add_hparams`` writes
        hparams and a one-off metric beside them; ``hp.KerasCallback`` a file
        of session info beside Keras' ``train/`` and ``validation/``).
        A file that could not be read (a FIFO, unreadable) is left out: a
        link to a FIFO would block TensorBoard's reader.
        """
        errors = self.errors
        plain = any(not f.scan.has_hparams for p, f in self.files.items() if p not in errors)
        return {
            path: SKIP
            if path in errors
            else _mode(f.scan.has_hparams, plain and ("/" in f.rel or not f.scan.scalar_tags))
            for path, f in self.files.items()
        }

    def placed(self, mode: str) -> dict[str, str]:
        """rel path in the logdir -> path of the run's file, for one mode."""
        modes = self.modes()
        return {f.rel: p for p, f in self.files.items() if modes[p] == mode}

    def _shown(self) -> list[EventFile]:
        modes = self.modes()
        return [f for p, f in self.files.items() if modes[p] != SKIP]

    def metrics(self) -> set[tuple[str, str]]:
        """Every scalar tag as (tag, group) over the shown files.

        The group is the file's directory in the run ("" at its root); which
        of these become metrics is the experiment's selection.
        """
        out: set[tuple[str, str]] = set()
        for f in self._shown():
            group = f.group
            out.update((tag, group) for tag in f.scan.scalar_tags)
        return out

    def last_values(self) -> dict[tuple[str, str], float]:
        """The last value of every root scalar, as TensorBoard shows it."""
        best: dict[tuple[str, str], tuple[int, float, float]] = {}
        for f in self._shown():
            for tag, v in f.scan.scalars.items():
                if "/" in tag:
                    continue
                key = (tag, f.group)
                cand = (v.step, v.wall_time, v.value)
                if key not in best or cand[:2] >= best[key][:2]:
                    best[key] = cand
        return {k: v[2] for k, v in best.items()}


def _mode(has_hparams: bool, plain: bool) -> str:
    """LINK a plain file; a file with hparams: SKIP beside plain ones, else FILTER."""
    return LINK if not has_hparams else SKIP if plain else FILTER

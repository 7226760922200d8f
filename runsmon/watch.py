"""Where change notices come from, kept apart from the sync.

:class:`Watcher` (watchdog observers) keeps a set of watched directories in
line with what the monitor asks for and collects the paths that changed; it
wakes the running monitor. A directory that cannot be watched (no inotify,
too many watches, a network filesystem) is reported back so the monitor
polls it. :class:`TreeWatch` (inotify itself) watches whole trees and is read
when asked, so its answer holds every change made before the question: what
``run_once()`` needs to check only what changed since the last call. Neither
knows of runs or logdirs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("runsmon")


class _DropBenign(logging.Filter):
    """watchdog logs an *error* when a watch is removed while its thread reads.

    Runs end and their watches go all the time: that line is noise, not a
    problem, and would reach the user's terminal through logging's fallback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_DropBenign())


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads change nothing
        self._notify(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self._notify(os.fsdecode(dest))


class Watcher:
    """Collects changed paths under a changing set of watched directories."""

    watches = True  # a feed that sets watches (see changes.Feed)

    def __init__(self, ignore: Iterable[str] = (), on_change: Callable[[], None] | None = None):
        self._ignore = tuple(os.path.abspath(p) + os.sep for p in ignore)
        self._on_change = on_change
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._watches: dict[tuple[str, bool], object] = {}
        self._failed: set[tuple[str, bool]] = set()
        self._observer: Observer | None = None
        self._handler = _Handler(self._notify)

    def start(self) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=1.5)
        self._watches.clear()

    @property
    def running(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def _notify(self, path: str) -> None:
        if self._ignore and (path + os.sep).startswith(self._ignore):
            return
        with self._lock:
            self._changed.add(path)
        if self._on_change is not None:
            self._on_change()

    def take(self) -> set[str]:
        """The paths that changed since the last call."""
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def set_watches(self, wanted: Iterable[tuple[str, bool]]) -> set[tuple[str, bool]]:
        """Watch exactly ``wanted`` (path, recursive) pairs.

        Returns the pairs that could not be watched, to be polled instead.
        """
        observer = self._observer
        if observer is None:
            return set(wanted)
        wanted = set(wanted)
        for key in [k for k in self._watches if k not in wanted]:
            watch = self._watches.pop(key)
            with contextlib.suppress(KeyError, OSError):
                observer.unschedule(watch)
        self._failed &= wanted
        for key in wanted:
            if key in self._watches or key in self._failed:
                continue
            path, recursive = key
            try:
                self._watches[key] = observer.schedule(self._handler, path, recursive=recursive)
            except (OSError, RuntimeError) as e:
                # Out of inotify watches, a vanished directory, ...: poll it.
                log.debug("cannot watch %s: %s", path, e)
                self._failed.add(key)
        return set(self._failed)

    def retry_failed(self) -> None:
        """Forget failures so the next :meth:`set_watches` tries them again."""
        self._failed.clear()


# -- whole trees, read when asked (inotify itself) ------------------------------------

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_UNMOUNT = 0x400, 0x800, 0x2000
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR, _IN_DONT_FOLLOW = 0x4000, 0x8000, 0x1000000, 0x2000000
_IN_ISDIR = 0x40000000
_ENTRIES = _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _ENTRIES
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
    | _IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


class TreeWatch:
    """Every change under a few directory trees, read when asked: none in flight.

    One inotify instance with a watch on every directory of each tree
    (directories that appear are watched as they appear, before they are
    looked into), read by :meth:`take` itself, so nothing is in transit: the
    kernel queues an event before the write that causes it returns, so
    every change made before :meth:`take` is in its answer. (watchdog's
    :class:`Watcher` hands events over through threads and holds moves back
    for half a second: fine for waking a loop, not for "everything up to now".)

    :attr:`exact` turns False, for good, when a change may have gone
    unreported: the kernel's queue overflowed, the top of a tree moved or
    went away, or a directory could not be watched (the watch limit,
    ``fs.inotify.max_user_watches``, or no permission). Then only a full
    check can tell. Linux only: elsewhere the constructor raises OSError.
    """

    def __init__(self, ignore: Iterable[str] = ()) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError("inotify is Linux only")
        self._c = _libc()
        fd = self._c.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)
        self._ignore = tuple(os.path.abspath(p) + os.sep for p in ignore)
        self._dirs: dict[int, str] = {}  # watch descriptor -> its directory
        self._tops: set[str] = set()
        self._real_tops: set[str] = set()
        self._real: dict[str, str] = {}  # a run's parent directory -> its real path
        self.exact = True
        self.lost = ""  # why not exact (any more)
        self.watches = 0  # directories watched

    def holds(self, path: str) -> bool:
        """Whether the directory ``path`` is in a watched tree, not reached
        through a symlink (the watches follow none)."""
        path = os.path.abspath(path)
        parent = os.path.dirname(path)
        real = self._real.get(parent)
        if real is None:
            real = self._real[parent] = os.path.realpath(parent)
        real = os.path.join(real, os.path.basename(path))
        return not os.path.islink(path) and any(
            real == top or real.startswith(top + os.sep) for top in self._real_tops
        )

    def _lose(self, why: str) -> None:
        if self.exact:
            self.exact, self.lost = False, why

    def add_tree(self, top: str) -> None:
        """Watch ``top`` and every directory below it (symlinks not followed)."""
        top = os.path.abspath(top)
        if top in self._tops:
            return
        self._tops.add(top)
        self._real_tops.add(os.path.realpath(top))
        if not self._add(top):
            self._lose(f"cannot watch {top}")

    def _add(self, top: str) -> bool:
        """Watch ``top``'s tree: each directory first, then what is in it."""
        todo = [top]
        ok = True
        while todo:
            path = todo.pop()
            if self._ignore and (path + os.sep).startswith(self._ignore):
                continue
            wd = self._c.inotify_add_watch(self._fd, os.fsencode(path), _MASK)
            if wd < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOENT, errno.ENOTDIR):
                    if path == top:
                        ok = False
                    continue  # gone already: its parent reports it
                # ENOSPC (fs.inotify.max_user_watches), EACCES, ...
                self._lose(f"cannot watch {path}: {os.strerror(err)}")
                return False
            if wd not in self._dirs:
                self.watches += 1
            self._dirs[wd] = path  # a moved directory: the same wd, its new path
            try:
                with os.scandir(path) as it:
                    todo.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                continue  # gone meanwhile, or unreadable: its events still come
        return ok

    def take(self) -> tuple[set[str], set[str]]:
        """The paths that changed since the last call, and those of them
        where an entry was made, removed or renamed (what a listing sees)."""
        changed: set[str] = set()
        entries: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return changed, entries
            except OSError as e:
                self._lose(f"inotify read failed: {e}")
                return changed, entries
            pos = 0
            while pos < len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, pos)
                name = data[pos + _EVENT.size : pos + _EVENT.size + size].rstrip(b"\0")
                pos += _EVENT.size + size
                self._event(wd, mask, os.fsdecode(name), changed, entries)

    def _event(self, wd: int, mask: int, name: str, changed: set[str], entries: set[str]) -> None:
        if mask & _IN_Q_OVERFLOW:
            self._lose("more changes at once than inotify queues")
            return
        base = self._dirs.get(wd)
        if base is None:
            return
        if mask & _IN_IGNORED:
            del self._dirs[wd]
            self.watches -= 1
            if base in self._tops:
                self._lose(f"{base} went away")  # a new one would go unseen
            return
        if mask & (_IN_DELETE_SELF | _IN_MOVE_SELF | _IN_UNMOUNT) and base in self._tops:
            self._lose(f"{base} moved or went away")
        path = os.path.join(base, name) if name else base
        if self._ignore and (path + os.sep).startswith(self._ignore):
            return
        changed.add(path)
        if mask & _ENTRIES:
            entries.add(path)
            if mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO):
                self._add(path)  # watched before it is looked into

    def close(self) -> None:
        self._finalizer()
        self._dirs.clear()

"""Where change notices come from: watchdog observers, kept apart from the sync.

:class:`Watcher` keeps a set of watched directories in line with what the
monitor asks for and collects the paths that changed. It knows nothing of
runs or logdirs. A directory that cannot be watched (no inotify, too many
watches, a network filesystem) is reported back so the monitor polls it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
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

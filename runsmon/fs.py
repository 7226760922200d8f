"""The few file operations runsmon needs from where runs live.

Sources and the event scanner read through a :class:`FileSystem`, never
through ``os`` directly, so that a run tree on a shared filesystem or on
S3-compatible storage can later come in through an fsspec-backed
implementation of the same small interface.  :data:`LOCAL` is the one in use.
"""

from __future__ import annotations

import os
import stat as stat_mod
from typing import NamedTuple, Protocol


class Entry(NamedTuple):
    """One directory entry. ``is_dir``/``is_file`` do not follow symlinks."""

    name: str
    path: str
    is_dir: bool
    is_file: bool
    is_link: bool


class Stat(NamedTuple):
    """What change detection needs of a file: its size and change time.

    Tuples, not dataclasses: a full check makes one per file of every run.
    """

    size: int
    mtime_ns: int
    is_dir: bool
    is_file: bool

    @property
    def key(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


class FileSystem(Protocol):
    """Read-only access to a run tree."""

    def scandir(self, path: str) -> list[Entry]: ...

    def stat(self, path: str) -> Stat | None: ...

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes: ...

    def read_text(self, path: str) -> str: ...

    def local_path(self, path: str) -> str | None:
        """A path the OS can link to, or None where files must be copied."""
        ...


class LocalFileSystem:
    """The local filesystem."""

    def scandir(self, path: str) -> list[Entry]:
        """Entries of ``path``; raises OSError when it cannot be listed."""
        with os.scandir(path) as it:
            return [
                Entry(
                    e.name,
                    e.path,
                    e.is_dir(follow_symlinks=False),
                    e.is_file(follow_symlinks=False),
                    e.is_symlink(),
                )
                for e in it
            ]

    def stat(self, path: str) -> Stat | None:
        """Stat following symlinks; None when the path is gone or unreadable."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        mode = st.st_mode
        return Stat(st.st_size, st.st_mtime_ns, _isdir(mode), _isreg(mode))

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        # O_NONBLOCK keeps a FIFO posing as a file from blocking the monitor.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise OSError(f"not a regular file: {path}")
            # What the file holds now, never more than asked: pread allocates
            # what it is asked for, and most reads here are of small files.
            want = st.st_size - offset if size < 0 else min(size, st.st_size - offset)
            if want <= 0:
                return b""
            data = os.pread(fd, want, offset)
            if len(data) < want:  # a short read: go on to ``want`` or the end
                parts = [data]
                got = len(data)
                while got < want:
                    part = os.pread(fd, want - got, offset + got)
                    if not part:
                        break
                    parts.append(part)
                    got += len(part)
                data = b"".join(parts)
            return data
        finally:
            os.close(fd)

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def local_path(self, path: str) -> str | None:
        """``path`` made absolute; one already absolute and normal comes back as it is.

        >>> LOCAL.local_path("/runs/a/train/x"), LOCAL.local_path("/runs/a/../b/")
        ('/runs/a/train/x', '/runs/b')
        """
        if path[:1] == "/" and not ("/." in path or "//" in path or path[-1] == "/"):
            return path  # what abspath would give, without its normpath
        return os.path.abspath(path)


def read_one(fs: FileSystem, path: str) -> bytes:
    """A whole file that only a few runs' readers want: in a store, one GET
    (:meth:`~runsmon.remotefs.ObjectStoreFileSystem.read_one`); elsewhere ``read_bytes``."""
    one = getattr(fs, "read_one", None)
    return one(path) if one is not None else fs.read_bytes(path)


_isdir = stat_mod.S_ISDIR
_isreg = stat_mod.S_ISREG
LOCAL = LocalFileSystem()

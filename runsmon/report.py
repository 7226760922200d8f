"""Warnings about bad input: one line per run and cause, never repeated.

A daemon that polls every few seconds would otherwise print the same complaint
forever.  :class:`Reporter` remembers what it said; a problem that goes away
and comes back is reported again.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("runsmon")


class Reporter:
    """Deduplicating warnings keyed by (subject, cause)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._logger = logger
        self._active: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def warn(self, subject: str, cause: str, message: str) -> bool:
        """Log ``message`` unless this (subject, cause) is already reported.

        Returns True when the line was logged.
        """
        key = (subject, cause)
        with self._lock:
            if key in self._active:
                return False
            self._active[key] = message
        self._logger.warning(message)
        return True

    def clear(self, subject: str, cause: str | None = None) -> None:
        """Forget what was reported for ``subject`` (one cause, or all)."""
        with self._lock:
            if cause is not None:
                self._active.pop((subject, cause), None)
            else:
                for key in [k for k in self._active if k[0] == subject]:
                    del self._active[key]

    def active(self) -> dict[tuple[str, str], str]:
        """What is reported and not cleared, for tests and status output."""
        with self._lock:
            return dict(self._active)


def describe_error(error: BaseException) -> str:
    """A short, user-facing cause for an exception (no traceback)."""
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "no such file or directory"
    if isinstance(error, IsADirectoryError):
        return "a directory where a file was expected"
    if isinstance(error, NotADirectoryError):
        return "a file where a directory was expected"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return first if len(first) <= 200 else first[:197] + "..."

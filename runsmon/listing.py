"""Asking the source for its runs, with a time limit.

:class:`Lister` calls the source (the run-listing callback, wrapped as a
:class:`~runsmon.sources.base.Source`) in a thread of its own, so that a
listing that hangs (a network filesystem, a stuck database) never stops the
monitor. It knows nothing of the logdir or of what a sync does with the runs.
It reports back the runs by id, and whether they are the very list the source
handed back last time (then nothing changed); or ``None`` when the source
failed, raised or did not answer in time, said once through the reporter
(the last list stands).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from runsmon.report import Reporter, describe_error
from runsmon.run import Run
from runsmon.sources.base import Source


@dataclass(frozen=True)
class Listing:
    """The runs listed, by id, and whether they are the last listing's."""

    runs: dict[str, Run] = field(default_factory=dict)
    same: bool = False


class Lister:
    """Lists the runs of ``source`` within ``timeout`` seconds (see the module's docstring)."""

    def __init__(self, source: Source, reporter: Reporter, timeout: float) -> None:
        self.source = source
        self.reporter = reporter
        self.timeout = timeout
        self._pending: threading.Thread | None = None  # a call still stuck
        self._last_out: object = None  # the object the source returned last
        self._last = Listing()

    def list(self, changed: set[str] | None) -> Listing | None:
        """The runs now; ``changed`` is passed on (the paths that changed, or
        None for a full listing)."""
        if self._pending is not None and self._pending.is_alive():
            return None  # still stuck in an earlier call; reported already
        result: dict[str, Any] = {}
        source = self.source

        def call() -> None:
            try:
                out = source(changed)
                result["out"] = out
                result["runs"] = out if type(out) is list else list(out)
            except BaseException as e:  # report whatever the callback raised
                result["error"] = e

        thread = threading.Thread(target=call, name="runsmon-list", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._pending = thread
            self.reporter.warn(
                "callback",
                "hang",
                f"run listing did not answer within {self.timeout:g} s; keeping the last list",
            )
            return None
        self._pending = None
        self.reporter.clear("callback", "hang")
        if "error" in result:
            self.reporter.warn(
                "callback",
                "error",
                f"run listing failed: {describe_error(result['error'])}; keeping the last list",
            )
            return None
        self.reporter.clear("callback", "error")
        # Our sources hand back the very same list while nothing changed.
        if result["out"] is self._last_out and source.shares_unchanged:
            return Listing(self._last.runs, same=True)
        self._last_out = result["out"]
        self._last = Listing(self._by_id(result["runs"]))
        return self._last

    def _by_id(self, runs: list[Any]) -> dict[str, Run]:
        """The runs by id: a run listed twice is shown once, with a warning."""
        listed: dict[str, Run] = {}
        for run in runs:
            if not isinstance(run, Run):
                continue
            if run.id in listed:
                self.reporter.warn(
                    run.id, "duplicate", f"run {run.id} listed twice; showing it once"
                )
                continue
            listed[run.id] = run
        return listed

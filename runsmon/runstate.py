"""A run as the monitor keeps it, the ledger of one sync's writes, what a sync did.

:class:`RunState` is what the monitor knows of one shown run: the run as its
source read it, the manifest of its directory in the logdir, its event files
and what the dashboard shows of it. :class:`Writes` records, per run, which
writes of a sync worked and which failed (one warning line per run, cleared
only after a sync in which all of them worked) and whose manifest is saved
at the end of the sync. Both are shared by the monitor, the mirror and the
session writer; neither knows of the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from runsmon.logdir import LogdirError, Manifest
from runsmon.report import Reporter, describe_error
from runsmon.run import Run
from runsmon.runfiles import RunFiles


@dataclasses.dataclass
class SyncStats:
    """What one sync did."""

    runs: int = 0
    added: int = 0
    removed: int = 0
    updated: int = 0
    sessions: int = 0
    ended: int = 0
    rewrites: int = 0  # sessions written anew in a new directory (see sessions.py)
    experiment_written: bool = False
    seconds: float = 0.0
    full: bool = False
    """Whether every run was checked (a full check), not only what changed."""
    checked: int = 0
    """Runs looked at again: every run on a full check, else those changes named."""

    @property
    def resets(self) -> int:
        """The old name of :attr:`rewrites`."""
        return self.rewrites


@dataclasses.dataclass
class RunState:
    run: Run
    manifest: Manifest
    files: RunFiles
    metrics: frozenset[tuple[str, str]] = frozenset()
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What its session shows (``base`` shaped by the other runs: see seeds.Shaper)."""
    base: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Its hparams as its view has them (flags, tags, note)."""
    user: list[str] = dataclasses.field(default_factory=list)  # the hparams a user set
    group: str | None = None  # its seed group's row name (None: a row of its own)
    own_time: bool = False  # its files have a root scalar `time` of their own
    scalars_of: Run | None = None  # the Run object whose scalars are all written
    point_best: dict[Any, Any] | None = None  # reduced values of its scalars outside event files
    best_written: dict[str, Any] | None = None  # reduced metric's tag -> (step, value) written
    best_of: Manifest | None = None  # ... into this directory (a new generation starts anew)

    @property
    def name(self) -> str:
        """The run's name: its row (session group) in the dashboard."""
        return str(self.manifest.state.group or self.manifest.name)

    @property
    def row(self) -> str:
        """The session group its session names: its seed group, else its name."""
        return self.group or self.name


class Writes:
    """The writes of one sync, per run."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.unsaved: set[str] = set()  # runs whose manifest is saved at the end of the sync
        self._ok: set[str] = set()  # runs with a write that worked, in this sync
        self._failed: set[str] = set()  # runs with a write that failed, in this sync

    def attempt(self, st: RunState, cause: str, action: Callable[[], object]) -> bool:
        """Do one write of a run's; a failure is one warning line per run (any ``cause``).

        The warning clears only after a sync in which every write of the run
        succeeded, so writes that keep failing while others succeed (a full
        disk: links work, files do not) do not print it again every poll.
        """
        try:
            action()
        except (OSError, LogdirError) as e:
            self.failed(
                st.run.id, f"run {st.name}: cannot write to the logdir: {describe_error(e)}"
            )
            return False
        self._ok.add(st.run.id)
        return True

    def failed(self, run_id: str, message: str) -> None:
        """A write of ``run_id``'s failed (``message`` says which and why)."""
        self._failed.add(run_id)
        self.reporter.warn(run_id, "write", message)

    def settle(self) -> None:
        """At the end of a sync: clear the warning of runs whose writes all worked."""
        for run_id in self._ok - self._failed:
            self.reporter.clear(run_id, "write")
        self._ok.clear()
        self._failed.clear()

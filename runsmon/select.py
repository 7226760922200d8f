"""Which runs to show, and what to call them: the run filters of the command line.

:class:`RunFilter` wraps a source and applies ``--operation``, ``--label``,
``--status``, ``--since`` and ``--limit`` on every call, so the filters apply
live: a new run that matches shows up, a run whose label or status stops
matching goes away.  It is a source itself (:class:`~runsmon.sources.base.Source`)
with the wrapped source's ``roots()`` and ``changed`` support, so the monitor
still watches the source's directories and re-reads only what a watcher
reported; and while the source hands back the same list, so does the filter.

:func:`flags_run_namer` builds a ``run_name_cb`` that names runs by chosen
flag values (``--run-name-flags lr,optimizer``), as ``guild tensorboard``
does.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import re
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from runsmon.hparams import value_text
from runsmon.naming import format_started, run_name
from runsmon.report import Reporter
from runsmon.run import STATUSES, Run
from runsmon.sources.base import Source, as_source

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M")


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from ``now`` (``30m``, ``2h``, ``1.5d``, ``1w``)
    or a local date/time (``2024-05-01``, ``2024-05-01 13:30``, ISO 8601);
    returns seconds since the epoch.

    >>> parse_since("2h", now=10_000.0)
    2800.0
    >>> parse_since("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: not a duration or date: 'yesterday' (use e.g. 30m, 2h, 3d, 1w or 2024-05-01)
    """
    now = time.time() if now is None else now
    m = _DURATION_RE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    stripped = text.strip()
    for fmt in _DATE_FORMATS:
        try:
            return datetime.datetime.strptime(stripped, fmt).timestamp()
        except ValueError:
            pass
    try:
        return datetime.datetime.fromisoformat(stripped).timestamp()
    except ValueError:
        pass
    raise ValueError(f"not a duration or date: {text!r} (use e.g. 30m, 2h, 3d, 1w or 2024-05-01)")


def parse_statuses(texts: Sequence[str]) -> frozenset[str]:
    """``--status running,completed`` (repeatable): the status names, checked.

    >>> sorted(parse_statuses(["running,completed", "error"]))
    ['completed', 'error', 'running']
    >>> parse_statuses(["done"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown status 'done' (one of: running, completed, error, ...)
    """
    out: set[str] = set()
    for text in texts:
        for part in text.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in STATUSES:
                raise ValueError(f"unknown status {name!r} (one of: {', '.join(STATUSES)})")
            out.add(name)
    return frozenset(out)


def _matches(value: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


@dataclasses.dataclass(frozen=True)
class Filters:
    """What ``--operation``, ``--label``, ``--status``, ``--since`` and ``--limit`` ask for.

    Globs are case-sensitive shell patterns; several of one kind match when
    any matches.  ``since`` is a fixed time (seconds since the epoch): a run
    started before it, or with no known start, is left out.  ``limit`` keeps
    the newest runs by start time.
    """

    operations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    statuses: frozenset[str] = frozenset()
    since: float | None = None
    limit: int | None = None

    @property
    def active(self) -> bool:
        return bool(
            self.operations
            or self.labels
            or self.statuses
            or self.since is not None
            or self.limit is not None
        )

    def wants(self, run: Run) -> bool:
        """Whether ``run`` passes every filter but ``limit``."""
        if self.operations and not _matches(run.operation, self.operations):
            return False
        if self.labels and not _matches(run.label, self.labels):
            return False
        if self.statuses and run.status not in self.statuses:
            return False
        return self.since is None or (run.started is not None and run.started >= self.since)

    def apply(self, runs: Sequence[Run]) -> list[Run]:
        """The runs that pass, in their order; with ``limit``, only the newest."""
        kept = [r for r in runs if self.wants(r)]
        if self.limit is not None and len(kept) > self.limit:
            newest = sorted(kept, key=_newest_first)[: self.limit]
            ids = {r.id for r in newest}
            kept = [r for r in kept if r.id in ids]
        return kept

    def describe(self) -> str:
        """The filters in words, for the startup line ("" when none)."""
        parts = []
        if self.operations:
            parts.append(f"operation {' or '.join(self.operations)}")
        if self.labels:
            parts.append(f"label {' or '.join(self.labels)}")
        if self.statuses:
            parts.append(f"status {' or '.join(s for s in STATUSES if s in self.statuses)}")
        if self.since is not None:
            parts.append(f"started since {format_started(self.since)}")
        if self.limit is not None:
            parts.append(f"newest {self.limit}")
        return ", ".join(parts)


def _newest_first(run: Run) -> tuple[int, float, str]:
    # Runs with no start time count as oldest; the id breaks ties steadily.
    return (0, -run.started, run.id) if run.started is not None else (1, 0.0, run.id)


class RunFilter:
    """A source with :class:`Filters` applied on every call.

    Keeps the wrapped source's ``roots()``, ``describe()``, ``reporter``,
    ``changed`` argument and ``shares_unchanged``, so the monitor treats it
    as the source itself: while the source answers with the same list, the
    filter answers with its same list, without filtering again; and a new
    answer that keeps the very same runs is the same list too.
    """

    def __init__(self, source: Callable[..., Any], filters: Filters) -> None:
        self.source: Source = as_source(source)
        self.filters = filters
        self.reporter: Reporter = self.source.reporter
        self.knows_roots = self.source.knows_roots
        self.shares_unchanged = self.source.shares_unchanged
        self._last: tuple[object, list[Run]] | None = None  # (source's answer, ours)

    def roots(self) -> list[str]:
        return self.source.roots()

    def describe(self) -> str:
        return self.source.describe()

    def __call__(self, changed: Collection[str] | None = None) -> list[Run]:
        out = self.source(changed)
        last = self._last
        if self.shares_unchanged and last is not None and out is last[0]:
            return last[1]
        runs = self.filters.apply([r for r in out if isinstance(r, Run)])
        if (
            self.shares_unchanged
            and last is not None
            and len(runs) == len(last[1])
            and all(a is b for a, b in zip(runs, last[1], strict=True))
        ):
            runs = last[1]
        if self.shares_unchanged:
            self._last = (out, runs)
        return runs


def filtered(source: Callable[..., Any], filters: Filters) -> Callable[..., Any]:
    """``source`` wrapped in a :class:`RunFilter`, or itself when no filter is set."""
    return RunFilter(source, filters) if filters.active else source


def parse_flag_names(text: str) -> tuple[str, ...]:
    """``--run-name-flags lr,optimizer`` as names.

    >>> parse_flag_names(" lr, optimizer.name ,")
    ('lr', 'optimizer.name')
    """
    return tuple(p.strip() for p in text.split(",") if p.strip())


def flags_label(run: Run, names: Sequence[str]) -> str:
    """``name=value`` for each of ``names`` the run has a value for.

    >>> run = Run(id="abc", dir="/r", flags={"lr": 0.1, "opt": {"name": "adam"}, "aug": True})
    >>> flags_label(run, ["lr", "opt.name", "aug", "missing"])
    'lr=0.1 opt.name=adam aug=true'
    """
    hparams = run.hparams()
    return " ".join(f"{n}={value_text(hparams[n])}" for n in names if n in hparams)


def flags_run_namer(names: Sequence[str]) -> Callable[[Run], str]:
    """A ``run_name_cb``: the default name with the chosen flags as its label.

    The flags take the place of the label, as ``guild tensorboard
    --run-name-flags`` does: Guild's ``SHORT_ID OPERATION STARTED`` then the
    flags, or a tree run's short path (a Hydra job's number) then the flags.

    >>> namer = flags_run_namer(["lr", "layers"])
    >>> namer(Run(id="3f2a9c1b77", dir="/r", operation="train", flags={"lr": 0.1, "layers": 2}))
    '3f2a9c1b train lr=0.1 layers=2'
    >>> namer(Run(id="runs/exp1", dir="/r", flags={"lr": 0.1}))
    'exp1 lr=0.1'
    """
    names = tuple(names)

    def name(run: Run) -> str:
        return run_name(run, flags_label(run, names))

    return name

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
import posixpath
import re
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from runsmon import guildselect
from runsmon.fs import LOCAL
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


def _operation_matches(operation: str, refs: Sequence[str]) -> bool:
    # runsmon's glob over the whole name, or Guild's --operation rule.
    return any(
        fnmatch.fnmatchcase(operation, r) or guildselect.guild_operation_matches(r, operation)
        for r in refs
    )


def has_tag(run: Run, tag: str) -> bool:
    """Whether ``run`` is tagged ``tag``: the tag itself, or (MLflow's
    ``KEY=VALUE`` tags) its key.

    >>> run = Run(id="a", dir="/a", tags=frozenset({"baseline", "team=vision"}))
    >>> [has_tag(run, t) for t in ("baseline", "team", "team=vision", "team=nlp", "v2")]
    [True, True, True, False, False]
    """
    return tag in run.tags or any(t.partition("=")[0] == tag for t in run.tags if "=" in t)


def _label_matches(label: str, values: Sequence[str]) -> bool:
    # runsmon's glob over the whole label, or Guild's --label rule (a part of it).
    return any(
        fnmatch.fnmatchcase(label, v) or guildselect.guild_label_matches(v, label) for v in values
    )


@dataclasses.dataclass(frozen=True)
class Filters:
    """What the run filters of the command line ask for.

    ``operations`` and ``labels`` match as runsmon's case-sensitive globs
    over the whole name, or as Guild's ``--operation`` and ``--label`` do
    (see :mod:`runsmon.guildselect`); several of one kind match when any
    matches.  ``since`` is a fixed time (seconds since the epoch): a run
    started before it, or with no known start, is left out.  ``limit`` keeps
    the newest runs by start time.

    The rest are Guild's filters: ``statuses`` (any of) and ``not_statuses``
    (none of), ``unlabeled``, ``tags`` (any, of every source: see
    :func:`has_tag`), ``comments`` (any),
    ``marked`` (True: marked, False: unmarked), ``started`` (a RANGE, read
    against the clock at every call), ``digest`` (a source code digest
    prefix), ``expr`` (a filter expression), ``runs`` (RUN specs, resolved
    against the runs that pass the rest, newest first) and ``include_batch``
    (False: Guild's batch runs left out).
    """

    operations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    statuses: frozenset[str] = frozenset()
    since: float | None = None
    limit: int | None = None
    not_statuses: frozenset[str] = frozenset()
    unlabeled: bool = False
    tags: tuple[str, ...] = ()
    comments: tuple[str, ...] = ()
    marked: bool | None = None
    started: str | None = None
    digest: str | None = None
    expr: guildselect.FilterExpr | None = None
    runs: tuple[str, ...] = ()
    include_batch: bool = True

    def __post_init__(self) -> None:
        if self.started is not None:
            guildselect.parse_range(self.started)  # a bad RANGE fails here, not at a poll

    @property
    def active(self) -> bool:
        return bool(
            self.operations
            or self.labels
            or self.statuses
            or self.since is not None
            or self.limit is not None
            or self.not_statuses
            or self.unlabeled
            or self.tags
            or self.comments
            or self.marked is not None
            or self.started is not None
            or self.digest is not None
            or self.expr is not None
            or self.runs
            or not self.include_batch
        )

    @property
    def steady(self) -> bool:
        """Whether a run that did not change keeps its answer (no clock, no scalars)."""
        return self.started is None and (self.expr is None or self.expr.steady)

    def attrs_read(self) -> frozenset[str]:
        """The attributes of Guild runs that only these filters read
        (``sourcecode_digest``, ``initialized``): a source reading runs in
        object storage reads them only when asked (see
        :data:`runsmon.sources.guild.LAZY_ATTRS`).

        >>> Filters(digest="ab12").attrs_read()
        frozenset({'sourcecode_digest'})
        >>> expr = guildselect.parse_filter("sourcecode = x or attr:initialized > 1")
        >>> sorted(Filters(expr=expr).attrs_read())
        ['initialized', 'sourcecode_digest']
        >>> Filters(expr=guildselect.parse_filter("lr > 0.1"), runs=("1",)).attrs_read()
        frozenset()
        """
        names = set()
        if self.digest is not None:
            names.add("sourcecode_digest")
        for ref in self.expr.refs if self.expr is not None else ():
            name = ref[len("attr:") :] if ref.startswith("attr:") else ref
            if name in ("sourcecode", "sourcecode_digest"):
                names.add("sourcecode_digest")
            elif name == "initialized":
                names.add(name)
        return frozenset(names)

    def range_now(self) -> tuple[datetime.datetime | None, datetime.datetime | None] | None:
        """``started`` as (start, end) now; None without it."""
        return None if self.started is None else guildselect.parse_range(self.started)

    def wants(
        self,
        run: Run,
        bounds: tuple[datetime.datetime | None, datetime.datetime | None] | None = None,
        scalars: Callable[[Run, str], Any] | None = None,
    ) -> bool:
        """Whether ``run`` passes every filter but ``runs`` and ``limit``."""
        if self.operations and not _operation_matches(run.operation, self.operations):
            return False
        if self.labels and not _label_matches(run.label, self.labels):
            return False
        if self.unlabeled and run.label.strip():
            return False
        if self.statuses and run.status not in self.statuses:
            return False
        if self.not_statuses and run.status in self.not_statuses:
            return False
        if self.since is not None and (run.started is None or run.started < self.since):
            return False
        if self.tags and not any(has_tag(run, t) for t in self.tags):
            return False
        if self.comments:
            text = guildselect.comments_text(run.attrs.get("comments"))
            if not any(guildselect.guild_comment_matches(c, text) for c in self.comments):
                return False
        if self.marked is not None and bool(run.attrs.get("marked")) != self.marked:
            return False
        if self.started is not None:
            start, end = bounds if bounds is not None else guildselect.parse_range(self.started)
            if not guildselect.started_in(run, start, end):
                return False
        if self.digest is not None:
            digest = run.attrs.get("sourcecode_digest")
            if not str(digest if digest is not None else "").startswith(self.digest):
                return False
        if self.expr is not None:
            flags = run.flags
            values = guildselect.RunValues(
                attr=lambda name: guildselect.run_attr(run, name),
                flag=lambda name: flags.get(name) if isinstance(flags, dict) else None,
                scalar=(lambda key: scalars(run, key)) if scalars else (lambda key: None),
            )
            if not self.expr(values):
                return False
        return True

    def apply(
        self, runs: Sequence[Run], scalars: Callable[[Run, str], Any] | None = None
    ) -> list[Run]:
        """The runs that pass, in their order; with ``limit``, only the newest."""
        return self.select(runs, scalars)[0]

    def select(
        self,
        runs: Sequence[Run],
        scalars: Callable[[Run, str], Any] | None = None,
        bounds: tuple[datetime.datetime | None, datetime.datetime | None] | None = None,
    ) -> tuple[list[Run], list[str]]:
        """The runs that pass, in their order, and a problem per RUN that
        matches no run or several.  As Guild: filters, then RUNs over the runs
        that pass (newest first), then batch runs left out; then ``limit``."""
        if bounds is None:
            bounds = self.range_now()
        kept = [r for r in runs if self.wants(r, bounds, scalars)]
        problems: list[str] = []
        if self.runs:
            chosen, problems = guildselect.select_runs(kept, self.runs)
            ids = {r.id for r in chosen}
            kept = [r for r in kept if r.id in ids]
        if not self.include_batch:
            kept = [r for r in kept if not r.attrs.get("batch")]
        if self.limit is not None and len(kept) > self.limit:
            newest = sorted(kept, key=_newest_first)[: self.limit]
            ids = {r.id for r in newest}
            kept = [r for r in kept if r.id in ids]
        return kept, problems

    def describe(self) -> str:
        """The filters in words, for the startup line ("" when none)."""
        parts = []
        if self.runs:
            parts.append(f"RUN {' '.join(self.runs)}")
        if self.operations:
            parts.append(f"operation {' or '.join(self.operations)}")
        if self.labels:
            parts.append(f"label {' or '.join(self.labels)}")
        if self.unlabeled:
            parts.append("no label")
        if self.statuses:
            parts.append(f"status {' or '.join(s for s in STATUSES if s in self.statuses)}")
        if self.not_statuses:
            parts.append(
                f"status not {' nor '.join(s for s in STATUSES if s in self.not_statuses)}"
            )
        if self.since is not None:
            parts.append(f"started since {format_started(self.since)}")
        if self.started is not None:
            parts.append(f"started {self.started}")
        if self.tags:
            parts.append(f"tag {' or '.join(self.tags)}")
        if self.comments:
            parts.append(f"comment {' or '.join(self.comments)}")
        if self.marked is not None:
            parts.append("marked" if self.marked else "unmarked")
        if self.digest is not None:
            parts.append(f"digest {self.digest}*")
        if self.expr is not None:
            parts.append(f"filter {self.expr.text!r}")
        if self.limit is not None:
            parts.append(f"newest {self.limit}")
        return ", ".join(parts)


def _newest_first(run: Run) -> tuple[int, float, str]:
    # Runs with no start time count as oldest; the id breaks ties steadily.
    return (0, -run.started, run.id) if run.started is not None else (1, 0.0, run.id)


class _Scalars:
    """Last scalar values of runs for filter expressions, as Guild's index
    keeps them: per event file directory (its prefix, relative to the run)
    and tag, the value at the highest step; scanned incrementally."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self._files: dict[str, Any] = {}  # run dir -> RunFiles
        self._values: dict[str, list[tuple[str, str, float]]] = {}  # run dir -> entries

    def refresh(self, runs: Sequence[Run]) -> None:
        from runsmon.runfiles import RunFiles

        dirs = {r.dir for r in runs}
        for gone in [d for d in self._files if d not in dirs]:
            del self._files[gone]
            self._values.pop(gone, None)
        for run in runs:
            rf = self._files.get(run.dir)
            if rf is None:
                rf = self._files[run.dir] = RunFiles(
                    run.dir, self.fs, exclude=run.nested, images=False
                )
            if rf.refresh() or run.dir not in self._values:
                self._values[run.dir] = self._entries(rf, run.dir)

    @staticmethod
    def _entries(rf: Any, root: str) -> list[tuple[str, str, float]]:
        best: dict[tuple[str, str], tuple[int, float]] = {}
        for f in rf.files.values():
            prefix = posixpath.relpath(posixpath.dirname(f.path), root)
            prefix = "" if prefix == "." else prefix
            for tag, v in f.scan.scalars.items():
                key = (prefix, tag)
                if key not in best or v.step >= best[key][0]:
                    best[key] = (v.step, v.value)
        # The run's root first, then its directories by name.
        return [(p, t, v[1]) for (p, t), v in sorted(best.items(), key=lambda kv: kv[0])]

    def __call__(self, run: Run, key: str) -> float | None:
        prefix, sep, tag = key.partition("#")
        if not sep:
            prefix, tag = "", key
        for p, t, value in self._values.get(run.dir, ()):
            if (not sep or p == prefix) and t == tag:
                return value
        return None


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
        # (source's answer, time range then, ours)
        self._last: tuple[object, object, list[Run]] | None = None
        needs_scalars = filters.expr is not None and not filters.expr.steady
        self._scalars = _Scalars(getattr(self.source, "fs", LOCAL)) if needs_scalars else None
        self._problems: set[str] = set()
        want = getattr(self.source, "want_attrs", None)
        if want is not None:
            want(filters.attrs_read())

    def roots(self) -> list[str]:
        return self.source.roots()

    @property
    def runs_nest(self) -> bool:
        return bool(getattr(self.source, "runs_nest", True))

    def watch_trees(self) -> list[str] | None:
        trees_of = getattr(self.source, "watch_trees", None)
        return trees_of() if trees_of is not None else None

    def forget_listing(self) -> None:
        forget = getattr(self.source, "forget_listing", None)
        if forget is not None:
            forget()

    def describe(self) -> str:
        return self.source.describe()

    def __call__(self, changed: Collection[str] | None = None) -> list[Run]:
        out = self.source(changed)
        last = self._last
        bounds = self.filters.range_now()
        # A filter that reads the clock (a RANGE) or scalars looks again at
        # every call; its answer is still the same list while it keeps the
        # very same runs.
        if (
            self.shares_unchanged
            and last is not None
            and out is last[0]
            and bounds == last[1]
            and self._scalars is None
        ):
            return last[2]
        runs = [r for r in out if isinstance(r, Run)]
        if self._scalars is not None:
            self._scalars.refresh(runs)
        runs, problems = self.filters.select(runs, self._scalars, bounds)
        self._report(problems)
        if (
            self.shares_unchanged
            and last is not None
            and len(runs) == len(last[2])
            and all(a is b for a, b in zip(runs, last[2], strict=True))
        ):
            runs = last[2]
        if self.shares_unchanged:
            self._last = (out, bounds, runs)
        return runs

    def _report(self, problems: list[str]) -> None:
        """One warning per RUN that matches no run or several, while it does."""
        now = set(problems)
        for gone in self._problems - now:
            self.reporter.clear("RUN", gone)
        for problem in dict.fromkeys(problems):  # in the order of the RUNs
            if problem not in self._problems:
                self.reporter.warn(subject="RUN", cause=problem, message=problem)
        self._problems = now


def filtered(source: Callable[..., Any], filters: Filters) -> Callable[..., Any]:
    """``source`` wrapped in a :class:`RunFilter`, or itself when no filter is set."""
    return RunFilter(source, filters) if filters.active else source


def parse_flag_names(text: str) -> tuple[str, ...]:
    """``--run-name-flags lr,optimizer`` as names (commas or spaces, as Guild splits).

    >>> parse_flag_names(" lr, optimizer.name ,"), parse_flag_names("lr optimizer")
    (('lr', 'optimizer.name'), ('lr', 'optimizer'))
    """
    return tuple(p for p in re.split(r"[ ,]", text) if p)


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

"""Guild AI 0.9's run selection, as ``guild runs`` and ``guild tensorboard`` select.

The rules are Guild's own (``guild/commands/runs_impl.py``, ``guild/filter.py``,
``guild/timerange``), ported so that a Guild user's command line selects the
same runs: RUN specs (ids, id prefixes, one-based indexes, ``START:END``
ranges), ``--operation`` and ``--label`` matching, ``--started`` time ranges
and ``--filter`` expressions.  :mod:`runsmon.select` applies them at every poll.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from runsmon.run import Run

# -- RUN specs -----------------------------------------------------------------

_SLICE_RE = re.compile(r"(\d+)?:(\d+)?")
_RUN_WORD_RE = re.compile(r"[0-9a-f]+\Z")


def is_run_spec(word: str) -> bool:
    """Whether a command line word reads as a RUN: a one-based index, a range
    ``START:END`` (either side may be left out) or a hex run id (prefix).

    >>> [is_run_spec(w) for w in ("1", "2:", ":", "3f2a", "runs", "~/x", "1:3")]
    [True, True, True, True, False, False, True]
    """
    return bool(_RUN_WORD_RE.match(word) or _SLICE_RE.match(word))


def parse_slice(spec: str) -> tuple[int | None, int | None] | None:
    """Guild's ``_parse_slice``: a zero-based Python slice, or None for an id prefix.

    >>> parse_slice("1"), parse_slice("2:4"), parse_slice(":"), parse_slice("abc")
    ((0, 1), (1, 4), (None, None), None)
    """
    try:
        index = int(spec)
    except ValueError:
        m = _SLICE_RE.match(spec)
        if not m:
            return None
        start = int(m.group(1)) - 1 if m.group(1) is not None else None
        end = int(m.group(2)) if m.group(2) is not None else None
        return start, end
    return index - 1, index


def guild_timestamp(run: Run) -> float | None:
    """What Guild sorts runs by: ``started``, else ``initialized`` (seconds)."""
    if run.started is not None:
        return run.started
    init = run.attrs.get("initialized")
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        return init / 1_000_000
    return None


def newest_first(runs: Sequence[Run]) -> list[Run]:
    """Runs as ``guild runs`` lists them: newest first, runs with no time last."""
    timed = [r for r in runs if guild_timestamp(r) is not None]
    untimed = [r for r in runs if guild_timestamp(r) is None]
    timed.sort(key=lambda r: -guild_timestamp(r))  # type: ignore[operator]
    return timed + untimed


class RunSpecError(ValueError):
    """A RUN that matches no run, or more than one."""


def select_runs(runs: Sequence[Run], specs: Sequence[str]) -> tuple[list[Run], list[str]]:
    """Guild's ``select_runs`` over ``runs`` listed newest first.

    Returns the selected runs (no run twice) and one problem per RUN that
    matches no run or several (Guild stops there; the monitor goes on).
    An index or range out of the list is taken as an id prefix, as in Guild.
    """
    ordered = newest_first(runs)
    selected: dict[str, Run] = {}
    problems: list[str] = []
    for spec in specs:
        sl = parse_slice(spec)
        if sl is not None and _in_range(sl, len(ordered)):
            for run in ordered[sl[0] : sl[1]]:
                selected.setdefault(run.id, run)
            continue
        matches = [r for r in ordered if r.id.startswith(spec)]
        if len(matches) == 1:
            selected.setdefault(matches[0].id, matches[0])
        elif not matches:
            problems.append(f"no run matches RUN {spec!r}")
        else:
            ids = ", ".join(r.short_id for r in matches[:5])
            problems.append(
                f"RUN {spec!r} matches {len(matches)} runs ({ids}); give more of its id"
            )
    return list(selected.values()), problems


def _in_range(sl: tuple[int | None, int | None], n: int) -> bool:
    start, end = sl
    return (start is None or start >= 0) and (end is None or end <= n)


# -- operations, labels, comments ------------------------------------------------


def _parse_opspec(spec: str) -> tuple[str | None, str | None] | None:
    if not spec:
        return None, None
    if "/" not in spec and ":" not in spec:
        return None, spec
    for pattern in (
        r"([^/:]*):([^/:]+)$",
        r"([^/:]*/[^/:?]*):([^/:]+)$",
        r"([^/:]+/):?([^/:]+)$",
    ):
        m = re.match(pattern, spec)
        if m:
            return m.group(1), m.group(2)
    return None


def _split_opspec(spec: str) -> tuple[str | None, str | None, str | None]:
    parsed = _parse_opspec(spec)
    if not parsed:
        return None, None, None
    model, op = parsed
    if model:
        parts = model.split("/", 1)
        if len(parts) == 2:
            return parts[0], parts[1], op
    return None, model, op


def guild_operation_matches(ref: str, operation: str) -> bool:
    """Guild's ``--operation VAL``: a regular expression when VAL starts with
    ``^`` or ends with ``$``, else package, model and operation compared part
    by part (a part left out matches any; ``*`` globs).

    >>> [guild_operation_matches(r, "mnist:train") for r in ("train", "mnist:", "tr*", "^mn")]
    [True, True, True, True]
    >>> guild_operation_matches("test", "mnist:train"), guild_operation_matches("train", "train.py")
    (False, False)
    """
    if ref.startswith("^") or ref.endswith("$"):
        try:
            return re.search(ref, operation) is not None
        except re.error:
            return False
    import fnmatch

    for r, part in zip(_split_opspec(ref), _split_opspec(operation), strict=True):
        if not r:
            continue
        if not part:
            return False
        if "*" in r:
            if not fnmatch.fnmatch(part, r):
                return False
        elif r != part:
            return False
    return True


def guild_label_matches(value: str, label: str) -> bool:
    """Guild's ``--label VAL``: VAL in the label; ``-``: no label.

    >>> guild_label_matches("lr=0.1", "lr=0.1 opt=adam"), guild_label_matches("-", " ")
    (True, True)
    """
    label = label.strip()
    return not label if value == "-" else value in label


def comments_text(comments: Any) -> str:
    """What ``--comment`` searches: each comment's user, host and body, lower case."""
    if not isinstance(comments, list):
        return ""
    parts = []
    for c in comments:
        if isinstance(c, Mapping):
            parts.append("\n".join(str(c.get(k) or "").lower() for k in ("user", "host", "body")))
    return "\n".join(parts)


def guild_comment_matches(value: str, text: str) -> bool:
    """Guild's ``--comment VAL``: VAL in a comment, any case; ``-``: no comments."""
    return not text if value == "-" else value.lower() in text


# -- --started RANGE -----------------------------------------------------------

_RANGE_TOKENS = [
    ("LONGDATE", r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"),
    ("MEDIUMDATE", r"([0-9]{2})-([0-9]{1,2})-([0-9]{1,2})"),
    ("SHORTDATE", r"([0-9]{1,2})-([0-9]{1,2})"),
    ("LONGTIME", r"([0-9]{1,2}):([0-9]{2}):([0-9]{2})"),
    ("SHORTTIME", r"([0-9]{1,2}):([0-9]{2})"),
    ("DAY", r"days?"),
    ("WEEK", r"weeks?"),
    ("MONTH", r"months?"),
    ("YEAR", r"years?"),
    ("NUMBER", r"[0-9]+"),
    ("HOUR", r"hours?|hr"),
    ("MINUTE", r"minutes?|min"),
    ("RESERVED", r"[a-zA-Z]+"),
]
_RANGE_RES = [(n, re.compile(p, re.IGNORECASE)) for n, p in _RANGE_TOKENS]
_RANGE_WORDS = ("today", "yesterday", "this", "last", "ago", "before", "after", "between", "and")
_UNITS = ("MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")


def _range_tokens(spec: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(spec):
        if spec[pos] in " \t\n":
            pos += 1
            continue
        for name, rx in _RANGE_RES:
            m = rx.match(spec, pos)
            if m:
                text = m.group()
                if name == "RESERVED":
                    if text.lower() not in _RANGE_WORDS:
                        raise ValueError(f"unexpected '{text}' at position {pos}")
                    name, value = text.upper(), text
                elif name == "NUMBER":
                    value = int(text)
                elif name.endswith(("DATE", "TIME")):
                    value = tuple(int(g) for g in m.groups())
                else:
                    value = text
                out.append((name, value, pos))
                pos = m.end()
                break
        else:
            raise ValueError(f"unexpected '{spec[pos:]}' at position {pos}")
    return out


_DT = datetime.datetime
_TD = datetime.timedelta


def _shift(start: _DT, end: _DT, **delta: int) -> tuple[_DT, _DT]:
    d = _TD(**delta)
    return start + d, end + d


def _unit_range(unit: str, ref: _DT, shift: int = 0) -> tuple[_DT, _DT]:
    if unit == "MINUTE":
        start = ref.replace(second=0, microsecond=0)
        return _shift(start, start + _TD(minutes=1), minutes=shift)
    if unit == "HOUR":
        start = ref.replace(minute=0, second=0, microsecond=0)
        return _shift(start, start + _TD(hours=1), hours=shift)
    if unit == "DAY":
        start = ref.replace(hour=0, minute=0, second=0, microsecond=0)
        return _shift(start, start + _TD(days=1), days=shift)
    if unit == "WEEK":
        day = ref.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - _TD(days=day.weekday()) + _TD(days=shift * 7)
        return start, start + _TD(days=7)
    if unit == "MONTH":
        start = ref.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for _ in range(-shift):
            start = (start - _TD(days=1)).replace(day=1)
        # Guild 0.9 ends a month at the start of its last day.
        nxt = start.replace(day=28) + _TD(days=4)
        return start, nxt - _TD(days=nxt.day)
    start = ref.replace(
        year=ref.year + shift, month=1, day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return start, start.replace(year=start.year + 1)


class _RangeParser:
    """Guild's time range grammar (``guild/timerange/trparse.py``), by descent."""

    def __init__(self, spec: str, ref: _DT) -> None:
        self.toks = _range_tokens(spec)
        self.i = 0
        self.ref = ref

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j][0] if j < len(self.toks) else None

    def take(self, *names: str) -> tuple[str, Any, int]:
        tok = self.toks[self.i] if self.i < len(self.toks) else None
        if tok is None:
            raise ValueError("spec cannot be empty" if not self.toks else "unexpected end")
        if names and tok[0] not in names:
            raise ValueError(f"unexpected '{tok[1]}' at pos {tok[2]}")
        self.i += 1
        return tok

    def spec(self) -> tuple[_DT | None, _DT | None]:
        kind = self.peek()
        if kind == "LAST":
            self.take()
            n = self.take("NUMBER")[1] if self.peek() == "NUMBER" else 1
            unit = self.take("MINUTE", "HOUR", "DAY")[0]
            delta = {"MINUTE": _TD(minutes=n), "HOUR": _TD(hours=n), "DAY": _TD(days=n)}[unit]
            out: tuple[_DT | None, _DT | None] = (self.ref - delta, None)
        elif kind == "BETWEEN":
            self.take()
            s1, e1 = self.range()
            self.take("AND")
            s2, e2 = self.range()
            if s1 is None or s2 is None:
                raise ValueError("between needs two times with a start")
            out = (s1, e2) if s1 < s2 else (s2, e1)
        elif kind in ("BEFORE", "AFTER") or self._unit_range_next():
            out = self.range()
        else:
            dt, precision = self.datetime()
            if precision == "date":
                out = _unit_range("DAY", dt)
            elif precision == "second":
                out = (dt, dt + _TD(seconds=1))
            else:
                out = _unit_range("MINUTE", dt)
        if self.i < len(self.toks):
            self.take("<end>")
        return out

    def _unit_range_next(self) -> bool:
        return self.peek() in ("TODAY", "YESTERDAY", "THIS", "NUMBER")

    def range(self) -> tuple[_DT | None, _DT | None]:
        kind = self.peek()
        if kind in ("BEFORE", "AFTER"):
            self.take()
            if self._unit_range_next():
                start, end = self.unit_range()
                return (None, start) if kind == "BEFORE" else (end, None)
            dt = self.datetime()[0]
            return (None, dt) if kind == "BEFORE" else (dt, None)
        if self._unit_range_next():
            return self.unit_range()
        dt = self.datetime()[0]
        return dt, dt

    def unit_range(self) -> tuple[_DT, _DT]:
        kind = self.take("TODAY", "YESTERDAY", "THIS", "NUMBER")
        if kind[0] == "TODAY":
            return _unit_range("DAY", self.ref)
        if kind[0] == "YESTERDAY":
            return _unit_range("DAY", self.ref, -1)
        if kind[0] == "THIS":
            return _unit_range(self.take(*_UNITS)[0], self.ref)
        unit = self.take(*_UNITS)[0]
        self.take("AGO")
        return _unit_range(unit, self.ref, -kind[1])

    def datetime(self) -> tuple[_DT, str]:
        kind = self.peek()
        if kind in ("SHORTTIME", "LONGTIME"):
            return self._with_time(self.ref.date())
        name, value, _ = self.take("SHORTDATE", "MEDIUMDATE", "LONGDATE")
        if name == "SHORTDATE":
            day = datetime.date(self.ref.year, *value)
        elif name == "MEDIUMDATE":
            day = datetime.date(self.ref.year // 100 * 100 + value[0], value[1], value[2])
        else:
            day = datetime.date(*value)
        if self.peek() in ("SHORTTIME", "LONGTIME"):
            return self._with_time(day)
        return _DT(day.year, day.month, day.day), "date"

    def _with_time(self, day: datetime.date) -> tuple[_DT, str]:
        name, value, _ = self.take("SHORTTIME", "LONGTIME")
        h, m, s = (*value, 0) if name == "SHORTTIME" else value
        return _DT(day.year, day.month, day.day, h, m, s), (
            "second" if name == "LONGTIME" else "minute"
        )


def parse_range(spec: str, now: _DT | None = None) -> tuple[_DT | None, _DT | None]:
    """Guild's ``--started RANGE`` as (start, end) local times (either may be None).

    >>> now = datetime.datetime(2024, 5, 15, 13, 30)
    >>> [str(t) for t in parse_range("last 2 hours", now) if t]
    ['2024-05-15 11:30:00']
    >>> parse_range("after 2024-05-01", now)
    (datetime.datetime(2024, 5, 1, 0, 0), None)
    >>> parse_range("between 5-3 and 5-1", now)
    (datetime.datetime(2024, 5, 1, 0, 0), datetime.datetime(2024, 5, 3, 0, 0))
    >>> parse_range("yesterday", now)[0]
    datetime.datetime(2024, 5, 14, 0, 0)
    >>> parse_range("last week", now)
    Traceback (most recent call last):
    ...
    ValueError: unexpected 'week' at pos 5
    """
    try:
        return _RangeParser(spec, datetime.datetime.now() if now is None else now).spec()
    except IndexError:
        raise ValueError("unexpected end") from None


def started_in(run: Run, start: _DT | None, end: _DT | None) -> bool:
    """Guild's started filter: the start second (local time) in [start, end)."""
    if run.started is None:
        return False
    started = datetime.datetime.fromtimestamp(int(run.started))
    return not ((start and started < start) or (end and started >= end))


# -- --filter EXPR ---------------------------------------------------------------

_EXPR_WORDS = {w: w.upper() for w in ("and", "or", "in", "not", "true", "false", "is")}
_EXPR_WORDS.update(undefined="UNDEFINED", contains="CONTAINS")
_EXPR_TOKENS = [
    ("LPAREN", r"\("),
    ("RPAREN", r"\)"),
    ("LBRACKET", r"\["),
    ("RBRACKET", r"\]"),
    ("NEQ", r"<>|!="),
    ("EQ", r"="),
    ("LTE", r"<="),
    ("LT", r"<"),
    ("GTE", r">="),
    ("GT", r">"),
    ("COMMA", r","),
    ("ID", r"[a-zA-Z][^ ,<>!=\n\(\)\[\]]*"),
    ("NUMBER", r"-?\.?\d+(\.\d+)?(e(\+|-)?(\d+))?"),
    ("STR", r"(\"([^\\\n]|(\\.))*?\")|(\'([^\\\n]|(\\.))*?\')"),
]
_EXPR_RES = [(n, re.compile(p)) for n, p in _EXPR_TOKENS]
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "EQ": lambda x, y: x == y,
    "NEQ": lambda x, y: x != y,
    "LT": lambda x, y: x < y,
    "LTE": lambda x, y: x <= y,
    "GT": lambda x, y: x > y,
    "GTE": lambda x, y: x >= y,
}


class FilterSyntaxError(ValueError):
    pass


def _expr_tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos] in " \t\n":
            pos += 1
            continue
        for name, rx in _EXPR_RES:
            m = rx.match(text, pos)
            if m:
                raw = m.group()
                if name == "ID":
                    out.append((_EXPR_WORDS.get(raw.lower(), "ID"), raw, pos))
                elif name in ("NUMBER", "STR"):
                    out.append((name, yaml.safe_load(raw), pos))
                else:
                    out.append((name, raw, pos))
                pos = m.end()
                break
        else:
            raise FilterSyntaxError(f"unexpected character {text[pos]!r} at position {pos}")
    return out


#: A run's values as a filter expression reads them: (attr, flag, scalar) lookups.
Lookup = Callable[[str], Any]


@dataclasses.dataclass
class RunValues:
    """What a filter expression can read of one run."""

    attr: Lookup
    flag: Lookup
    scalar: Lookup

    def get(self, ref: str) -> Any:
        lookups = (("attr:", self.attr), ("flag:", self.flag), ("scalar:", self.scalar))
        for prefix, lookup in lookups:
            if ref.startswith(prefix):
                return lookup(ref[len(prefix) :])
        for lookup in (self.attr, self.flag):
            value = lookup(ref)
            if value is not None:
                return value
        return self.scalar(ref)


Expr = Callable[[RunValues], Any]


class _ExprParser:
    """Guild's filter grammar (``guild/filter.py``): ``and`` and ``or`` bind
    alike and to the right, ``not`` binds tightest."""

    def __init__(self, text: str) -> None:
        self.toks = _expr_tokens(text)
        self.i = 0
        self.refs: list[str] = []

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j][0] if j < len(self.toks) else None

    def take(self, *names: str) -> tuple[str, Any, int]:
        if self.i >= len(self.toks):
            raise FilterSyntaxError("unexpected end of expression")
        tok = self.toks[self.i]
        if names and tok[0] not in names:
            raise FilterSyntaxError(f"unexpected token {tok[1]!r} at position {tok[2]}")
        self.i += 1
        return tok

    def parse(self) -> Expr:
        expr = self.expression()
        if self.i < len(self.toks):
            self.take("<end>")
        return expr

    def expression(self) -> Expr:
        left = self.unary()
        if self.peek() in ("AND", "OR"):
            op = self.take()[0]
            right = self.expression()
            if op == "AND":
                return lambda r: left(r) and right(r)
            return lambda r: left(r) or right(r)
        return left

    def unary(self) -> Expr:
        kind = self.peek()
        if kind == "NOT":
            self.take()
            inner = self.unary()
            return lambda r: not inner(r)
        if kind == "LPAREN":
            self.take()
            inner = self.expression()
            self.take("RPAREN")
            return inner
        if kind == "ID" and self.peek(1) in (*_COMPARE, "IS", "IN", "NOT", "CONTAINS"):
            return self.runtest()
        return self.term()

    def runtest(self) -> Expr:
        ref = self.take("ID")[1]
        self.refs.append(ref)
        kind = self.take()[0]
        negate = False
        if kind == "IS":
            if self.peek() == "NOT":
                self.take()
                negate = True
            return self._compare(ref, "NEQ" if negate else "EQ", self.term())
        if kind in _COMPARE:
            return self._compare(ref, kind, self.term())
        if kind == "NOT":
            kind = self.take("IN", "CONTAINS")[0]
            negate = True
        if kind == "IN":
            targets = self.term_list()

            def in_test(r: RunValues) -> bool:
                value, target = r.get(ref), targets(r)
                return (value in target) != negate

            return in_test
        target = self.term()

        def contains(r: RunValues) -> bool:
            value = r.get(ref)
            if not value:
                return negate
            t = target(r)
            if isinstance(value, list):
                return (t in value) != negate
            return (str(t).lower() in str(value).lower()) != negate

        return contains

    @staticmethod
    def _compare(ref: str, kind: str, target: Expr) -> Expr:
        cmp = _COMPARE[kind]

        def test(r: RunValues) -> bool:
            try:
                return bool(cmp(r.get(ref), target(r)))
            except TypeError:
                return False

        return test

    def term(self) -> Expr:
        kind = self.peek()
        if kind == "LBRACKET":
            return self.term_list()
        tok = self.take("NUMBER", "STR", "ID", "TRUE", "FALSE", "UNDEFINED")
        value = {"TRUE": True, "FALSE": False, "UNDEFINED": None}.get(tok[0], tok[1])
        return lambda r: value

    def term_list(self) -> Expr:
        self.take("LBRACKET")
        terms = [self.term()]
        while self.peek() == "COMMA":
            self.take()
            terms.append(self.term())
        self.take("RBRACKET")
        return lambda r: [t(r) for t in terms]


@dataclasses.dataclass(frozen=True)
class FilterExpr:
    """A parsed ``--filter EXPR``: call it with a run's :class:`RunValues`."""

    text: str
    expr: Expr = dataclasses.field(compare=False, repr=False)
    refs: tuple[str, ...] = ()

    def __call__(self, values: RunValues) -> bool:
        return bool(self.expr(values))

    @property
    def steady(self) -> bool:
        """Whether only flags and attributes count (no scalar, no time): a run
        that did not change keeps its answer."""
        return all(r.startswith(("attr:", "flag:")) or (r in _STEADY_ATTRS) for r in self.refs)


_STEADY_ATTRS = frozenset(
    ("id", "run", "short_id", "model", "op", "operation", "from", "sourcecode", "started")
    + ("stopped", "status", "label", "exit_status", "marked", "tags", "comments")
    + ("sourcecode_digest",)
)


def parse_filter(text: str) -> FilterExpr:
    """Guild's filter expression; raises :class:`FilterSyntaxError`.

    >>> f = parse_filter("lr > 0.01 and optimizer = adam")
    >>> values = lambda flags: RunValues(lambda n: None, flags.get, lambda n: None)
    >>> f(values({"lr": 0.1, "optimizer": "adam"})), f(values({"lr": 0.001, "optimizer": "adam"}))
    (True, False)
    >>> parse_filter("lr >")
    Traceback (most recent call last):
    ...
    runsmon.guildselect.FilterSyntaxError: unexpected end of expression
    """
    p = _ExprParser(text)
    expr = p.parse()
    return FilterExpr(text, expr, tuple(p.refs))


def _format_timestamp(seconds: float | None) -> str:
    if not seconds:
        return ""
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: Run) -> str | None:
    if run.started is None:
        return None
    import time

    end = time.time() if run.status == "running" else run.stopped
    if end is None:
        return None
    seconds = int(((end - run.started) * 1_000_000) // 1_000_000)
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def run_attr(run: Run, name: str) -> Any:
    """A run attribute as Guild's filter reads it (``index.AttrReader``).

    Attributes runsmon does not read (``cmd``, ``env``, ``host``, ...) are
    undefined.
    """
    opref = run.attrs.get("opref") or {}
    digest = run.attrs.get("sourcecode_digest")
    if name in ("id",):
        return run.id
    if name in ("run", "short_id"):
        return run.short_id
    if name == "model":
        return opref.get("model_name") if opref else None
    if name == "operation":
        return run.operation
    if name == "op":
        return opref.get("op_name") if opref else None
    if name == "from":
        pkg = opref.get("pkg_name", "") if opref else ""
        if opref.get("pkg_type") == "package":
            return f"{pkg}=={opref.get('pkg_version', '')}"
        if opref.get("pkg_type") in ("guildfile", "script"):
            home = os.path.expanduser("~")
            return "~" + pkg[len(home) :] if pkg.startswith(home + "/") else pkg
        return pkg or None
    if name == "sourcecode":
        return str(digest)[:8] if digest else ""
    if name == "started":
        return _format_timestamp(run.started)
    if name == "stopped":
        return _format_timestamp(run.stopped)
    if name == "status":
        return run.status
    if name == "time":
        return _duration(run)
    if name == "label":
        return run.label
    if name == "flags":
        return dict(run.flags)
    return run.attrs.get(name)

"""A run as the monitor sees it, and the rules for its flag values.

A source (Guild, a directory tree, MLflow, ...) turns whatever it reads into
:class:`Run` objects; everything downstream works on these alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

RUNNING = "running"
COMPLETED = "completed"
ERROR = "error"
TERMINATED = "terminated"
PENDING = "pending"
STAGED = "staged"
UNKNOWN = "unknown"

STATUSES = (RUNNING, COMPLETED, ERROR, TERMINATED, PENDING, STAGED, UNKNOWN)
ENDED_STATUSES = frozenset({COMPLETED, ERROR, TERMINATED})
#: ``Run.attrs`` key a source sets to :data:`IDLE_RULE` when the status is its
#: guess from the idleness of the run's files (it records no status): such a
#: run's session shows no end info while it is ``running``.
STATUS_RULE = "status_rule"
IDLE_RULE = "idle"

#: A flag value after normalisation: what an hparam can hold.
FlagValue = bool | float | int | str


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One run: its identity, where its files are, and what is known of it.

    ``flags`` may be nested; :func:`flatten_flags` turns it into the flat
    mapping of hparams.  ``started`` and ``stopped`` are seconds since the
    epoch.  ``attrs`` holds the rest of what the source knows (free form).
    ``user_flags`` names the flags a user set explicitly (``None``: unknown).
    ``scalars``, when given, returns extra scalar points that exist outside any
    event file (MLflow, wandb); the monitor writes them as event files in the
    logdir.  ``fingerprint`` is an opaque value that changes whenever the
    source's view of the run changes (``None``: the monitor works it out).
    ``nested`` names the directories (relative to ``dir``, "/"-separated) of
    runs nested in this one: their files are not this run's.
    ``tags`` are the names a user tagged the run with and ``note`` the text
    they noted on it (Guild's tags and comments, MLflow's tags and note,
    wandb's tags and notes); both show as hparams (see :func:`tag_hparams`).
    """

    id: str
    dir: str
    flags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    status: str = UNKNOWN
    started: float | None = None
    stopped: float | None = None
    label: str = ""
    operation: str = ""
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    user_flags: frozenset[str] | None = None
    scalars: Callable[[], Iterable[ScalarPoint]] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    fingerprint: Any = dataclasses.field(default=None, compare=False, repr=False)
    nested: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"run {self.id}: unknown status {self.status!r}")

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from start to stop, for an ended run with both times."""
        if self.ended and self.started is not None and self.stopped is not None:
            return max(0.0, self.stopped - self.started)
        return None

    def hparams(self) -> dict[str, FlagValue]:
        """The run's flags as hparams: flattened, normalised, ``None`` dropped."""
        return flatten_flags(self.flags)


#: Prefix of the hparam a tag becomes: ``tag:baseline`` (true for a tagged run).
TAG_PREFIX = "tag:"
#: The hparam a run's note becomes (text, which the dashboard filters by regexp).
NOTE_HPARAM = "note"


def tag_hparams(tags: Iterable[str], note: str = "") -> dict[str, FlagValue]:
    """A run's tags as boolean hparams ``tag:NAME`` (sorted) and its note as ``note``.

    >>> tag_hparams({"v2", "baseline"}, "lr too high?")
    {'tag:baseline': True, 'tag:v2': True, 'note': 'lr too high?'}
    """
    out: dict[str, FlagValue] = {TAG_PREFIX + t: True for t in sorted(tags)}
    if note:
        out[NOTE_HPARAM] = note
    return out


def clean_tags(values: Any) -> frozenset[str]:
    """Tag names from what a tool recorded (a list of names, or one name):
    text, stripped, empty ones left out.

    >>> sorted(clean_tags(["baseline", " v2 ", "", None, 3]))
    ['3', 'baseline', 'v2']
    """
    if isinstance(values, (str, bytes)):
        values = [values]
    if not isinstance(values, Iterable):
        return frozenset()
    out = set()
    for v in values:
        if v is None:
            continue
        text = (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip()
        if text:
            out.add(text)
    return frozenset(out)


@dataclasses.dataclass(frozen=True)
class ScalarPoint:
    """One scalar value a source knows outside event files."""

    tag: str
    value: float
    step: int = 0
    wall_time: float = 0.0
    group: str = ""


def shared(cache: dict, key: Any, value: Any, limit: int = 4096) -> Any:
    """The one object kept in ``cache`` for ``key`` (``value`` the first time):
    many runs share equal values (tags, metric sets). Emptied at ``limit`` keys."""
    found = cache.get(key)
    if found is None:
        if len(cache) >= limit:
            cache.clear()
        found = cache[key] = value
    return found


def flatten_flags(flags: Mapping[str, Any]) -> dict[str, FlagValue]:
    """Flatten nested mappings with dots and normalise every value.

    Keys keep document order; ``None`` values are dropped (no value).

    >>> flatten_flags({"lr": 0.1, "opt": {"name": "adam", "beta": [0.9, 0.99]}, "x": None})
    {'lr': 0.1, 'opt.name': 'adam', 'opt.beta': '[0.9, 0.99]'}
    """
    flat: dict[str, FlagValue] = {}
    # A stack of iterators instead of recursion: 50-level configs are fine.
    stack: list[tuple[str, Iterator[tuple[Any, Any]]]] = [("", iter(flags.items()))]
    while stack:
        base, items = stack[-1]
        for key, value in items:
            name = f"{base}.{key}" if base else str(key)
            if isinstance(value, Mapping) and value:
                stack.append((name, iter(value.items())))
                break
            normalised = normalise_value(value)
            if normalised is not None:
                flat[name] = normalised
        else:
            stack.pop()
    return flat


def normalise_value(value: Any) -> FlagValue | None:
    """One flag value as an hparam value, or ``None`` for "no value".

    Booleans stay booleans, finite numbers stay numbers, everything else
    (lists, dates, huge integers, NaN and infinities) becomes readable text.

    >>> [normalise_value(v) for v in (True, 3, 2.5, "a", None, [1, "b"], float("nan"))]
    [True, 3, 2.5, 'a', None, "[1, 'b']", 'nan']
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Integers beyond float precision keep their digits as text.
        return value if abs(value) <= 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{}" if not value else str(dict(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return str(list(value))
    return str(value)

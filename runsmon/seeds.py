"""Seed groups: runs whose flags are equal but for their seeds, as one row.

With ``--group-seeds`` every run's session carries the *group name* of its
configuration (its flags without the seed flags), so TensorBoard's HParams
dashboard shows one row per configuration: its metrics are the plugin's
mean over the row's sessions, and "Show Metrics" plots each run's curve.

- The row's name is the configuration alone (``lr=0.01 opt=adam``), never
  its count: a name depends on the runs of its group only through their
  shared flags, so it stays put as seeds come and go. (A session's group
  name is fixed once written: a name holding the count would make every
  seed that joins or leaves rename the row, rewriting each of its sessions
  into a new row that for a reload stands beside the old one; and the
  dashboard's Trial ID column cuts a name after about 16 characters.)
- How many runs it holds is the hparam ``runs`` (:data:`RUNS_HPARAM`), a
  number the dashboard can sort and filter by. A seed that joins or leaves
  changes it, so the group's other sessions are rewritten (gaplessly, under
  the same row name): the row stays one row throughout.
- The seed flags are left out of a grouped session: a row averages several
  seeds and shows the hparams of one of its sessions, so a seed value there
  would be one run's, shown as the row's.

Pure bookkeeping: runs in, names and counts out; :class:`Shaper` applies
them (and the tag columns of :mod:`runsmon.runview`) to the sessions.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from runsmon.hparams import value_text
from runsmon.run import FlagValue, Run, tag_hparams
from runsmon.runview import KnownTags

#: ``--seed-flags`` globs by default: the flags that name a run's random seed.
DEFAULT_SEED_FLAGS = ("seed", "*_seed", "*.seed", "random_state")
#: The hparam holding how many runs a seed group has.
RUNS_HPARAM = "runs"
#: A row name is cut to this many characters (a digest keeps it unique).
MAX_LABEL = 120

Key = tuple[str, tuple[tuple[str, bool, FlagValue], ...]]


class SeedFlags:
    """Which flags are seed flags (names matched once, then remembered)."""

    def __init__(self, globs: Sequence[str] = DEFAULT_SEED_FLAGS) -> None:
        self.globs = tuple(globs)
        self._seen: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        """Whether ``name`` is a seed flag.

        >>> s = SeedFlags()
        >>> [s(n) for n in ("seed", "data_seed", "model.seed", "random_state", "seeds", "lr")]
        [True, True, True, True, False, False]
        """
        hit = self._seen.get(name)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(name, g) for g in self.globs)
            if len(self._seen) < 65536:
                self._seen[name] = hit
        return hit


def flag_hparams(run: Run, hparams: Mapping[str, FlagValue]) -> Mapping[str, FlagValue]:
    """A run's view hparams without its tags and note: its flags."""
    if not run.tags and not run.note:
        return hparams
    extra = tag_hparams(run.tags, run.note)
    return {k: v for k, v in hparams.items() if k not in extra}


def group_key(run: Run, flags: Mapping[str, FlagValue], is_seed: SeedFlags) -> Key:
    """What runs of one group share: the operation and every non-seed flag
    (whether it is a boolean too: 1 and True are two configurations)."""
    items = tuple(sorted((n, v.__class__ is bool, v) for n, v in flags.items() if not is_seed(n)))
    return (run.operation, items)


def group_label(run: Run, flags: Mapping[str, FlagValue], is_seed: SeedFlags) -> str:
    """A configuration's row name, short: the flags a user set (all flags
    where the run does not say which), seeds left out, as ``k=v``.

    >>> run = Run(id="a", dir="/a", user_flags=frozenset({"lr", "opt", "seed"}))
    >>> group_label(run, {"lr": 0.01, "opt": "adam", "seed": 3, "epochs": 10}, SeedFlags())
    'lr=0.01 opt=adam'
    """
    user = run.user_flags
    names = [
        n
        for n in flags
        if not is_seed(n) and (not user or n in user or any(n.startswith(f"{u}.") for u in user))
    ]
    label = " ".join(f"{n}={value_text(flags[n])}" for n in names)
    if not label:
        label = run.operation or "no flags"
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _digest(key: Key) -> str:
    return hashlib.sha1(repr(key).encode()).hexdigest()[:6]


class SeedGroups:
    """The seed groups of the runs shown, kept as runs come, change and go."""

    def __init__(self, seed_flags: Sequence[str] = DEFAULT_SEED_FLAGS) -> None:
        self.is_seed = SeedFlags(seed_flags)
        self._key_of: dict[str, Key] = {}
        self._members: dict[Key, set[str]] = {}
        self._label: dict[Key, str] = {}
        self._by_label: dict[str, set[Key]] = {}
        self._names: dict[Key, str] = {}
        self._dirty: set[Key] = set()

    def set_run(self, run: Run, flags: Mapping[str, FlagValue]) -> None:
        """Put ``run`` (its ``flags``: hparams without tags and note) in its group."""
        key = group_key(run, flags, self.is_seed)
        old = self._key_of.get(run.id)
        if old == key:
            return
        if old is not None:
            self._leave(run.id, old)
        self._key_of[run.id] = key
        members = self._members.get(key)
        if members is None:
            members = self._members[key] = set()
            label = self._label[key] = group_label(run, flags, self.is_seed)
            same = self._by_label.setdefault(label, set())
            same.add(key)
            if len(same) == 2:  # the first one's name takes a digest now
                self._dirty.update(same)
        members.add(run.id)
        self._dirty.add(key)

    def remove_run(self, run_id: str) -> None:
        key = self._key_of.pop(run_id, None)
        if key is not None:
            self._leave(run_id, key)

    def _leave(self, run_id: str, key: Key) -> None:
        members = self._members[key]
        members.discard(run_id)
        self._dirty.add(key)
        if not members:
            del self._members[key]
            self._names.pop(key, None)
            label = self._label.pop(key)
            same = self._by_label[label]
            same.discard(key)
            if not same:
                del self._by_label[label]
            elif len(same) == 1:  # the other one's name loses its digest
                self._dirty.update(same)

    def settle(self) -> set[str]:
        """The runs whose group changed since the last call (joined, left,
        renamed, or a member came or went)."""
        dirty, self._dirty = self._dirty, set()
        out: set[str] = set()
        for key in dirty:
            members = self._members.get(key)
            if members:
                self._names.pop(key, None)
                out.update(members)
        return out

    def group_of(self, run_id: str) -> tuple[str, int] | None:
        """A run's group: its row name and how many runs it holds."""
        key = self._key_of.get(run_id)
        if key is None:
            return None
        name = self._names.get(key)
        if name is None:
            label = self._label[key]
            name = label if len(self._by_label[label]) == 1 else f"{label} #{_digest(key)}"
            self._names[key] = name
        return name, len(self._members[key])


class Shown(Protocol):
    """What :class:`Shaper` needs of a shown run (``RunState`` is one)."""

    run: Run
    base: dict[str, FlagValue]
    hparams: dict[str, FlagValue]
    group: str | None


class Shaper:
    """What a run's session shows that depends on the other runs: ``tag:NAME``
    false for each tag some other run has (so the dashboard's checkbox
    filter selects by tag), and with seed groups its row name, ``runs``,
    and no seed flags."""

    def __init__(self, groups: SeedGroups | None = None) -> None:
        self.groups = groups
        self.tags = KnownTags()
        self._pending: set[str] = set()
        self._all = False

    def note(self, st: Shown) -> None:
        """A run's view changed (``st.base`` set): shaped at :meth:`settle`."""
        run = st.run
        self._pending.add(run.id)
        if self.tags.set_run(run.id, run.tags, bool(run.note)):
            self._all = True
        if self.groups is not None:
            self.groups.set_run(run, flag_hparams(run, st.base))

    def remove(self, run_id: str) -> None:
        self._pending.discard(run_id)
        if self.tags.remove_run(run_id):
            self._all = True
        if self.groups is not None:
            self.groups.remove_run(run_id)

    def settle(self, runs: Mapping[str, Shown]) -> list[Any]:
        """Shape the runs that need it: the states noted since the last call,
        and those whose shaped hparams or row moved because of other runs."""
        noted, self._pending = self._pending, set()
        ids = set(noted)
        if self.groups is not None:
            ids |= self.groups.settle()
        if self._all:
            ids = set(runs)
            self._all = False
        out = []
        for run_id in ids:
            st = runs.get(run_id)
            if st is None:
                continue
            shaped, group = self.shape(st)
            if run_id in noted or shaped != st.hparams or group != st.group:
                st.hparams, st.group = shaped, group
                out.append(st)
        return out

    def shape(self, st: Shown) -> tuple[dict[str, FlagValue], str | None]:
        """A run's session hparams and row name (None: its own)."""
        hparams = st.base
        group = None
        groups = self.groups
        if groups is not None:
            found = groups.group_of(st.run.id)
            if found is not None:
                group, count = found
                hparams = {k: v for k, v in hparams.items() if not groups.is_seed(k)}
                hparams[RUNS_HPARAM] = count
        if self.tags.names:
            hparams = self.tags.fill(hparams)
        return hparams, group


# -- runsmon table --group-seeds ------------------------------------------------


def mean_std(values: Iterable[float]) -> tuple[float, float, int] | None:
    """The mean, the sample standard deviation (0 for one value) and n of
    the finite values; None when there is none.

    >>> mean_std([0.91, 0.912, 0.914, float("nan")])
    (0.912, 0.0020000000000000018, 3)
    """
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return mean, std, len(finite)


def format_mean_std(stats: tuple[float, float, int] | None) -> str:
    """``mean ± std (n)``, both to the std's first significant figure.

    >>> format_mean_std((0.91234, 0.00412, 3))
    '0.912 ± 0.004 (3)'
    >>> format_mean_std((12.5, 0.0, 1)), format_mean_std((131.6, 12.1, 4)), format_mean_std(None)
    ('12.5 (1)', '132 ± 12 (4)', '')
    """
    if stats is None:
        return ""
    mean, std, n = stats
    if std > 0 and math.isfinite(std):
        places = max(0, -int(f"{std:.0e}".partition("e")[2]))  # the std's first figure
        return f"{mean:.{places}f} ± {std:.{places}f} ({n})"
    return f"{mean:.5g} ({n})" if n == 1 else f"{mean:.5g} ± 0 ({n})"

"""Best values: a metric reduced over its steps (``--best TAG=min|max|last-mean:K``).

A :class:`BestSpec` names metrics by a glob (as ``--metric-include`` does:
the tag, or ``GROUP#TAG`` where the glob holds ``#``) and how to reduce
them: the running minimum or maximum over the run's steps, or the mean of
the last K values. NaN values are left out (a NaN is nobody's best).

The event-file scanner (:class:`runsmon.events.FileScan`) keeps a
:class:`Running` reduction per selected tag as it reads records, only for
the tags a spec names; :meth:`runsmon.runfiles.RunFiles.reduced_values`
combines a run's files, :func:`point_values` the scalars a source keeps
outside event files.

A reduced metric is a metric of its own, ``(DISPLAY, REDUCED_GROUP)``:
its tag is the column's name, the base metric's key and the qualifier
(``val/loss (min)``, ``val#acc (max)``, ``loss (last-mean:5)``), and its
group is the directory ``.runsmon`` in the run's logdir directory, where
:class:`BestWriter` appends a scalar series each time the value changes
(``.runsmon/events.out.tfevents.0000000002.runsmon-best``). No run's own
metric can be in that group: runsmon never reads a run's hidden
directories (but Guild's ``.guild``, whose scalars are the run's root).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from runsmon.hparams import REDUCED_GROUP, Metric, metric_key

if TYPE_CHECKING:  # pragma: no cover
    from runsmon.run import ScalarPoint
    from runsmon.runstate import RunState, Writes

MIN = "min"
MAX = "max"
LAST_MEAN = "last-mean"
#: The file of a run's reduced series, in its logdir directory.
BEST_FILE = f"{REDUCED_GROUP}/events.out.tfevents.0000000002.runsmon-best"


@dataclasses.dataclass(frozen=True)
class BestSpec:
    """Which metrics (a glob) and how they are reduced: ``min``, ``max``, or
    ``last-mean`` of the last ``k`` values."""

    glob: str
    how: str
    k: int = 0

    @property
    def qualifier(self) -> str:
        """``min``, ``max`` or ``last-mean:K``: the column's name ends with it in brackets."""
        return f"{LAST_MEAN}:{self.k}" if self.how == LAST_MEAN else self.how

    def matches(self, metric: Metric) -> bool:
        tag, group = metric
        return fnmatch.fnmatchcase(f"{group}#{tag}" if "#" in self.glob else tag, self.glob)


def parse_best(text: str) -> BestSpec:
    """``TAG=min``, ``TAG=max`` or ``TAG=last-mean:K``; ValueError says what is wrong.

    >>> parse_best("val/loss=min"), parse_best("val#*=last-mean:5").qualifier
    (BestSpec(glob='val/loss', how='min', k=0), 'last-mean:5')
    """
    glob, sep, how = text.rpartition("=")
    how = how.strip()
    if not sep or not glob:
        raise ValueError(f"{text!r}: want TAG=min, TAG=max or TAG=last-mean:K")
    if how in (MIN, MAX):
        return BestSpec(glob, how)
    name, _, k = how.partition(":")
    if name == LAST_MEAN and k.isdigit() and int(k) > 0:
        return BestSpec(glob, LAST_MEAN, int(k))
    raise ValueError(f"{text!r}: {how!r} is not min, max or last-mean:K (K a positive count)")


def exact(metric: Metric, how: str, k: int = 0) -> BestSpec:
    """A spec naming exactly one metric (a Guild ``compare`` column's qualifier)."""
    key = "#".join(reversed(metric))
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in key)
    return BestSpec(escaped, how, k)


def reduced_metric(metric: Metric, spec: BestSpec) -> Metric:
    """The reduced metric of ``metric``: ``(f"{key} ({qualifier})", REDUCED_GROUP)``.

    >>> reduced_metric(("val/loss", ""), BestSpec("*", MIN))
    ('val/loss (min)', '.runsmon')
    >>> reduced_metric(("acc", "val"), BestSpec("*", LAST_MEAN, 3))
    ('val#acc (last-mean:3)', '.runsmon')
    """
    return (f"{metric_key(metric)} ({spec.qualifier})", REDUCED_GROUP)


_SPECS_FOR: dict[tuple[tuple[BestSpec, ...], Metric], tuple[BestSpec, ...]] = {}


def specs_for(metric: Metric, specs: Sequence[BestSpec]) -> tuple[BestSpec, ...]:
    """The specs naming ``metric``, each qualifier once (the first spec of it).

    Cached: the runs of a sweep ask the same of the same few metrics.
    """
    key = (tuple(specs), metric)
    found = _SPECS_FOR.get(key)
    if found is not None:
        return found
    out: dict[str, BestSpec] = {}
    for spec in specs:
        if spec.qualifier not in out and spec.matches(metric):
            out[spec.qualifier] = spec
    if len(_SPECS_FOR) >= 65536:
        _SPECS_FOR.clear()
    found = _SPECS_FOR[key] = tuple(out.values())
    return found


def tag_specs(specs: Sequence[BestSpec], group: str) -> Callable[[str], tuple[BestSpec, ...]]:
    """For the scanner of one file in ``group``: a tag's specs."""
    specs = tuple(specs)
    return lambda tag: specs_for((tag, group), specs)


def reduced_metrics(metrics: Iterable[Metric], specs: Sequence[BestSpec]) -> set[Metric]:
    """The reduced metrics the specs make of ``metrics``."""
    if not specs:
        return set()
    return {
        reduced_metric(m, s) for m in metrics if m[1] != REDUCED_GROUP for s in specs_for(m, specs)
    }


class Running:
    """One reduction, fed value by value (or an array at a time) in file order."""

    __slots__ = ("spec", "value", "window")

    def __init__(self, spec: BestSpec) -> None:
        self.spec = spec
        self.value: float | None = None
        self.window: deque[float] | None = deque(maxlen=spec.k) if spec.how == LAST_MEAN else None

    def add(self, x: float) -> None:
        if x != x:  # NaN
            return
        if self.window is not None:
            self.window.append(x)
        elif self.value is None:
            self.value = x
        elif self.spec.how == MIN:
            if x < self.value:
                self.value = x
        elif x > self.value:
            self.value = x

    def add_array(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if not values.size:
            return
        if self.window is not None:
            self.window.extend(values[-self.window.maxlen :].tolist())  # type: ignore[misc]
            return
        self.add(float(values.min() if self.spec.how == MIN else values.max()))

    @property
    def result(self) -> float | None:
        if self.window is not None:
            return math.fsum(self.window) / len(self.window) if self.window else None
        return self.value


def combine(spec: BestSpec, parts: Sequence[Running]) -> float | None:
    """One value from the reductions of several files (in the order of their last points)."""
    if spec.how == LAST_MEAN:
        window: deque[float] = deque(maxlen=spec.k)
        for part in parts:
            window.extend(part.window or ())
        return math.fsum(window) / len(window) if window else None
    values = [p.value for p in parts if p.value is not None]
    if not values:
        return None
    return min(values) if spec.how == MIN else max(values)


#: (step, wall time, value) of a reduced metric: its value now, and the
#: step and wall time of the base metric's last point.
Reduced = tuple[int, float, float]


def point_values(points: Iterable[ScalarPoint], specs: Sequence[BestSpec]) -> dict[Metric, Reduced]:
    """Reduced metrics of scalars a source keeps outside event files."""
    if not specs:
        return {}
    series: dict[Metric, list[ScalarPoint]] = {}
    for p in points:
        series.setdefault((p.tag, p.group), []).append(p)
    out: dict[Metric, Reduced] = {}
    for metric, pts in series.items():
        chosen = specs_for(metric, specs)
        if not chosen:
            continue
        pts.sort(key=lambda p: (p.step, p.wall_time))
        for spec in chosen:
            running = Running(spec)
            for p in pts:
                running.add(float(p.value))
            if running.result is not None:
                last = pts[-1]
                out[reduced_metric(metric, spec)] = (last.step, last.wall_time, running.result)
    return out


class BestWriter:
    """Appends a run's reduced values to its series in the logdir when they change.

    What was written last is kept in memory (no manifest write per new
    best): a restart appends each value once more, at the same step (the
    dashboard shows the same); a new generation of the run's directory
    starts the file anew with the values of now.
    """

    def __init__(self, logdir: Any, writes: Writes) -> None:
        self.logdir = logdir
        self.writes = writes

    def plan(self, st: RunState, manifest: Any = None) -> list[str]:
        """For a run directory about to be made (``manifest``, else the run's):
        list its file in the manifest, which is saved and whose directories are
        made with the others (no manifest write of its own). Returns its path,
        or nothing when the run has no reduced metrics."""
        manifest = manifest or st.manifest
        if not st.files.best:
            return []
        if BEST_FILE not in manifest.files:
            manifest.files.append(BEST_FILE)
        return [BEST_FILE]

    def sync(self, st: RunState) -> None:
        if not st.files.best:
            return
        values = st.files.reduced_values()
        if st.point_best:
            values.update(st.point_best)
        manifest = st.manifest
        written = st.best_written if st.best_of is manifest else None
        path = self.logdir.run_path(manifest.name, BEST_FILE)
        first = written is None and not os.path.exists(path)
        if written is None:
            written = {}
        new = []
        for (tag, _), (step, wall, value) in sorted(values.items()):
            before = written.get(tag)
            if before is not None and before[1] == value:
                continue
            step = max(step, before[0]) if before is not None else step
            new.append((tag, step, wall, value))
        if not new:
            return
        from runsmon import events

        data = events.encode_events(
            [events.scalar_event(tag, value, step, wall) for tag, step, wall, value in new],
            file_version=first,
        )
        append = self.logdir.append_file
        if self.writes.attempt(st, "write", lambda: append(manifest, BEST_FILE, data)):
            for tag, step, _, value in new:
                written[tag] = (step, value)
            st.best_written = written
            st.best_of = manifest

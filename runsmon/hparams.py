"""Pure synthesis of TensorBoard's HParams summaries: runs in, protos out.

:class:`Columns` keeps running counts of every hparam value and metric over
all runs, so adding, changing or removing one run costs only that run's
values, never a pass over every run.  From the counts it derives each
column's *kind* and *domain*, which must describe every session's value
(TensorBoard answers HTTP 400 when a dashboard filter meets a value of
another type):

- ``number``: only numbers; FLOAT64 with the interval [min, max].
- ``bool``: only booleans; BOOL with the discrete domain [false, true].
- ``string``: only text; STRING with the discrete set of values seen.
- ``mixed``: anything else; every value is shown as text (STRING, discrete),
  so numeric filters never meet a string and regexp filters never meet a
  number.

A run without a value for an hparam simply has none in its session.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.protobuf import struct_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from runsmon.run import COMPLETED, ERROR, RUNNING, TERMINATED, FlagValue

NUMBER = "number"
BOOL = "bool"
STRING = "string"
MIXED = "mixed"

#: The metric runsmon adds for every ended run: its duration in seconds.
TIME_METRIC = "time"

#: Session end status for each ended run status, and for a run its source
#: knows is running (its session is rewritten when it ends).
END_STATUS = {
    COMPLETED: api_pb2.STATUS_SUCCESS,
    TERMINATED: api_pb2.STATUS_SUCCESS,
    ERROR: api_pb2.STATUS_FAILURE,
    RUNNING: api_pb2.STATUS_RUNNING,
}

Metric = tuple[str, str]  # (tag, group)

#: The group of reduced metrics (best values, see :mod:`runsmon.reduce`): a
#: hidden directory of runsmon's in the run's logdir directory, where no run's
#: own scalar can be. Their tag is the column's name (``val/loss (min)``).
REDUCED_GROUP = ".runsmon"

ALL = "all"
DIFFERING = "differing"
OVERRIDDEN = "overridden"
HPARAM_MODES = (ALL, DIFFERING, OVERRIDDEN)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which hparams and metrics the experiment declares (the dashboard's columns).

    Sessions always carry every hparam; the selection only decides the
    columns, so changing it never rewrites a session.

    - ``hparams``: ``all`` flags, only those whose value ``differing`` between
      runs (or missing in some), or only those a user set (``overridden``).
    - Globs match an hparam's name; for a metric they match its tag (any
      group), and a glob holding ``#`` matches ``GROUP#TAG`` (as Guild writes
      scalar keys: ``val#loss``, ``train#*``; ``#loss`` is ``loss`` at the
      run's root). A "/" is part of a tag: ``train/*`` matches the tag
      ``train/loss``, never the tag ``loss`` in the group ``train``.
      Includes narrow, excludes remove.
    - Metrics default to every scalar but ``sys/*`` (Guild's system stats), as
      Guild's own TensorBoard shows them.
    """

    hparams: str = ALL
    hparam_include: tuple[str, ...] = ()
    hparam_exclude: tuple[str, ...] = ()
    metric_include: tuple[str, ...] = ()
    metric_exclude: tuple[str, ...] = ("sys/*",)
    #: ``--best`` specs (:class:`runsmon.reduce.BestSpec`): reduced metrics beside the last values.
    best: tuple[Any, ...] = ()
    #: ``serve --importance``: the metric (a table column) whose importance orders the hparams.
    importance: str | None = None

    def __post_init__(self) -> None:
        if self.hparams not in HPARAM_MODES:
            raise ValueError(f"hparams must be one of {', '.join(HPARAM_MODES)}")

    def wants_hparam(self, name: str) -> bool:
        if self.hparam_include and not _matches(name, self.hparam_include):
            return False
        return not _matches(name, self.hparam_exclude)

    def wants_metric(self, metric: Metric) -> bool:
        """Whether the experiment declares ``metric`` (tag, group).

        >>> s = Selection(metric_include=("train/*", "val#*"))
        >>> [s.wants_metric(m) for m in [("train/loss", ""), ("loss", "train"), ("acc", "val")]]
        [True, False, True]
        >>> Selection().wants_metric(("sys/cpu", "")), Selection().wants_metric(("a/b", "x"))
        (False, True)
        """
        if self.metric_include and not _metric_matches(metric, self.metric_include):
            return False
        return not _metric_matches(metric, self.metric_exclude)


def metric_key(metric: Metric) -> str:
    """A metric as one name: its tag at the run's root, else ``GROUP#TAG``.

    The form include and exclude globs use, and ``runsmon table`` shows.

    >>> metric_key(("loss", "")), metric_key(("loss", "val")), metric_key(("val/loss", ""))
    ('loss', 'val#loss', 'val/loss')
    """
    tag, group = metric
    if group == REDUCED_GROUP:
        return tag  # its column's name: the base metric's key and the reduction
    return f"{group}#{tag}" if group else tag


def metric_display_name(metric: Metric) -> str:
    """The experiment's ``display_name`` of a metric: a reduced one's name, else none."""
    return metric[0] if metric[1] == REDUCED_GROUP else ""


def base_metric(key: str) -> Metric:
    """The metric a key names (the inverse of :func:`metric_key` for run metrics).

    >>> base_metric("val#loss"), base_metric("val/loss")
    (('loss', 'val'), ('val/loss', ''))
    """
    group, sep, tag = key.partition("#")
    return (tag, group) if sep else (key, "")


def _metric_matches(metric: Metric, globs: tuple[str, ...]) -> bool:
    tag, group = metric
    return any(fnmatch.fnmatchcase(f"{group}#{tag}" if "#" in g else tag, g) for g in globs)


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def value_kind(value: FlagValue) -> str:
    """The kind of one normalised value.

    >>> [value_kind(v) for v in (True, 1, 0.5, "a")]
    ['bool', 'number', 'number', 'string']
    """
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float)):
        return NUMBER
    return STRING


def value_text(value: FlagValue) -> str:
    """A value as text, for columns of mixed kinds.

    >>> [value_text(v) for v in (True, 3, 0.25, 1e-05, "adam")]
    ['true', '3', '0.25', '1e-05', 'adam']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Column:
    """One hparam column as the experiment declares it."""

    name: str
    kind: str
    values: tuple[FlagValue, ...]  # distinct values as sessions show them, sorted

    def encode(self, value: FlagValue) -> FlagValue:
        """The value a session of this column shows."""
        return value_text(value) if self.kind == MIXED else value


class Columns:
    """Running counts of hparam values and metrics over every run.

    ``version`` moves whenever anything the experiment or a session could
    show changed, so a caller can skip rebuilding them while it stays put.
    """

    def __init__(self) -> None:
        self.version = 0
        self._column_cache: dict[str, Column | None] = {}  # valid until a value comes or goes
        self._all: tuple[int, list[Column]] | None = None
        self._values: dict[str, Counter[tuple[str, FlagValue]]] = {}
        self._metrics: Counter[Metric] = Counter()
        self._user: Counter[str] = Counter()  # hparam -> runs where a user set it
        self._runs: dict[
            str, tuple[Mapping[str, FlagValue], frozenset[Metric], frozenset[str]]
        ] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def set_run(
        self,
        run_id: str,
        hparams: Mapping[str, FlagValue],
        metrics: Iterable[Metric],
        user_flags: Iterable[str] = (),
    ) -> None:
        """Record (or replace) one run's hparams, metrics and user-set flags."""
        # Kept as given (callers never change it afterwards): no copy per run.
        new = (
            hparams if type(hparams) is dict else dict(hparams),
            frozenset(metrics),
            frozenset(user_flags),
        )
        old = self._runs.get(run_id)
        if old == new:
            return
        if old is not None:
            self._count(old, -1)
        self._runs[run_id] = new
        self._count(new, +1)
        self.version += 1

    def remove_run(self, run_id: str) -> None:
        old = self._runs.pop(run_id, None)
        if old is not None:
            self._count(old, -1)
            self.version += 1

    def _count(
        self, entry: tuple[Mapping[str, FlagValue], frozenset[Metric], frozenset[str]], sign: int
    ) -> None:
        hparams, metrics, user_flags = entry
        for name in user_flags:
            self._user[name] += sign
            if self._user[name] <= 0:
                del self._user[name]
        for name, value in hparams.items():
            counter = self._values.setdefault(name, Counter())
            # The kind is part of the key: True, 1 and 1.0 are distinct values.
            key = (value_kind(value), value)
            counter[key] += sign
            if counter[key] <= 0:
                del counter[key]
                self._column_cache.pop(name, None)
                if not counter:
                    del self._values[name]
            elif counter[key] == sign:  # a value new to this column
                self._column_cache.pop(name, None)
        for metric in metrics:
            self._metrics[metric] += sign
            if self._metrics[metric] <= 0:
                del self._metrics[metric]

    def column(self, name: str) -> Column | None:
        try:
            return self._column_cache[name]
        except KeyError:
            pass
        column = self._column_cache[name] = self._make_column(name)
        return column

    def _make_column(self, name: str) -> Column | None:
        counter = self._values.get(name)
        if not counter:
            return None
        kinds = {kind for kind, _ in counter}
        kind = kinds.pop() if len(kinds) == 1 else MIXED
        if kind == MIXED:
            values: set[FlagValue] = {value_text(v) for _, v in counter}
        else:
            values = {v for _, v in counter}
        return Column(name, kind, tuple(sorted(values, key=_sort_key)))

    def columns(self) -> list[Column]:
        """Every hparam column, in name order."""
        if self._all is None or self._all[0] != self.version:
            columns = [c for c in (self.column(n) for n in sorted(self._values)) if c]
            self._all = (self.version, columns)
        return list(self._all[1])

    def metrics(self) -> list[Metric]:
        """Every metric (tag, group), in :func:`metric_order`."""
        return sorted(self._metrics, key=metric_order)

    def differs(self, name: str) -> bool:
        """Whether runs disagree on ``name``: several values, or some lack it."""
        counter = self._values.get(name)
        if not counter:
            return False
        return len(counter) > 1 or sum(counter.values()) < len(self._runs)

    def selected(self, selection: Selection) -> tuple[list[Column], list[Metric]]:
        """The experiment's columns and metrics under ``selection``."""
        columns = [c for c in self.columns() if selection.wants_hparam(c.name)]
        if selection.hparams == DIFFERING:
            columns = [c for c in columns if self.differs(c.name)]
        elif selection.hparams == OVERRIDDEN:
            columns = [c for c in columns if self._user.get(c.name)]
        metrics = [
            m
            for m in self.metrics()
            if m == (TIME_METRIC, "") or m[1] == REDUCED_GROUP or selection.wants_metric(m)
        ]
        return columns, metrics


#: Names of data splits, in the order their metrics are listed.
SPLITS = {
    "train": 0,
    "training": 0,
    "val": 1,
    "valid": 1,
    "validation": 1,
    "dev": 1,
    "eval": 2,
    "evaluation": 2,
    "test": 3,
    "testing": 3,
}
_WORDS = re.compile(r"[^A-Za-z0-9]+")


def metric_order(metric: Metric) -> tuple[int, int, str, str]:
    """The order of metrics in the experiment (stable, whatever the runs).

    Metrics of a data split (``train``, ``val``, ``test``... as a group or as
    a word of the tag: ``val/loss``, ``Loss/train``, ``train_acc``) come first,
    by split, then the others; alphabetically within each; ``time`` last.

    >>> ms = [("time", ""), ("lr", ""), ("Loss/test", ""), ("loss", "val"), ("acc", "train")]
    >>> [metric_key(m) for m in sorted(ms, key=metric_order)]
    ['train#acc', 'val#loss', 'Loss/test', 'lr', 'time']
    """
    tag, group = metric
    if metric == (TIME_METRIC, ""):
        return (2, 0, "", "")
    if group == REDUCED_GROUP:  # right after its base metric
        base, _, how = tag.rpartition(" (")
        order = metric_order(base_metric(base))
        return (order[0], order[1], f"{order[2]}\0{how}", f"{order[3]}\0{how}")
    split = None
    for word in _WORDS.split(f"{group}/{tag}".lower()):
        rank = SPLITS.get(word)
        if rank is not None:
            split = rank
            break
    key = metric_key(metric)
    return (0 if split is not None else 1, split or 0, key.lower(), key)


def _sort_key(value: FlagValue) -> tuple[int, float, str]:
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


# -- protos ------------------------------------------------------------------


def _set_value(slot: struct_pb2.Value, value: FlagValue) -> None:
    """Set ``slot`` (a Value in place, a map's entry among them) to ``value``."""
    if isinstance(value, bool):
        slot.bool_value = value
    elif isinstance(value, (int, float)):
        slot.number_value = float(value)
    else:
        slot.string_value = str(value)


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    """The summary TensorBoard's ``metadata.create_summary_metadata`` makes of
    ``data`` (made for it: its version is set in place, not on a copy).

    >>> data = plugin_data_pb2.HParamsPluginData(session_end_info={"status": 1})
    >>> ours = _summary("t", data).value[0].metadata
    >>> ours == metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(
    ...     session_end_info={"status": 1}))
    True
    """
    data.version = metadata.PLUGIN_DATA_VERSION
    summary = summary_pb2.Summary()
    value = summary.value.add(tag=tag, tensor=metadata.NULL_TENSOR)
    plugin = value.metadata.plugin_data
    plugin.plugin_name = metadata.PLUGIN_NAME
    plugin.content = data.SerializeToString()
    return summary


def hparam_info(column: Column, differs: bool = False, description: str = "") -> api_pb2.HParamInfo:
    """The experiment's declaration of one column: its type, domain and whether
    its values differ between runs (the dashboard shows those columns first)."""
    info = api_pb2.HParamInfo(name=column.name, differs=differs, description=description)
    if column.kind == NUMBER:
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value = float(min(column.values))
        info.domain_interval.max_value = float(max(column.values))
    elif column.kind == BOOL:
        info.type = api_pb2.DATA_TYPE_BOOL
        info.domain_discrete.extend([False, True])
    else:
        info.type = api_pb2.DATA_TYPE_STRING
        info.domain_discrete.extend([str(v) for v in column.values])
    return info


def experiment_summary(
    columns: Iterable[Column],
    metrics: Iterable[Metric],
    time_created: float = 0.0,
    differs: Callable[[str], bool] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> summary_pb2.Summary:
    """The ``_hparams_/experiment`` summary for the whole logdir.

    ``differs`` tells whether a column's values differ between runs (see
    :meth:`Columns.differs`).  TensorBoard's HPARAMS tab lists differing
    hparams first and shows only the first five as columns by default, so
    they are declared first here too (each part in the given order).
    """
    experiment = api_pb2.Experiment(time_created_secs=time_created)
    descriptions = descriptions or {}
    infos = [
        hparam_info(c, bool(differs and differs(c.name)), descriptions.get(c.name, ""))
        for c in columns
    ]
    experiment.hparam_infos.extend(sorted(infos, key=lambda info: not info.differs))
    experiment.metric_infos.extend(
        api_pb2.MetricInfo(
            name=api_pb2.MetricName(tag=m[0], group=m[1]), display_name=metric_display_name(m)
        )
        for m in metrics
    )
    return _summary(
        metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)
    )


def session_start_summary(
    hparams: Mapping[str, FlagValue], group_name: str, start_time: float | None
) -> summary_pb2.Summary:
    """``_hparams_/session_start_info``: one run's hparams (already encoded)."""
    info = plugin_data_pb2.SessionStartInfo(group_name=group_name)
    if start_time is not None and math.isfinite(start_time):
        info.start_time_secs = start_time
    for name, value in hparams.items():
        _set_value(info.hparams[name], value)
    return _summary(
        metadata.SESSION_START_INFO_TAG,
        plugin_data_pb2.HParamsPluginData(session_start_info=info),
    )


def session_end_summary(status: str, end_time: float | None) -> summary_pb2.Summary:
    """``_hparams_/session_end_info`` for an ended or running run (see :data:`END_STATUS`)."""
    info = plugin_data_pb2.SessionEndInfo(status=END_STATUS[status])
    if end_time is not None and math.isfinite(end_time):
        info.end_time_secs = end_time
    return _summary(
        metadata.SESSION_END_INFO_TAG,
        plugin_data_pb2.HParamsPluginData(session_end_info=info),
    )


def encode_hparams(
    hparams: Mapping[str, FlagValue], columns: Mapping[str, Column]
) -> dict[str, FlagValue]:
    """A run's hparams as its session shows them, given the current columns."""
    encoded = {}
    for name, value in hparams.items():
        column = columns.get(name)
        encoded[name] = column.encode(value) if column else value
    return encoded

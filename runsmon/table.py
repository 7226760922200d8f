"""``runsmon table``: the HParams dashboard's data as a table, with no logdir.

One pass over a source: each run's event files are scanned with
:class:`~runsmon.runfiles.RunFiles` (the monitor's own scanner, so the same
files count and the same last values show), scalars a source keeps outside
event files (MLflow, wandb) are added as the monitor adds them, and
:class:`~runsmon.hparams.Columns` with a :class:`~runsmon.hparams.Selection`
picks the columns exactly as the experiment the monitor writes declares
them.  Nothing is written anywhere, so it works on read-only run trees and
machines without a browser.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from runsmon import hparams, runview
from runsmon.fs import LOCAL, FileSystem
from runsmon.naming import RunNamer, default_run_name, format_started, safe_name
from runsmon.report import Reporter, describe_error
from runsmon.run import FlagValue, Run
from runsmon.seeds import SeedGroups, Shaper, format_mean_std, mean_std
from runsmon.sources.base import as_source

FORMATS = ("table", "csv", "json")
RUN = "run"
STATUS = "status"
#: A cell of the text table is cut to this many characters (the run name to more).
MAX_CELL = 24
MAX_RUN_CELL = 48
MIN_RUN_CELL = 20
ELLIPSIS = "…"
#: When not every column fits, this many differing hparams (that every row
#: has) are kept before the metrics; the other hparams come after the metrics
#: and the status.
LEAD_HPARAMS = 3
#: The line of constant hparams under the text table takes at most this many lines.
MAX_CONSTANT_LINES = 4
#: ``-o FILE`` picks the format from FILE's extension unless --format is given.
EXTENSION_FORMATS = {".csv": "csv", ".json": "json"}

Cell = Any  # a value (FlagValue), a MeanStd of a seed group, or None


def metric_header(metric: hparams.Metric) -> str:
    """A metric's column name: ``tag`` at the run's root, else ``group#tag``
    (the form metric globs use; a "/" belongs to the tag).

    >>> metric_header(("loss", "")), metric_header(("loss", "val")), metric_header(("val/loss", ""))
    ('loss', 'val#loss', 'val/loss')
    """
    return hparams.metric_key(metric)


@dataclasses.dataclass
class Row:
    """One run's line: its name and status, and a value (or None) per column."""

    run: Run
    name: str
    values: dict[str, Cell]
    group: str | None = None  # its seed group (with --group-seeds)
    status: str | None = None  # shown instead of its run's (a group's runs)
    members: tuple[str, ...] = ()  # a seed group's run ids

    @property
    def shown_status(self) -> str:
        return self.status if self.status is not None else self.run.status


@dataclasses.dataclass
class RunsTable:
    """Rows of runs under hparam and metric columns."""

    hparams: list[str]
    metrics: list[hparams.Metric]
    rows: list[Row]

    @property
    def columns(self) -> list[str]:
        """Every column name, in order: run, status, hparams, metrics."""
        return [RUN, STATUS, *self.hparams, *(metric_header(m) for m in self.metrics)]

    def cells(self, row: Row) -> list[Cell]:
        return [row.name, row.shown_status, *(row.values.get(c) for c in self.columns[2:])]

    def differing(self) -> list[str]:
        """The hparams whose values differ between the rows (or that some row
        lacks), in column order: what tells the rows apart."""
        out = []
        for name in self.hparams:
            values = [row.values.get(name) for row in self.rows]
            first = values[0] if values else None
            if any(v is None for v in values) or any(not _same(v, first) for v in values[1:]):
                out.append(name)
        return out

    def limit(self, count: int | None) -> None:
        """Keep the first ``count`` rows (all with None); columns no kept row
        has a value for go too."""
        if count is None or len(self.rows) <= count:
            return
        self.rows = self.rows[:count]
        self.hparams = [
            h for h in self.hparams if any(r.values.get(h) is not None for r in self.rows)
        ]
        self.metrics = [
            m
            for m in self.metrics
            if any(r.values.get(metric_header(m)) is not None for r in self.rows)
        ]

    def sort(self, spec: str | None) -> None:
        """Sort by ``[-]COLUMN``; rows without a value go last either way.

        Without a spec: by start time, then name.  Raises ValueError for a
        column the table does not have.
        """
        if not spec:
            self.rows.sort(key=lambda r: (r.run.started is None, r.run.started or 0.0, r.name))
            return
        descending = spec.startswith("-")
        name = spec[1:] if descending else spec.lstrip("+")
        columns = self.columns
        if name not in columns:
            raise ValueError(f"no column {name!r} to sort by (columns: {', '.join(columns)})")
        index = columns.index(name)
        present = [r for r in self.rows if self.cells(r)[index] is not None]
        missing = [r for r in self.rows if self.cells(r)[index] is None]
        present.sort(key=lambda r: _sort_key(self.cells(r)[index]), reverse=descending)
        self.rows = present + missing


def _same(a: Cell, b: Cell) -> bool:
    """Equal values of the same kind: 1 and 1.0 are, True and 1 are not."""
    numbers = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)]
    if all(numbers):
        return a == b
    return type(a) is type(b) and a == b


def _sort_key(value: Cell) -> tuple[int, float, str]:
    if isinstance(value, MeanStd):
        value = value.mean  # a seed group sorts by its mean
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value) if not math.isnan(value) else math.inf, "")
    return (2, 0.0, str(value))


@dataclasses.dataclass
class _Found:
    """One run read for the table (shaped by :class:`~runsmon.seeds.Shaper`)."""

    run: Run
    name: str
    base: dict[str, FlagValue]
    user: list[str]
    metrics: frozenset[hparams.Metric]
    values: dict[hparams.Metric, float]
    hparams: dict[str, FlagValue] = dataclasses.field(default_factory=dict)
    group: str | None = None


def collect(
    source: Callable[[], Iterable[Run]],
    selection: hparams.Selection | None = None,
    run_name_cb: Callable[[Run], str] | None = None,
    fs: FileSystem = LOCAL,
    reporter: Reporter | None = None,
    seed_groups: SeedGroups | None = None,
) -> RunsTable:
    """Read every run ``source`` lists once and build the table; with
    ``seed_groups``, one row per seed group (see :func:`group_rows`)."""
    selection = selection or hparams.Selection()
    reporter = reporter or as_source(source).reporter
    name_cb = run_name_cb or default_run_name
    namer = RunNamer()
    columns = hparams.Columns()
    shaper = Shaper(seed_groups)
    found: dict[str, _Found] = {}
    for run in source():
        if not isinstance(run, Run) or run.id in found:
            continue
        try:
            name = namer.name_for(run.id, safe_name(name_cb(run)))
        except Exception as e:
            reporter.warn(run.id, "name", f"run {run.id}: cannot name it: {describe_error(e)}")
            continue
        view, values = _view(run, name, fs, reporter, selection.best)
        f = found[run.id] = _Found(run, name, view.hparams, view.user_hparams, view.metrics, values)
        shaper.note(f)
    for f in shaper.settle(found):
        columns.set_run(f.run.id, f.hparams, f.metrics, f.user)
    chosen, chosen_metrics = columns.selected(selection)
    by_name = {c.name: c for c in columns.columns()}
    rows = []
    for f in found.values():
        cells: dict[str, Cell] = {}
        for column in chosen:
            value = f.hparams.get(column.name)
            cells[column.name] = None if value is None else by_name[column.name].encode(value)
        for metric in chosen_metrics:
            cells[metric_header(metric)] = f.values.get(metric)
        rows.append(Row(f.run, f.name, cells, f.group))
    table = RunsTable([c.name for c in chosen], chosen_metrics, rows)
    table.sort(None)
    if seed_groups is not None:
        table = group_rows(table)
    return table


class MeanStd(NamedTuple):
    """A metric over a seed group's runs: the table shows ``mean ± std (n)``."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return format_mean_std(self)


def group_rows(table: RunsTable) -> RunsTable:
    """One row per seed group of ``table``'s rows (``Row.group``), in the order
    of each group's first row: the hparams of its first run (which its runs
    share, but for their seeds), each metric as :class:`MeanStd` over the
    runs that have it, and a status that counts its runs' statuses."""
    groups: dict[str, list[Row]] = {}
    for row in table.rows:
        groups.setdefault(row.group or row.name, []).append(row)
    heads = [metric_header(m) for m in table.metrics]
    rows = []
    for name, members in groups.items():
        first = members[0]
        cells: dict[str, Cell] = {h: first.values.get(h) for h in table.hparams}
        for head in heads:
            stats = mean_std(
                v for v in (r.values.get(head) for r in members) if isinstance(v, (int, float))
            )
            cells[head] = MeanStd(*stats) if stats is not None else None
        statuses = Counter(r.run.status for r in members)
        status = ", ".join(
            s if len(statuses) == 1 else f"{n} {s}" for s, n in sorted(statuses.items())
        )
        rows.append(Row(first.run, name, cells, name, status, tuple(r.run.id for r in members)))
    return RunsTable(table.hparams, table.metrics, rows)


def _view(
    run: Run, name: str, fs: FileSystem, reporter: Reporter, best: Sequence[Any] = ()
) -> tuple[runview.RunView, dict[hparams.Metric, float]]:
    """One run's view, last values and best values, by the monitor's own rules."""
    files = runview.run_files(run, fs, best, images=False)
    try:
        files.refresh()
    except Exception as e:  # one bad run never stops the table
        reporter.warn(run.id, "files", f"run {name}: {describe_error(e)}")
    runview.report_file_errors(reporter, run, name, files)
    points = runview.read_points(run, name, reporter) or []
    view = runview.view(run, files, {runview.point_metric(p) for p in points})
    return view, runview.last_values(run, files, points)


# -- output -------------------------------------------------------------------


def format_cell(value: Cell, digits: int = 5) -> str:
    """A value as the text table shows it.

    >>> [format_cell(v) for v in (None, True, 3, 0.000123456, 12.3456789, "adam")]
    ['', 'true', '3', '0.00012346', '12.346', 'adam']
    """
    if value is None:
        return ""
    if isinstance(value, MeanStd):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, f".{digits}g")
    return str(value)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())  # no line breaks or tabs in a cell
    return text if len(text) <= width else text[: max(0, width - 1)] + ELLIPSIS


def render_text(table: RunsTable, width: int | None = None) -> str:
    """The table aligned for a terminal, each line at most ``width`` characters
    (None: no limit).

    Columns: run, status, the hparams that differ between the rows, then the
    metrics.  Hparams with the same value in every row are one line under
    the table (``constant: a=1, b=adam``).  Long cells are shortened with an
    ellipsis.  When the columns do not fit, run names are shortened, then
    columns are left out: kept first are a few differing hparams that every
    row has, the metrics, the status, then the other differing hparams; a
    last line (wrapped, never cut) names what was left out.
    """
    if not table.rows:
        return "no runs\n"
    differing = table.differing()
    constant = [h for h in table.hparams if h not in differing]
    metric_heads = [metric_header(m) for m in table.metrics]
    headers = [RUN, STATUS, *differing, *metric_heads]
    cells = [
        [row.name, row.shown_status, *(row.values.get(c) for c in headers[2:])]
        for row in table.rows
    ]
    numeric = [
        all(
            isinstance(v, (int, float, MeanStd)) and not isinstance(v, bool)
            for v in col
            if v is not None
        )
        for col in zip(*cells, strict=True)
    ]
    texts = [
        [_cut(format_cell(v), MAX_RUN_CELL if i == 0 else MAX_CELL) for i, v in enumerate(row)]
        for row in cells
    ]
    heads = [_cut(h, MAX_RUN_CELL if i == 0 else MAX_CELL) for i, h in enumerate(headers)]
    widths = [max(len(heads[i]), *(len(t[i]) for t in texts)) for i in range(len(headers))]
    shown = list(range(len(headers)))
    if width is not None:
        # Shorten the run names first (down to MIN_RUN_CELL), then leave out
        # the columns that still do not fit.
        rest = sum(2 + w for w in widths[1:])
        run_width = max(min(widths[0], width - rest), min(widths[0], MIN_RUN_CELL, width))
        if run_width < widths[0]:
            widths[0] = max(run_width, 1)
            heads[0] = _cut(heads[0], widths[0])
            texts = [[_cut(t[0], widths[0]), *t[1:]] for t in texts]
        # First a few differing hparams every row has (what the runs vary),
        # then the metrics, the status and the other hparams.
        first_metric = 2 + len(differing)
        complete = [i for i in range(2, first_metric) if all(c[i] is not None for c in cells)]
        lead = complete[:LEAD_HPARAMS]
        priority = [
            *lead,
            *range(first_metric, len(headers)),
            1,
            *(i for i in range(2, first_metric) if i not in lead),
        ]
        kept, total = {0}, widths[0]
        for i in priority:
            if total + 2 + widths[i] <= width:
                kept.add(i)
                total += 2 + widths[i]
        shown = sorted(kept)

    def line(parts: Sequence[str]) -> str:
        out = [
            parts[i].rjust(widths[i]) if numeric[i] and i > 1 else parts[i].ljust(widths[i])
            for i in shown
        ]
        return "  ".join(out).rstrip()

    out = [line(heads), line(["-" * w for w in widths])]
    out.extend(line(t) for t in texts)
    if constant:
        first = table.rows[0].values
        items = [f"{h}={format_cell(first.get(h))}" for h in constant]
        out.extend(_wrapped("constant: ", items, width, MAX_CONSTANT_LINES))
    left = [headers[i] for i in range(len(headers)) if i not in shown]
    if left:
        out.extend(
            _wrapped(
                f"(+{len(left)} not shown: ", left, width, None, end="; --format csv shows all)"
            )
        )
    return "\n".join(out) + "\n"


def _wrapped(
    head: str, items: Sequence[str], width: int | None, max_lines: int | None, end: str = ""
) -> list[str]:
    """``head``, then ``items`` joined by ", ", then ``end``, wrapped at ``width``
    between items (an item longer than a line is cut).  With ``max_lines``,
    the items that do not fit are counted at the end ("+N more").

    >>> _wrapped("constant: ", ["a=1", "b=adam", "c=3"], 22, None)
    ['constant: a=1, b=adam,', '  c=3']
    >>> _wrapped("constant: ", ["a=1", "b=adam", "c=3", "d=4"], 22, 1)
    ['constant: a=1, +3 more']
    """
    if width is None:
        return [head + ", ".join(items) + end]
    width = max(width, 24)
    indent = "  "
    end_head, _, end_tail = end.partition(" ")
    texts = [item + ("," if i < len(items) - 1 else end_head) for i, item in enumerate(items)]
    texts += end_tail.split()  # words: the end wraps too, never cut
    lines: list[list[str]] = [[]]
    used = len(head)
    for text in texts:
        if lines[-1] and used + 1 + len(text) > width:
            lines.append([])
            used = len(indent)
        room = width - used - (1 if lines[-1] else 0)
        text = text if len(text) <= room else _cut(text, room)
        lines[-1].append(text)
        used += len(text) + (1 if len(lines[-1]) > 1 else 0)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        start = len(head) if max_lines == 1 else len(indent)
        while True:
            more = f"+{len(texts) - sum(map(len, lines))} more"
            if start + len(" ".join([*last, more])) <= width or not last:
                last.append(more)
                break
            last.pop()
    return [(head if i == 0 else indent) + " ".join(parts) for i, parts in enumerate(lines)]


def _plain(value: Cell) -> Cell:
    """A value for CSV and JSON: non-finite numbers have no value."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_cell(value: Cell) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back the same number
    return format_cell(value)


def render_csv(table: RunsTable) -> str:
    """Comma-separated values with a header line; numbers in full precision.
    A seed group's metric is three columns: ``M`` (the mean), ``M std``, ``M n``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    grouped = any(isinstance(v, MeanStd) for r in table.rows for v in r.values.values())
    if not grouped:
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow(_csv_cell(v) for v in table.cells(row))
        return buf.getvalue()
    heads = [metric_header(m) for m in table.metrics]
    writer.writerow(
        [RUN, STATUS, *table.hparams, *(f"{h}{s}" for h in heads for s in ("", " std", " n"))]
    )
    for row in table.rows:
        stats = [row.values.get(h) for h in heads]
        writer.writerow(
            [
                *(_csv_cell(v) for v in table.cells(row)[: 2 + len(table.hparams)]),
                *(_csv_cell(x) for st in stats for x in (st or (None, None, None))),
            ]
        )
    return buf.getvalue()


def render_json(table: RunsTable) -> str:
    """A JSON list, one object per run: id, run (its name), status, started,
    stopped (ISO local time or null), hparams and metrics (by column name;
    a missing or non-finite value is null)."""
    out: list[dict[str, Any]] = []
    for row in table.rows:
        run = row.run
        out.append(
            {
                "id": run.id,
                "run": row.name,
                "status": row.shown_status,
                "started": _iso(run.started),
                "stopped": _iso(run.stopped),
                "dir": run.dir,
                **({"runs": list(row.members)} if row.members else {}),
                "hparams": {h: _plain(row.values.get(h)) for h in table.hparams},
                "metrics": {
                    metric_header(m): _json_value(row.values.get(metric_header(m)))
                    for m in table.metrics
                },
            }
        )
    return json.dumps(out, indent=2) + "\n"


def _json_value(value: Cell) -> Any:
    """A metric cell for JSON: a seed group's as ``{"mean", "std", "n"}``."""
    if isinstance(value, MeanStd):
        return {"mean": _plain(value.mean), "std": _plain(value.std), "n": value.n}
    return _plain(value)


def _iso(t: float | None) -> str | None:
    text = format_started(t)
    return text.replace(" ", "T") if text else None


def render(table: RunsTable, fmt: str, width: int | None = None) -> str:
    """The table in one of :data:`FORMATS`."""
    if fmt == "table":
        return render_text(table, width)
    if fmt == "csv":
        return render_csv(table)
    if fmt == "json":
        return render_json(table)
    raise ValueError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")

"""A run as the dashboard shows it: the one definition the monitor and ``runsmon table`` share.

A run's view is its hparams (the flags, flattened, then its tags as
``tag:NAME`` true and its note as ``note``), the ones a user set, and
its metrics as ``(tag, group)`` with their last values:

- every scalar tag of every event file the run shows (see
  :class:`~runsmon.runfiles.RunFiles`), the group being the file's directory
  in the run ("" at its root); ``add_hparams``' metrics are at the root;
- scalars a source knows outside event files (MLflow, wandb), each under the
  tag it was logged as (``val/loss`` stays ``val/loss``);
- not Lightning's ``hp_metric`` placeholder (a ``-1`` the user never replaced);
- ``time``, the run's duration, once it ended (unless its files have their own);
- where the run's tool declares its metrics (Guild's ``compare`` columns),
  exactly those, and ``time``;
- reduced metrics (best values, :mod:`runsmon.reduce`): for each scalar a
  ``--best`` spec or the run's tool (Guild's ``min loss``, ``max val#acc``
  compare columns) names, its running min, max or mean of the last K values.

Which metrics become the experiment's columns is then the
:class:`~runsmon.hparams.Selection`'s business; a run's values stay what
TensorBoard reads, so ``runsmon table`` shows what the dashboard does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from tensorboard.compat.proto import event_pb2

from runsmon import reduce
from runsmon.events import scalar_value
from runsmon.fs import FileSystem
from runsmon.hparams import TIME_METRIC, Metric
from runsmon.report import Reporter, describe_error
from runsmon.run import NOTE_HPARAM, TAG_PREFIX, FlagValue, Run, ScalarPoint, tag_hparams
from runsmon.runfiles import RunFiles

TIME: Metric = (TIME_METRIC, "")
#: Lightning's ``TensorBoardLogger`` logs ``hp_metric = -1`` until the user sets it.
PLACEHOLDER_TAG = "hp_metric"
PLACEHOLDER_VALUE = -1.0
#: ``Run.attrs`` key of the metrics a run's tool declares (Guild's compare columns).
DECLARED = "metrics"
#: ``Run.attrs`` key of the reductions a run's tool declares: (tag, group, how)
#: (Guild's compare columns ``min loss``, ``max val#acc``).
DECLARED_REDUCED = "reduced"
#: ``Run.attrs`` key of the directory (relative to the run's) that holds its
#: TensorBoard logdir: groups are relative to it (wandb's ``files/``).
EVENTS_DIR = "events_dir"


@dataclasses.dataclass(slots=True)
class RunView:
    """What the dashboard shows of one run (its values: :func:`last_values`)."""

    hparams: dict[str, FlagValue]
    user_hparams: list[str]
    metrics: frozenset[Metric]
    own_time: bool  # its event files hold a root scalar ``time`` of their own


def view(run: Run, files: RunFiles, outside: Iterable[Metric] = ()) -> RunView:
    """The view of ``run`` given its scanned ``files`` and the metrics of its
    scalars outside event files (``outside``, see :func:`point_metric`)."""
    hparams = run.hparams()
    user = user_hparams(run, hparams)
    if run.tags or run.note:
        tagged = tag_hparams(run.tags, run.note)
        hparams.update(tagged)
        user += tagged  # a user's own: shown with --hparams overridden too
    found = files.metrics()
    own_time = TIME in found
    found.update(outside)
    if any(tag == PLACEHOLDER_TAG for tag, _ in found):
        found -= placeholders(files, found)
    declared = declared_metrics(run)
    reduced = reduce.reduced_metrics(found, files.best)
    metrics = set(declared) if declared is not None else found
    metrics.update(reduced)
    if run.duration is not None or (own_time and declared is not None):
        metrics.add(TIME)
    return RunView(hparams, user, frozenset(metrics), own_time)


class KnownTags:
    """The tag names of the runs shown, and whether any has a note, counted,
    so each session can say ``tag:NAME`` false for a tag it lacks and
    ``note`` "" when it has none: the dashboard's filters let a run with no
    value through whatever is checked or typed."""

    #: Counted under this name: a run with a note (never a tag's name: tags are not empty).
    NOTED = ""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self._of: dict[str, frozenset[str]] = {}
        self._sorted: list[str] | None = None

    def set_run(self, run_id: str, tags: frozenset[str], noted: bool = False) -> bool:
        """Record a run's tags (and whether it has a note); whether the set of names changed."""
        if noted:
            tags = tags | {self.NOTED}
        old = self._of.get(run_id, frozenset())
        if old == tags:
            return False
        if tags:
            self._of[run_id] = tags
        else:
            self._of.pop(run_id, None)
        return self._count(old, -1) | self._count(tags, +1)

    def remove_run(self, run_id: str) -> bool:
        return self._count(self._of.pop(run_id, frozenset()), -1)

    def _count(self, tags: frozenset[str], sign: int) -> bool:
        moved = False
        for t in tags:
            n = self.names.get(t, 0) + sign
            moved |= n <= 0 or n == sign
            if n <= 0:
                self.names.pop(t, None)
            else:
                self.names[t] = n
        if moved:
            self._sorted = None
        return moved

    def fill(self, hparams: Mapping[str, FlagValue]) -> dict[str, FlagValue]:
        """``hparams`` with ``tag:NAME`` false for every known tag it lacks,
        and ``note`` "" where some run has a note and it has none.

        >>> k = KnownTags(); _ = k.set_run("a", frozenset({"baseline"}), noted=True)
        >>> k.fill({"lr": 0.1})
        {'lr': 0.1, 'note': '', 'tag:baseline': False}
        """
        if self._sorted is None:
            self._sorted = sorted(self.names)
        out = dict(hparams)
        for name in self._sorted:
            out.setdefault(TAG_PREFIX + name if name else NOTE_HPARAM, False if name else "")
        return out


def run_specs(run: Run, best: Sequence[reduce.BestSpec] = ()) -> tuple[reduce.BestSpec, ...]:
    """The reductions kept for ``run``: ``best`` (``--best``), then its tool's own."""
    declared = run.attrs.get(DECLARED_REDUCED) if run.attrs else None
    if not declared:
        return tuple(best)
    return (*best, *(reduce.exact((tag, group), how) for tag, group, how in declared))


def run_files(
    run: Run,
    fs: FileSystem,
    best: Sequence[reduce.BestSpec] = (),
    *,
    images: bool = True,
    hparams: bool = True,
) -> RunFiles:
    """The event files of ``run``, scanned with the reductions it needs
    (``images``: its image files listed too; ``hparams``: False when its own
    HParams summaries are shown as they are)."""
    return RunFiles(
        files_root(run),
        fs,
        exclude=run.nested,
        best=run_specs(run, best),
        images=images,
        hparams=hparams,
    )


def files_fit(files: RunFiles, run: Run, best: Sequence[reduce.BestSpec] = ()) -> bool:
    """Whether ``files`` (made by :func:`run_files`) still serve ``run`` as read now."""
    return files.root == files_root(run) and files.best == run_specs(run, best)


def files_root(run: Run) -> str:
    """The directory whose event files are the run's, groups relative to it."""
    sub = run.attrs.get(EVENTS_DIR) if run.attrs else None
    return f"{run.dir.rstrip('/')}/{sub}" if sub else run.dir


def user_hparams(run: Run, hparams: Iterable[str]) -> list[str]:
    """The hparams a user set: the run's user flags and what is nested in them."""
    user = run.user_flags or ()
    if not user:
        return []
    return [h for h in hparams if any(h == u or h.startswith(f"{u}.") for u in user)]


def declared_metrics(run: Run) -> frozenset[Metric] | None:
    """The metrics the run's tool declares for it, or None."""
    declared = run.attrs.get(DECLARED) if run.attrs else None
    return frozenset(declared) if declared else None


def placeholders(files: RunFiles, metrics: Collection[Metric]) -> set[Metric]:
    """``hp_metric`` metrics whose last value is Lightning's placeholder -1."""
    values = files.last_values()
    return {
        m
        for m in metrics
        if m[0] == PLACEHOLDER_TAG and values.get(m, PLACEHOLDER_VALUE) == PLACEHOLDER_VALUE
    }


def is_placeholder_record(data: bytes) -> bool:
    """Whether an event record is Lightning's ``hp_metric = -1`` at step 0.

    Such records are left out of the copies runsmon makes of files holding
    hparams summaries (where Lightning writes them), so the dashboard shows
    no value the user never set.
    """
    if PLACEHOLDER_TAG.encode() not in data:
        return False
    try:
        event = event_pb2.Event.FromString(data)
    except Exception:  # not an event: kept as it is
        return False
    values = event.summary.value
    return (
        event.step == 0
        and len(values) == 1
        and values[0].tag == PLACEHOLDER_TAG
        and scalar_value(values[0]) == PLACEHOLDER_VALUE
    )


def point_metric(point: ScalarPoint) -> Metric:
    """The metric of a scalar a source knows outside event files: its tag as logged."""
    return (point.tag, point.group)


def last_values(
    run: Run, files: RunFiles, points: Iterable[ScalarPoint] = ()
) -> dict[Metric, float]:
    """The last value of every scalar of the run, as TensorBoard shows it, and
    its reduced metrics' values (as runsmon writes them for TensorBoard)."""
    points = list(points)
    values = files.last_values()
    for m in placeholders(files, [m for m in values if m[0] == PLACEHOLDER_TAG]):
        del values[m]  # left out of the copy TensorBoard reads
    last: dict[Metric, tuple[int, float, float]] = {}
    for p in points:
        key = point_metric(p)
        if key not in last or (p.step, p.wall_time) >= last[key][:2]:
            last[key] = (p.step, p.wall_time, p.value)
    values.update({k: v[2] for k, v in last.items()})
    if run.duration is not None:
        values.setdefault(TIME, run.duration)
    if files.best:
        reduced = files.reduced_values()
        reduced.update(reduce.point_values(points, files.best))
        values.update({k: v[2] for k, v in reduced.items()})
    return values


def row(
    run: Run, name: str, hparams: Mapping[str, Any], files: RunFiles, reporter: Reporter
) -> dict[str, Any]:
    """A row of ``RunsMonitor.table()``: run, name, hparams, last metric values."""
    points = read_points(run, name, reporter) or ()
    return {
        "run": run,
        "name": name,
        "hparams": dict(hparams),
        "metrics": last_values(run, files, points),
    }


def read_points(run: Run, name: str, reporter: Reporter) -> list[ScalarPoint] | None:
    """The run's scalars outside event files (None: it has none, or they failed)."""
    if run.scalars is None:
        return None
    try:
        return list(run.scalars())
    except Exception as e:  # a source's failure is one warning, never a stop
        reporter.warn(run.id, "scalars", f"run {name}: scalars: {describe_error(e)}")
        return None


def report_file_errors(reporter: Reporter, run: Run, name: str, files: RunFiles) -> None:
    """One warning per event file that could not be read (wholly or in part)."""
    for f in files.files.values():
        if f.scan.error:
            reporter.warn(
                run.id,
                f"events:{f.path}",
                f"run {name}: event file {f.rel}: {f.scan.error}; showing what could be read",
            )
    for path, cause in files.errors.items():
        if cause != "vanished":  # deleted between listing and reading: no fault
            rel = os.path.relpath(path, run.dir)
            reporter.warn(run.id, f"file:{path}", f"run {name}: {rel}: {cause}; left out")

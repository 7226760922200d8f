"""Which logdir layout a monitor writes: linked, compact, or chosen by the open-file budget.

``linked`` (the default layout until the runs outgrow it): each run's
directory links every event file of the run, one directory per group, beside
runsmon's session file; everything the run logged reaches every dashboard.
``compact`` (:mod:`runsmon.compact`): each run is one directory holding one
event file runsmon writes, its scalars only.  TensorBoard's data server keeps
every event file open, so the linked layout costs it one open file per event
file of a run (4 for a Guild run with ``train/`` and ``val/``), the compact
one a single file.

``auto`` chooses once per process, from the first listing: linked while the
open files the linked layout would make TensorBoard need
(:func:`runsmon.serve.open_files_needed` of its event files: a tenth more
and 64) are at most half the open-file limit (:data:`SHARE`), compact
beyond.  Half, so that the runs can double (a sweep still starting) before
the fast loader runs out, and the layout is not chosen anew at each start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from runsmon.compact import COMPACT
from runsmon.run import Run
from runsmon.runfiles import RunFiles
from runsmon.serve import open_files_needed
from runsmon.sessions import known_running

LINKED = "linked"
AUTO = "auto"
LAYOUTS = (LINKED, COMPACT, AUTO)
#: The share of the open-file limit the linked layout may take under ``auto``.
SHARE = 0.5


def linked_event_files(runs: Iterable[tuple[Run, int]]) -> int:
    """Event files a logdir in the linked layout holds for ``runs``, given
    each with its number of event files: those, a session file each, an end
    file for each run known running (it ends later), a scalars file for each
    run whose source knows scalars outside event files, and the experiment."""
    total = 1
    for run, files in runs:
        total += files + 1 + int(known_running(run)) + int(run.scalars is not None)
    return total


def open_files_limit() -> int | None:
    """This process's soft limit of open files (None: no limit known)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def choose(linked_files: int, runs: int, limit: int | None) -> tuple[str, str]:
    """The layout ``auto`` picks, and the line that says why.

    >>> choose(1000, 250, 20000)[0], choose(12000, 3000, 20000)[0]
    ('linked', 'compact')
    >>> print(choose(40001, 10000, 20000)[1])
    layout compact: 10000 runs would need about 44065 open files in TensorBoard linked (40001
    event files), more than half the open-file limit of 20000; one file a run, scalars only
    (no images or histograms)
    >>> choose(10**6, 10**5, None)[0]
    'linked'
    """
    needed = open_files_needed(linked_files)
    if limit is None or needed <= limit * SHARE:
        where = "no open-file limit" if limit is None else f"the open-file limit of {limit}"
        return LINKED, (
            f"layout linked: {runs} runs need about {needed} open files in TensorBoard "
            f"({linked_files} event files), within half {where}"
        )
    return COMPACT, (
        f"layout compact: {runs} runs would need about {needed} open files in TensorBoard "
        f"linked ({linked_files} event files), more than half the open-file limit of "
        f"{limit}; one file a run, scalars only (no images or histograms)"
    )


def choose_for(
    runs: Iterable[Run], files_of: Callable[[Run], RunFiles], limit: int | None
) -> tuple[str, str, dict[str, RunFiles], int]:
    """``auto``'s choice for ``runs`` (their directories listed, not read,
    through the :class:`RunFiles` that ``files_of`` makes) under the
    open-file ``limit`` (None: this process's soft limit): the layout, the
    line that says why, each run's :class:`RunFiles` as listed (for the
    first sync to go on from) and the event files the linked layout would
    hold."""
    walked: dict[str, RunFiles] = {}
    counted = []
    for run in runs:
        files = walked[run.id] = files_of(run)
        try:
            counted.append((run, files.count()))
        except OSError:
            counted.append((run, 0))
    if limit is None:
        limit = open_files_limit()
    linked = linked_event_files(counted)
    chosen, note = choose(linked, len(counted), limit)
    return chosen, note, walked, linked


def planned_event_files(layout: str, runs: int, linked: int | None, best: bool) -> int | None:
    """Event files a first sync of ``runs`` will leave in the logdir, known
    before it writes them: one a run and the experiment in the compact
    layout, ``linked`` (as :func:`choose_for` counted them, None: not
    counted) in the linked one; with best values (``--best``) one more a run.

    >>> planned_event_files(COMPACT, 10, None, best=True)
    21
    >>> planned_event_files(LINKED, 10, None, best=False) is None
    True
    """
    base = runs + 1 if layout == COMPACT else linked
    return None if base is None else base + (runs if best else 0)

"""Session generations: how a run's session is rewritten with no gap.

TensorBoard fixes a tag's metadata at its first occurrence in a run (a
directory), so a session that must change (a column's kind, the run's flags,
its status) cannot be changed in place, and a directory deleted and made
again under the same name keeps the old session for as long as TensorBoard
did not notice the gap.  What works with both loaders, with no wait: write
the new session into a NEW directory whose start info carries the SAME
``group_name`` (the row the HParams dashboard shows), with everything the run
has (links, copies, scalars files), and only then delete the old directory.
Whatever TensorBoard reads in between, the row is there (for a moment with
two sessions, averaged), and it shows the new values within a reload.

One exception: TensorBoard's data server drops a vanished run at once but
lists a new one only once it has read all its files, so a run with large
event files (:data:`HANDOVER_BYTES`) keeps its old directory a while beside
the new one (``RunsMonitor.handover_delay``).

A run's directories are its *home* name (the row's name, ``NAME``) and its
*twin* ``NAME~``: a rewrite moves the run from one to the other, so the
Scalars and Time Series tabs (which name runs by directory) show one of two
names.  A name is used again only :data:`REUSE_AFTER` seconds after it was
vacated (TensorBoard must have dropped it); a rewrite that comes sooner
takes ``NAME~2``, ``NAME~3``, ... instead.

This module holds the rules; the monitor does the writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from runsmon.logdir import Manifest
from runsmon.run import IDLE_RULE, RUNNING, STATUS_RULE, Run

#: What a run's second directory adds to its name.
#: ``state.session`` (and ``state.end``) of a run written without HParams
#: summaries (``--skip-hparams``): its directory holds no session file.
LINKS_ONLY = "links-only"
TWIN_SUFFIX = "~"
#: Bytes of event files past which a rewritten run's old directory stays a
#: while beside the new one (``RunsMonitor.handover_delay``): TensorBoard's
#: data server shows a new run only once it has read all its files, and it
#: drops the old one at once; for less than this the gap lasts milliseconds.
HANDOVER_BYTES = 1 << 20
#: Seconds a vacated directory name stays unused: TensorBoard must have
#: noticed that it went (two reloads of a TensorBoard reloading every 14 s).
REUSE_AFTER = 30.0


def known_running(run: Run) -> bool:
    """Whether the source records that ``run`` is running (not inferred from idleness)."""
    attrs = run.attrs
    return run.status == RUNNING and not (attrs and attrs.get(STATUS_RULE) == IDLE_RULE)


def shown_end(run: Run) -> str | None:
    """The status a run's end info shows: its final one, ``running`` where the
    source knows it runs, None (no end info) otherwise."""
    if run.ended:
        return run.status
    return RUNNING if known_running(run) else None


def needs_handover(shown_bytes: int) -> bool:
    """Whether a rewritten run's old directory must stay a while (see
    :data:`HANDOVER_BYTES`)."""
    return shown_bytes > HANDOVER_BYTES


def generation_names(home: str) -> Iterator[str]:
    """The directory names of a run whose row is ``home``, in order of preference.

    >>> names = generation_names("3f2a9c1b train")
    >>> [next(names) for _ in range(4)]
    ['3f2a9c1b train', '3f2a9c1b train~', '3f2a9c1b train~2', '3f2a9c1b train~3']
    """
    yield home
    yield home + TWIN_SUFFIX
    n = 2
    while True:
        yield f"{home}{TWIN_SUFFIX}{n}"
        n += 1


class Vacated:
    """Directory names recently deleted, and when: not to be used again too soon."""

    def __init__(
        self, reuse_after: float = REUSE_AFTER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reuse_after = reuse_after
        self.clock = clock
        self._when: dict[str, float] = {}

    def add(self, name: str) -> None:
        self._when[name] = self.clock()
        if len(self._when) > 256:
            self._forget()

    def recent(self, name: str) -> bool:
        when = self._when.get(name)
        if when is None:
            return False
        if self.clock() - when >= self.reuse_after:
            del self._when[name]
            return False
        return True

    def _forget(self) -> None:
        now = self.clock()
        for name in [n for n, t in self._when.items() if now - t >= self.reuse_after]:
            del self._when[name]


def next_dir(home: str, current: str, usable: Callable[[str], bool]) -> str:
    """The directory for a run's next generation: the first of
    :func:`generation_names` that is not ``current`` and is ``usable``.

    >>> next_dir("a", "a", lambda n: True), next_dir("a", "a~", lambda n: True)
    ('a~', 'a')
    >>> next_dir("a", "a~", lambda n: n != "a")
    'a~2'
    """
    for name in generation_names(home):
        if name != current and usable(name):
            return name
    raise AssertionError("unreachable")  # pragma: no cover


def generation(manifest: Manifest) -> int:
    return manifest.state.gen


def pick_restored(manifests: Sequence[Manifest]) -> tuple[Manifest, list[Manifest]]:
    """Of the directories one run has in a logdir (a kill came during a rewrite),
    the one to keep and those to delete.

    A new generation is marked ``building`` until it is complete, and the old
    directory is deleted only after that: the newest complete one is kept
    (else the newest).
    """
    ordered = sorted(manifests, key=generation, reverse=True)
    keep = next((m for m in ordered if not m.state.building), ordered[0])
    return keep, [m for m in ordered if m is not keep]

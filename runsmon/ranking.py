"""``runsmon serve --importance METRIC``: the experiment's hparams by importance, live.

TensorBoard's HParams plugin sorts the experiment's hparams by ``differs``
(true first), then by name, whatever order the experiment gives, and its
HPARAMS tab shows the first five as columns by default. So the hparams that
matter most for METRIC (:func:`runsmon.importance.rank` over the runs shown,
without the forest: it takes seconds at 10,000 runs) are declared as the
differing ones: the strongest, up to :data:`SHOWN`, whose strength stands
out from chance. Every hparam with a figure carries it in its description
(``importance for val#loss: 1 of 5, spearman -0.94, chance 0.16, 40 runs``).

Ranking reads every run's values: it is recomputed only when the runs'
event files or columns moved since, and then at most once every
``max(MIN_INTERVAL, COST_FACTOR x the last ranking's seconds)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from runsmon import hparams, importance, runview

#: The HPARAMS tab shows this many hparams as columns by default.
SHOWN = 5
MIN_INTERVAL = 5.0
COST_FACTOR = 20.0


@dataclasses.dataclass(frozen=True)
class Ranked:
    """What the experiment declares of the ranking: descriptions and the hparams shown first."""

    descriptions: Mapping[str, str]
    first: frozenset[str]

    def differs(self, name: str) -> bool:
        return name in self.first


def describe(ranking: importance.Ranking) -> Ranked:
    """Descriptions of each hparam with a figure, and the ones to show first."""
    with_figure = [i for i in ranking.items if i.strength is not None]
    descriptions = {}
    for n, item in enumerate(with_figure, 1):
        value = (
            f"{item.value:+.2f}" if item.statistic == importance.SPEARMAN else f"{item.value:.2f}"
        )
        descriptions[item.hparam] = (
            f"importance for {ranking.metric}: {n} of {len(with_figure)}, "
            f"{item.statistic} {value}, chance {item.chance or 0:.2f}, {item.runs} runs"
        )
    first = [
        i.hparam for i in with_figure if i.chance is not None and (i.strength or 0) > i.chance
    ][:SHOWN]
    return Ranked(descriptions, frozenset(first))


def rows(runs: Mapping[str, Any], columns: hparams.Columns, metric: str) -> list[dict[str, Any]]:
    """Each shown run's hparams (as sessions show them) and the value of ``metric``."""
    by_name = {c.name: c for c in columns.columns()}
    out = []
    for st in runs.values():
        row: dict[str, Any] = {}
        for name, value in st.hparams.items():
            column = by_name.get(name)
            row[name] = column.encode(value) if column is not None else value
        values = runview.last_values(st.run, st.files)
        for m, v in values.items():
            if hparams.metric_key(m) == metric:
                row[metric] = v
        out.append(row)
    return out


class LiveRanking:
    """The ranking for one metric, recomputed when runs moved (throttled)."""

    def __init__(self, metric: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.metric = metric
        self.clock = clock
        self.ranked: Ranked | None = None
        self.seconds = 0.0  # the last ranking took this long
        self.computed = 0  # rankings done (for tests and benchmarks)
        self._stamp: object = None
        self._next = 0.0

    def update(
        self, runs: Mapping[str, Any], columns: hparams.Columns, selection: hparams.Selection
    ) -> Ranked | None:
        """The ranking now: recomputed if due and the runs moved since the last one."""
        now = self.clock()
        if now < self._next:
            return self.ranked
        stamp = (columns.version, _files_stamp(runs))
        if stamp == self._stamp:
            return self.ranked
        t0 = time.perf_counter()
        names = [c.name for c in columns.selected(selection)[0]]
        ranking = importance.rank(
            rows(runs, columns, self.metric), names, self.metric, forest_model=False
        )
        self.ranked = describe(ranking) if ranking.runs else None
        self.seconds = time.perf_counter() - t0
        self.computed += 1
        self._stamp = stamp
        self._next = now + max(MIN_INTERVAL, COST_FACTOR * self.seconds)
        return self.ranked


def _files_stamp(runs: Mapping[str, Any]) -> int:
    """Moves when any run's event files were read further (or runs came or went)."""
    total = len(runs)
    for st in runs.values():
        for f in st.files.files.values():
            total += f.scan.offset + (f.scan.generation << 40)
    return total

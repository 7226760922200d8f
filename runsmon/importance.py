"""Which hparams matter: how strongly each hparam explains a metric over the runs.

Pure: rows (one mapping of column name to value per run) in, a ranking out.
Each hparam is judged on the runs that have both a value for it and a finite
value of the metric:

- a number: Spearman's rank correlation ``rho`` (ties get their average
  rank), in [-1, 1]; its strength is ``|rho|``.  It sees effects in one
  direction only: an optimum in the middle of the range shows little.
- a boolean or text (a category): the correlation ratio ``eta``, the square
  root of the share of the metric's variance that lies between the groups of
  runs with the same value, in [0, 1]; its strength is ``eta``.

Even pure noise shows some strength: over ``n`` runs its root mean square
(``chance``) is ``sqrt(df / (n - 1))``, with ``df`` 1 for a number and
``k - 1`` for a category of ``k`` values (Spearman's rho has variance
``1 / (n - 1)`` when nothing is related; ``eta`` squared has mean
``(k - 1) / (n - 1)`` over normal noise).  A figure is trusted from
``9 * df + 1`` runs on, where chance is at most 1/3: 10 runs for a number
or a boolean, 19 for a category of 3 values.  Below that the ranking says so.

With scikit-learn installed (``runsmon[importance]``), one more figure
comes from a random forest fitted on all hparams together: how much its
predictions of the metric for runs it was not fitted on get worse (in R²)
when the hparam's values are shuffled between runs (see :func:`forest`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runsmon.hparams import BOOL, NUMBER, STRING, value_text
from runsmon.run import FlagValue

SPEARMAN = "spearman"
ETA = "eta"
#: Chance (the strength noise shows, root mean square) a trusted figure stays within.
MAX_CHANCE = 1 / 3
#: Runs the forest needs: its held-out checks split the runs in FOLDS parts.
FOREST_MIN_RUNS = 10
FOLDS = 5
TREES = 100
REPEATS = 5
#: Each tree is fitted on at most this many runs (drawn anew for each), and
#: its leaves hold at least MIN_LEAF runs: a forest of 10,000 runs takes seconds.
MAX_SAMPLES = 1000
MIN_LEAF = 3
#: scikit-learn's random forests take missing values (NaN) from this version on.
SKLEARN_MIN = (1, 4)
EXTRA_NOTE = "pip install 'runsmon[importance]' adds a random forest's importance (scikit-learn)"
#: Columns of the CSV and keys of the JSON objects, in order.
FIELDS = ("hparam", "kind", "statistic", "value", "strength", "chance", "runs", "forest", "note")

Cell = FlagValue | None


@dataclasses.dataclass(frozen=True)
class Importance:
    """How strongly one hparam explains the metric.

    ``value`` is rho (numbers) or eta (categories), None where it has no
    meaning (``note`` says why); ``runs`` and ``values`` count the runs it
    rests on and their distinct values of the hparam.
    """

    hparam: str
    kind: str
    statistic: str
    value: float | None
    runs: int
    values: int
    note: str = ""
    forest: float | None = None

    @property
    def strength(self) -> float | None:
        return None if self.value is None else abs(self.value)

    @property
    def df(self) -> int:
        return 1 if self.kind == NUMBER else max(self.values - 1, 1)

    @property
    def chance(self) -> float | None:
        """The strength pure noise shows over these runs (root mean square)."""
        return math.sqrt(self.df / (self.runs - 1)) if self.runs > 1 else None

    @property
    def needed(self) -> int:
        """The runs a figure needs for its chance to be at most :data:`MAX_CHANCE`."""
        return needed_runs(self.df)

    @property
    def few(self) -> bool:
        """Whether the figure rests on fewer runs than it needs."""
        return self.value is not None and self.runs < self.needed


@dataclasses.dataclass
class Ranking:
    """The hparams, strongest first; those without a figure after them, by name."""

    metric: str
    runs: int  # runs with a finite value of the metric
    items: list[Importance]
    #: Held-out R² of the forest on all hparams; None when no forest was fitted.
    forest_r2: float | None = None
    #: Why there is no forest figure ("" when there is one).
    forest_note: str = ""

    @property
    def has_forest(self) -> bool:
        return self.forest_r2 is not None

    def warnings(self) -> list[str]:
        """One line naming the hparams whose figure rests on too few runs (or none)."""
        few = [i for i in self.items if i.few]
        if not few:
            return []
        parts = [
            f"{i.hparam} ({i.runs} of {i.needed}"
            + (f" for {i.values} values" if i.kind != NUMBER and i.values > 2 else "")
            + ")"
            for i in few
        ]
        return [
            f"warning: too few runs with {self.metric} for a figure to stand out from chance: "
            + ", ".join(parts)
        ]

    def notes(self) -> list[str]:
        """Lines under the ranking: the forest's fit or why there is none."""
        if self.has_forest:
            return [
                "forest: the R² lost when the hparam is shuffled (a random forest on every "
                f"hparam; held-out R² {self.forest_r2:.2f})"
            ]
        return [f"no forest column: {self.forest_note}"] if self.forest_note else []


def needed_runs(df: int) -> int:
    """Runs for which a statistic with ``df`` degrees of freedom has chance at
    most 1/3: ``9 * df + 1``.

    >>> needed_runs(1), needed_runs(2)
    (10, 19)
    """
    return round(df / MAX_CHANCE**2) + 1


# -- statistics -----------------------------------------------------------------


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing the average of their ranks.

    >>> average_ranks([10, 30, 20, 30]).tolist()
    [1.0, 3.5, 2.0, 3.5]
    """
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    mean_rank = (starts[:-1] + starts[1:] + 1) / 2.0  # ranks start+1 .. end, averaged
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, np.diff(starts))
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's correlation; None when either side has one value."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, float(dx @ dy) / denominator))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None when
    either side has one value.

    >>> spearman([1, 2, 3, 4], [10, 20, 15, 40])
    0.8
    >>> spearman([1, 2, 2, 3], [1, 2, 3, 4])
    0.9486832980505138
    >>> spearman([1, 1, 1], [1, 2, 3]) is None
    True
    """
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    if len(x) < 2:
        return None
    return pearson(average_ranks(x), average_ranks(y))


def eta(labels: Sequence[Any], y: Sequence[float]) -> float | None:
    """The correlation ratio: sqrt(variance between the groups of equal labels
    / total variance).  None when the metric has one value.

    >>> eta(["a", "a", "b", "b"], [1.0, 1.0, 3.0, 3.0])
    1.0
    >>> eta(["a", "b", "a", "b"], [1.0, 1.0, 3.0, 3.0])
    0.0
    >>> round(eta(["a", "a", "b", "b"], [1.0, 2.0, 3.0, 4.0]), 6)  # sqrt(4 / 5)
    0.894427
    """
    values = np.asarray(y, dtype=float)
    if len(labels) != len(values):
        raise ValueError("labels and y differ in length")
    if len(values) == 0:
        return None
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0.0:
        return None
    _, codes = np.unique(np.asarray([str(v) for v in labels], dtype=object), return_inverse=True)
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=values) / counts
    between = float((counts * (means - values.mean()) ** 2).sum())
    return math.sqrt(max(0.0, min(1.0, between / total)))


# -- ranking --------------------------------------------------------------------


def kind_of(values: Sequence[FlagValue]) -> str:
    """``number``, ``bool`` or ``string`` (anything else is judged as text).

    >>> kind_of([1, 0.5]), kind_of([True, False]), kind_of(["a", 1])
    ('number', 'bool', 'string')
    """
    if values and all(isinstance(v, bool) for v in values):
        return BOOL
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return NUMBER
    return STRING


def _finite(value: Cell) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def judge(name: str, pairs: Sequence[tuple[FlagValue, float]]) -> Importance:
    """One hparam's figure from (its value, the metric's value) of each run."""
    kind = kind_of([v for v, _ in pairs])
    if kind == NUMBER:
        pairs = [(v, y) for v, y in pairs if not math.isnan(float(v))]
    xs = [v for v, _ in pairs]
    ys = [y for _, y in pairs]
    distinct = len({v if kind == NUMBER else value_text(v) for v in xs})
    statistic = SPEARMAN if kind == NUMBER else ETA
    note = ""
    value = None
    if not pairs:
        note = "no run has it"
    elif distinct == 1:
        note = "one value"
    elif kind != NUMBER and distinct == len(pairs):
        note = "one run per value"
    elif len(pairs) < 3:
        note = f"{len(pairs)} runs"
    elif len(set(ys)) == 1:
        note = "the metric has one value"
    else:
        value = spearman([float(v) for v in xs], ys) if kind == NUMBER else eta(xs, ys)
    return Importance(name, kind, statistic, value, len(pairs), distinct, note)


def rank(
    rows: Sequence[Mapping[str, Cell]],
    hparams: Sequence[str],
    metric: str,
    forest_model: bool = True,
) -> Ranking:
    """Each of ``hparams``' figure for ``metric`` over ``rows``, strongest first.

    A row counts for an hparam when it has a value for it and a finite value
    of the metric.  With ``forest_model`` (and scikit-learn), each item also
    gets the forest's figure (see :func:`forest`).
    """
    runs = [r for r in rows if _finite(r.get(metric))]
    items = []
    for name in hparams:
        pairs = [(r[name], float(r[metric])) for r in runs if r.get(name) is not None]
        items.append(judge(name, pairs))
    ranking = Ranking(metric, len(runs), items)
    if forest_model:
        try:
            scores, r2 = forest(runs, [i for i in items if i.runs], metric)
        except ForestUnavailable as e:
            ranking.forest_note = str(e)
        else:
            ranking.forest_r2 = r2
            items = [dataclasses.replace(i, forest=scores.get(i.hparam)) for i in items]
    ranking.items = sorted(
        items,
        key=lambda i: (i.strength is None, -(i.strength or 0.0), i.hparam),
    )
    return ranking


# -- the forest -------------------------------------------------------------------


class ForestUnavailable(Exception):
    """No forest figure: scikit-learn is missing or too old, or too few runs."""


def _sklearn() -> Any:
    try:
        import sklearn
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.model_selection import KFold
    except ImportError:
        raise ForestUnavailable(EXTRA_NOTE) from None
    version = tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())
    if version < SKLEARN_MIN:
        raise ForestUnavailable(
            f"scikit-learn {sklearn.__version__} is older than "
            f"{'.'.join(map(str, SKLEARN_MIN))}; {EXTRA_NOTE}"
        )
    return RandomForestRegressor, KFold


def _features(runs: Sequence[Mapping[str, Cell]], items: Sequence[Importance]) -> np.ndarray:
    """One column per hparam: numbers as they are, booleans 0/1, text by the
    rank of its value in sorted order; NaN where a run has no value."""
    x = np.full((len(runs), len(items)), np.nan)
    for j, item in enumerate(items):
        values = [r.get(item.hparam) for r in runs]
        if item.kind == NUMBER:
            x[:, j] = [np.nan if v is None else float(v) for v in values]
        elif item.kind == BOOL:
            x[:, j] = [np.nan if v is None else float(bool(v)) for v in values]
        else:
            texts = [None if v is None else value_text(v) for v in values]
            codes = {t: c for c, t in enumerate(sorted({t for t in texts if t is not None}))}
            x[:, j] = [np.nan if t is None else codes[t] for t in texts]
    return x


def _r2(y: np.ndarray, predicted: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - predicted) ** 2).sum()) / total if total else 0.0


def forest(
    runs: Sequence[Mapping[str, Cell]], items: Sequence[Importance], metric: str
) -> tuple[dict[str, float], float]:
    """Permutation importance of a random forest on held-out runs.

    scikit-learn's ``RandomForestRegressor`` (:data:`TREES` trees, fixed
    seed) is fitted on all hparams together, :data:`FOLDS` times, each time
    on all runs but one part; each part's runs are predicted by the forest
    that did not see them.  An hparam's figure is the drop in the R² of
    those predictions when its values are shuffled between the runs (the
    mean of :data:`REPEATS` shuffles).  Held-out runs, because a forest
    predicts the runs it was fitted on from whatever it memorised; not the
    impurity importance, which favours hparams with many distinct values
    (continuous ones, seeds) whether they matter or not.  Returns
    ({hparam: figure}, the held-out R² with nothing shuffled).
    """
    if len(runs) < FOREST_MIN_RUNS:
        raise ForestUnavailable(f"the forest needs {FOREST_MIN_RUNS} runs with {metric}")
    if not items:
        raise ForestUnavailable("no hparam to fit it on")
    regressor, kfold = _sklearn()
    x = _features(runs, items)
    y = np.asarray([float(r[metric]) for r in runs])
    if float(y.std()) == 0.0:
        raise ForestUnavailable(f"{metric} has one value")
    rng = np.random.default_rng(0)
    shuffles = [[rng.permutation(len(runs)) for _ in range(REPEATS)] for _ in items]
    predicted = np.empty(len(runs))
    shuffled = np.empty((len(items), REPEATS, len(runs)))
    for train, test in kfold(FOLDS, shuffle=True, random_state=0).split(x):
        model = regressor(
            n_estimators=TREES,
            min_samples_leaf=MIN_LEAF,
            max_samples=min(len(train), MAX_SAMPLES),
            random_state=0,
            n_jobs=1,
        )
        model.fit(x[train], y[train])
        batch = [x[test]]
        for j in range(len(items)):
            for order in shuffles[j]:
                part = x[test].copy()
                part[:, j] = x[order[test], j]  # values drawn from every run's
                batch.append(part)
        out = model.predict(np.concatenate(batch)).reshape(len(batch), len(test))
        predicted[test] = out[0]
        shuffled[:, :, test] = out[1:].reshape(len(items), REPEATS, len(test))
    base = _r2(y, predicted)
    scores = {
        item.hparam: float(np.mean([base - _r2(y, shuffled[j, r]) for r in range(REPEATS)]))
        for j, item in enumerate(items)
    }
    return scores, base


# -- output -----------------------------------------------------------------------


def _record(ranking: Ranking, item: Importance) -> dict[str, Any]:
    record: dict[str, Any] = {
        "hparam": item.hparam,
        "kind": item.kind,
        "statistic": item.statistic,
        "value": item.value,
        "strength": item.strength,
        "chance": None if item.value is None else item.chance,
        "runs": item.runs,
        "forest": item.forest,
        "note": item.note,
    }
    if not ranking.has_forest:
        del record["forest"]
    return record


def _fields(ranking: Ranking) -> list[str]:
    return [f for f in FIELDS if f != "forest" or ranking.has_forest]


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    text = format(value, "+.2f" if signed else ".2f")
    return "0.00" if text in ("+0.00", "-0.00") else text


def render_text(ranking: Ranking) -> str:
    """The ranking aligned for a terminal, then its warning and notes."""
    head = f"{ranking.metric}: {ranking.runs} runs"
    if not ranking.items:
        return f"{head}, no hparams\n"
    shown = [i for i in ranking.items if i.value is not None]
    headers = ["hparam", "kind", "statistic", "value", "strength", "chance", "runs"]
    if ranking.has_forest:
        headers.append("forest")
    lines = []
    for i in shown:
        cells = [
            i.hparam,
            i.kind,
            i.statistic,
            _number(i.value, signed=i.statistic == SPEARMAN),
            _number(i.strength),
            _number(i.chance),
            str(i.runs),
        ]
        if ranking.has_forest:
            cells.append(_number(i.forest, signed=True))
        lines.append(cells)
    out = [head]
    if shown:
        widths = [max(len(h), *(len(c[k]) for c in lines)) for k, h in enumerate(headers)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                c.ljust(w) if k < 3 else c.rjust(w)
                for k, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        out += [line(headers), line(["-" * w for w in widths]), *map(line, lines)]
    notes: dict[str, list[str]] = {}
    for i in ranking.items:
        if i.value is None:
            notes.setdefault(i.note, []).append(i.hparam)
    if notes:
        out.append("no figure: " + "; ".join(f"{', '.join(n)} ({why})" for why, n in notes.items()))
    out += ranking.warnings() + ranking.notes()
    return "\n".join(out) + "\n"


def render_csv(ranking: Ranking) -> str:
    """One line per hparam, numbers in full precision; empty where none."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fields = _fields(ranking)
    writer.writerow(fields)
    for item in ranking.items:
        record = _record(ranking, item)
        writer.writerow("" if record[f] is None else record[f] for f in fields)
    return buf.getvalue()


def render_json(ranking: Ranking) -> str:
    """A JSON list, one object per hparam (null where there is no figure)."""
    return json.dumps([_record(ranking, i) for i in ranking.items], indent=2) + "\n"


def render(ranking: Ranking, fmt: str) -> str:
    """The ranking as ``table`` (text), ``csv`` or ``json``."""
    if fmt == "table":
        return render_text(ranking)
    if fmt == "csv":
        return render_csv(ranking)
    if fmt == "json":
        return render_json(ranking)
    raise ValueError(f"unknown format {fmt!r}")

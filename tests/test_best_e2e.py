"""Best values and hparams by importance, through runsmon into a real TensorBoard.

- ``--best TAG=min|max|last-mean:K``: a column ``val#loss (min)`` beside the
  last value (its display name in the experiment), the values `runsmon
  table` shows, and a new best reaching the dashboard while the monitor runs.
- ``serve --importance METRIC``: the hparams that matter for METRIC are the
  ones the dashboard shows first, each with its figure in its description,
  on runs made so that the answer is known (``sample_projects/lr_sweep.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from guild_fake import make_guild_run, write_event_file

from runsmon import RunsMonitor, reduce
from runsmon import table as runs_table
from runsmon.hparams import REDUCED_GROUP, Selection
from runsmon.sources import GuildRuns, detect_source
from sample_projects import lr_sweep

LOADERS = pytest.mark.parametrize("load_fast", [False, True], ids=["python", "rust"])
T0 = 1_700_000_000.0
CURVES = {  # val/loss of three runs: the best is not the last
    "a": [3.0, 1.0, 2.0, 2.5],
    "b": [4.0, 3.0, 0.5, 0.7],
    "c": [2.0, 2.2, 1.9, 1.8],
}
BEST = ("val#loss=min", "val#acc=max", "val#loss=last-mean:2")


def selection(*specs: str, **kw) -> Selection:
    return Selection(best=tuple(reduce.parse_best(s) for s in specs), **kw)


def make_runs(root: Path, running: bool = False) -> dict[str, str]:
    """Three Guild runs with ``CURVES`` in ``val/``; returns each one's event file there."""
    dirs = {}
    for i, (name, losses) in enumerate(CURVES.items()):
        run_dir = make_guild_run(
            str(root),
            f"{i + 1:032x}",
            {"lr": 0.1 * (i + 1), "name": name},
            status="running" if running else "completed",
            scalars={},
            started=T0 + i * 60,
        )
        dirs[name] = write_event_file(
            os.path.join(run_dir, "val"),
            {
                "loss": list(enumerate(losses)),
                "acc": [(s, 1 - v / 10) for s, v in enumerate(losses)],
            },
            name="events.out.tfevents.1700000000.host.1.0",
        )
    return dirs


def reduced(key: str) -> tuple[str, str]:
    return (key, REDUCED_GROUP)


@LOADERS
def test_best_columns_show_values_and_names(tmp_path, tensorboard, load_fast):
    make_runs(tmp_path / "runs")
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(
        str(logdir), GuildRuns(str(tmp_path / "runs")), selection=selection(*BEST)
    )
    monitor.run_once()
    tb = tensorboard(logdir, load_fast=load_fast)
    infos = tb.experiment()["metricInfos"]
    shown = [
        (m["name"].get("group", ""), m["name"]["tag"], m.get("displayName", "")) for m in infos
    ]
    assert shown == [
        ("val", "acc", ""),
        (REDUCED_GROUP, "val#acc (max)", "val#acc (max)"),
        ("val", "loss", ""),
        (REDUCED_GROUP, "val#loss (last-mean:2)", "val#loss (last-mean:2)"),
        (REDUCED_GROUP, "val#loss (min)", "val#loss (min)"),
        ("", "time", ""),
    ]
    table = tb.wait_for(
        lambda t: len(t) == 3 and all(len(r["metrics"]) == 6 for r in t.values()),
        timeout=40,
        what="three rows with every value",
    )
    data = runs_table.collect(GuildRuns(str(tmp_path / "runs")), selection(*BEST))
    for row in data.rows:
        name = row.values["name"]
        losses = CURVES[name]
        metrics = table[row.name]["metrics"]
        assert metrics[reduced("val#loss (min)")] == pytest.approx(min(losses), rel=1e-6)
        assert metrics[reduced("val#acc (max)")] == pytest.approx(1 - min(losses) / 10, rel=1e-6)
        mean = (losses[-1] + losses[-2]) / 2
        assert metrics[reduced("val#loss (last-mean:2)")] == pytest.approx(mean, rel=1e-6)
        assert metrics[("loss", "val")] == pytest.approx(losses[-1], rel=1e-6)
        # runsmon table shows what the dashboard shows, under the same names.
        for key in ("val#loss (min)", "val#acc (max)", "val#loss (last-mean:2)"):
            assert row.values[key] == pytest.approx(metrics[reduced(key)], rel=1e-6)


@LOADERS
@pytest.mark.parametrize("layout", ["linked", "compact"])
def test_a_new_best_appears_live(tmp_path, tensorboard, load_fast, layout):
    dirs = make_runs(tmp_path / "runs", running=True)
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(
        str(logdir),
        GuildRuns(str(tmp_path / "runs")),
        interval=0.5,
        selection=selection("val#loss=min"),
        layout=layout,
    )
    monitor.run_once()
    tb = tensorboard(logdir, load_fast=load_fast)
    key = reduced("val#loss (min)")
    tb.wait_for(
        lambda t: len(t) == 3 and all(key in r["metrics"] for r in t.values()),
        timeout=40,
        what="three rows with their best",
    )
    with monitor:
        # Run c logs a worse value, then a new best; a (still worse) last value follows.
        path = Path(dirs["c"])
        for step, value in [(4, 1.85), (5, 0.25), (6, 0.9)]:
            write_event_file(path.parent, {"loss": [(step, value)]}, name=path.name, mode="ab")
        table = tb.wait_for(
            lambda t: any(abs(r["metrics"].get(key, 0) - 0.25) < 1e-6 for r in t.values()),
            timeout=40,
            what="the new best of run c",
        )
    by_lr = {round(r["hparams"]["lr"], 2): r["metrics"] for r in table.values()}
    assert by_lr[0.3][key] == pytest.approx(0.25)
    last = ("loss", "val") if layout == "linked" else ("val/loss", "")
    assert by_lr[0.3][last] == pytest.approx(0.9)
    assert by_lr[0.1][key] == pytest.approx(1.0)  # the others keep theirs


def _importance_infos(tb) -> dict[str, dict]:
    return {h["name"]: h for h in tb.experiment()["hparamInfos"]}


@pytest.mark.parametrize(
    ("metric", "first", "top"),
    [
        ("val#loss", ["lr"], "lr"),
        ("val#acc", ["augment", "lr", "optimizer"], "optimizer"),
    ],
)
def test_serve_importance_orders_the_hparams(tmp_path, tensorboard, metric, first, top):
    """val#loss depends on lr alone; val#acc on optimizer, augment and lr, never
    on activation (a category that does not matter) or seed."""
    lr_sweep.make(str(tmp_path / "runs"))
    logdir = tmp_path / "logdir"
    source = detect_source(str(tmp_path / "runs"))
    RunsMonitor(str(logdir), source, selection=Selection(importance=metric)).run_once()
    tb = tensorboard(logdir, load_fast=True)
    infos = tb.experiment()["hparamInfos"]
    # The plugin lists differing hparams first (by name): the ones that matter.
    assert [h["name"] for h in infos if h.get("differs")] == first
    assert [h["name"] for h in infos][: len(first)] == first
    by_name = {h["name"]: h for h in infos}
    assert by_name[top]["description"].startswith(f"importance for {metric}: 1 of 5, ")
    assert "activation" not in first and "seed" not in first
    assert "importance for" in by_name["activation"]["description"]
    assert by_name["epochs"].get("description", "") == ""  # one value: no figure


def test_best_columns_in_the_compact_layout(tmp_path, tensorboard):
    """The compact layout names metrics GROUP/TAG at the run's root; best
    values keep their own directory there too, and show with their values."""
    make_runs(tmp_path / "runs")
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(
        str(logdir),
        GuildRuns(str(tmp_path / "runs")),
        selection=selection(*BEST),
        layout="compact",
    )
    monitor.run_once()
    tb = tensorboard(logdir, load_fast=True)
    names = [(m["name"].get("group", ""), m["name"]["tag"]) for m in tb.experiment()["metricInfos"]]
    assert ("", "val/loss") in names and (REDUCED_GROUP, "val#loss (min)") in names
    table = tb.wait_for(
        lambda t: len(t) == 3 and all(len(r["metrics"]) == 6 for r in t.values()),
        timeout=40,
        what="three rows with every value",
    )
    data = runs_table.collect(GuildRuns(str(tmp_path / "runs")), selection(*BEST))
    for row in data.rows:
        losses = CURVES[row.values["name"]]
        metrics = table[row.name]["metrics"]
        assert metrics[("val/loss", "")] == pytest.approx(losses[-1], rel=1e-6)
        assert metrics[reduced("val#loss (min)")] == pytest.approx(min(losses), rel=1e-6)

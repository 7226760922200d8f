"""Best values: the scanner's running reductions, their combination over a
run's files, ``runsmon table --best``, and the series the monitor writes."""

from __future__ import annotations

import math
import os
import pathlib
import random

import numpy as np
import pytest
from guild_fake import make_guild_run
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

from runsmon import events, hparams, reduce
from runsmon.fs import LOCAL
from runsmon.runfiles import RunFiles

MIN = reduce.BestSpec("*", reduce.MIN)
MAX = reduce.BestSpec("*", reduce.MAX)
MEAN3 = reduce.BestSpec("*", reduce.LAST_MEAN, 3)


def series(n: int, seed: int = 0, tags=("loss", "acc", "lr")) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {t: [float(np.float32(rng.uniform(0, 10))) for _ in range(n)] for t in tags}


def file_bytes(values: dict[str, list[float]], tensor_tags=(), nan_at=()) -> bytes:
    """An event file: one event per step holding every tag (tensors for ``tensor_tags``)."""
    n = len(next(iter(values.values())))
    evs = []
    for step in range(n):
        event = event_pb2.Event(step=step, wall_time=1.7e9 + step)
        for tag, vs in values.items():
            v = math.nan if step in nan_at else vs[step]
            if tag in tensor_tags:
                event.summary.value.add(
                    tag=tag,
                    tensor=tensor_util.make_tensor_proto(np.float32(v)),
                    metadata=scalar_metadata.create_summary_metadata("", ""),
                )
            else:
                event.summary.value.add(tag=tag, simple_value=v)
        evs.append(event)
    return events.encode_events(evs, file_version=True, wall_time=1.7e9)


def expected(values: list[float], spec: reduce.BestSpec) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if spec.how == reduce.MIN:
        return min(finite)
    if spec.how == reduce.MAX:
        return max(finite)
    return math.fsum(finite[-spec.k :]) / len(finite[-spec.k :])


def reduced(scan: events.FileScan) -> dict[tuple[str, str], float]:
    return {
        (tag, r.spec.qualifier): r.result
        for tag, runs in (scan.reduced or {}).items()
        for r in runs
    }


def scan_of(path: str, specs=(MIN, MAX, MEAN3), group: str = "", **options) -> events.FileScan:
    scan = events.FileScan(**options)
    scan.reduce_for = reduce.tag_specs(specs, group)
    scan.update(LOCAL, path)
    return scan


@pytest.mark.parametrize("n", [1, 2, 5, 40, 3000])
def test_reductions_match_every_value_in_both_scanner_paths(tmp_path, n):
    values = series(n)
    path = tmp_path / "events.out.tfevents.1.a"
    path.write_bytes(file_bytes(values))
    fast = scan_of(str(path))
    slow = scan_of(str(path), fast=False)
    want = {
        (tag, s.qualifier): pytest.approx(expected(vs, s), rel=1e-12)
        for tag, vs in values.items()
        for s in (MIN, MAX, MEAN3)
    }
    assert reduced(fast) == want
    assert reduced(slow) == want
    # The last values are untouched by the reductions.
    plain = events.scan_file(LOCAL, str(path))
    assert fast.scalars == plain.scalars


def test_only_named_tags_are_reduced_and_nan_is_left_out(tmp_path):
    values = series(500)
    path = tmp_path / "events.out.tfevents.1.a"
    path.write_bytes(file_bytes(values, nan_at={3, 499}))
    scan = scan_of(str(path), specs=(reduce.BestSpec("lo*", reduce.MIN),))
    assert set(scan.reduced) == {"loss"}
    finite = [v for i, v in enumerate(values["loss"]) if i not in (3, 499)]
    assert scan.reduced["loss"][0].result == min(finite)
    assert events.scan_file(LOCAL, str(path)).reduced is None  # no specs: nothing kept


def test_tensor_valued_scalars_are_reduced_too(tmp_path):
    values = series(800)
    path = tmp_path / "events.out.tfevents.1.a"
    path.write_bytes(file_bytes(values, tensor_tags=("loss",)))
    scan = scan_of(str(path))
    assert scan.reduced["loss"][0].result == min(values["loss"])
    assert scan.reduced["acc"][1].result == max(values["acc"])


@pytest.mark.parametrize("cuts", [[7], [100, 101, 5000], [13, 2000, 2001, 9000, 30000]])
def test_cut_then_appended_file_reduces_as_the_whole(tmp_path, cuts):
    values = series(2000, seed=1)
    data = file_bytes(values)
    path = tmp_path / "events.out.tfevents.1.a"
    scan = events.FileScan(chunk_size=4096)
    scan.reduce_for = reduce.tag_specs((MIN, MAX, MEAN3), "")
    for cut in [*cuts, len(data)]:
        path.write_bytes(data[:cut])
        scan.update(LOCAL, str(path))
    whole = scan_of(str(path))
    assert scan.offset == len(data)
    assert reduced(scan) == reduced(whole)


def test_replaced_file_starts_its_reductions_anew(tmp_path):
    path = tmp_path / "events.out.tfevents.1.a"
    path.write_bytes(file_bytes({"loss": [0.1, 5.0, 6.0, 7.0]}))
    scan = scan_of(str(path))
    assert scan.reduced["loss"][0].result == pytest.approx(0.1)
    path.write_bytes(file_bytes({"loss": [3.0, 2.0]}))  # shorter: a new file
    scan.update(LOCAL, str(path))
    assert scan.generation == 1
    assert scan.reduced["loss"][0].result == 2.0


def test_run_files_combine_files_of_a_group(tmp_path):
    """Two files of one group (a resumed run): min over both, last-mean over
    the later file's last values; other groups apart."""
    run = tmp_path / "run"
    (run / "val").mkdir(parents=True)
    (run / "events.out.tfevents.1.a").write_bytes(file_bytes({"loss": [9.0, 4.0, 5.0]}))
    later = file_bytes({"loss": [3.5, 6.0]})
    later_events = events.split_records(later).records[1:]
    shifted = [event_pb2.Event.FromString(r) for r in later_events]
    for e in shifted:
        e.step += 3
    (run / "events.out.tfevents.2.b").write_bytes(events.encode_events(shifted, True, 1.7e9))
    (run / "val" / "events.out.tfevents.1.c").write_bytes(file_bytes({"loss": [1.0, 2.0]}))
    specs = (reduce.BestSpec("#loss", reduce.MIN), reduce.BestSpec("loss", reduce.LAST_MEAN, 3))
    files = RunFiles(str(run), LOCAL, best=specs)
    files.refresh()
    values = {m: v[2] for m, v in files.reduced_values().items()}
    assert values == {
        ("loss (min)", hparams.REDUCED_GROUP): 3.5,
        ("loss (last-mean:3)", hparams.REDUCED_GROUP): pytest.approx((5.0 + 3.5 + 6.0) / 3),
        ("val#loss (last-mean:3)", hparams.REDUCED_GROUP): 1.5,
    }


def test_parse_best_refuses_what_it_cannot_do():
    for bad in ("loss", "loss=best", "=min", "loss=last-mean", "loss=last-mean:0"):
        with pytest.raises(ValueError):
            reduce.parse_best(bad)
    assert reduce.parse_best("a=b=max") == reduce.BestSpec("a=b", reduce.MAX)


def test_reduced_metric_sorts_after_its_base():
    ms = [("acc", "val"), ("val#loss (min)", ".runsmon"), ("loss", "val"), ("time", "")]
    assert [hparams.metric_key(m) for m in sorted(ms, key=hparams.metric_order)] == [
        "val#acc",
        "val#loss",
        "val#loss (min)",
        "time",
    ]


# -- the table and the monitor agree -------------------------------------------


def guild_runs(root: pathlib.Path, curves: dict[str, list[float]]) -> list[str]:
    dirs = []
    for i, (name, losses) in enumerate(curves.items()):
        dirs.append(
            make_guild_run(
                str(root),
                f"{i:032x}",
                {"lr": 0.1 * (i + 1), "name": name},
                scalars={},
                event_files={
                    "val/events.out.tfevents.1.x": file_bytes({"loss": losses}),
                    "events.out.tfevents.1.x": file_bytes({"acc": [1 - v / 10 for v in losses]}),
                },
            )
        )
    return dirs


def test_table_and_monitor_show_the_same_best_values(tmp_path):
    from guild_fake import logdir_runs

    from runsmon import table as runs_table
    from runsmon.monitor import RunsMonitor
    from runsmon.sources.guild import GuildRuns

    curves = {"a": [3.0, 1.0, 2.0, 2.5], "b": [4.0, 3.0, 0.5, 0.7], "c": [2.0, 2.2, 1.9, 1.8]}
    guild_runs(tmp_path / "runs", curves)
    selection = hparams.Selection(
        best=(reduce.parse_best("val#loss=min"), reduce.parse_best("acc=last-mean:2"))
    )
    data = runs_table.collect(GuildRuns(str(tmp_path / "runs")), selection)
    data.sort("val#loss (min)")
    assert [r.values["name"] for r in data.rows] == ["b", "a", "c"]
    by_name = {r.values["name"]: r.values for r in data.rows}
    assert by_name["a"]["val#loss (min)"] == 1.0
    assert by_name["b"]["acc (last-mean:2)"] == pytest.approx(1 - (0.5 + 0.7) / 20, rel=1e-6)

    monitor = RunsMonitor(str(tmp_path / "logdir"), GuildRuns(str(tmp_path / "runs")))
    monitor.selection = selection
    monitor.run_once()
    _, metrics = monitor.experiment_columns()
    assert ("val#loss (min)", ".runsmon") in metrics
    names = {row["name"]: row for row in monitor.table()}
    for row in names.values():
        name = row["hparams"]["name"]
        written = written_values(tmp_path / "logdir" / monitor.run_dirs[row["run"].id])
        assert written["val#loss (min)"] == pytest.approx(by_name[name]["val#loss (min)"])
        assert written["acc (last-mean:2)"] == pytest.approx(by_name[name]["acc (last-mean:2)"])
    assert len(logdir_runs(tmp_path / "logdir")) == 3


def written_values(run_logdir: pathlib.Path) -> dict[str, float]:
    """The last value of each reduced series runsmon wrote for a run."""
    path = run_logdir / reduce.BEST_FILE
    out = {}
    for record in events.split_records(path.read_bytes()).records[1:]:
        for v in event_pb2.Event.FromString(record).summary.value:
            out[v.tag] = v.simple_value
    return out


def test_monitor_appends_a_new_best_and_only_then(tmp_path):
    from runsmon.monitor import RunsMonitor
    from runsmon.sources.guild import GuildRuns

    (run_dir,) = guild_runs(tmp_path / "runs", {"a": [3.0, 1.0, 2.0]})
    monitor = RunsMonitor(
        str(tmp_path / "logdir"),
        GuildRuns(str(tmp_path / "runs")),
        selection=hparams.Selection(best=(reduce.parse_best("val#loss=min"),)),
    )
    monitor.run_once()
    best = tmp_path / "logdir" / next(iter(monitor.run_dirs.values())) / reduce.BEST_FILE
    size = best.stat().st_size
    assert written_values(best.parent.parent) == {"val#loss (min)": 1.0}

    val = pathlib.Path(run_dir) / "val" / "events.out.tfevents.1.x"
    more = [event_pb2.Event(step=3, wall_time=2e9), event_pb2.Event(step=4, wall_time=2e9)]
    more[0].summary.value.add(tag="loss", simple_value=1.5)  # no new best: nothing written
    with open(val, "ab") as f:
        f.write(events.encode_events(more[:1]))
    monitor.run_once()
    assert best.stat().st_size == size
    more[1].summary.value.add(tag="loss", simple_value=0.25)
    with open(val, "ab") as f:
        f.write(events.encode_events(more[1:]))
    monitor.run_once()
    records = events.split_records(best.read_bytes()).records[1:]
    points = [event_pb2.Event.FromString(r) for r in records]
    assert [(e.step, e.summary.value[0].simple_value) for e in points] == [(2, 1.0), (4, 0.25)]
    assert os.path.basename(str(best.parent)) == hparams.REDUCED_GROUP


# -- serve --importance: the ranking is recomputed only when due ---------------


def test_live_ranking_is_throttled_and_follows_the_runs(tmp_path):
    from runsmon import ranking
    from runsmon.monitor import RunsMonitor
    from runsmon.sources import DirRuns
    from sample_projects import lr_sweep

    lr_sweep.make(str(tmp_path / "runs"))
    now = [1000.0]
    monitor = RunsMonitor(
        str(tmp_path / "logdir"),
        DirRuns(str(tmp_path / "runs")),
        selection=hparams.Selection(importance="val#loss"),
    )
    monitor.experiment.ranking = live = ranking.LiveRanking("val#loss", clock=lambda: now[0])
    monitor.run_once()
    assert live.computed == 1 and live.ranked is not None
    assert live.ranked.first == {"lr"}
    monitor.run_once()  # nothing moved, and not due: no ranking
    now[0] += 3600
    monitor.run_once()  # due, but nothing moved: none either
    assert live.computed == 1
    # Every run's val#loss now depends on its activation alone: a new
    # ranking at once (it is due), and a new experiment.
    write_losses(tmp_path / "runs", {"relu": 0.0, "gelu": 5.0, "tanh": 10.0}, ".later")
    stats = monitor.run_once()
    assert live.computed == 2 and stats.experiment_written
    assert "activation" in live.ranked.first
    assert live.ranked.descriptions["activation"].startswith("importance for val#loss: 1 of 5")
    # Moved again within the interval: ranked again only once it is due.
    write_losses(tmp_path / "runs", {"relu": 1.0, "gelu": 0.0, "tanh": 0.5}, ".latest")
    monitor.run_once()
    assert live.computed == 2
    now[0] += ranking.MIN_INTERVAL
    monitor.run_once()
    assert live.computed == 3


def write_losses(runs: pathlib.Path, by_activation: dict[str, float], suffix: str) -> None:
    """A new val/loss in every run of the lr sweep, by its activation."""
    import yaml

    from sample_projects.layouts._events import write_events
    from sample_projects.lr_sweep import T0

    for run in sorted(runs.iterdir()):
        activation = yaml.safe_load((run / "config.yaml").read_text())["activation"]
        value = by_activation[activation]
        # Steps 0-2: later than the sweep's last (1), so they are the last values.
        write_events(str(run / "val"), {"loss": [value] * 3}, T0 + 10**6, suffix=suffix)


def test_cli_best_and_importance_options(tmp_path):
    import contextlib
    import io

    from runsmon.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        # Streams that stay open: the command line's log handler keeps the last one.
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    curves = {"a": [3.0, 1.0, 2.0]}
    guild_runs(tmp_path / "runs", curves)
    runs = str(tmp_path / "runs")
    code, _, err = run("table", runs, "--best", "val#loss=best")
    assert code == 2 and "'best' is not min, max or last-mean:K" in err
    code, out, _ = run("table", runs, "--best", "val#*=min", "--format", "csv")
    header, row = out.splitlines()
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    assert header.split(",")[-4:] == ["val#loss", "val#loss (min)", "acc", "time"]
    assert (cells["val#loss"], cells["val#loss (min)"]) == ("2.0", "1.0")
    logdir = str(tmp_path / "logdir")
    argv = ["serve", "--once", "--no-tensorboard", "--logdir", logdir, "--importance", "val#acc"]
    code, _, err = run(*argv, runs)
    assert code == 0
    assert "--importance: no metric 'val#acc' yet (metrics: val#loss, acc, time)" in err


def test_best_of_scalars_kept_outside_event_files(tmp_path):
    """MLflow and wandb runs: the reductions of the points their source reads."""
    from runsmon import table as runs_table
    from runsmon.monitor import RunsMonitor
    from runsmon.run import Run, ScalarPoint

    points = [ScalarPoint("val/loss", v, step) for step, v in enumerate([2.0, 0.5, 0.8])]
    (tmp_path / "run").mkdir()

    def source(changed=None):
        pts = list(points)
        return [
            Run(
                "r1",
                str(tmp_path / "run"),
                {"lr": 0.1},
                status="completed",
                scalars=lambda: pts,
                fingerprint=len(pts),
            )
        ]

    selection = hparams.Selection(best=(reduce.parse_best("val/loss=min"),))
    (row,) = runs_table.collect(source, selection).rows
    assert row.values["val/loss (min)"] == 0.5
    monitor = RunsMonitor(str(tmp_path / "logdir"), source, selection=selection, watch=False)
    monitor.run_once()
    run_logdir = tmp_path / "logdir" / monitor.run_dirs["r1"]
    assert written_values(run_logdir) == {"val/loss (min)": 0.5}
    points.append(ScalarPoint("val/loss", 0.125, 3))
    monitor.run_once()
    assert written_values(tmp_path / "logdir" / monitor.run_dirs["r1"]) == {"val/loss (min)": 0.125}
    (row,) = runs_table.collect(source, selection).rows
    assert row.values["val/loss (min)"] == 0.125

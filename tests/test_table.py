"""`runsmon table`: the same columns and values the monitor's experiment and sessions hold."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from runsmon import table as runs_table
from runsmon.hparams import Selection
from runsmon.monitor import RunsMonitor
from runsmon.sources import detect_source
from runsmon.sources.dirs import DirRuns
from sample_projects.layouts import mlflow_store, yaml_experiment
from sample_projects.layouts._events import T0, write_events, write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mixed_tree(root: str) -> None:
    """Three runs: a column of numbers and text, a missing value, a NaN metric."""
    configs = {
        "a": {"lr": 0.1, "size": 3, "opt": "adam", "nested": {"x": True}},
        "b": {"lr": 0.01, "size": "large", "opt": "adam"},
        "c": {"lr": 0.001, "size": 5, "opt": "sgd", "nested": {"x": False}},
    }
    for i, (name, config) in enumerate(configs.items()):
        start = T0 + i * 100
        write_text(os.path.join(root, name, "config.yaml"), yaml.safe_dump(config), start)
        loss = [1.0, 0.5 / (i + 1)] if name != "c" else [1.0, float("nan")]
        write_events(os.path.join(root, name), {"loss": loss, "sys/gpu": [50.0]}, start)
        write_events(os.path.join(root, name, "val"), {"acc": [0.5, 0.6 + i / 10]}, start)


@pytest.mark.parametrize("mode", ["all", "differing"])
def test_table_matches_the_monitor(tmp_path, mode):
    root = str(tmp_path / "runs")
    _mixed_tree(root)
    selection = Selection(hparams=mode)
    data = runs_table.collect(DirRuns(root), selection)
    monitor = RunsMonitor(str(tmp_path / "logdir"), DirRuns(root), selection=selection, watch=False)
    monitor.run_once()
    columns, metrics = monitor.experiment_columns()
    assert data.hparams == [c.name for c in columns]
    assert data.metrics == metrics
    assert ("gpu", "sys") not in metrics and ("sys/gpu", "") not in metrics
    expected_hparams = ["lr", "nested.x", "opt", "size"]
    if mode == "differing":
        assert data.hparams == expected_hparams  # every one differs (or is missing somewhere)
    rows = {r.run.id: r for r in data.rows}
    by_monitor = {row["run"].id: row for row in monitor.table()}
    kinds = {c.name: c for c in columns}
    for run_id, row in rows.items():
        assert row.name == monitor.run_names[run_id]
        for name, value in by_monitor[run_id]["hparams"].items():
            assert row.values[name] == kinds[name].encode(value)
        for metric, value in by_monitor[run_id]["metrics"].items():
            if metric not in metrics:
                continue  # a scalar that is no column (sys/gpu)
            got = row.values[runs_table.metric_header(metric)]
            assert got == value or (math.isnan(got) and math.isnan(value))
    # The mixed column shows every value as text, as the sessions do.
    assert [rows[r].values["size"] for r in "abc"] == ["3", "large", "5"]
    assert rows["b"].values["nested.x"] is None
    assert rows["a"].values["val#acc"] == pytest.approx(0.6)
    assert rows["a"].values["time"] == pytest.approx(10.0)  # first to last event, as DirRuns says


def test_sort_and_outputs(tmp_path):
    root = str(tmp_path / "runs")
    _mixed_tree(root)
    data = runs_table.collect(DirRuns(root))
    assert [r.run.id for r in data.rows] == ["a", "b", "c"]  # by start time
    data.sort("-lr")
    assert [r.run.id for r in data.rows] == ["a", "b", "c"]
    data.sort("lr")
    assert [r.run.id for r in data.rows] == ["c", "b", "a"]
    data.sort("-nested.x")  # b has no value: last, also descending
    assert [r.run.id for r in data.rows] == ["a", "c", "b"]
    data.sort("loss")  # NaN sorts as the largest number
    assert [r.run.id for r in data.rows] == ["b", "a", "c"]
    with pytest.raises(ValueError, match="no column 'nope'"):
        data.sort("nope")

    rows = list(csv.reader(io.StringIO(runs_table.render_csv(data))))
    assert rows[0] == data.columns
    b = dict(zip(rows[0], rows[1], strict=True))
    assert b["lr"] == "0.01" and b["nested.x"] == "" and b["status"] == "completed"
    c = dict(zip(rows[0], rows[3], strict=True))
    assert c["loss"] == "" and c["nested.x"] == "false"  # NaN: no value in CSV

    parsed = json.loads(runs_table.render_json(data))
    assert [p["id"] for p in parsed] == ["b", "a", "c"]
    assert parsed[2]["metrics"]["loss"] is None and parsed[0]["hparams"]["nested.x"] is None
    assert parsed[1]["hparams"] == {"lr": 0.1, "nested.x": True, "opt": "adam", "size": "3"}

    text = runs_table.render_text(data, width=None)
    lines = text.splitlines()
    assert lines[0].split() == data.columns and set(lines[1]) <= {"-", " "}
    assert "nan" in lines[4]  # the terminal shows it as it is
    # Every line fits the width; left-out columns are named.
    for width in (40, 60, 80, 200):
        out = runs_table.render_text(data, width=width).splitlines()
        assert all(len(line) <= width for line in out), (width, out)
        if width < 200:
            assert out[-1].startswith("(+") and "not shown" in out[-1]
    narrow = runs_table.render_text(data, width=60).splitlines()
    assert "loss" in narrow[0].split()  # metrics are kept before hparams
    assert runs_table.render_text(runs_table.collect(lambda: [])) == "no runs\n"


def test_mlflow_scalars_come_from_the_store(tmp_path):
    store = str(tmp_path / "store")
    runs = mlflow_store.make(store)
    data = runs_table.collect(detect_source(store))
    assert len(data.rows) == len(runs)
    for row in data.rows:
        metrics = runs[row.run.id]["metrics"]
        for name, values in metrics.items():
            assert row.values[name] == pytest.approx(values[-1]), (row.run.id, name)


def test_cli_table_writes_files_and_checks_arguments(tmp_path):
    root = str(tmp_path / "runs")
    yaml_experiment.make(root)
    out = tmp_path / "t.csv"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "runsmon", "table", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env=dict(os.environ, COLUMNS="120"),
        )

    done = cli(root, "--format", "csv", "-o", str(out), "--hparams", "differing")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    rows = list(csv.DictReader(out.open()))
    assert [r["lr"] for r in rows] == ["0.01", "0.001"]
    assert "model.name" not in rows[0]  # the same in both runs
    done = cli(root, "--sort", "-train#loss", "--format", "json")
    assert [r["id"] for r in json.loads(done.stdout)] == ["run-b", "run-a"]
    done = cli(root)
    assert done.returncode == 0 and "run-a" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 120
    for args, message in (
        ((root, "--sort", "bogus"), "no column 'bogus'"),
        ((root, "--format", "xml"), "invalid choice: 'xml'"),
        ((str(tmp_path / "missing"),), "no such directory"),
    ):
        done = cli(*args)
        assert done.returncode == 2, args
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    done = cli(root, "-o", str(tmp_path / "no" / "dir" / "t.txt"))
    assert done.returncode == 1 and "cannot write" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

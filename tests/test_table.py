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
    # Every line fits the width; left-out columns are named, in full.
    for width in (40, 60, 200):
        out = runs_table.render_text(data, width=width).splitlines()
        assert all(len(line) <= width for line in out), (width, out)
        notes = [i for i, line in enumerate(out) if line.startswith("(+")]
        if width < 200:
            note = " ".join(" ".join(out[notes[0] :]).split())
            assert note.endswith("; --format csv shows all)"), note
            left = note.split(": ", 1)[1].split(";")[0].replace(",", " ").split()
            assert set(left) | set(out[0].split()) == set(data.columns), (left, out[0])
        else:
            assert not notes
    narrow = runs_table.render_text(data, width=60).splitlines()
    assert "loss" in narrow[0].split()  # metrics are kept before most hparams
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


@pytest.mark.slow
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


# -- what an 80-column terminal shows ------------------------------------------------


def _sweep(root: str, count: int = 12) -> dict[str, float]:
    """``count`` runs of a sweep over lr and seed, many constant flags; {run: val#acc}."""
    accuracy = {}
    for i in range(count):
        lr, seed = (0.1, 0.01, 0.001)[i % 3], i // 3
        config = {
            "lr": lr,
            "seed": seed,
            "model": {"name": "resnet", "depth": 18, "width": 64},
            "optimizer": "adam",
            "epochs": 10,
            "data": {"name": "cifar10", "augment": True, "workers": 8},
        }
        run = os.path.join(root, f"lr{lr}", f"seed{seed}")
        acc = 0.5 + ((i * 7) % count) / (2 * count)
        write_text(os.path.join(run, "config.yaml"), yaml.safe_dump(config), T0 + i * 60)
        start = T0 + i * 60
        write_events(os.path.join(run, "val"), {"acc": [0.1, acc], "loss": [1.0, 1 - acc]}, start)
        write_events(os.path.join(run, "train"), {"loss": [1.0, 0.9 - acc]}, start)
        accuracy[f"lr{lr}/seed{seed}"] = acc
    return accuracy


def _table_cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runsmon", "table", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=dict(os.environ, COLUMNS=str(columns)),
    )


def test_80_columns_show_differing_hparams_and_metrics(tmp_path):
    root = str(tmp_path / "sweep")
    _sweep(root)
    done = _table_cli(root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    head = lines[0].split()
    # The swept hparams and the metrics are columns, before anything else.
    assert head[:2] == ["run", "status"] and head[2:4] == ["lr", "seed"], head
    assert {"val#acc", "val#loss", "train#loss"} <= set(head), head
    # Constant hparams are one line (wrapped) under the table, with their values.
    start = next(i for i, line in enumerate(lines) if line.startswith("constant: "))
    constant = " ".join(lines[start:]).split("constant: ", 1)[1]
    for item in ("data.augment=true", "epochs=10", "model.name=resnet", "optimizer=adam"):
        assert item in constant, constant
    assert not any(h in head for h in ("epochs", "model.name", "optimizer"))
    assert len(lines[2:start]) == 12
    # Run names: the part of the path that tells runs apart.
    assert sorted(line.split()[0] for line in lines[2:start]) == sorted(_sweep_names())


def _sweep_names() -> list[str]:
    return [f"lr{lr}_seed{i // 3}" for i, lr in enumerate([0.1, 0.01, 0.001] * 4)]


def test_the_not_shown_line_is_never_cut(tmp_path):
    root = str(tmp_path / "runs")
    for i in range(3):
        config = {f"long_hparam_name_{k:02d}": i * k for k in range(1, 9)}
        write_text(os.path.join(root, f"r{i}", "config.yaml"), yaml.safe_dump(config), T0)
        write_events(os.path.join(root, f"r{i}"), {"loss": [1.0, 0.5]}, T0)
    for width in (40, 80):
        done = _table_cli(root, columns=width)
        lines = done.stdout.splitlines()
        assert all(len(line) <= width for line in lines), lines
        start = next(i for i, line in enumerate(lines) if line.startswith("(+"))
        note = " ".join(" ".join(lines[start:]).split())
        assert note.endswith("; --format csv shows all)"), note
        assert "…" not in note, note
        left = note.split(": ", 1)[1].split(";")[0].replace(",", " ").split()
        shown = lines[0].split()
        assert sorted(left + shown) == sorted(
            [
                "run",
                "status",
                "loss",
                "time",
                *(f"long_hparam_name_{k:02d}" for k in range(1, 9)),
            ]
        ), (left, shown)


def test_sort_applies_before_limit(tmp_path):
    root = str(tmp_path / "sweep")
    accuracy = _sweep(root)
    best = sorted(accuracy, key=accuracy.get, reverse=True)[:3]
    done = _table_cli(root, "--sort", "-val#acc", "--limit", "3", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["id"] for r in rows] == best
    assert [r["metrics"]["val#acc"] for r in rows] == pytest.approx(
        sorted(accuracy.values(), reverse=True)[:3]
    )
    # Without --sort, --limit keeps the newest runs, shown oldest first.
    done = _table_cli(root, "--limit", "2", "--format", "json")
    newest = [f"lr{lr}/seed3" for lr in (0.01, 0.001)]
    assert [r["id"] for r in json.loads(done.stdout)] == newest


@pytest.mark.slow
def test_output_format_follows_the_extension(tmp_path):
    root = str(tmp_path / "runs")
    yaml_experiment.make(root)
    for name, check in (
        ("runs.csv", lambda text: list(csv.DictReader(io.StringIO(text)))[0]["run"] == "run-a"),
        ("runs.JSON", lambda text: json.loads(text)[0]["id"] == "run-a"),
        ("runs.txt", lambda text: text.splitlines()[0].split()[:2] == ["run", "status"]),
    ):
        out = tmp_path / name
        done = _table_cli(root, "-o", str(out))
        assert done.returncode == 0 and done.stdout == "", done.stderr
        assert check(out.read_text()), (name, out.read_text())
    # An explicit --format wins over the extension.
    out = tmp_path / "table.csv"
    assert _table_cli(root, "-o", str(out), "--format", "json").returncode == 0
    assert json.loads(out.read_text())[1]["id"] == "run-b"


def test_two_paths_with_the_same_runs_are_all_listed(tmp_path):
    paths = [str(tmp_path / "a" / "exp"), str(tmp_path / "b" / "exp"), str(tmp_path / "other")]
    for path in paths:
        yaml_experiment.make(path)
    done = _table_cli(*paths, "--format", "csv", columns=200)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    names = [r["run"] for r in csv.DictReader(io.StringIO(done.stdout))]
    assert sorted(names) == sorted(
        f"{p} {r}" for p in ("a_exp", "b_exp", "other") for r in ("run-a", "run-b")
    )

"""MLflowRuns on a file store written as MLflow writes it."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from runsmon.run import COMPLETED, ERROR, TERMINATED, ScalarPoint
from runsmon.sources import detect_kind, detect_source
from runsmon.sources.mlflow import STATUS, MLflowRuns, param_value
from sample_projects.layouts import mlflow_store
from sample_projects.layouts._events import T0, write_text

EXP = mlflow_store.EXPERIMENT_ID
A, B = list(mlflow_store.RUNS)


@pytest.fixture
def store(tmp_path):
    mlflow_store.make(str(tmp_path))
    return tmp_path


def run_dir(store, run_id):
    return os.path.join(store, "mlruns", EXP, run_id)


def test_runs_params_status_times(store):
    runs = {r.id: r for r in MLflowRuns(str(store))()}
    assert set(runs) == {A, B}
    a, b = runs[A], runs[B]
    assert a.flags == {
        "lr": 0.01,
        "epochs": 3,
        "optimizer": "adam",
        "use_bn": True,
        "weight_decay": 1e-05,
        "model/depth": 4,
    }
    assert type(a.flags["epochs"]) is int and type(a.flags["lr"]) is float
    assert a.flags["use_bn"] is True and b.flags["use_bn"] is False
    assert a.status == COMPLETED and b.status == ERROR
    assert a.started == T0 and a.stopped == T0 + 3
    assert b.started == T0 + 60 and b.stopped == T0 + 62
    assert a.label == "bold-fox-42" and a.operation == "demo"
    assert a.attrs["tags"]["mlflow.user"] == "alice"
    assert a.attrs["experiment_id"] == EXP and a.dir == run_dir(store, A)


def test_metrics_as_scalars(store):
    runs = {r.id: r for r in MLflowRuns(str(store / "mlruns"))()}
    points = list(runs[A].scalars())
    assert ScalarPoint("loss", 0.3, 2, T0 + 2) in points
    assert ScalarPoint("val/loss", 0.7, 1, T0 + 1) in points  # nested name, subdirectory file
    assert len(points) == 8
    # Appending a metric line changes the run's fingerprint and what scalars() returns.
    src = MLflowRuns(str(store))
    before = src.fingerprint(run_dir(store, A))
    with open(os.path.join(run_dir(store, A), "metrics", "loss"), "a") as f:
        f.write(f"{int(T0 * 1000) + 3000} 0.25 3\n{int(T0 * 1000)} 0.")  # a torn last line
    assert src.fingerprint(run_dir(store, A)) != before
    assert ScalarPoint("loss", 0.25, 3, T0 + 3) in list(runs[A].scalars())


@pytest.mark.parametrize("code,status", sorted(STATUS.items()))
def test_status_codes(store, code, status):
    meta = os.path.join(run_dir(store, A), "meta.yaml")
    text = Path(meta).read_text().replace("status: 3", f"status: {code}")
    write_text(meta, text)
    [r] = [r for r in MLflowRuns(str(store))() if r.id == A]
    assert r.status == status
    assert (r.stopped is not None) == (status in (COMPLETED, ERROR, TERMINATED))


def test_param_values():
    assert param_value("-3") == -3 and param_value("2.") == 2.0 and param_value(".5") == 0.5
    assert param_value("[1, 2]") == "[1, 2]" and param_value("yes") == "yes"
    assert param_value("nan") != param_value("nan")  # a float NaN; the core shows it as text


def test_deleted_trash_and_non_runs_skipped(store):
    mlruns = store / "mlruns"
    trash = mlruns / ".trash" / "5"
    shutil.copytree(mlruns / EXP, trash)
    meta = os.path.join(run_dir(store, B), "meta.yaml")
    write_text(
        meta, Path(meta).read_text().replace("lifecycle_stage: active", "lifecycle_stage: deleted")
    )
    (mlruns / EXP / "tags").mkdir()
    (mlruns / EXP / "datasets" / "abc").mkdir(parents=True)
    (mlruns / "models").mkdir()
    (mlruns / "notes").mkdir()  # a directory without meta.yaml: no experiment
    assert [r.id for r in MLflowRuns(str(store))()] == [A]


def test_bad_input_warns_once(store, caplog):
    mlruns = store / "mlruns"
    write_text(os.path.join(run_dir(store, B), "meta.yaml"), "status: [\n")
    os.remove(os.path.join(run_dir(store, A), "params", "lr"))
    os.mkfifo(os.path.join(run_dir(store, A), "params", "lr"))
    write_text(os.path.join(run_dir(store, A), "metrics", "acc2"), "garbage\n1 2 3\n")
    write_text(str(mlruns / "9" / "meta.yaml"), "{{{")
    src = MLflowRuns(str(store))
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        runs = src()
        list(runs[0].scalars())
        runs2 = src()
        list(runs2[0].scalars())
    assert [r.id for r in runs] == [A]
    assert "lr" not in runs[0].flags and runs[0].flags["epochs"] == 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages
    assert any("cannot read meta.yaml" in m and B in m for m in messages)
    assert any("metrics/acc2: 1 unreadable line(s) skipped" in m for m in messages)
    shutil.rmtree(mlruns)
    assert src() == []


def test_detection(store, tmp_path):
    assert detect_kind(str(store)) == "mlflow"
    assert detect_kind(str(store / "mlruns")) == "mlflow"
    src = detect_source(str(store), idle_after=5, flags_file="x")
    assert isinstance(src, MLflowRuns) and src.path == str(store / "mlruns")
    assert src.roots() == [str(store / "mlruns")]
    src()
    assert str(store / "mlruns" / EXP) in src.roots()
    # A store renamed: experiments with meta.yaml are enough.
    os.rename(store / "mlruns", tmp_path / "tracking")
    assert detect_kind(str(tmp_path / "tracking")) == "mlflow"


def _logged_points(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar runsmon wrote into ``logdir``."""
    from runsmon.testing import iter_event_files, read_events

    out: dict[str, list[tuple[int, float]]] = {}
    for path in iter_event_files(logdir):
        if "runsmon-scalars" not in path:
            continue
        for event in read_events(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, round(value.simple_value, 6)))
    return out


def test_a_value_appended_to_any_metric_is_written_once_where_it_belongs(store, tmp_path):
    # The file store lists a run's points metric by metric: a value appended
    # to the first one must not shift what is written for the others.
    from runsmon import RunsMonitor

    logdir = str(tmp_path / "logdir")
    monitor = RunsMonitor(logdir, MLflowRuns(str(store)), watch=False)
    monitor.run_once()
    first_metric = sorted(mlflow_store.RUNS[A]["metrics"])[0]
    path = os.path.join(run_dir(store, A), "metrics", *first_metric.split("/"))
    with open(path, "a") as f:
        f.write(f"{int(T0 * 1000) + 9000} 0.125 9\n")
    monitor.run_once()
    run_logdir = os.path.join(logdir, monitor.run_names[A])
    written = _logged_points(run_logdir)
    expected = {
        name: [(k, round(v, 6)) for k, v in enumerate(values)]
        for name, values in mlflow_store.RUNS[A]["metrics"].items()
    }
    expected[first_metric].append((9, 0.125))
    assert written == expected


def test_tags_and_note_and_the_tag_filter(store, capsys):
    from runsmon.cli import main

    tags = os.path.join(run_dir(store, A), "tags")
    with open(os.path.join(tags, "baseline"), "w") as f:
        f.write("")
    with open(os.path.join(tags, "team"), "w") as f:
        f.write("vision")
    with open(os.path.join(tags, "mlflow.note.content"), "w") as f:
        f.write("first try\n")
    source = MLflowRuns(str(store))
    runs = {r.id: r for r in source()}
    assert runs[A].tags == frozenset({"baseline", "team=vision"}) and runs[A].note == "first try"
    assert runs[B].tags == frozenset() and runs[B].note == ""
    # MLflow rewrites a tag's file in place when it is set again: seen.
    with open(os.path.join(tags, "mlflow.note.content"), "w") as f:
        f.write("lr too high?")
    os.utime(os.path.join(tags, "mlflow.note.content"), ns=(1, 1))
    assert {r.id: r for r in source()}[A].note == "lr too high?"
    # --tag selects by tag, or by the key of a KEY=VALUE tag.
    for tag in ("baseline", "team", "team=vision"):
        capsys.readouterr()
        assert main(["table", str(store), "--tag", tag, "--format", "csv"]) == 0
        rows = capsys.readouterr().out.splitlines()[1:]
        assert len(rows) == 1 and ",true," in rows[0], (tag, rows)
    assert main(["table", str(store), "--tag", "v2"]) == 0
    assert capsys.readouterr().out == "no runs\n"

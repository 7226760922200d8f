"""MLflowSQLiteRuns on databases written by MLflow itself (``mlflow.db``, MLflow 3's default).

MLflow runs in child processes (``sample_projects.layouts.mlflow_sqlite``):
this process never imports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runsmon import RunsMonitor
from runsmon.run import COMPLETED, ERROR, RUNNING, TERMINATED
from runsmon.sources import MLflowRuns, detect_kind, detect_source
from runsmon.sources.mlflow_sqlite import MLflowSQLiteRuns, _History, database_path
from runsmon.testing import iter_event_files, read_events
from sample_projects.layouts import mlflow_sqlite
from sample_projects.layouts._events import T0

pytestmark = pytest.mark.skipif(
    not mlflow_sqlite.available(),
    reason="mlflow is not installed: pip install -e '.[test]'",
)

ROOT = Path(__file__).resolve().parent.parent
SHOWN = [
    n for n, spec in mlflow_sqlite.RUNS.items() if spec[3] != "DELETED" and spec[0] != "trashed"
]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One project MLflow wrote, and {run name: run id}."""
    root = tmp_path_factory.mktemp("mlflow-made")
    ids = mlflow_sqlite.make(str(root))
    return root, ids


@pytest.fixture
def project(made, tmp_path):
    """A fresh copy of the project for one test, and {run name: run id}."""
    root, ids = made
    target = tmp_path / "project"
    shutil.copytree(root, target)
    return target, ids


def snapshot(root) -> dict[str, tuple[int, int]]:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(d, name))
            out[os.path.join(d, name)] = (st.st_size, st.st_mtime_ns)
    return out


def by_name(runs):
    return {r.label: r for r in runs}


def logged_points(name):
    """What the generator logged for one run, as (tag, value, step, wall_time)."""
    index = list(mlflow_sqlite.RUNS).index(name)
    metrics = mlflow_sqlite.RUNS[name][2]
    start = T0 + index * 60
    return sorted(
        (key, value, step, start + step)
        for key, values in metrics.items()
        for step, value in enumerate(values)
    )


@pytest.mark.slow
def test_runs_params_status_times(made):
    root, ids = made  # read only: the very project MLflow wrote (artifact paths are absolute)
    src = MLflowSQLiteRuns(str(root))
    runs = by_name(src())
    assert sorted(runs) == sorted(SHOWN)  # the deleted run and the deleted experiment's: gone
    fox, owl, elk, lynx = (runs[n] for n in ("bold-fox", "calm-owl", "quiet-elk", "live-lynx"))
    assert fox.flags == {
        "epochs": 3,
        "lr": 0.01,
        "model/depth": 4,
        "optimizer": "adam",
        "use_bn": True,
    }
    assert type(fox.flags["epochs"]) is int and owl.flags["use_bn"] is False
    assert [r.status for r in (fox, owl, elk, lynx)] == [COMPLETED, ERROR, TERMINATED, RUNNING]
    assert fox.started == T0 and fox.stopped == T0 + 3
    assert owl.started == T0 + 60 and owl.stopped == T0 + 62
    assert lynx.started == T0 + 240 and lynx.stopped is None
    assert {r.operation for r in (fox, owl)} == {"demo"} and elk.operation == "second"
    assert fox.id == ids["bold-fox"] and fox.attrs["tags"]["mlflow.runName"] == "bold-fox"
    # The run's directory: where MLflow put its artifacts, there or not yet.
    assert fox.dir == os.path.join(root, "mlruns", "1", fox.id)
    assert os.path.isfile(os.path.join(fox.dir, "artifacts", "notes.txt"))
    assert owl.dir == os.path.join(root, "mlruns", "1", owl.id) and not os.path.exists(owl.dir)
    assert elk.dir == os.path.join(root, "mlruns", "2", elk.id)


@pytest.mark.slow
def test_metric_histories(project):
    root, _ = project
    runs = by_name(MLflowSQLiteRuns(str(root))())
    for name in SHOWN:
        points = list(runs[name].scalars())
        got = sorted((p.tag, p.value, p.step, p.wall_time) for p in points)
        assert got == logged_points(name), name
        # In the order MLflow inserted them: each metric's steps in order.
        for tag in {p.tag for p in points}:
            steps = [p.step for p in points if p.tag == tag]
            assert steps == sorted(steps)


@pytest.mark.slow
def test_nothing_written_and_an_unchanged_poll_is_cheap(project):
    root, _ = project
    before = snapshot(root)
    src = MLflowSQLiteRuns(str(root))
    runs = src()
    assert src.reads == 1
    statements = []
    src._conn.set_trace_callback(statements.append)
    for _ in range(3):
        assert src() is runs
        assert detect_source(str(root))() is not None
    assert src.reads == 1
    assert statements == ["PRAGMA data_version"] * 3
    assert snapshot(root) == before


LIVE = """
import sys
from mlflow import MlflowClient
client = MlflowClient()
lynx, gnu, t = sys.argv[1], sys.argv[2], int(float(sys.argv[3]) * 1000)
client.log_metric(lynx, "loss", 0.5, t + 1000, 1)
client.log_metric(lynx, "val/loss", 0.9, t + 1000, 1)
client.log_param(lynx, "warmup", "10")
client.set_terminated(lynx, "FINISHED", t + 2000)
client.restore_run(gnu)
exp = client.get_experiment_by_name("second").experiment_id
new = client.create_run(exp, start_time=t + 5000, run_name="new-newt").info.run_id
client.log_batch(new, params=[__import__("mlflow").entities.Param("lr", "0.02")])
client.log_metric(new, "loss", float("nan"), t + 5000, 0)
print(new)
"""


@pytest.mark.slow
def test_live_a_run_ends_a_run_is_restored_and_one_added(project):
    root, ids = project
    src = MLflowSQLiteRuns(str(root))
    first = src()
    lynx_start = T0 + 240
    out = mlflow_sqlite.run_mlflow(
        str(root), LIVE, ids["live-lynx"], ids["gone-gnu"], repr(lynx_start)
    )
    new_id = out.split()[-1]
    statements = []
    src._conn.set_trace_callback(statements.append)
    second = src()
    assert second is not first and src.reads == 2
    runs = by_name(second)
    assert sorted(runs) == sorted([*SHOWN, "gone-gnu", "new-newt"])
    lynx = runs["live-lynx"]
    assert lynx.status == COMPLETED and lynx.stopped == lynx_start + 2
    assert lynx.flags["warmup"] == 10
    points = [(p.tag, p.value, p.step) for p in lynx.scalars()]
    assert points == [("loss", 0.7, 0), ("loss", 0.5, 1), ("val/loss", 0.9, 1)]
    # The restored run comes back with its history; the new one with its NaN.
    assert [(p.tag, p.value) for p in runs["gone-gnu"].scalars()] == [("loss", 9.0)]
    [nan] = list(runs["new-newt"].scalars())
    assert math.isnan(nan.value) and runs["new-newt"].id == new_id
    assert runs["new-newt"].status == RUNNING and runs["new-newt"].flags == {"lr": 0.02}
    # Only the new metric rows were read, and the history of the restored run.
    metric_reads = [s for s in statements if "FROM metrics" in s and "max(rowid)" not in s]
    assert len(metric_reads) == 2, metric_reads
    assert all("rowid" in s for s in metric_reads)
    # Runs that did not change are the very same objects.
    old = by_name(first)
    assert all(runs[n] is old[n] for n in ("bold-fox", "calm-owl", "quiet-elk"))


@pytest.mark.slow
def test_deleting_a_run_and_an_experiment(project):
    root, ids = project
    src = MLflowSQLiteRuns(str(root))
    assert len(src()) == len(SHOWN)
    mlflow_sqlite.run_mlflow(
        str(root),
        "import sys; from mlflow import MlflowClient; c = MlflowClient(); "
        "c.delete_run(sys.argv[1]); c.delete_experiment(c.get_experiment_by_name('second')"
        ".experiment_id)",
        ids["bold-fox"],
    )
    assert sorted(r.label for r in src()) == ["calm-owl"]


@pytest.mark.slow
def test_wal_mode_creates_no_files(project):
    """A database in WAL mode: no -wal or -shm made; a writer's are left as they were."""
    root, ids = project
    db = str(root / "mlflow.db")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode=wal").fetchone() == ("wal",)
    conn.close()
    assert not os.path.exists(db + "-wal")
    before = snapshot(root)
    src = MLflowSQLiteRuns(db)
    assert sorted(r.label for r in src()) == sorted(SHOWN)
    assert snapshot(root) == before  # immutable: no -wal, no -shm
    # A writer at work keeps its -wal and -shm; runsmon reads through them.
    writer = sqlite3.connect(db)
    writer.execute("SELECT count(*) FROM runs").fetchone()
    assert os.path.exists(db + "-wal") and os.path.exists(db + "-shm")
    mlflow_sqlite.run_mlflow(
        str(root),
        "import sys; from mlflow import MlflowClient; "
        "MlflowClient().log_metric(sys.argv[1], 'loss', 0.1, 0, 7)",
        ids["live-lynx"],
    )
    lynx = by_name(src())["live-lynx"]
    assert ("loss", 0.1, 7) in [(p.tag, p.value, p.step) for p in lynx.scalars()]
    assert src() is src()  # unchanged: the same list
    writer.close()
    # The writer, last to close, removed its files: runsmon held none open.
    assert not os.path.exists(db + "-wal") and not os.path.exists(db + "-shm")


@pytest.mark.slow
def test_detection(project, tmp_path):
    root, _ = project
    db = str(root / "mlflow.db")
    assert os.path.isdir(root / "mlruns")  # artifacts only: not a file store
    for path in (str(root), db, f"sqlite:///{db}", "sqlite:///" + os.path.relpath(db)):
        assert detect_kind(path) == "mlflow", path
        src = detect_source(path, idle_after=5, flags_file="x")
        assert isinstance(src, MLflowSQLiteRuns) and src.db == db, path
        assert src.roots() == [str(root)]
    assert len(detect_source(str(root))()) == len(SHOWN)
    assert database_path(str(root / "mlruns")) is None
    assert isinstance(detect_source(str(root / "mlruns")), MLflowRuns)
    # A database being created (an empty mlflow.db): MLflow's, with no runs yet.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "mlflow.db").write_bytes(b"")
    assert detect_kind(str(fresh)) == "mlflow"
    assert detect_source(str(fresh))() == []


def test_bad_input_warns_once(tmp_path, caplog):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    garbage = tmp_path / "g" / "mlflow.db"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a database at all" * 100)
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        for src in (MLflowSQLiteRuns(str(other)), MLflowSQLiteRuns(str(garbage))):
            assert src() == [] and src() == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "no table 'runs': not an MLflow database" in messages[0] and str(other) in messages[0]
    assert "cannot read the database" in messages[1] and str(garbage) in messages[1]
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.slow
def test_database_removed_and_made_again(project, made):
    root, _ = project
    src = MLflowSQLiteRuns(str(root))
    assert len(src()) == len(SHOWN)
    os.remove(root / "mlflow.db")
    assert src() == []
    shutil.copy(made[0] / "mlflow.db", root / "mlflow.db")  # a new file (inode)
    assert len(src()) == len(SHOWN)


ADD = """
import sys
from mlflow import MlflowClient
client = MlflowClient()
lynx = sys.argv[1]
exp = client.get_experiment_by_name("demo").experiment_id
new = client.create_run(exp, run_name="late-lark").info.run_id
client.log_param(new, "lr", "0.05")
client.log_metric(new, "loss", 0.4, step=0)
client.set_terminated(new, "FINISHED")
client.log_metric(lynx, "loss", 0.25, step=5)
print(new)
"""


@pytest.mark.slow
def test_monitor_live(project, tmp_path):
    """A run added and a metric appended while the monitor runs reach the logdir."""
    root, ids = project
    logdir = tmp_path / "logdir"
    source = detect_source(str(root))
    # Timed polls are rare: the news must come through the watcher on the database.
    with RunsMonitor(str(logdir), source, interval=30, full_check_interval=600) as monitor:
        names = monitor.run_names
        assert len(names) == len(SHOWN)
        lynx = logdir / names[ids["live-lynx"]]
        new_id = mlflow_sqlite.run_mlflow(str(root), ADD, ids["live-lynx"]).split()[-1]

        def loss_points():
            out = []
            for path in iter_event_files(lynx):
                for event in read_events(path):
                    out += [(event.step, v.tag) for v in event.summary.value if v.tag == "loss"]
            return out

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if new_id in monitor.run_names and (5, "loss") in loss_points():
                break
            time.sleep(0.2)
        assert new_id in monitor.run_names
        assert sorted(loss_points()) == [(0, "loss"), (5, "loss")]
        new = logdir / monitor.run_names[new_id]
        assert any("runsmon-scalars" in p for p in iter_event_files(new))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["directory", "file", "relative uri", "absolute uri"])
def test_cli_takes_the_database_in_every_form(made, form):
    root, ids = made
    db = os.path.join(root, "mlflow.db")
    path = {
        "directory": str(root),
        "file": db,
        "relative uri": "sqlite:///mlflow.db",
        "absolute uri": f"sqlite:///{db}",
    }[form]
    done = subprocess.run(
        [sys.executable, "-m", "runsmon", "table", "--format", "json", path],
        capture_output=True,
        text=True,
        cwd=root,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {ids[n] for n in SHOWN}
    fox = rows[ids["bold-fox"]]
    assert fox["status"] == "completed" and fox["hparams"]["lr"] == 0.01
    assert fox["metrics"]["loss"] == pytest.approx(0.3)


@pytest.mark.slow
def test_monitor_polls_read_scalars_only_of_runs_that_moved(project, tmp_path, monkeypatch):
    """An unchanged poll neither reads the database nor rebuilds any run's scalars."""
    root, ids = project
    calls = []
    points = _History.points
    monkeypatch.setattr(_History, "points", lambda h, n: calls.append(n) or points(h, n))
    source = MLflowSQLiteRuns(str(root))
    monitor = RunsMonitor(str(tmp_path / "logdir"), source, interval=1, full_check_interval=2)
    monitor.sync_changes()
    assert len(calls) == len(SHOWN)
    for _ in range(10):  # five rounds of the safety net: every run re-checked
        stats = monitor.sync_changes(sweep=True)
        assert stats.added == stats.updated == 0
    monitor.run_once()
    assert len(calls) == len(SHOWN) and source.reads == 1
    mlflow_sqlite.run_mlflow(
        str(root),
        "import sys; from mlflow import MlflowClient; "
        "MlflowClient().log_metric(sys.argv[1], 'accuracy', 0.9, 0, 3)",
        ids["bold-fox"],
    )
    monitor.sync_changes(sweep=True)
    assert calls[len(SHOWN) :] == [9] and source.reads == 2
    fox = tmp_path / "logdir" / monitor.run_names[ids["bold-fox"]]
    written = [
        (e.step, v.tag, round(v.simple_value, 6))
        for path in iter_event_files(fox)
        if "runsmon-scalars" in path
        for e in read_events(path)
        for v in e.summary.value
    ]
    assert written.count((3, "accuracy", 0.9)) == 1
    assert len(written) == 9


@pytest.mark.slow
def test_a_locked_database_keeps_the_runs_shown(project, caplog):
    """A writer holding its lock past the busy timeout: one warning, the runs stay, then news."""
    root, ids = project
    src = MLflowSQLiteRuns(str(root))
    src.busy_timeout = 0.2
    assert len(src()) == len(SHOWN)
    writer = sqlite3.connect(root / "mlflow.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute(
        "UPDATE runs SET status = 'FINISHED', end_time = 1 WHERE run_uuid = ?", (ids["live-lynx"],)
    )
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        for _ in range(3):
            assert sorted(r.label for r in src()) == sorted(SHOWN)
    [message] = [r.getMessage() for r in caplog.records]
    assert "database is locked" in message and str(root / "mlflow.db") in message
    writer.execute("COMMIT")
    writer.close()
    assert by_name(src())["live-lynx"].status == COMPLETED


_NOTE = """
import sys
from mlflow import MlflowClient

c = MlflowClient()
c.set_tag(sys.argv[1], "mlflow.note.content", sys.argv[2])
c.set_tag(sys.argv[1], "baseline", "")
"""


@pytest.mark.slow
def test_a_note_edited_in_place_is_seen(project):
    root, ids = project
    src = MLflowSQLiteRuns(str(root))
    mlflow_sqlite.run_mlflow(str(root), _NOTE, ids["bold-fox"], "first try")
    fox = by_name(src())["bold-fox"]
    assert (fox.note, fox.tags) == ("first try", frozenset({"baseline"}))
    # MLflow updates the note's row: no row is added, the run's row is the same.
    mlflow_sqlite.run_mlflow(str(root), _NOTE, ids["bold-fox"], "lr too high?")
    runs = by_name(src())
    assert runs["bold-fox"].note == "lr too high?"
    assert runs["calm-owl"].note == "" and not runs["calm-owl"].tags

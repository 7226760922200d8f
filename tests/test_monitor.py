"""RunsMonitor without TensorBoard: what lands in the logdir, and when."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest
from runs_helpers import session_in, write_scalars

from runsmon import Run, RunsMonitor, sessions
from runsmon.logdir import MANIFEST, Logdir
from runsmon.monitor import END_FILE, SESSION_FILE
from runsmon.report import Reporter


def _make_run(root, run_id, status="completed", flags=None, groups=("", "train")) -> Run:
    run_dir = root / run_id
    for group in groups:
        write_scalars(run_dir / group if group else run_dir, {"loss": [(0, 1.0), (1, 0.5)]})
    return Run(
        run_id,
        str(run_dir),
        flags=flags if flags is not None else {"lr": 0.1},
        status=status,
        started=1_700_000_000.0,
        stopped=1_700_000_010.0 if status == "completed" else None,
        operation="train",
    )


def _files(path) -> list[str]:
    out = []
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), path))
    return sorted(out)


def test_run_once_links_every_event_file_and_writes_a_session(tmp_path):
    run = _make_run(tmp_path / "runs", "r1")
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: [run])
    stats = monitor.run_once()
    assert (stats.runs, stats.added, stats.sessions, stats.ended) == (1, 1, 1, 1)
    name = monitor.run_names["r1"]
    run_dir = tmp_path / "logdir" / name
    links = sorted(
        os.path.relpath(os.path.join(d, f), run_dir)
        for d, _, fs in os.walk(run_dir)
        for f in fs
        if os.path.islink(os.path.join(d, f))
    )
    expected = sorted(
        os.path.relpath(os.path.join(d, f), run.dir) for d, _, fs in os.walk(run.dir) for f in fs
    )
    assert links == expected
    # A run already ended when first seen gets one file with its start and end.
    session = (run_dir / SESSION_FILE).read_bytes()
    assert b"_hparams_/session_start_info" in session
    assert b"_hparams_/session_end_info" in session
    assert not (run_dir / END_FILE).exists()
    for rel in links:
        assert os.path.realpath(run_dir / rel) == os.path.realpath(os.path.join(run.dir, rel))


def test_an_unchanged_second_sync_writes_nothing(tmp_path):
    run = _make_run(tmp_path / "runs", "r1")
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: [run])
    monitor.run_once()
    before = {p: os.lstat(tmp_path / "logdir" / p).st_mtime_ns for p in _files(tmp_path / "logdir")}
    stats = monitor.run_once()
    after = {p: os.lstat(tmp_path / "logdir" / p).st_mtime_ns for p in _files(tmp_path / "logdir")}
    assert (stats.added, stats.sessions, stats.ended, stats.experiment_written) == (0, 0, 0, False)
    assert before == after


def test_a_removed_run_leaves_nothing_behind(tmp_path):
    runs = [_make_run(tmp_path / "runs", "r1"), _make_run(tmp_path / "runs", "r2")]
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs))
    monitor.run_once()
    gone = monitor.run_names["r2"]
    runs.pop()
    monitor.run_once()
    assert not (tmp_path / "logdir" / gone).exists()
    assert monitor.run_names.keys() == {"r1"}


def test_a_running_run_shows_running_then_its_end_in_a_new_directory(tmp_path):
    run = _make_run(tmp_path / "runs", "r1", status="running")
    runs = [run]
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), lambda: list(runs))
    monitor.run_once()
    name = monitor.run_names["r1"]
    assert monitor.run_dirs["r1"] == name
    # "running" goes with the start info, in the file that sorts first.
    assert session_in(logdir / name) == {
        "group": name,
        "hparams": {"lr": 0.1},
        "statuses": ["STATUS_RUNNING"],
        "files": [SESSION_FILE],
    }
    runs[0] = dataclasses.replace(run, status="error", stopped=1_700_000_020.0)
    stats = monitor.run_once()
    assert (stats.ended, stats.rewrites, stats.sessions) == (1, 1, 1)
    twin = monitor.run_dirs["r1"]
    assert twin == name + "~" and monitor.run_names["r1"] == name
    assert not (logdir / name).exists()  # the old generation is gone, whole
    assert session_in(logdir / twin) == {
        "group": name,  # the same row
        "hparams": {"lr": 0.1},
        "statuses": ["STATUS_FAILURE"],
        "files": [SESSION_FILE],
    }
    # It holds all the run shows: every event file linked again.
    assert sorted(_files(logdir / twin)) == sorted([MANIFEST, SESSION_FILE, *_files(run.dir)])
    assert monitor.run_once().rewrites == 0  # and stays put


def test_a_run_whose_status_is_a_guess_from_idleness_gets_an_end_file(tmp_path):
    """Runs whose source records no status (DirRuns) show no end info while active."""
    run = _make_run(tmp_path / "runs", "r1", status="running")
    run = dataclasses.replace(run, attrs={"status_rule": "idle"})
    runs = [run]
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs))
    monitor.run_once()
    run_dir = tmp_path / "logdir" / monitor.run_names["r1"]
    assert session_in(run_dir)["statuses"] == []
    runs[0] = dataclasses.replace(run, status="completed", stopped=1_700_000_020.0)
    stats = monitor.run_once()
    assert (stats.ended, stats.rewrites) == (1, 0)
    assert (run_dir / END_FILE).is_file()
    assert session_in(run_dir)["statuses"] == ["STATUS_SUCCESS"]
    # Active again: the end info must go, in a new generation with none.
    runs[0] = dataclasses.replace(run, status="running")
    assert monitor.run_once().rewrites == 1
    assert not run_dir.exists()
    assert session_in(tmp_path / "logdir" / monitor.run_dirs["r1"])["statuses"] == []


def test_a_restarted_monitor_converges_without_rewriting(tmp_path):
    runs = [_make_run(tmp_path / "runs", f"r{i}") for i in range(3)]
    RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs)).run_once()
    snapshot = {
        p: os.lstat(tmp_path / "logdir" / p).st_mtime_ns for p in _files(tmp_path / "logdir")
    }
    runs.pop()
    again = RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs))
    stats = again.run_once()
    assert stats.sessions == 0  # sessions already there are kept
    left = _files(tmp_path / "logdir")
    assert len([p for p in left if p.endswith(MANIFEST)]) == 2
    for p in left:
        if p in snapshot and "experiment" not in p:
            assert os.lstat(tmp_path / "logdir" / p).st_mtime_ns == snapshot[p]


def test_a_half_written_run_from_a_killed_monitor_is_completed(tmp_path):
    run = _make_run(tmp_path / "runs", "r1")
    logdir = Logdir(str(tmp_path / "logdir"))
    manifest = logdir.create_run("r1", "partial")
    manifest.state.session = "claimed but never written"
    logdir.save_manifest(manifest)
    (tmp_path / "logdir" / ".runsmon-tmp-abc").write_bytes(b"half")
    monitor = RunsMonitor(logdir, lambda: [run], run_name_cb=lambda r: "partial")
    stats = monitor.run_once()
    assert stats.sessions == 1
    assert (tmp_path / "logdir" / "partial" / SESSION_FILE).is_file()
    assert not (tmp_path / "logdir" / ".runsmon-tmp-abc").exists()


def test_a_changed_session_is_rewritten_at_once_in_a_new_directory(tmp_path):
    run = _make_run(tmp_path / "runs", "r1", status="running")
    runs = [run]
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), lambda: list(runs))
    monitor.run_once()
    name = monitor.run_names["r1"]
    runs[0] = dataclasses.replace(run, flags={"lr": 0.2})
    stats = monitor.run_once()
    assert (stats.rewrites, stats.sessions) == (1, 1)
    assert os.listdir(logdir / (name + "~")) and not (logdir / name).exists()
    assert session_in(logdir / (name + "~"))["hparams"] == {"lr": 0.2}
    # Again at once: the home name was left too lately to be taken again
    # (TensorBoard may still hold the old run under it).
    runs[0] = dataclasses.replace(run, flags={"lr": 0.3})
    assert monitor.run_once().rewrites == 1
    assert monitor.run_dirs["r1"] == name + "~2"
    assert sorted(os.listdir(logdir)) == sorted([".runsmon", name + "~2", *_experiment(logdir)])
    session = session_in(logdir / (name + "~2"))
    assert (session["group"], session["hparams"]) == (name, {"lr": 0.3})
    # Once it was left long enough, a run goes home again.
    monitor.writer.vacated = sessions.Vacated(reuse_after=0.0)
    runs[0] = dataclasses.replace(run, flags={"lr": 0.4})
    assert monitor.run_once().rewrites == 1
    assert monitor.run_dirs["r1"] == name
    assert session_in(logdir / name)["hparams"] == {"lr": 0.4}
    assert not (logdir / (name + "~2")).exists()


def _experiment(logdir) -> list[str]:
    return [n for n in os.listdir(logdir) if n.startswith(".runsmon-experiment-")]


def test_a_run_that_ended_runs_again_shows_running(tmp_path):
    run = _make_run(tmp_path / "runs", "r1")
    runs = [run]
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), lambda: list(runs))
    monitor.run_once()
    name = monitor.run_names["r1"]
    assert session_in(logdir / name)["statuses"] == ["STATUS_SUCCESS"]
    runs[0] = dataclasses.replace(run, status="running", stopped=None)
    assert monitor.run_once().rewrites == 1
    assert session_in(logdir / (name + "~"))["statuses"] == ["STATUS_RUNNING"]


def test_a_rewrite_keeps_other_runs_off_the_second_name(tmp_path):
    """A run's second directory is its own: no other run is given that name."""
    a = _make_run(tmp_path / "runs", "a", status="running")
    runs = [a]
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), lambda: list(runs), run_name_cb=lambda r: r.label or "x")
    monitor.run_once()
    runs[0] = dataclasses.replace(a, status="completed", stopped=1_700_000_010.0)
    monitor.run_once()
    assert monitor.run_dirs["a"] == "x~"
    b = dataclasses.replace(_make_run(tmp_path / "runs", "b"), label="x~")
    runs.append(b)
    monitor.run_once()
    assert monitor.run_names["b"] not in ("x", "x~")
    assert monitor.run_names["b"].startswith("x~ (")
    assert session_in(logdir / "x~")["group"] == "x"


def test_the_deprecated_reset_delay_is_taken_as_the_handover_delay(tmp_path):
    with pytest.warns(DeprecationWarning, match="reset_delay"):
        monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: [], reset_delay=3.0)
    assert monitor.handover_delay == 3.0


@pytest.mark.slow  # waits out the handover
def test_a_large_run_keeps_its_old_directory_until_the_handover(tmp_path):
    """TensorBoard's data server shows a new directory only once it has read all
    of it: a run with large event files keeps the old one a while beside it."""
    run = _make_run(tmp_path / "runs", "r1", status="running")
    big = {"loss": [(i, 1.0 / (i + 1)) for i in range(60_000)]}  # ~1.4 MB
    write_scalars(os.path.join(run.dir, "val"), big)
    runs = [run]
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), lambda: list(runs), interval=5.0, handover_delay=0.5)
    monitor.run_once()
    name = monitor.run_names["r1"]
    runs[0] = dataclasses.replace(run, status="completed", stopped=1_700_000_010.0)
    t0 = time.monotonic()
    assert monitor.run_once().rewrites == 1
    twin = monitor.run_dirs["r1"]
    # Both whole, the same row: the old one still shows it while the new is read.
    assert session_in(logdir / name)["statuses"] == ["STATUS_RUNNING"]
    assert session_in(logdir / twin)["statuses"] == ["STATUS_SUCCESS"]
    assert sorted(_files(logdir / twin)) == sorted([MANIFEST, SESSION_FILE, *_files(run.dir)])
    assert 0.3 < monitor._next_wait() <= 0.52  # the loop wakes for it
    monitor.run_once()
    assert (logdir / name).exists() or time.monotonic() - t0 >= 0.5
    time.sleep(max(0.0, t0 + 0.55 - time.monotonic()))
    monitor.run_once()
    assert not (logdir / name).exists() and (logdir / twin).is_dir()
    assert monitor._next_wait() == 5.0
    # A restart that finds both (a kill during the handover) keeps the new one.
    runs[0] = dataclasses.replace(runs[0], flags={"lr": 0.2})
    monitor.run_once()
    assert len([n for n in os.listdir(logdir) if not n.startswith(".")]) == 2
    again = RunsMonitor(str(logdir), lambda: list(runs))
    again.run_once()
    (left,) = [n for n in os.listdir(logdir) if not n.startswith(".")]
    assert left == monitor.run_dirs["r1"] == again.run_dirs["r1"]
    assert session_in(logdir / left)["hparams"] == {"lr": 0.2}


def test_a_run_listed_twice_is_shown_once_with_one_warning(tmp_path, caplog):
    run = _make_run(tmp_path / "runs", "r1")
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: [run, run])
    monitor.run_once()
    monitor.run_once()
    assert len(monitor.run_names) == 1
    assert len([r for r in caplog.records if "listed twice" in r.getMessage()]) == 1


def test_a_failing_callback_keeps_the_logdir(tmp_path, caplog):
    run = _make_run(tmp_path / "runs", "r1")
    state = {"fail": False}

    def runs():
        if state["fail"]:
            raise RuntimeError("database is locked")
        return [run]

    monitor = RunsMonitor(str(tmp_path / "logdir"), runs)
    monitor.run_once()
    state["fail"] = True
    monitor.run_once()
    monitor.run_once()
    assert monitor.run_names.keys() == {"r1"}
    warnings = [r.getMessage() for r in caplog.records if "database is locked" in r.getMessage()]
    assert len(warnings) == 1 and "run listing failed" in warnings[0]


def test_a_hanging_callback_is_time_limited(tmp_path, caplog):
    release = threading.Event()
    monitor = RunsMonitor(
        str(tmp_path / "logdir"), lambda: release.wait(30) and [], callback_timeout=0.2
    )
    t0 = time.monotonic()
    monitor.run_once()
    assert time.monotonic() - t0 < 2
    assert any("did not answer" in r.getMessage() for r in caplog.records)
    release.set()


def test_start_stop_is_quick_and_leaves_no_thread(tmp_path):
    run = _make_run(tmp_path / "runs", "r1")
    before = set(threading.enumerate())
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: [run], interval=30)
    monitor.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    monitor.stop()
    assert time.monotonic() - t0 < 2
    time.sleep(0.1)
    assert {t for t in threading.enumerate() if t.is_alive()} - before == set()


def test_a_new_run_appears_while_the_monitor_runs(tmp_path):
    runs = [_make_run(tmp_path / "runs", "r1")]
    with RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs), interval=0.2) as monitor:
        runs.append(_make_run(tmp_path / "runs", "r2"))
        deadline = time.monotonic() + 5
        while "r2" not in monitor.run_names and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "r2" in monitor.run_names
        assert (tmp_path / "logdir" / monitor.run_names["r2"] / SESSION_FILE).exists() or (
            time.sleep(0.5)
            or (tmp_path / "logdir" / monitor.run_names["r2"] / SESSION_FILE).exists()
        )


def test_warnings_are_not_repeated_every_poll(tmp_path):
    reporter = Reporter()
    assert reporter.warn("run", "cause", "message") is True
    assert reporter.warn("run", "cause", "message") is False
    reporter.clear("run")
    assert reporter.warn("run", "cause", "message") is True


@pytest.mark.parametrize("bad", [None, "not a run", 3])
def test_non_run_items_from_a_callback_are_ignored(tmp_path, bad):
    run = _make_run(tmp_path / "runs", "r1")
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: [run, bad])
    assert monitor.run_once().runs == 1


class _Killed(BaseException):
    """A kill -9 at this point: nothing after it runs."""


def _kill_at(obj, attr, after=0, before=None):
    """Make ``obj.attr`` raise :class:`_Killed` on its call number ``after + 1``
    (running ``before(*args)`` first, the part that got done)."""
    real = getattr(obj, attr)
    calls = {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            if before is not None:
                before(*args)
            raise _Killed
        return real(*args, **kwargs)

    setattr(obj, attr, patched)


def _rewritten_after_restart(tmp_path, run, runs, name):
    logdir = tmp_path / "logdir"
    again = RunsMonitor(str(logdir), lambda: list(runs))
    again.run_once()
    dirs = [n for n in os.listdir(logdir) if not n.startswith(".")]
    assert dirs == [again.run_dirs["r1"]]  # one directory: nothing stray, nothing half
    session = session_in(logdir / dirs[0])
    assert (session["group"], session["hparams"]) == (name, {"lr": 0.2})
    assert sorted(_files(logdir / dirs[0])) == sorted([MANIFEST, SESSION_FILE, *_files(run.dir)])
    assert again.run_once().rewrites == 0
    return dirs[0]


def test_a_kill_while_a_new_generation_is_made_keeps_the_old_one(tmp_path):
    run = _make_run(tmp_path / "runs", "r1", status="running")
    runs = [run]
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs))
    monitor.run_once()
    name = monitor.run_names["r1"]
    runs[0] = dataclasses.replace(run, flags={"lr": 0.2})
    _kill_at(monitor.logdir, "link", after=1)  # session written, one link of three made
    with pytest.raises(_Killed):
        monitor.run_once()
    assert sorted(os.listdir(tmp_path / "logdir" / (name + "~"))) != []
    assert session_in(tmp_path / "logdir" / name)["hparams"] == {"lr": 0.1}
    _rewritten_after_restart(tmp_path, run, runs, name)


def test_a_kill_while_the_old_generation_is_deleted_keeps_the_new_one(tmp_path):
    run = _make_run(tmp_path / "runs", "r1", status="running")
    runs = [run]
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs))
    monitor.run_once()
    name = monitor.run_names["r1"]
    runs[0] = dataclasses.replace(run, flags={"lr": 0.2})

    def half_deleted(manifest):
        for rel in manifest.links:
            os.unlink(tmp_path / "logdir" / manifest.name / rel)

    _kill_at(monitor.logdir, "remove_run", before=half_deleted)
    with pytest.raises(_Killed):
        monitor.run_once()
    assert (tmp_path / "logdir" / name / MANIFEST).is_file()
    assert _rewritten_after_restart(tmp_path, run, runs, name) == name + "~"

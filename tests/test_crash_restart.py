"""kill -9 in the middle of a first sync, restart, converge; SIGTERM/SIGINT exit cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from guild_fake import end_status_of, event_bytes, logdir_runs, session_of
from tb import TensorBoardProcess, live_group_members, poll
from tensorboard.summary.writer.record_writer import RecordWriter

from runsmon.logdir import MANIFEST, MARKER, TMP_PREFIX
from runsmon.monitor import END_FILE, SESSION_FILE

RUNS = 2000
ROOT = str(Path(__file__).resolve().parent.parent)


def _make_runs(runs_dir: Path, count: int) -> dict[str, float]:
    """``count`` completed Guild runs written directly; run id -> its lr flag."""
    out = {}
    for i in range(count):
        run_id = f"{i:08x}" + "c" * 24
        lr = i / count
        guild = runs_dir / run_id / ".guild"
        attrs = guild / "attrs"
        attrs.mkdir(parents=True)
        started = (1_700_000_000 + i) * 1_000_000
        for name, text in (
            ("id", run_id),
            ("flags", f"i: {i}\nlr: {lr!r}\n"),
            ("label", "''"),
            ("started", str(started)),
            ("stopped", str(started + 60_000_000)),
            ("exit_status", "0"),
        ):
            (attrs / name).write_text(text + "\n")
        (guild / "opref").write_text("script:/projects/demo '' '' train.py")
        with open(guild / f"events.out.tfevents.{1_700_000_000 + i}.host.1.0", "wb") as f:
            writer = RecordWriter(f)
            for data in event_bytes({"loss": [(0, 1.0), (1, lr)]}, wall_time=1_700_000_000.0):
                writer.write(data)
        out[run_id] = lr
    return out


def _serve(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", "--interval", "1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _count_dirs(logdir: Path) -> int:
    try:
        return sum(1 for e in os.scandir(logdir) if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def _converged(logdir: Path, runs: dict[str, float]) -> bool:
    names = logdir_runs(logdir)
    if set(names) != set(runs) or len(set(names.values())) != len(runs):
        return False
    return all(end_status_of(logdir / n) is not None for n in names.values())


@pytest.mark.tb
def test_kill_9_mid_first_sync_then_restart_converges(tmp_path: Path) -> None:
    runs_dir, logdir = tmp_path / "runs", tmp_path / "logdir"
    runs = _make_runs(runs_dir, RUNS)
    logdir.mkdir()
    with TensorBoardProcess(logdir, load_fast=True) as tb:
        first = _serve("--no-tensorboard", "-q", "--logdir", str(logdir), str(runs_dir))
        try:
            poll(lambda: _count_dirs(logdir), lambda n: n >= 100, timeout=60, interval=0.005)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
            first.communicate()
        assert first.returncode == -signal.SIGKILL
        half = _count_dirs(logdir)
        print(f"killed with {half} of {RUNS} run directories made")
        assert 0 < half < RUNS or not _converged(logdir, runs), "the kill came too late"

        second = _serve("--no-tensorboard", "-q", "--logdir", str(logdir), str(runs_dir))
        try:
            poll(lambda: _converged(logdir, runs), bool, timeout=90, interval=0.2)
            tb.wait_for(
                lambda n: n == RUNS,
                fetch=lambda: tb.session_groups(slice_size=1)["totalSize"],
                timeout=90,
                what=f"{RUNS} session groups",
            )
            groups = tb.session_groups(tb.dashboard_filters(), slice_size=RUNS + 10)
            assert groups["totalSize"] == RUNS
            table = {g["name"]: g for g in groups["sessionGroups"]}
            assert len(table) == RUNS
            t0 = time.monotonic()
            second.send_signal(signal.SIGTERM)
            second.wait(5)
            assert time.monotonic() - t0 < 2.0
            assert second.returncode == 0
        finally:
            if second.poll() is None:
                second.kill()
            _, err = second.communicate()
        assert "Traceback" not in err
    names = logdir_runs(logdir)
    assert sorted(table) == sorted(names.values())  # every run once
    # Exactly the right content: one directory per run, nothing stray or half.
    top = sorted(os.listdir(logdir))
    assert top[0] == MARKER and top[1].startswith(".runsmon-experiment-")
    assert sorted(top[2:]) == sorted(names.values()) and len(top) == RUNS + 2
    for run_id, name in names.items():
        entries = set(os.listdir(logdir / name))
        link = f"events.out.tfevents.{1_700_000_000 + int(run_id[:8], 16)}.host.1.0"
        # The end info has a file of its own, or shares the session's.
        assert entries - {END_FILE} == {MANIFEST, SESSION_FILE, link}, entries
        assert os.path.islink(logdir / name / link)
        assert session_of(logdir / name) == pytest.approx(
            {"lr": runs[run_id], "i": int(run_id[:8], 16)}
        )
        assert end_status_of(logdir / name) == "STATUS_SUCCESS"
    for dirpath, _dirs, files in os.walk(logdir):
        assert not any(f.startswith(TMP_PREFIX) for f in files), dirpath
    row = table[names["00000007" + "c" * 24]]
    metrics = {m["name"]["tag"]: m["value"] for m in row["metricValues"]}
    assert metrics["loss"] == pytest.approx(7 / RUNS)
    assert row["hparams"] == pytest.approx({"lr": 7 / RUNS, "i": 7})


def _summary_logdir(line: str) -> str:
    m = re.search(r"; logdir (.+)$", line.strip())
    assert m, line
    return m.group(1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(
    "with_tb",
    [False, pytest.param(True, marks=pytest.mark.tb)],
    ids=["no-tensorboard", "tensorboard"],
)
def test_a_signal_stops_serve_within_2_s(tmp_path: Path, sig: int, with_tb: bool) -> None:
    runs_dir = tmp_path / "runs"
    _make_runs(runs_dir, 20)
    args = ["--port", "0"] if with_tb else ["--no-tensorboard"]
    proc = _serve(*args, str(runs_dir))
    ready = "TensorBoard at" if with_tb else "in step (Ctrl-C to stop)"
    lines = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if ready in line:
                break
        assert any(ready in line for line in lines), lines
        logdir = _summary_logdir(next(line for line in lines if "; logdir " in line))
        assert os.path.isdir(logdir)
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.wait(5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert elapsed < 2.0, elapsed
    assert not os.path.exists(logdir), "the temporary logdir was left behind"
    assert live_group_members(proc.pid) == []  # no process left in its group
    assert "Traceback" not in err
    assert tree_unchanged(runs_dir)


def tree_unchanged(runs_dir: Path) -> bool:
    """Nothing but what ``_make_runs`` wrote is in the runs directory."""
    known = {"id", "flags", "label", "started", "stopped", "exit_status", "opref"}
    for _dirpath, _dirs, files in os.walk(runs_dir):
        if any(name not in known and "tfevents" not in name for name in files):
            return False
    return True


def test_stop_leaves_no_thread_behind(tmp_path: Path) -> None:
    import threading

    from runsmon import RunsMonitor
    from runsmon.sources.guild import GuildRuns

    runs_dir = tmp_path / "runs"
    _make_runs(runs_dir, 5)
    before = set(threading.enumerate())
    monitor = RunsMonitor(str(tmp_path / "logdir"), GuildRuns(str(runs_dir)), interval=0.1)
    monitor.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    monitor.stop()
    assert time.monotonic() - t0 < 2.0
    left = poll(
        lambda: [t for t in threading.enumerate() if t not in before and t.is_alive()],
        lambda ts: not ts,
        timeout=5,
        interval=0.05,
        what="no thread left",
    )
    assert left == []


def test_an_empty_run_directory_left_by_a_kill_is_taken_again(tmp_path: Path) -> None:
    """A kill between a run directory's mkdir and its manifest leaves it empty."""
    from runsmon import RunsMonitor
    from runsmon.sources.guild import GuildRuns

    runs_dir, logdir = tmp_path / "runs", tmp_path / "logdir"
    runs = _make_runs(runs_dir, 3)
    RunsMonitor(str(logdir), GuildRuns(str(runs_dir)), watch=False).run_once()
    names = logdir_runs(logdir)
    victim = logdir / names["00000001" + "c" * 24]
    for entry in os.listdir(victim):
        os.unlink(victim / entry)
    RunsMonitor(str(logdir), GuildRuns(str(runs_dir)), watch=False).run_once()
    assert logdir_runs(logdir) == names
    assert sorted(os.listdir(logdir))[2:] == sorted(names.values())
    assert _converged(logdir, runs)


def _rewritten(logdir: Path, runs: dict[str, float]) -> bool:
    """Every run once, its session holding lr as text (the column turned to text)."""
    names = logdir_runs(logdir)  # asserts that no run has two directories
    if set(names) != set(runs):
        return False
    dirs = [e.name for e in os.scandir(logdir) if not e.name.startswith(".")]
    if sorted(dirs) != sorted(names.values()):
        return False
    return all(isinstance((session_of(logdir / n) or {}).get("lr"), str) for n in names.values())


class _Brief(dict):
    """A dashboard table that prints as its size and a few odd rows."""

    def __repr__(self) -> str:
        odd = [n for n, r in self.items() if not isinstance(r["hparams"].get("lr"), str)]
        return f"<{len(self)} rows; lr not text in {odd[:5]}>"


@pytest.mark.tb
def test_kill_9_mid_rewrite_then_restart_keeps_one_whole_directory_per_run(
    tmp_path: Path,
) -> None:
    """A value of another kind rewrites every session (two directories per run
    for a moment); kill -9 in the middle; a restart keeps one whole directory
    per run under its row's name, and TensorBoard shows every run once."""
    count = 1000
    runs_dir, logdir = tmp_path / "runs", tmp_path / "logdir"
    runs = _make_runs(runs_dir, count)
    logdir.mkdir()
    first = _serve("--no-tensorboard", "-q", "--logdir", str(logdir), str(runs_dir))
    try:
        poll(lambda: _converged(logdir, runs), bool, timeout=90, interval=0.1)
        rows = {name for name in logdir_runs(logdir).values()}
        # One more run whose lr is text: every session is written anew.
        odd = "ffffffff" + "d" * 24
        attrs = runs_dir / odd / ".guild" / "attrs"
        attrs.mkdir(parents=True)
        for name, text in (("flags", "i: -1\nlr: zero\n"), ("label", "''"),
                           ("started", "1700000000000000"), ("stopped", "1700000060000000"),
                           ("exit_status", "0")):  # fmt: skip
            (attrs / name).write_text(text + "\n")
        (runs_dir / odd / ".guild" / "opref").write_text("script:/projects/demo '' '' train.py")

        def twins() -> int:
            return sum(1 for e in os.scandir(logdir) if e.name.endswith("~"))

        poll(twins, lambda n: n >= 20, timeout=60, interval=0.002)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    done = twins()
    print(f"killed with {done} of {count} runs rewritten")
    assert done < count, "the kill came too late"
    runs[odd] = -1.0
    with TensorBoardProcess(logdir, load_fast=True) as tb:
        second = _serve("--no-tensorboard", "-q", "--logdir", str(logdir), str(runs_dir))
        try:
            poll(lambda: _rewritten(logdir, runs), bool, timeout=90, interval=0.2)
            table = tb.wait_for(
                lambda t: (
                    len(t) == count + 1
                    and all(isinstance(r["hparams"].get("lr"), str) for r in t.values())
                ),
                timeout=60,
                fetch=lambda: _Brief(
                    (g["name"], g) for g in tb.session_groups(slice_size=2 * count)["sessionGroups"]
                ),
                what="every run once, lr as text",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(10)
            _, err = second.communicate()
        assert "Traceback" not in err
    names = logdir_runs(logdir)
    assert rows <= set(table) and len(table) == count + 1  # each row under its own name
    for run_id, name in names.items():
        if run_id != odd:
            assert end_status_of(logdir / name) == "STATUS_SUCCESS"
            assert re.sub(r"~\d*$", "", name) in rows  # its home name, or that and "~"
    for dirpath, _dirs, files in os.walk(logdir):
        assert not any(f.startswith(TMP_PREFIX) for f in files), dirpath

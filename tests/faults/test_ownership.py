"""Logdir ownership: only a marked logdir is runsmon's, deletion stays inside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from guild_fake import logdir_runs

from faults.conftest import FAULT_ID, Faults, tree_state
from runsmon.logdir import MANIFEST, MARKER


def _serve_once(logdir: str, runs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runsmon", "serve", "--once", "--no-tensorboard", "-q",
         "--logdir", logdir, runs],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_foreign_non_empty_directory_is_refused_with_a_clear_message(faults: Faults) -> None:
    foreign = faults.tmp_path / "foreign"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    before = tree_state(foreign)
    proc = _serve_once(str(foreign), str(faults.runs_dir))
    assert proc.returncode == 1
    assert "is not empty and was not made by runsmon" in proc.stderr
    assert "nothing was changed" in proc.stderr and "Traceback" not in proc.stderr
    assert tree_state(foreign) == before


def test_a_symlinked_logdir_is_refused(faults: Faults) -> None:
    real = faults.tmp_path / "real"
    real.mkdir()
    os.symlink(real, faults.tmp_path / "link")
    proc = _serve_once(str(faults.tmp_path / "link"), str(faults.runs_dir))
    assert proc.returncode == 1 and "is a symlink" in proc.stderr
    assert os.listdir(real) == []


def test_the_marker_is_what_makes_a_logdir_runsmons(faults: Faults) -> None:
    faults.add()
    proc = _serve_once(str(faults.logdir), str(faults.runs_dir))
    assert proc.returncode == 0, proc.stderr
    assert (faults.logdir / MARKER).is_file() and len(logdir_runs(faults.logdir)) == 3
    proc = _serve_once(str(faults.logdir), str(faults.runs_dir))  # marked: reused
    assert proc.returncode == 0, proc.stderr
    assert len(logdir_runs(faults.logdir)) == 3


def test_a_logdir_that_lost_its_marker_while_running_is_left_alone(faults: Faults) -> None:
    monitor = faults.sync()
    os.remove(faults.logdir / MARKER)
    before = tree_state(faults.logdir)
    faults.add()
    faults.snapshot()
    faults.sync(monitor)
    assert tree_state(faults.logdir) == before
    warnings = faults.warnings()
    assert len(warnings) == 1 and "lost its runsmon marker" in warnings[0], warnings


def test_a_run_directory_swapped_for_a_symlink_is_not_followed(faults: Faults) -> None:
    faults.add()
    monitor = faults.sync()
    name = logdir_runs(faults.logdir)[FAULT_ID]
    precious = faults.tmp_path / "precious"
    precious.mkdir()
    (precious / "events.out.tfevents.0000000000.runsmon-session").write_bytes(b"keep")
    (precious / MANIFEST).write_text("keep")
    os.rename(faults.logdir / name, faults.tmp_path / "moved")
    os.symlink(precious, faults.logdir / name)
    before = tree_state(precious)
    # The run goes: runsmon deletes what it made there, never through the link.
    import shutil

    shutil.rmtree(faults.fault_dir)
    faults.snapshot()
    faults.sync(monitor)
    assert tree_state(precious) == before
    assert FAULT_ID not in monitor.run_names
    assert "Traceback" not in faults.caplog.text


def test_a_manifest_naming_paths_outside_the_logdir_deletes_nothing_there(faults: Faults) -> None:
    outside = faults.tmp_path / "outside.txt"
    outside.write_text("keep")
    faults.add()
    faults.sync()
    name = logdir_runs(faults.logdir)[FAULT_ID]
    path = faults.logdir / name / MANIFEST
    data = json.loads(path.read_text())
    data["files"].append("../../outside.txt")
    data["links"]["../../outside.txt"] = str(outside)
    data["dirs"].append("../..")
    path.write_text(json.dumps(data))
    import shutil

    shutil.rmtree(faults.fault_dir)
    faults.snapshot()
    faults.sync(faults.monitor())  # a restart: the manifest is read back, the run is gone
    assert outside.read_text() == "keep"
    assert faults.logdir.is_dir() and (faults.logdir / MARKER).is_file()
    assert "Traceback" not in faults.caplog.text


def test_a_users_file_in_a_run_directory_survives_the_run(faults: Faults) -> None:
    faults.add()
    monitor = faults.sync()
    name = logdir_runs(faults.logdir)[FAULT_ID]
    note = faults.logdir / name / "my-notes.txt"
    note.write_text("keep")
    import shutil

    shutil.rmtree(faults.fault_dir)
    faults.snapshot()
    faults.sync(monitor)
    assert note.read_text() == "keep"
    assert sorted(os.listdir(faults.logdir / name)) == ["my-notes.txt"]


def test_a_link_target_is_never_deleted(faults: Faults) -> None:
    faults.add()
    monitor = faults.sync()
    before = tree_state(faults.fault_dir)
    # The run's directory is renamed away: its run goes, its links are unlinked.
    os.rename(faults.fault_dir, faults.tmp_path / "kept")
    faults.sync(monitor)
    assert tree_state(faults.tmp_path / "kept") == before
    assert FAULT_ID not in logdir_runs(faults.logdir)

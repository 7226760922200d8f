"""Logdir ownership: runsmon deletes only what it wrote, never via a symlink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from guild_fake import logdir_runs, make_guild_run

from runsmon import RunsMonitor
from runsmon.logdir import MANIFEST, MARKER, UNSET, Logdir, LogdirError, Manifest, RunRecord
from runsmon.sources.guild import GuildRuns


def test_new_and_empty_directories_are_claimed(tmp_path):
    Logdir(str(tmp_path / "new"))
    assert (tmp_path / "new" / MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    Logdir(str(empty))
    assert (empty / MARKER).is_file()


def test_a_foreign_non_empty_directory_is_refused_untouched(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(LogdirError, match="not empty and was not made by runsmon"):
        Logdir(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


def test_a_marked_directory_is_reused(tmp_path):
    Logdir(str(tmp_path))
    (tmp_path / "other").mkdir()
    Logdir(str(tmp_path))  # no error: it is runsmon's


def test_remove_run_deletes_only_what_the_manifest_lists(tmp_path):
    source = tmp_path / "run"
    source.mkdir()
    event = source / "events.out.tfevents.1.host"
    event.write_bytes(b"data")
    logdir = Logdir(str(tmp_path / "logdir"))
    manifest = logdir.create_run("id1", "run one")
    logdir.link(manifest, "train/events.out.tfevents.1.host", str(event))
    logdir.write_file(manifest, "events.out.tfevents.0.session", b"x")
    stranger = tmp_path / "logdir" / "run one" / "train" / "notes.txt"
    stranger.write_text("a user's file")
    logdir.remove_run(manifest)
    assert stranger.read_text() == "a user's file"  # not runsmon's: kept
    assert not (tmp_path / "logdir" / "run one" / MANIFEST).exists()
    assert not (tmp_path / "logdir" / "run one" / "events.out.tfevents.0.session").exists()
    assert event.read_bytes() == b"data"  # the link went, never its target


def test_a_symlinked_directory_is_never_followed_when_deleting(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "events.out.tfevents.1").write_bytes(b"keep")
    logdir = Logdir(str(tmp_path / "logdir"))
    manifest = logdir.create_run("id1", "r")
    # Someone replaces a directory runsmon made with a link to elsewhere.
    os.symlink(precious, tmp_path / "logdir" / "r" / "train")
    manifest.dirs.append("train")
    manifest.files.append("train/events.out.tfevents.1")
    logdir.remove_run(manifest)
    assert (precious / "events.out.tfevents.1").read_bytes() == b"keep"


def test_paths_outside_the_logdir_are_refused(tmp_path):
    logdir = Logdir(str(tmp_path / "logdir"))
    manifest = logdir.create_run("id1", "r")
    manifest.files.append("../../outside")
    (tmp_path / "outside").write_text("x")
    with pytest.raises(LogdirError):
        logdir.remove_run(manifest)
    assert (tmp_path / "outside").read_text() == "x"


def test_atomic_write_leaves_no_half_file_when_the_write_fails(tmp_path, monkeypatch):
    logdir = Logdir(str(tmp_path / "logdir"))
    manifest = logdir.create_run("id1", "r")
    logdir.write_file(manifest, "f", b"old")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        logdir.write_file(manifest, "f", b"new contents")
    monkeypatch.undo()
    assert (tmp_path / "logdir" / "r" / "f").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path / "logdir" / "r")) == [MANIFEST, "f"]


def test_manifests_are_read_back(tmp_path):
    logdir = Logdir(str(tmp_path))
    manifest = logdir.create_run("id1", "r1")
    manifest.state.session = "abc"
    logdir.save_manifest(manifest)
    (tmp_path / "foreign").mkdir()
    found = list(Logdir(str(tmp_path)).manifests())
    assert [(m.run_id, m.name, m.state) for m in found] == [("id1", "r1", RunRecord(session="abc"))]


def test_a_manifest_of_an_earlier_version_reads_and_writes_back_the_same(tmp_path):
    # The "state" of a manifest as earlier versions wrote it (a plain dict).
    state = {
        "wanted": "a1b2c3d4 train",
        "group": "a1b2c3d4 train",
        "gen": 2,
        "session": "0f" * 20,
        "end": "completed",
        "end_file": "events.out.tfevents.9999999999.runsmon-end",
        "stopped": None,
        "synth_metrics": [["loss", ""], ["acc", "val"]],
        "scalars": {"": {"loss": 3}, "val": {"acc": 2}},
        "filtered": {"events.out.tfevents.1.host": 120},
        "later": {"kept": True},  # a key of a later version
    }
    text = json.dumps({"runsmon": 1, "id": "id1", "name": "a1b2c3d4 train~", "state": state})
    manifest = Manifest.from_json(text)
    record = manifest.state
    assert (record.asked, record.gen, record.end, record.stopped) == (
        "a1b2c3d4 train",
        2,
        "completed",
        None,
    )
    assert record.synth_metrics == [["loss", ""], ["acc", "val"]]
    assert json.loads(manifest.to_json())["state"] == state
    # A record with nothing set writes nothing: an earlier version reads its defaults.
    assert json.loads(Manifest("id2", "r").to_json())["state"] == {}
    assert RunRecord.from_dict({"building": True}).building
    assert RunRecord.from_dict({}).stopped is UNSET


def test_temporary_logdir_is_destroyed_without_touching_link_targets(tmp_path):
    target = tmp_path / "events.out.tfevents.1"
    target.write_bytes(b"keep")
    logdir = Logdir.create_temporary()
    manifest = logdir.create_run("id", "r")
    logdir.link(manifest, "events.out.tfevents.1", str(target))
    logdir.destroy()
    assert not os.path.exists(logdir.path)
    assert target.read_bytes() == b"keep"


def test_a_run_directory_a_kill_left_with_a_half_manifest_is_taken_again(tmp_path):
    logdir = Logdir(str(tmp_path))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".runsmon-tmp-x1y2").write_bytes(b'{"runsmon": 1, "id"')
    manifest = logdir.create_run("id1", "r")
    assert sorted(os.listdir(tmp_path / "r")) == [MANIFEST]
    assert manifest.run_id == "id1"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("a user's")
    with pytest.raises(FileExistsError):
        logdir.create_run("id2", "taken")


def test_a_restart_removes_directories_a_kill_left_before_their_manifest(tmp_path):
    """mkdir, then a kill before (or while) the manifest is written: nothing of
    anyone's is there, so the directory goes; anything else stays."""
    logdir = Logdir(str(tmp_path))
    (tmp_path / "empty~").mkdir()
    (tmp_path / "half~2").mkdir()
    (tmp_path / "half~2" / ".runsmon-tmp-1-2").write_bytes(b'{"runsmon": 1')
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("a user's")
    kept = logdir.create_run("id1", "kept")
    (tmp_path / "kept" / ".runsmon-tmp-1-3").write_bytes(b"half")
    logdir.clean_tmp()
    assert sorted(os.listdir(tmp_path)) == sorted([MARKER, "kept", "theirs"])
    assert os.listdir(tmp_path / "kept") == [MANIFEST] and kept.name == "kept"
    assert os.listdir(tmp_path / "theirs") == ["notes.txt"]


def test_planned_directories_are_named_before_they_exist(tmp_path):
    logdir = Logdir(str(tmp_path))
    manifest = logdir.create_run("id1", "r")
    logdir.plan_parents(manifest, ["train/a/events.out.tfevents.1", "val/events.out.tfevents.1"])
    assert sorted(manifest.dirs) == ["train", "train/a", "val"]
    assert not (tmp_path / "r" / "train").exists()
    logdir.make_parents(manifest, ["train/a/events.out.tfevents.1", "val/events.out.tfevents.1"])
    assert (tmp_path / "r" / "train" / "a").is_dir() and sorted(manifest.dirs) == [
        "train",
        "train/a",
        "val",
    ]


def test_a_fresh_run_directory_is_filled_without_looking_and_falls_back_when_taken(tmp_path):
    logdir = Logdir(str(tmp_path / "logdir"))
    manifest = logdir.create_run("id1", "r")
    rels = ["train/a/events.out.tfevents.1", "events.out.tfevents.1"]
    logdir.plan_parents(manifest, rels, fresh=True)
    logdir.make_parents(manifest, rels, fresh=True)
    assert sorted(manifest.dirs) == ["train", "train/a"]
    target = tmp_path / "run" / "events.out.tfevents.1"
    for rel in rels:
        assert logdir.link(manifest, rel, str(target), fresh=True) is False
        assert os.readlink(tmp_path / "logdir" / "r" / rel) == str(target)
    # Something already there (not what runsmon thought): the careful way.
    other = tmp_path / "other" / "events.out.tfevents.1"
    assert logdir.link(manifest, rels[1], str(other), fresh=True) is False
    assert os.readlink(tmp_path / "logdir" / "r" / rels[1]) == str(other)
    assert manifest.links == {rels[0]: str(target), rels[1]: str(other)}
    logdir.make_parents(manifest, rels, fresh=True)  # made already: no error


def test_atomic_write_writes_everything_when_the_os_takes_it_in_parts(tmp_path, monkeypatch):
    logdir = Logdir(str(tmp_path / "logdir"))
    manifest = logdir.create_run("id1", "r")
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:7])))
    logdir.write_file(manifest, "f", bytes(range(256)) * 4)
    monkeypatch.undo()
    assert (tmp_path / "logdir" / "r" / "f").read_bytes() == bytes(range(256)) * 4


def test_temporary_logdirs_go_to_memory_unless_tmpdir_is_set(tmp_path, monkeypatch):
    from runsmon.logdir import temporary_root

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert temporary_root() == str(runtime)
    logdir = Logdir.create_temporary()
    assert os.path.dirname(logdir.path) == str(runtime)
    logdir.destroy()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert temporary_root() == ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert temporary_root() is None  # the user's choice wins


# -- one process at a time ------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``root`` (links not followed): kind, size, mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
            out[os.path.relpath(path, root)] = (kind, st.st_size, st.st_mtime_ns)
    return out


def _runs(root: Path, ids: list[str]) -> Path:
    for run_id in ids:
        make_guild_run(root, run_id=run_id)
    return root


def _first_serving(tmp_path: Path, logdir: Path, runs: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", "--no-tensorboard", "--interval", "0.2",
         "--logdir", str(logdir), str(runs)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=(tmp_path / "first.err").open("w"), text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "in step" in line:
            return proc
    raise AssertionError(f"the first runsmon did not start: {(tmp_path / 'first.err').read_text()}")


@pytest.mark.slow
def test_a_second_process_is_refused_naming_the_first_and_touches_nothing(tmp_path):
    logdir = tmp_path / "logdir"
    mine = _runs(tmp_path / "mine", ["a" * 32, "b" * 32])
    other = _runs(tmp_path / "other", ["c" * 32])  # would replace the first's runs
    first = _first_serving(tmp_path, logdir, mine)
    try:
        before = _tree(logdir)
        assert len(logdir_runs(logdir)) == 2
        second = subprocess.run(
            [sys.executable, "-m", "runsmon", "serve", "--once", "--no-tensorboard",
             "--logdir", str(logdir), str(other)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1, second
        assert second.stdout == ""
        lines = second.stderr.splitlines()
        assert len(lines) == 1, second.stderr
        assert f"logdir {logdir} is in use by another runsmon (pid {first.pid}: " in lines[0]
        assert "runsmon serve --no-tensorboard" in lines[0]
        assert _tree(logdir) == before
        # An embedding program gets a clear error, not a logdir half replaced.
        with pytest.raises(LogdirError, match=f"in use by another runsmon \\(pid {first.pid}"):
            RunsMonitor(str(logdir), GuildRuns(str(other)))
        assert _tree(logdir) == before
    finally:
        first.kill()  # SIGKILL: no chance to let go of anything
        first.wait()
    # The system dropped the lock with the process: the logdir is free again.
    done = subprocess.run(
        [sys.executable, "-m", "runsmon", "serve", "--once", "--no-tensorboard", "-q",
         "--logdir", str(logdir), str(other)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(logdir_runs(logdir)) == ["c" * 32]


def test_logdirs_of_one_process_share_its_lock(tmp_path):
    first = Logdir(str(tmp_path))
    second = Logdir(str(tmp_path))  # a monitor made again in the same process
    first.release()
    second.release()
    Logdir(str(tmp_path))


def test_locking_writes_nothing(tmp_path):
    Logdir(str(tmp_path)).release()
    before = (tmp_path / MARKER).read_bytes(), (tmp_path / MARKER).stat().st_mtime_ns
    Logdir(str(tmp_path))
    after = (tmp_path / MARKER).read_bytes(), (tmp_path / MARKER).stat().st_mtime_ns
    assert after == before and os.listdir(tmp_path) == [MARKER]

"""GuildRuns: real Guild 0.9 runs (a committed fixture), status rules, bad input."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runsmon.fs import LOCAL, LocalFileSystem
from runsmon.report import Reporter
from runsmon.run import COMPLETED, ERROR, PENDING, RUNNING, STAGED, TERMINATED
from runsmon.sources.guild import (
    GuildRuns,
    _top_keys,
    format_operation,
    load_yaml,
    parse_opref,
    pid_alive,
)

FIXTURE = Path(__file__).parent / "data" / "guild-0.9" / "runs"

# What Guild 0.9 itself says about the fixture runs (guild.run.Run, run_util.format_operation):
# id -> (status, operation, label, started µs, stopped µs, exit_status, user_flags)
GUILD_SAYS = {
    "15e87c1c30c94d2393df9464df64ba89": (
        STAGED,
        "train.py",
        "dropout=yes epochs=3 fail=no layers='64 32' lr=0.5 optimizer=adam",
        1795916750002402,
        None,
        None,
        {"lr"},
    ),
    "26effe2971a14e1d9084794f3bcc3295": (
        COMPLETED,
        "train.py",
        "best try/1",
        1795916748347731,
        1795916748649753,
        0,
        {"dropout", "epochs", "lr", "optimizer"},
    ),
    "4aff439cb4964799add1d84159cebe01": (
        ERROR,
        "train.py",
        "dropout=yes epochs=3 fail=yes layers='64 32' lr=0.1 optimizer=adam",
        1795916749422783,
        1795916749707054,
        3,
        {"fail"},
    ),
    "5daef5b6ee8b4896a3e76cb82989f2c3": (
        COMPLETED,
        "train.py",
        "dropout=yes epochs=3 fail=no layers='64 32' lr=0.1 optimizer=adam",
        1795916747164338,
        1795916747643913,
        0,
        {"lr"},
    ),
    "85f0798d7e554e27b5c91e090a44c34c": (
        COMPLETED,
        "mnist:train+",
        "",
        1795916920900603,
        1795916922508210,
        0,
        set(),
    ),
    "93cbb034b8464e739c91d7dbba4d5c0a": (
        ERROR,  # killed -9: LOCK left behind naming a dead pid
        "mnist:sleepy",
        "running-one",
        1795916929858361,
        None,
        None,
        {"secs"},
    ),
    "aebdc9bbf58840b88c76f8125fbff957": (
        TERMINATED,
        "mnist:sleepy",
        "terminated-one",
        1795916989571376,
        1795916992702450,
        -15,
        {"secs"},
    ),
    "b83a026907c14891bfed9eee66105d5e": (
        COMPLETED,
        "mnist:train",
        "mnist é/ü",
        1795916906880020,
        1795916907115581,
        0,
        set(),
    ),
}


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns)
    return out


# -- the real thing ------------------------------------------------------------


def test_fixture_runs_as_guild_reads_them() -> None:
    runs = {r.id: r for r in GuildRuns(str(FIXTURE))()}
    assert set(runs) == set(GUILD_SAYS)
    for run_id, (status, op, label, started, stopped, exit_status, user) in GUILD_SAYS.items():
        run = runs[run_id]
        if run_id.startswith("93cbb034") and pid_alive(
            int((Path(run.dir) / ".guild/LOCK").read_text())
        ):
            status = RUNNING  # the pid Guild recorded happens to be alive here
        assert run.status == status, run_id
        assert run.operation == op, run_id
        assert run.label == label, run_id
        assert run.started == pytest.approx(started / 1e6, abs=1e-6)
        assert run.stopped == (None if stopped is None else pytest.approx(stopped / 1e6, abs=1e-6))
        assert run.attrs.get("exit_status") == exit_status
        assert run.user_flags == (None if user is None else frozenset(user))
        assert run.dir == str(FIXTURE / run_id)


def test_fixture_flag_values_keep_their_types() -> None:
    runs = {r.short_id: r for r in GuildRuns(str(FIXTURE))()}
    flags = runs["5daef5b6"].flags
    assert flags == {
        "dropout": True,
        "epochs": 3,
        "fail": False,
        "layers": "64 32",  # Guild passes a list default of a script as a string
        "lr": 0.1,
        "optimizer": "adam",
        "seed": None,
    }
    assert [type(flags[k]) for k in ("dropout", "epochs", "lr", "optimizer")] == [
        bool,
        int,
        float,
        str,
    ]
    assert runs["b83a0269"].flags["seed"] == 7
    assert runs["aebdc9bb"].flags == {"secs": 30}
    assert runs["85f0798d"].flags == {}
    assert runs["5daef5b6"].attrs["sourcecode_digest"] == "a358dc7ce001c448b11b2329791206ef"
    assert runs["b83a0269"].attrs["opref"]["pkg_type"] == "guildfile"


def test_fixture_is_never_written(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    shutil.copytree(FIXTURE, runs_dir, symlinks=True)
    before = _tree(runs_dir)
    source = GuildRuns(str(runs_dir), settle=0)
    source()
    source()
    for run_dir in source.list_run_dirs():
        source.read_run(run_dir)
    assert _tree(runs_dir) == before


def test_fixture_reads_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        runs = GuildRuns(str(FIXTURE), settle=0)()
    assert len(runs) == len(GUILD_SAYS)
    assert caplog.records == []


# -- finding runs --------------------------------------------------------------


def make_run(
    runs_dir: Path,
    run_id: str = "3f2a9c1b" + "0" * 24,
    attrs: dict[str, str | bytes] | None = None,
    opref: str | None = "script:/proj '' '' train.py",
    markers: dict[str, str] | None = None,
    age: float = 3600,
) -> Path:
    """A run dir as Guild writes it; ``age`` seconds old (0: just written)."""
    if attrs is None:
        attrs = {
            "flags": "lr: 0.1\nopt: adam\n",
            "started": "1700000000000000\n",
            "stopped": "1700000060500000\n",
            "exit_status": "0\n",
            "label": "lr=0.1\n",
        }
    run = runs_dir / run_id
    (run / ".guild" / "attrs").mkdir(parents=True)
    for name, data in attrs.items():
        path = run / ".guild" / "attrs" / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    if opref is not None:
        (run / ".guild" / "opref").write_text(opref)
    for name, text in (markers or {}).items():
        (run / ".guild" / name).write_text(text)
    if age:
        set_age(run, age)
    return run


def set_age(run: Path, age: float) -> None:
    t = time.time() - age
    for p in [run, *run.rglob("*")]:
        os.utime(p, (t, t), follow_symlinks=False)


def test_home_or_runs_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_run(home / "runs")
    assert [r.short_id for r in GuildRuns(str(home))()] == ["3f2a9c1b"]
    assert [r.short_id for r in GuildRuns(str(home / "runs"))()] == ["3f2a9c1b"]
    assert GuildRuns(str(home)).roots() == [str(home), str(home / "runs")]


def test_home_without_runs_lists_nothing_then_finds_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    source = GuildRuns(str(home))
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        assert source() == []
    assert caplog.records == []
    make_run(home / "runs")
    assert [r.short_id for r in source()] == ["3f2a9c1b"]
    assert source.runs_dir == str(home / "runs")


def test_only_dirs_with_dot_guild_are_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs)
    (runs / "not-a-run").mkdir()
    (runs / "stray.txt").write_text("x")
    make_run(runs, run_id=".deleted-0123")
    (runs / "file-guild").mkdir()
    (runs / "file-guild" / ".guild").write_text("not a dir")
    source = GuildRuns(str(runs))
    assert [os.path.basename(d) for d in source.list_run_dirs()] == ["3f2a9c1b" + "0" * 24]


# -- status rules --------------------------------------------------------------


def read_one(runs: Path, **kw: object) -> object:
    (run,) = GuildRuns(str(runs), **kw)()  # type: ignore[arg-type]
    return run


@pytest.mark.parametrize(
    ("markers", "exit_status", "status"),
    [
        ({}, "0", COMPLETED),
        ({}, "-15", TERMINATED),
        ({}, "1", ERROR),
        ({}, "137", ERROR),
        ({"LOCK.remote": "ec2-host"}, None, RUNNING),
        ({"LOCK.remote": "ec2-host"}, "0", RUNNING),  # LOCK.remote first, as Guild
        ({"PENDING": ""}, None, PENDING),
        ({"STAGED": ""}, None, STAGED),
        ({"PENDING": "", "STAGED": ""}, None, PENDING),
        ({}, None, ERROR),  # no exit status, no LOCK, settled: error
        ({"LOCK": str(os.getpid())}, None, RUNNING),
        ({"LOCK": "not a pid"}, None, ERROR),
        ({"LOCK": "0"}, None, ERROR),
        ({"LOCK": str(os.getpid())}, "0", COMPLETED),  # exit status wins over LOCK
    ],
)
def test_status_rules(
    tmp_path: Path, markers: dict[str, str], exit_status: str | None, status: str
) -> None:
    attrs = {"flags": "{}\n", "started": "1700000000000000\n"}
    if exit_status is not None:
        attrs["exit_status"] = exit_status + "\n"
    make_run(tmp_path, attrs=attrs, markers=markers)
    assert read_one(tmp_path).status == status  # type: ignore[attr-defined]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_with_dead_pid_is_error(tmp_path: Path) -> None:
    make_run(tmp_path, attrs={"flags": "{}\n"}, markers={"LOCK": str(dead_pid())})
    assert read_one(tmp_path).status == ERROR  # type: ignore[attr-defined]


def test_run_killed_with_sigkill_turns_to_error_without_file_change(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = make_run(
            tmp_path,
            attrs={"flags": "lr: 0.1\n", "started": "1700000000000000\n"},
            markers={"LOCK": str(proc.pid)},
        )
        source = GuildRuns(str(tmp_path))
        (first,) = source()
        assert first.status == RUNNING
        assert first.attrs["pid"] == proc.pid
        before = _tree(run)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _tree(run) == before  # nothing changed on disk...
        (second,) = source()
        assert second.status == ERROR  # ...and yet the status moved
    finally:
        proc.kill()
        proc.wait()


def test_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(proc.pid)
        proc.send_signal(signal.SIGKILL)
        deadline = time.time() + 5
        while pid_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.02)
        assert not pid_alive(proc.pid)  # a zombie until reaped, but not alive
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(-1) and not pid_alive(0)


def test_run_being_set_up_is_not_an_error(tmp_path: Path) -> None:
    # Guild writes `started` before the LOCK; for that moment Guild says "error".
    run = make_run(tmp_path, attrs={"flags": "{}\n", "started": "1\n"}, age=0)
    source = GuildRuns(str(tmp_path), settle=3600)
    assert [r.status for r in source()] == [RUNNING]
    (run / ".guild" / "attrs" / "started").unlink()
    assert [r.status for r in source()] == [PENDING]
    settled = GuildRuns(str(tmp_path), settle=0)
    assert [r.status for r in settled()] == [ERROR]


def test_settling_changes_the_fingerprint(tmp_path: Path) -> None:
    run = make_run(tmp_path, attrs={"flags": "{}\n"}, age=0)
    source = GuildRuns(str(tmp_path), settle=30)
    young = source.fingerprint(str(run))
    assert source()[0].status == PENDING
    set_age(run, 60)
    assert source.fingerprint(str(run)) != young
    assert source()[0].status == ERROR


def test_fingerprint_moves_with_attrs_and_only_then(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    source = GuildRuns(str(tmp_path))
    fp = source.fingerprint(str(run))
    assert source.fingerprint(str(run)) == fp
    label = run / ".guild" / "attrs" / "label"
    label.write_text("lr=0.2\n")  # same size, new content
    os.utime(label, ns=(label.stat().st_mtime_ns + 1_000_000,) * 2)
    assert source.fingerprint(str(run)) != fp


def test_source_rereads_changed_run(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    source = GuildRuns(str(tmp_path))
    assert source()[0].label == "lr=0.1"
    label = run / ".guild" / "attrs" / "label"
    label.write_text("a longer label\n")
    assert source()[0].label == "a longer label"


# As Guild 0.9 writes them (`guild tag -a best -a v2`, `guild comment -a`, `guild mark`).
GUILD_TAGS = b"- best\n- v2\n"
GUILD_COMMENTS = b"- body: Looks Good\n  host: vm\n  time: 1796031911613622\n  user: ''\n"
GUILD_MARKED = b"true\n"
BATCH_RUN = "85f0798d7e554e27b5c91e090a44c34c"  # mnist:train+ in the fixture


def test_tags_comments_marked_digest_and_batch(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE, runs, symlinks=True)
    attrs = runs / "aebdc9bbf58840b88c76f8125fbff957" / ".guild" / "attrs"
    (attrs / "tags").write_bytes(GUILD_TAGS)
    (attrs / "comments").write_bytes(GUILD_COMMENTS)
    (attrs / "marked").write_bytes(GUILD_MARKED)
    by_id = {r.id: r for r in GuildRuns(str(runs))()}
    tagged = by_id["aebdc9bbf58840b88c76f8125fbff957"]
    assert tagged.attrs["tags"] == ["best", "v2"] and tagged.attrs["marked"] is True
    assert tagged.attrs["comments"] == [
        {"body": "Looks Good", "host": "vm", "time": 1796031911613622, "user": ""}
    ]
    assert [i for i, r in by_id.items() if r.attrs.get("batch")] == [BATCH_RUN]
    assert by_id[BATCH_RUN].operation == "mnist:train+"
    digest = (runs / "5daef5b6ee8b4896a3e76cb82989f2c3/.guild/attrs/sourcecode_digest").read_text()
    assert by_id["5daef5b6ee8b4896a3e76cb82989f2c3"].attrs["sourcecode_digest"] == digest.strip()


ATTRS_HOME = Path(__file__).parent / "data" / "guild-0.9" / "attrs-home" / "runs"


def test_tags_comments_marked_and_batch_as_guild_wrote_them() -> None:
    """The attributes `guild tag`, `guild mark`, `guild comment` and `guild label`
    wrote (tests/data/make_guild_fixture.sh), and a batch kept with its trials."""
    by_id = {r.id[:8]: r for r in GuildRuns(str(ATTRS_HOME))()}
    tagged, commented = by_id["0014b529"], by_id["84e07190"]
    assert (ATTRS_HOME / tagged.id / ".guild/attrs/tags").read_bytes() == GUILD_TAGS
    assert (ATTRS_HOME / tagged.id / ".guild/attrs/marked").read_bytes() == GUILD_MARKED
    assert tagged.attrs["tags"] == ["best", "v2"] and tagged.attrs["marked"] is True
    assert [c["body"] for c in commented.attrs["comments"]] == ["Looks good"]
    assert commented.attrs["comments"][0]["user"] == "ana"
    assert isinstance(commented.attrs["comments"][0]["time"], int)
    assert commented.label == "tuned lr" and by_id["cd2c2171"].label == "first try"
    assert "marked" not in commented.attrs and "tags" not in commented.attrs
    batch = [r for r in by_id.values() if r.attrs.get("batch")]
    assert [(r.id[:8], r.operation) for r in batch] == [("ab926b11", "train.py+")]


def test_tags_rewritten_in_place_are_read_again(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    source = GuildRuns(str(tmp_path))
    tags = run / ".guild" / "attrs" / "tags"
    tags.write_bytes(b"- aa\n")
    assert source()[0].attrs["tags"] == ["aa"]
    tags.write_bytes(b"- bb\n")  # same size: Guild rewrites the file in place
    os.utime(tags, ns=(tags.stat().st_mtime_ns + 1_000_000,) * 2)
    assert source()[0].attrs["tags"] == ["bb"]
    marked = run / ".guild" / "attrs" / "marked"
    marked.write_bytes(GUILD_MARKED)
    assert source()[0].attrs["marked"] is True
    marked.unlink()  # guild unmark deletes it
    assert "marked" not in source()[0].attrs


def test_times_operation_label_attrs(tmp_path: Path) -> None:
    make_run(tmp_path, opref="guildfile:/p/guild.yml 3926462d mnist train")
    run = read_one(tmp_path)
    assert run.started == 1700000000.0  # type: ignore[attr-defined]
    assert run.stopped == 1700000060.5  # type: ignore[attr-defined]
    assert run.duration == 60.5  # type: ignore[attr-defined]
    assert run.operation == "mnist:train"  # type: ignore[attr-defined]
    assert run.label == "lr=0.1"  # type: ignore[attr-defined]
    assert run.flags == {"lr": 0.1, "opt": "adam"}  # type: ignore[attr-defined]
    assert run.user_flags is None  # type: ignore[attr-defined]


def test_operation_formats() -> None:
    assert format_operation(parse_opref("script:/p '' '' train.py")) == "train.py"
    assert format_operation(parse_opref("guildfile:/p/guild.yml abc '' train")) == "train"
    assert format_operation(parse_opref("package:gpkg.mnist 0.1 mnist train")) == (
        "gpkg.mnist/mnist:train"
    )
    assert format_operation(parse_opref("func:mod '' '' f")) == "f()"
    opref = parse_opref("'script:/path with space' '' '' 'my op.py'")
    assert opref["pkg_name"] == "/path with space" and opref["op_name"] == "my op.py"


@pytest.mark.slow
def test_many_runs_are_read_fast(tmp_path: Path) -> None:
    n = 2000
    template = make_run(tmp_path / "t")
    runs = tmp_path / "runs"
    runs.mkdir()
    for i in range(n):
        shutil.copytree(template, runs / f"{i:032x}")
    source = GuildRuns(str(runs))
    t0 = time.perf_counter()
    got = source()
    elapsed = time.perf_counter() - t0
    assert len(got) == n
    assert elapsed < 6.0, f"{n} runs took {elapsed:.2f}s"  # about 0.3 s here
    t0 = time.perf_counter()
    source()  # nothing changed: stats only
    assert time.perf_counter() - t0 < elapsed


# -- bad input ------------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def good_attrs(**changes: str | bytes | None) -> dict[str, str | bytes]:
    attrs: dict[str, str | bytes | None] = {
        "flags": "lr: 0.1\n",
        "label": "good\n",
        "started": "1700000000000000\n",
        "stopped": "1700000001000000\n",
        "exit_status": "0\n",
    }
    attrs.update(changes)
    return {k: v for k, v in attrs.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "cause", "expect"),
    [
        ({"flags": "lr: [0.1\n"}, "flags: invalid YAML", {"flags": {}}),
        ({"label": b"\x00\xff\xfe\x80garbage"}, "label: not UTF-8 text", {"label": ""}),
        ({"label": "bad\x07bell\n"}, "label: not text", {"label": ""}),
        ({"started": ""}, "started: empty file", {"started": None}),
        ({"flags": "- a\n- b\n"}, "flags: not a mapping (list)", {"flags": {}}),
        ({"flags": "3\n"}, "flags: not a mapping (int)", {"flags": {}}),
        ({"flags": None}, "flags: missing", {"flags": {}, "label": "good"}),
        ({"started": "yesterday\n"}, "started: not a timestamp", {"started": None}),
        ({"exit_status": "oops\n"}, "exit_status: not an integer", {"status": ERROR}),
        ({"user_flags": "7\n"}, "user_flags: not a mapping", {"flags": {"lr": 0.1}}),
    ],
)
def test_bad_attr_still_lists_run_and_warns_once(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, str | bytes | None],
    cause: str,
    expect: dict[str, object],
) -> None:
    make_run(tmp_path, attrs=good_attrs(**changes))
    source = GuildRuns(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        (run,) = source()
        source()
        (again,) = GuildRuns(str(tmp_path), reporter=source.reporter)()
    assert again == run
    (message,) = warnings_of(caplog)
    assert "3f2a9c1b" in message and cause in message
    assert "Traceback" not in caplog.text
    for name, value in expect.items():
        assert getattr(run, name) == value, name


def test_directory_where_a_file_should_be(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path, attrs=good_attrs(flags=None))
    (run / ".guild" / "attrs" / "flags").mkdir()
    set_age(run, 3600)
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        (got,) = GuildRuns(str(tmp_path))()
    assert got.flags == {} and got.label == "good" and got.status == COMPLETED
    (message,) = warnings_of(caplog)
    assert "flags: not a regular file" in message and "3f2a9c1b" in message


def test_attrs_dir_is_a_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path, attrs={})
    (run / ".guild" / "attrs").rmdir()
    (run / ".guild" / "attrs").write_text("?")
    set_age(run, 3600)
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        (got,) = GuildRuns(str(tmp_path))()
    assert got.operation == "train.py"
    (message,) = warnings_of(caplog)
    assert ".guild/attrs: not a directory" in message


def test_bad_opref(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_run(tmp_path, attrs=good_attrs(), opref="script:/p 'unclosed")
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        (got,) = GuildRuns(str(tmp_path))()
    assert got.operation == "" and got.flags == {"lr": 0.1}
    (message,) = warnings_of(caplog)
    assert "opref: invalid opref" in message


def test_missing_opref_warns_but_not_while_pending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_run(tmp_path / "a", attrs=good_attrs(), opref=None)
    make_run(tmp_path / "b", attrs={}, opref=None, markers={"PENDING": ""})
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        assert GuildRuns(str(tmp_path / "b"))()[0].status == PENDING
        assert warnings_of(caplog) == []
        GuildRuns(str(tmp_path / "a"))()
    (message,) = warnings_of(caplog)
    assert "opref: missing" in message


class DenyingFS(LocalFileSystem):
    """The local filesystem, with some files unreadable (tests run as root too)."""

    def __init__(self, denied: set[str]) -> None:
        self.denied = denied

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        if os.path.basename(path) in self.denied:
            raise PermissionError(13, "Permission denied", path)
        return super().read_bytes(path, offset, size)


def test_permission_denied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_run(tmp_path, attrs=good_attrs())
    fs = DenyingFS({"flags", "label"})
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        (got,) = GuildRuns(str(tmp_path), fs=fs)()
    assert got.status == COMPLETED and got.flags == {} and got.label == ""
    (message,) = warnings_of(caplog)
    assert "flags, label: permission denied" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_for_real(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path, attrs=good_attrs())
    flags = run / ".guild" / "attrs" / "flags"
    flags.chmod(0)
    try:
        with caplog.at_level(logging.WARNING, logger="runsmon"):
            (got,) = GuildRuns(str(tmp_path))()
    finally:
        flags.chmod(0o644)
    assert got.flags == {}
    (message,) = warnings_of(caplog)
    assert "flags: permission denied" in message


def test_many_problems_make_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_run(tmp_path, attrs=good_attrs(flags="[", label=b"\xff", started="x\n"))
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        (got,) = GuildRuns(str(tmp_path))()
    assert got.status == COMPLETED
    (message,) = warnings_of(caplog)
    assert "flags: invalid YAML" in message and "label: not UTF-8" in message
    assert "started: not a timestamp" in message


def test_warning_clears_when_fixed_and_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run(tmp_path, attrs=good_attrs(flags="[\n"))
    reporter = Reporter()
    source = GuildRuns(str(tmp_path), reporter=reporter)
    flags = run / ".guild" / "attrs" / "flags"
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        source()
        assert reporter.active()
        flags.write_text("lr: 0.5\n")
        set_age(run, 3600)
        assert source()[0].flags == {"lr": 0.5}
        assert reporter.active() == {}
        flags.write_text("[[\n")
        set_age(run, 1800)
        source()
    assert len(warnings_of(caplog)) == 2


def test_fresh_half_written_attr_is_not_reported_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run(tmp_path, attrs=good_attrs(stopped=""), age=0)
    source = GuildRuns(str(tmp_path), settle=30)
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        assert source()[0].stopped is None
        assert warnings_of(caplog) == []
        set_age(run, 60)  # it stayed empty: now it is a problem
        source()
    (message,) = warnings_of(caplog)
    assert "stopped: empty file" in message


class VanishingFS(LocalFileSystem):
    """Deletes the run directory the first time an attribute is read."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        if self.victim.exists() and path.startswith(str(self.victim)):
            shutil.rmtree(self.victim)
        return super().read_bytes(path, offset, size)


def test_run_vanishing_mid_read_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = make_run(tmp_path, attrs=good_attrs())
    make_run(tmp_path, run_id="7" * 32, attrs=good_attrs())
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        runs = GuildRuns(str(tmp_path), fs=VanishingFS(victim))()
    assert [r.id for r in runs] == ["7" * 32]
    assert len(warnings_of(caplog)) <= 1
    assert "Traceback" not in caplog.text


def test_local_fs_is_the_default() -> None:
    assert GuildRuns(str(FIXTURE)).fs is LOCAL


# -- the fast paths read exactly what YAML reads ----------------------------------

_ALPHABET = "aAbeEfnNoOsStTxyY019 _-.:#'\"[]{},&*!|>%@`=<~é\t"


@given(st.text(alphabet=_ALPHABET, max_size=12))
@settings(max_examples=3000, deadline=None)
def test_load_yaml_agrees_with_yaml(text: str) -> None:
    data = (text + "\n").encode()
    try:
        expected = yaml.safe_load(data.decode())
    except yaml.YAMLError:
        return
    if expected is None:
        return  # empty documents are reported as a problem instead
    assert load_yaml(data) == expected
    assert type(load_yaml(data)) is type(expected)


@pytest.mark.parametrize(
    "text",
    ["yes", "No", "null", "0b101", "0x1f", "1_000", "2024-01-02", "a: b", "face", "3f2a9c1b", "e"],
)
def test_load_yaml_tricky_words(text: str) -> None:
    assert load_yaml(text.encode() + b"\n") == yaml.safe_load(text)


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,8}", fullmatch=True),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
        max_size=5,
    )
)
@settings(max_examples=500, deadline=None)
def test_user_flags_keys_agree_with_yaml(flags: dict[str, object]) -> None:
    from runsmon.testing import encode_yaml

    data = (encode_yaml(flags) + "\n").encode()
    keys = _top_keys(data)
    if keys is not None:
        assert keys == [str(k) for k in yaml.safe_load(data)]


def test_opref_fast_path_agrees_with_shlex() -> None:
    import shlex

    for text in (
        "script:/p '' '' train.py",
        "guildfile:/p/guild.yml 3926462d mnist train",
        "'script:/a b' '' '' 'x y.py'",
        "script:/p 'v' '' t",
        'script:/p "" "" t',
    ):
        words = shlex.split(text)
        opref = parse_opref(text)
        assert [f"{opref['pkg_type']}:{opref['pkg_name']}", *list(opref.values())[2:]] == words

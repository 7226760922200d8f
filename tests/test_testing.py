"""runsmon.testing: Guild-style runs without Guild, and the doctest printers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from runsmon.run import COMPLETED, ERROR
from runsmon.sources.guild import GuildRuns
from runsmon.testing import (
    Project,
    _safe_dump_text,
    encode_flag_arg,
    encode_yaml,
    finish_guild_run,
    ls,
    make_guild_run,
    print_events,
    read_events,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_projects" / "hparam-summaries"
GUILD_FIXTURE = Path(__file__).parent / "data" / "guild-0.9" / "runs"

ARGV_SCRIPT = """\
import json, sys
print(json.dumps(sys.argv[1:]))
"""

TRAIN_SCRIPT = """\
import sys
print("starting")
print("step: 1")
print("loss: 0.5")
print("acc: 0.25 (some note)")
print("step: 2")
print("loss: 0.125")
print("not a scalar: abc")
print("lr: 1e-3")
sys.stdout.flush()
sys.exit(int(sys.argv[sys.argv.index("--code") + 1]) if "--code" in sys.argv else 0)
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    src = tmp_path / "proj"
    src.mkdir()
    (src / "argv.py").write_text(ARGV_SCRIPT)
    (src / "train.py").write_text(TRAIN_SCRIPT)
    return Project(src, runs_dir=str(tmp_path / "runs"))


def test_echo_sample(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    project = Project(SAMPLE, runs_dir=str(tmp_path / "runs"))
    run = project.run("echo.py", {"x_flag": 2.5})
    assert capsys.readouterr().out == "x_metric: 2.5\n"
    assert run.status == COMPLETED
    assert run.flags == {"x_flag": 2.5}
    assert run.label == "x_flag=2.5"
    assert run.operation == "echo.py"
    assert run.user_flags == frozenset({"x_flag"})
    assert run.started is not None and run.stopped is not None
    assert run.started < run.stopped
    default = project.run("echo.py")
    assert capsys.readouterr().out == "x_metric: 1.0\n"
    assert default.flags == {} and default.label == ""
    assert {r.id for r in project.list_runs()} == {run.id, default.id}
    assert [r.id for r in project.runs()] == [run.id, default.id]


def test_flags_as_command_line(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    flags = {"lr": 0.1, "n": 3, "on": True, "off": False, "opt": "adam w", "l": [64, 32]}
    run = project.run("argv.py", {**flags, "seed": None}, label="mine")
    argv = json.loads(capsys.readouterr().out)
    assert argv == [
        "--l", "[64, 32]",
        "--lr", "0.1",
        "--n", "3",
        "--off", "false",
        "--on", "true",
        "--opt", "adam w",
    ]  # fmt: skip
    assert run.flags == {**flags, "seed": None}
    assert run.label == "mine"
    assert [type(run.flags[k]) for k in ("lr", "n", "on", "opt", "l")] == [
        float,
        int,
        bool,
        str,
        list,
    ]


def test_encode_flag_arg() -> None:
    assert encode_flag_arg(1e-5) == "1e-05"
    assert encode_flag_arg({"a": 1}) == "{a: 1}"
    assert encode_flag_arg(None) is None


def test_default_label_like_guild(project: Project) -> None:
    run = project.run("argv.py", {"lr": 0.1, "on": True, "off": False, "l": "64 32", "x": None})
    assert run.label == "l='64 32' lr=0.1 off=no on=yes"


def test_layout_is_guilds(project: Project) -> None:
    run = project.run("train.py", {"lr": 0.1}, quiet=True)
    guild = Path(run.dir) / ".guild"
    ours = {p.name for p in (guild / "attrs").iterdir()}
    real = GUILD_FIXTURE / "5daef5b6ee8b4896a3e76cb82989f2c3" / ".guild"
    theirs = {p.name for p in (real / "attrs").iterdir()}
    assert ours <= theirs
    assert {"id", "flags", "label", "started", "stopped", "exit_status", "cmd"} <= ours
    assert {p.name for p in guild.iterdir() if "tfevents" not in p.name} == {
        "attrs",
        "manifest",
        "opref",
        "output",
        "output.index",
    }
    assert (guild / "attrs" / "id").read_text() == run.id + "\n"
    assert (guild / "attrs" / "flags").read_text() == "lr: 0.1\n"
    assert (guild / "attrs" / "exit_status").read_text() == "0\n"
    assert re.fullmatch(r"\d{16}\n", (guild / "attrs" / "started").read_text())
    assert (guild / "opref").read_text() == f"script:{project.path} '' '' train.py"
    (event_file,) = [p.name for p in guild.iterdir() if "tfevents" in p.name]
    assert re.fullmatch(r"events\.out\.tfevents\.\d{10}\.[^.]+.*\.\d+\.\d+", event_file)
    output = (guild / "output").read_bytes()
    assert output.startswith(b"starting\n")
    assert len((guild / "output.index").read_bytes()) == 9 * output.count(b"\n")
    assert (Path(run.dir) / "train.py").read_text() == TRAIN_SCRIPT
    assert not (guild / "LOCK").exists() and not (guild / "PENDING").exists()


def test_scalars_from_output(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    run = project.run("train.py")
    assert "loss: 0.125" in capsys.readouterr().out
    print_events(Path(run.dir) / ".guild")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("events.out.tfevents.")
    assert lines[1:] == ["  loss 1 0.5", "  acc 1 0.25", "  loss 2 0.125", "  lr 2 0.001"]


def test_failing_run(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    run = project.run("train.py", {"code": 3})
    assert run.status == ERROR
    assert run.attrs["exit_status"] == 3
    assert (Path(run.dir) / ".guild" / "attrs" / "exit_status").read_text() == "3\n"


def test_quiet_and_missing_script(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.run("train.py", quiet=True)
    assert capsys.readouterr().out == ""
    with pytest.raises(FileNotFoundError):
        project.run("nope.py")


def test_default_runs_dir_is_temporary_and_outside_project(tmp_path: Path) -> None:
    before = sorted(os.listdir(SAMPLE))
    project = Project(SAMPLE)
    runs_dir = project.runs_dir
    assert not runs_dir.startswith(str(SAMPLE)) and os.path.isdir(runs_dir)
    project.run("echo.py", quiet=True)
    assert len(os.listdir(runs_dir)) == 1
    assert sorted(os.listdir(SAMPLE)) == before
    del project
    assert not os.path.exists(runs_dir)


def test_ls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("x")
    (root / ".hidden").write_text("x")
    (root / "b" / "deep" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "in-link").symlink_to(root / "a.txt")
    (root / "dir-link").symlink_to(outside)
    (root / "broken").symlink_to(tmp_path / "gone")
    ls(root)
    assert capsys.readouterr().out.splitlines() == [
        ".hidden",
        "a.txt",
        "b/deep/f",
        f"broken -> {tmp_path / 'gone'} (broken)",
        f"dir-link -> {outside}",
        "empty/",
        "in-link -> a.txt",
    ]
    ls(root, hidden=False)
    assert ".hidden" not in capsys.readouterr().out


def write_hparams_file(logdir: Path) -> None:
    writer = EventFileWriter(str(logdir))
    summaries = [
        hp.hparams_config_pb(
            hparams=[
                hp.HParam("lr", hp.RealInterval(0.0, 1.0)),
                hp.HParam("opt", hp.Discrete(["adam", "sgd"])),
                hp.HParam("on", hp.Discrete([True, False])),
            ],
            metrics=[hp.Metric("loss"), hp.Metric("acc", group="eval")],
        ),
        hp.hparams_pb({"lr": 0.1, "opt": "adam", "on": True}, trial_id="3f2a9c1b train"),
    ]
    end = summary_pb2.Summary()
    end.value.add(
        tag="_hparams_/session_end_info",
        metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name="hparams",
                content=hp.plugin_data_pb2.HParamsPluginData(
                    version=0,
                    session_end_info=hp.plugin_data_pb2.SessionEndInfo(
                        status=api_pb2.STATUS_SUCCESS, end_time_secs=1700000000.0
                    ),
                ).SerializeToString(),
            )
        ),
    )
    for summary in [*summaries, end]:
        writer.add_event(event_pb2.Event(wall_time=1.0, summary=summary))
    scalar = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=0.1)])
    writer.add_event(event_pb2.Event(wall_time=2.0, step=7, summary=scalar))
    writer.close()


def test_print_events_hparams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_hparams_file(tmp_path / "run")
    print_events(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"run/events\.out\.tfevents\..+", lines[0])
    assert lines[1:] == [
        "  _hparams_/experiment hparams: lr:float64[0.0,1.0] opt:string{'adam','sgd'}"
        " on:bool{false,true} metrics: loss eval#acc",
        "  _hparams_/session_start_info group='3f2a9c1b train' lr=0.1 on=true opt='adam'",
        "  _hparams_/session_end_info status=STATUS_SUCCESS",
        "  loss 7 0.1",
    ]
    (file,) = list((tmp_path / "run").iterdir())
    print_events(file, times=True)
    timed = capsys.readouterr().out.splitlines()
    assert timed[2] == "[1.000] _hparams_/session_end_info status=STATUS_SUCCESS end=1700000000.000"
    assert timed[3] == "[2.000] loss 7 0.1"
    assert " start=" in timed[1]


def test_print_events_of_real_guild_run(capsys: pytest.CaptureFixture[str]) -> None:
    print_events(GUILD_FIXTURE / "4aff439cb4964799add1d84159cebe01")
    assert capsys.readouterr().out.splitlines() == [
        ".guild/events.out.tfevents.1795916749.vm.5020.0",
        "  loss 1 0.5",
        "  acc 1 0.9",
        "  loss 2 0.25",
        "  acc 2 0.95",
        "  loss 3 0.1667",
        "  acc 3 0.9666666",
    ]


def test_read_events_ignores_truncated_tail(tmp_path: Path) -> None:
    write_hparams_file(tmp_path)
    (file,) = list(tmp_path.iterdir())
    whole = len(list(read_events(file)))
    data = file.read_bytes()
    file.write_bytes(data[:-5])
    assert len(list(read_events(file))) == whole - 1


# -- one writer of Guild runs -------------------------------------------------------

_PIECES = ["a", "Z", "0", "9", "_", "=", ".", ",", "/", "+", "-", " ", ":", "#", "'", '"', "\n"]
_PIECES += ["yes", "No", "null", "~", "1", "e5", "0x", ": ", " #", "  ", "x" * 40, "é", "[", "&"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
_SCALARS = st.one_of(
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.sampled_from(["yes", "No", "null", "~", "1_000", "0x1f", "1e5", "1.5", "-um", "a  b"]),
)


@settings(max_examples=400, deadline=None)
@given(
    value=st.one_of(
        _SCALARS,
        st.dictionaries(_TEXT, _SCALARS, max_size=4),
        st.lists(_SCALARS, max_size=4),
    )
)
def test_encode_yaml_writes_what_safe_dump_writes(value) -> None:
    """The quick path of encode_yaml gives safe_dump's very text."""
    assert encode_yaml(value) == _safe_dump_text(value)


def test_make_guild_run_is_read_as_written(tmp_path: Path) -> None:
    started = 1_700_000_000.0
    run_dir = make_guild_run(
        tmp_path,
        "a" * 32,
        {"lr": 0.01, "opt": "sgd", "on": True},
        status="error",
        label="lr=0.01 opt=sgd",
        started=started,
        duration=30.0,
        attrs={"cmd": ["python", "-um", "train"], "host": "h"},
        event_files={"train/events.out.tfevents.1.h": b"", "events.out.tfevents.1.h": b""},
    )
    [run] = GuildRuns(str(tmp_path))()
    assert run.dir == run_dir and run.id == "a" * 32
    assert run.flags == {"lr": 0.01, "opt": "sgd", "on": True}
    assert run.status == ERROR and run.label == "lr=0.01 opt=sgd"
    assert run.started == started and run.stopped == started + 30.0
    assert run.operation == "train.py"
    assert os.path.isfile(os.path.join(run_dir, "train", "events.out.tfevents.1.h"))
    with open(os.path.join(run_dir, ".guild", "attrs", "cmd")) as f:
        assert f.read() == "- python\n- -um\n- train\n"
    running = make_guild_run(tmp_path, "b" * 32, status="running", scalars={}, pid=os.getpid())
    assert Path(running, ".guild", "LOCK").read_text() == str(os.getpid())
    finish_guild_run(running, 0, int((started + 5) * 1e6))
    runs = {r.id: r for r in GuildRuns(str(tmp_path))()}
    assert runs["b" * 32].status == COMPLETED and runs["b" * 32].stopped == started + 5
    assert not os.path.exists(os.path.join(running, ".guild", "LOCK"))

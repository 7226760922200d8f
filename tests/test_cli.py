"""The command line, run as users run it: a subprocess, real TensorBoard, real signals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from guild_fake import make_guild_run
from tb import poll, request_json, session_groups_at

from runsmon import demo
from runsmon.cli import Progress, build_parser, main
from runsmon.sources.guild import GuildRuns
from sample_projects.layouts import yaml_experiment
from sample_projects.layouts._events import T0, write_events, write_text

ROOT = Path(__file__).resolve().parent.parent
GUILD_RUNS = ROOT / "tests" / "data" / "guild-0.9" / "runs"


def runsmon(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runsmon", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        **kw,
    )


def session_names(url: str) -> set[str]:
    groups = session_groups_at(url, slice_size=100, timeout=10)["sessionGroups"]
    return {g["name"] for g in groups}


class Serving:
    """``runsmon serve`` in a subprocess, its stderr collected in a file."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.err_path = tmp / "stderr.txt"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runsmon", "serve", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.err_path.open("w"),
            text=True,
            env=dict(os.environ, **(env or {})),
        )
        self.out: list[str] = []

    def read_until(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.out.append(line)
                m = re.search(pattern, line)
                if m:
                    return m
        raise AssertionError(f"no {pattern!r} in {self.out}; stderr: {self.stderr}")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, float]:
        """Send ``sig``; (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return code, time.monotonic() - t0


@contextlib.contextmanager
def serving(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Serving]:
    s = Serving(tmp, list(args), env)
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


# -- help and usage errors -------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"], ["table"], ["demo"]])
def test_help_shows_an_example(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert re.search(r"^  runsmon \w+", out, re.M), out


@pytest.mark.parametrize(
    "args, message",
    [
        (["serve", "--port", "70000"], "not a port number (0-65535)"),
        (["serve", "--interval", "0"], "must be more than 0"),
        (["serve", "-O", "window_title"], "expected NAME=VALUE"),
        (["serve", "--since", "last tuesday"], "not a duration or date"),
        (["serve", "--status", "finished"], "unknown status 'finished'"),
        (["serve", "--source", "comet"], "invalid choice: 'comet'"),
        (["serve", "--hparams", "some"], "invalid choice: 'some'"),
        (["table", "--limit", "0"], "must be 1 or more"),
        (["serve", "--once", "/no/such/runs"], "no such directory: /no/such/runs"),
        (["table", __file__], "not a directory"),
        (["serve", "--run-name-flags", ",", "--once", str(GUILD_RUNS)], "--run-name-flags"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (
            ["serve", "--intervall", "5"],
            "runsmon serve: error: unknown option --intervall; did you mean --interval?",
        ),
        (["table", "--sortt", "x"], "runsmon table: error: unknown option --sortt; did you mean"),
        (["serve", "--run_name_flags=lr"], "did you mean --run-name-flags?"),
        (["serve", "--reload_interval", "2"], "options go as -O reload_interval=VALUE"),
        (["serve", "-O", "logdir=/tmp/x"], "-O logdir: runsmon gives TensorBoard its own logdir"),
        (["serve", "-O", "port=1"], "-O port: use --port"),
        (["serve", "-Fs", "last week"], "invalid RANGE 'last week': unexpected 'week'"),
        (["table", "-F", "lr >"], "invalid filter 'lr >': unexpected end of expression"),
        (["serve", "-S", "cx"], "unrecognized status char 'x'"),
        (["serve", "-Fm", "-Fn"], "not allowed with argument"),
        (["table", "-Fl", "a", "-Fu", str(GUILD_RUNS)], "--label and --unlabeled cannot both"),
        (["table", str(ROOT / "sample_projects"), "1:2"], "RUN 1:2 selects Guild runs"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message):
    done = runsmon(*args)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert lines[0].startswith("runsmon")


def test_foreign_logdir_is_a_runtime_error(tmp_path):
    logdir = tmp_path / "mine"
    logdir.mkdir()
    (logdir / "notes.txt").write_text("keep me")
    done = runsmon("serve", "--once", "--no-tensorboard", "--logdir", str(logdir), str(GUILD_RUNS))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "not empty and was not made by runsmon" in done.stderr
    assert os.listdir(logdir) == ["notes.txt"]


def test_port_in_use_is_a_runtime_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = runsmon("serve", "--port", str(port), "-q", str(GUILD_RUNS))
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port} on 127.0.0.1 is in use" in lines[0]
    assert "--port" in lines[0]


def test_a_bad_host_is_said_to_be_the_host(tmp_path):
    done = runsmon("serve", "--host", "256.1.1.1", "--port", "0", str(GUILD_RUNS))
    assert done.returncode == 2, done
    assert done.stdout == ""  # said before anything else
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--host 256.1.1.1: not a host name or address" in lines[0]
    assert "-O" not in lines[0]


def test_a_busy_port_is_said_before_the_first_sync(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for command in (["serve", str(GUILD_RUNS)], ["demo"]):
            done = runsmon(*command, "--port", str(port))
            assert done.returncode == 1, done
            assert done.stdout == "", done.stdout  # no sync, no summary, no demo runs
            lines = done.stderr.strip().splitlines()
            assert lines == [
                f"runsmon {command[0]}: error: port {port} on 127.0.0.1 is in use; "
                "pick another with --port (0 picks a free one)"
            ]


def test_runs_given_as_the_logdir_are_named_and_left_alone(tmp_path):
    runs = tmp_path / "runs"
    yaml_experiment.make(str(runs))
    before = sorted((str(p), p.stat().st_mtime_ns) for p in runs.rglob("*"))
    env = dict(os.environ, GUILD_HOME=str(tmp_path / "no-guild-home"))
    for extra in ([], ["--once", "--no-tensorboard"]):
        done = runsmon("serve", *extra, "--logdir", str(runs), env=env)
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "--logdir is where runsmon writes its logdir, not the runs" in lines[0]
        assert f"give it as PATH: runsmon serve {runs}" in lines[0]
    assert sorted((str(p), p.stat().st_mtime_ns) for p in runs.rglob("*")) == before


def test_version():
    pyproject = (ROOT / "pyproject.toml").read_text()
    wanted = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    done = runsmon("--version")
    assert done.returncode == 0 and done.stdout == f"runsmon {wanted}\n", done


def test_run_name_flags_no_run_has_are_said_once(tmp_path):
    done = runsmon(
        "serve", "--once", "--no-tensorboard", "--run-name-flags", "lrr,optimizer",
        "--logdir", str(tmp_path / "logdir"), str(GUILD_RUNS),
    )  # fmt: skip
    assert done.returncode == 0, done
    assert done.stderr == "runsmon: --run-name-flags: no run has the flag lrr (did you mean lr?)\n"


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files limit")


@pytest.mark.tb
@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc")
def test_serve_raises_the_open_files_limit_for_tensorboard(tmp_path):
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(hard, 200)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    proc = subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", "--port", "0", "-q", str(GUILD_RUNS)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lower,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "TensorBoard at" in proc.stdout.readline()
        assert _limits(proc.pid) == (hard, hard)
        children = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and f") S {proc.pid} " in _stat(p)
        ]
        for child in children:  # TensorBoard's data server inherits it
            assert _limits(child)[0] == hard
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def _stat(p: Path) -> str:
    try:
        return (p / "stat").read_text()
    except OSError:
        return ""


def test_runs_needing_more_open_files_than_the_hard_limit_are_said_once(tmp_path):
    import resource

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # the 8 runs need about 81

    proc = subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", "--no-tensorboard", "--include-batch",
         "--layout", "linked", str(GUILD_RUNS)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=(tmp_path / "err").open("w"), text=True, preexec_fn=lower,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "in step" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    lines = (tmp_path / "err").read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("runsmon: a TensorBoard on this logdir needs about 81 open files")
    assert "more than the hard limit of 64 here; raise it (as root: ulimit -Hn 81" in lines[0]


def test_auto_layout_goes_compact_past_half_the_limit_and_says_so(tmp_path):
    import resource

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", "--no-tensorboard", "--include-batch",
         str(GUILD_RUNS)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=(tmp_path / "err").open("w"), text=True, preexec_fn=lower,
    )  # fmt: skip
    out = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if "in step" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    said = [line for line in out if "layout" in line]
    assert len(said) == 1 and said[0].startswith("runsmon: layout compact: 8 runs would need")
    assert "more than half the open-file limit of 64" in said[0]
    # Even one file a run is past this limit: one line says what to do.
    lines = (tmp_path / "err").read_text().splitlines()
    assert len(lines) == 1, lines
    assert "more than the hard limit of 64 here; raise it" in lines[0]


@pytest.mark.tb
def test_runs_past_the_open_files_limit_are_served_by_the_python_loader(tmp_path):
    """Today's default loader keeps every event file open: past the limit it
    drops them all and starts over, and the dashboard flips between a few
    runs and none."""
    import resource

    runs = tmp_path / "runs"
    for i in range(50):  # two event files each: a link and the session
        make_guild_run(runs, run_id=f"{i:032x}", flags={"lr": i / 100})

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    proc = subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", "--port", "0", "--layout", "linked",
         str(runs)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=(tmp_path / "err").open("w"), text=True, preexec_fn=lower,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"TensorBoard at (\S+)/#hparams", line)
            if m:
                break
        assert m, (tmp_path / "err").read_text()
        seen = []
        for _ in range(8):
            seen.append(len(session_names(m.group(1))))
            time.sleep(0.5)
        assert seen == [50] * 8
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    lines = (tmp_path / "err").read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "runsmon: these runs need about 175 open files in TensorBoard's fast loader, "
        "more than the hard limit of 100; serving them with its Python loader instead"
    )


@pytest.mark.tb
def test_bad_tensorboard_option_is_one_line(tmp_path):
    done = runsmon("serve", "--port", "0", "-O", "no_such_flag=1", str(GUILD_RUNS))
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorBoard did not start" in lines[0], done.stderr


# -- serving ----------------------------------------------------------------------


@pytest.mark.tb
def test_serve_port_0_follows_runs_and_stops_on_signals(tmp_path):
    runs = tmp_path / "runs"
    yaml_experiment.make(str(runs))
    with serving(
        tmp_path, str(runs), "--port", "0", "-v", "--interval", "0.5", "-O", "window_title=XYZ"
    ) as s:
        summary = s.read_until(
            r"2 runs, 2 sessions, (\d+) hparams, (\d+) metrics in .*logdir (\S+)"
        )
        assert summary.group(1) == "5" and summary.group(2) == "3"  # time, train/loss, val/loss
        logdir = Path(summary.group(3))
        url = s.read_until(r"TensorBoard at (http://127\.0\.0\.1:(\d+))/#hparams").group(1)
        assert not url.endswith(":0") and not url.endswith(":6006")
        # Printed once the HParams data is ready: both runs are there at once.
        assert len(session_names(url)) == 2
        with urllib.request.urlopen(url + "/data/environment") as r:
            assert json.load(r)["window_title"] == "XYZ"  # -O reached TensorBoard
        assert "run added" not in s.stderr  # startup says it in its summary line
        write_text(str(runs / "run-c" / "config.yaml"), yaml.safe_dump({"lr": 0.5}), T0)
        write_events(str(runs / "run-c" / "train"), {"loss": [3.0]}, T0)
        poll(lambda: session_names(url), lambda names: len(names) == 3, timeout=30)
        assert re.search(r"^runsmon: run added: run-c$", s.stderr, re.M), s.stderr
        code, seconds = s.stop(signal.SIGTERM)
    assert code == 0 and seconds < 2.0, (code, seconds, s.stderr)
    assert not logdir.exists()
    assert "Traceback" not in s.stderr


@pytest.mark.tb
def test_a_new_column_says_to_reload_the_page(tmp_path):
    runs = tmp_path / "runs"
    yaml_experiment.make(str(runs))
    with serving(tmp_path, str(runs), "--port", "0", "--interval", "0.5") as s:
        url = s.read_until(r"TensorBoard at (http://\S+)/#hparams").group(1)
        write_text(str(runs / "run-c" / "config.yaml"), yaml.safe_dump({"newflag": 3}), T0)
        write_events(str(runs / "run-c" / "train"), {"loss": [3.0]}, T0)
        poll(
            lambda: request_json(url + "/data/plugin/hparams/experiment", {"experimentName": ""}),
            lambda exp: "newflag" in [h["name"] for h in exp["hparamInfos"]],
            timeout=30,
        )
        poll(lambda: s.stderr, lambda err: "newflag" in err, timeout=10)
        write_text(str(runs / "run-d" / "config.yaml"), yaml.safe_dump({"lr": 0.2}), T0)
        write_events(str(runs / "run-d" / "train"), {"loss": [3.0]}, T0)  # no new column
        poll(lambda: session_names(url), lambda names: len(names) == 4, timeout=30)
        s.stop()
    assert s.stderr == "runsmon: new column newflag: reload the page to see it\n"


@pytest.mark.tb
def test_open_and_sigint(tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(0o755)
    with serving(
        tmp_path, str(GUILD_RUNS), "--port", "0", "--open", "-q", env={"BROWSER": f"{browser} %s"}
    ) as s:
        url = s.read_until(r"TensorBoard at (\S+)").group(1)
        poll(lambda: opened.exists() and opened.read_text().strip(), bool, timeout=10)
        assert opened.read_text().strip() == url
        code, seconds = s.stop(signal.SIGINT)
    assert code == 0 and seconds < 2.0
    assert s.out == [f"runsmon: TensorBoard at {url} (Ctrl-C to stop)\n"]  # -q: the URL only
    assert s.stderr == ""


def test_serve_once_quiet_and_filters(tmp_path):
    logdir = tmp_path / "logdir"
    done = runsmon(
        "serve", "--once", "--no-tensorboard", "-q", "--logdir", str(logdir),
        "--status", "completed", "--run-name-flags", "lr", str(GUILD_RUNS),
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    runs = GuildRuns(str(GUILD_RUNS))()
    batch = [r for r in runs if r.attrs.get("batch")]
    completed = [r for r in runs if r.status == "completed" and not r.attrs.get("batch")]
    names = sorted(p for p in os.listdir(logdir) if not p.startswith("."))
    assert len(names) == len(completed) > 1
    # Guild's batch run (completed too) is left out, as guild tensorboard leaves it out
    assert batch and not any(n.startswith(r.short_id) for r in batch for n in names)
    for run in completed:
        lr = run.hparams().get("lr")
        assert any(
            n.startswith(run.short_id) and (lr is None or n.endswith(f"lr={lr}")) for n in names
        )


def test_source_options(tmp_path):
    runs = tmp_path / "runs"
    write_text(str(runs / "a" / "settings.yaml"), yaml.safe_dump({"depth": 3}), T0)
    write_events(str(runs / "a"), {"loss": [1.0]}, time.time())  # written just now
    table = ("table", str(runs), "--format", "json")
    plain = json.loads(runsmon(*table).stdout)
    assert plain[0]["hparams"] == {} and plain[0]["status"] == "running"
    chosen = json.loads(
        runsmon(*table, "--flags-file", "settings.yaml", "--idle-after", "0.01").stdout
    )
    assert chosen[0]["hparams"] == {"depth": 3} and chosen[0]["status"] == "completed"
    done = runsmon("serve", "--once", "--no-tensorboard", "--source", "dirs", str(GUILD_RUNS))
    assert done.returncode == 0
    assert f"runsmon: reading dirs runs in {GUILD_RUNS}" in done.stdout
    done = runsmon("serve", "--once", "--no-tensorboard", str(GUILD_RUNS))
    assert f"runsmon: reading guild runs in {GUILD_RUNS}" in done.stdout


def test_a_source_that_finds_no_runs_names_the_one_that_would(tmp_path):
    from sample_projects.layouts import mlflow_store

    store = tmp_path / "project"
    mlflow_store.make(str(store))
    done = runsmon("table", "--source", "dirs", str(store), "--format", "json")
    assert done.returncode == 0 and json.loads(done.stdout) == []
    hint = [line for line in done.stderr.splitlines() if "try --source" in line]
    assert hint == [
        f"runsmon: no dirs runs in {store}; this looks like an MLflow store: try --source mlflow"
    ]
    runs = tmp_path / "runs"
    yaml_experiment.make(str(runs))
    done = runsmon("serve", "--once", "--no-tensorboard", "--source", "guild", str(runs))
    assert done.returncode == 0
    assert (
        f"runsmon: no guild runs in {runs}; this looks like a tree of run directories: "
        "try --source dirs" in done.stderr.splitlines()
    )
    # Runs found, or no source that would find any: no hint.
    assert "try --source" not in runsmon("table", "--source", "dirs", str(runs)).stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "try --source" not in runsmon("table", "--source", "guild", str(empty)).stderr


# -- progress ------------------------------------------------------------------------


def test_progress_bar_on_a_terminal(tmp_path):
    """On a TTY: a bar redrawn in place with done/total and a rate, then cleared."""
    main_fd, child_fd = pty.openpty()
    command = ["serve", "--once", "--no-tensorboard", "--include-batch", str(GUILD_RUNS)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runsmon", *command],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=child_fd,
        text=True,
    )
    os.close(child_fd)
    out = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(main_fd)
    text = out.decode()
    total = len(GuildRuns(str(GUILD_RUNS))())
    assert re.search(
        rf"\rrunsmon: \[#+\] {total}/{total} runs  \d+ runs/s", text.replace("\x1b[K", "")
    ), text
    assert text.endswith("\r\x1b[K")  # the bar is gone before the summary
    assert proc.stdout is not None and f"{total} runs, {total} sessions" in proc.stdout.read()


def test_plain_progress_lines_when_not_a_terminal():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, tty=False, every=5.0, clock=lambda: now[0])
    for done in range(0, 1001):
        now[0] = done * 0.02  # 50 runs/s: a line every 5 s
        progress(done, 1000)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "runsmon: read 250 of 1000 runs (50 runs/s)",
        "runsmon: read 500 of 1000 runs (50 runs/s)",
        "runsmon: read 750 of 1000 runs (50 runs/s)",
        "runsmon: read 1000 of 1000 runs (50 runs/s)",
    ]
    progress.finish()
    assert "\r" not in stream.getvalue()


def test_plain_progress_starts_after_some_reading():
    """Listing the runs (or reading back a logdir) first takes no line and no rate."""
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, tty=False, every=5.0, clock=lambda: now[0])
    now[0] = 30.0  # the first run is read after a long listing
    progress(1, 10000)
    assert stream.getvalue() == ""
    now[0] = 35.0
    progress(2001, 10000)
    assert stream.getvalue() == "runsmon: read 2001 of 10000 runs (400 runs/s)\n"


def test_no_progress_when_not_a_terminal_and_quick():
    done = runsmon("serve", "--once", "--no-tensorboard", str(GUILD_RUNS))
    assert done.returncode == 0 and done.stderr == ""
    assert re.search(
        r"^runsmon: \d+ runs, \d+ sessions, \d+ hparams, \d+ metrics in ", done.stdout, re.M
    )


# -- demo ------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_sweep_runs_and_cleans_up():
    with demo.make_demo(running_seconds=3) as sweep:
        runs = {r.label: r for r in GuildRuns(sweep.runs_dir)()}
        assert set(runs) == set(demo.all_runs())
        assert runs["diverges"].status == "error"
        assert runs["long-run"].status == "running"
        assert {r.status for n, r in runs.items() if n not in ("diverges", "long-run")} == {
            "completed"
        }
        for label, run in runs.items():
            assert run.hparams() == demo.all_runs()[label]
        kinds = {type(v) for v in runs["baseline"].hparams().values()}
        assert kinds == {float, int, str, bool}
        assert os.path.isdir(os.path.join(runs["baseline"].dir, "train"))
        assert os.path.isdir(os.path.join(runs["baseline"].dir, "val"))
        poll(
            lambda: {r.label: r.status for r in GuildRuns(sweep.runs_dir)()}["long-run"],
            lambda status: status == "completed",
            timeout=20,
        )
    assert not os.path.exists(sweep.root)


def test_demo_works_from_an_installed_package(tmp_path):
    """What a plain ``pip install .`` installs: the packages setuptools finds, nothing else."""
    import shutil

    from setuptools import find_packages

    packages = find_packages(str(ROOT), include=["runsmon*"])
    assert "runsmon.demo_project" in packages
    site = tmp_path / "site"
    for package in packages:
        src = ROOT / package.replace(".", "/")
        dst = site / package.replace(".", "/")
        dst.mkdir(parents=True)
        for f in src.glob("*.py"):
            shutil.copy(f, dst / f.name)
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = (
        "import os, sys\n"
        "from runsmon import demo\n"
        "from runsmon.sources.guild import GuildRuns\n"
        "assert demo.__file__.startswith(sys.argv[1]), demo.__file__\n"
        "with demo.make_demo(running_seconds=1) as sweep:\n"
        "    print(sorted(r.label for r in GuildRuns(sweep.runs_dir)()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(site)],
        cwd=work, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(site)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(demo.all_runs()))


def test_parser_accepts_repeatable_globs():
    args = build_parser().parse_args(
        ["serve", "--hparam-include", "a*", "--hparam-include", "b*", "--metric-exclude", "x/*"]
    )
    assert args.hparam_include == ["a*", "b*"] and args.metric_exclude == ["x/*"]


# -- guild tensorboard's command line ------------------------------------------------

GUILD_EXPORT = ROOT / "tests" / "data" / "guild-0.9-export-scalars.csv"  # by Guild 0.9 itself


def _csv(text: str) -> list[list[str]]:
    import csv

    return list(csv.reader(io.StringIO(text)))


def test_export_scalars_as_guild_writes_them(tmp_path):
    """`guild tensorboard --include-batch --export-scalars F` wrote GUILD_EXPORT on
    the fixture; runsmon writes the same rows, then each point's wall time."""
    guild = _csv(GUILD_EXPORT.read_text())
    out = tmp_path / "sub" / "scalars.csv"
    done = runsmon("serve", str(GUILD_RUNS), "--include-batch", "--export-scalars", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(f"runsmon: {len(guild) - 1} scalars of 8 runs written to {out}\n")
    ours = _csv(out.read_text())
    assert ours[0] == [*guild[0], "wall_time"]
    assert [row[:5] for row in ours] == guild
    assert all(float(row[5]) >= 0 for row in ours[1:])
    # To stdout, RUNs after options, batch runs left out: `-Sc 2:4` are the 2nd to
    # 4th newest completed runs, the batch run (the newest) not among them.
    done = runsmon("serve", str(GUILD_RUNS), "-Sc", "--export-scalars", "-", "1:3")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = _csv(done.stdout)
    completed = [r for r in GuildRuns(str(GUILD_RUNS))() if r.status == "completed"]
    newest = sorted(completed, key=lambda r: -r.started)[:3]
    ids = {r.id for r in newest if not r.attrs.get("batch")}
    assert len(ids) == 2
    assert [r[:5] for r in rows[1:]] == [g for g in guild[1:] if g[0] in ids]


@pytest.mark.slow  # a dozen CLI processes
def test_guild_options_select_runs(tmp_path):
    """A Guild user's selection, program name replaced: filters, status flags and RUNs."""
    table = ("table", str(GUILD_RUNS), "--format", "json")

    def names(*args: str) -> list[str]:
        done = runsmon(*table, *args)
        assert done.returncode == 0, done.stderr
        return sorted(row["run"][:8] for row in json.loads(done.stdout))

    assert names("-Fo", "train.py", "-Sc") == ["26effe29", "5daef5b6"]
    assert names("--operation", "train.py", "--completed") == ["26effe29", "5daef5b6"]
    assert names("-Fo", "train.py", "--not-completed", "--not-staged") == ["4aff439c"]
    assert names("-Set") == ["4aff439c", "93cbb034", "aebdc9bb"]
    assert names("-Fl", "best") == ["26effe29"]
    assert names("-Fl", "-") == names("-Fu") == []  # the unlabeled run is the batch run
    assert names("-Fl", "-", "--include-batch") == ["85f0798d"]
    assert names("-F", "lr > 0.2 or optimizer = sgd") == ["15e87c1c", "26effe29"]
    assert names("-Fs", "after 2026-11-29 01:48:30") == ["93cbb034", "aebdc9bb"]
    assert names("1", "-Fo", "train.py") == ["15e87c1c"]  # the newest train.py run
    assert names("-Fm") == names("-Ft", "x") == names("-Fc", "x") == names("-Fd", "zz") == []
    assert len(names("-Fn", "-Fc", "-")) == 7


def test_no_filter_line_without_filters(tmp_path):
    """Batch runs are left out by default, which is no filter to speak of."""
    done = runsmon("serve", "--once", "--no-tensorboard", str(GUILD_RUNS))
    assert done.returncode == 0 and "showing runs" not in done.stdout, done.stdout
    done = runsmon("serve", "--once", "--no-tensorboard", str(GUILD_RUNS), "-Sc", "1:3")
    assert "runsmon: showing runs with RUN 1:3, status completed\n" in done.stdout


def test_guild_serve_options_are_accepted(tmp_path):
    args = build_parser().parse_args(["serve", "--refresh-interval", "2", "-n", "-p", "0"])
    assert args.interval == 2.0 and args.open is False and args.port == 0
    assert build_parser().parse_args(["serve", "--open", "--tab", "scalars"]).tab == "scalars"
    assert build_parser().parse_args(["serve", "-n", "--open"]).open is True
    logdir = tmp_path / "logdir"
    done = runsmon(
        "serve", "--once", "--no-tensorboard", "-q", "--logdir", str(logdir),
        "--refresh-interval", "2", "-n", "--skip-images", "--run-name-flags", "lr optimizer",
        "-Fo", "train.py", str(GUILD_RUNS), "1:2",
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    names = sorted(p for p in os.listdir(logdir) if not p.startswith("."))
    # the two newest train.py runs, named by two flags given as Guild gives them
    assert [n[:8] for n in names] == ["15e87c1c", "4aff439c"]
    assert names[0].endswith(" lr=0.5 optimizer=adam")
    assert names[1].endswith(" lr=0.1 optimizer=adam")


@pytest.mark.tb
def test_open_on_a_tab(tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(0o755)
    with serving(
        tmp_path, str(GUILD_RUNS), "--port", "0", "--open", "--tab", "scalars", "-q",
        env={"BROWSER": f"{browser} %s"},
    ) as s:  # fmt: skip
        url = s.read_until(r"TensorBoard at (\S+)").group(1)
        poll(lambda: opened.exists() and opened.read_text().strip(), bool, timeout=10)
        assert url.endswith("/#scalars") and opened.read_text().strip() == url
        s.stop(signal.SIGINT)

"""Runs from a real MLflow tracking server, logged to by MLflow itself.

One ``mlflow server`` (SQLite backend, one worker) is started for the module
on 127.0.0.1; each test logs its runs into an experiment of its own through
``MlflowClient`` in a subprocess, as a training job on another machine would.
"""

from __future__ import annotations

import http.server
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tb import free_port

from runsmon import RunsMonitor
from runsmon.run import COMPLETED, ERROR, RUNNING
from runsmon.sources import detect_kind, detect_source
from runsmon.sources.mlflow_server import MLflowServerRuns

MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")
HISTORIES = ("metrics/get-history-bulk", "metrics/get-history-bulk-interval", "metrics/get-history")


def history_requests(source: MLflowServerRuns) -> int:
    return sum(source.requests.get(k, 0) for k in HISTORIES)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The URL of an MLflow tracking server running for this module."""
    exe = MLFLOW if os.path.exists(MLFLOW) else shutil.which("mlflow")
    if exe is None:
        pytest.skip("mlflow is not installed: pip install -e '.[test]' to test a tracking server")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (root / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"mlflow server did not start:\n{tail}")
            time.sleep(0.2)
        yield url
    finally:
        with _suppress():
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]


def mlflow_script(url: str, code: str, *args: str) -> str:
    """Run ``code`` with MLflow's client logging to ``url``; its stdout."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


#: Three runs in experiment argv[1]: a finished one, a failed one, a running one.
FIRST = """
import math, sys
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
c = MlflowClient()
exp = c.create_experiment(sys.argv[1])
ids = {}
for name, params, losses, status in [
    ("bold-fox", {"lr": "0.1", "batch_size": "32", "optimizer": "adam"}, [1.0, 0.7], "FINISHED"),
    ("sad-owl", {"lr": "0.5", "batch_size": "8", "optimizer": "sgd"}, [2.0, math.nan], "FAILED"),
    ("live-lynx", {"lr": "0.01", "batch_size": "64", "optimizer": "adam"}, [0.9], None),
]:
    run = c.create_run(exp, run_name=name, start_time=1700000000000)
    rid = run.info.run_id
    c.log_batch(rid, params=[Param(k, v) for k, v in params.items()], metrics=[
        Metric("loss", v, 1700000000000 + 1000 * s, s) for s, v in enumerate(losses)
    ] + [Metric("val/acc", 0.5 + s / 10, 1700000000000 + 1000 * s, s)
         for s in range(len(losses))])
    if status:
        c.set_terminated(rid, status, end_time=1700000000000 + 1000 * len(losses))
    ids[name] = rid
print("IDS", " ".join(f"{k}={v}" for k, v in ids.items()))
"""

#: The running run logs a step and ends; a new run fails; the failed one is deleted.
LATER = """
import sys
from mlflow import MlflowClient
from mlflow.entities import Param
c = MlflowClient()
lynx, owl, exp_name = sys.argv[1:4]
c.log_metric(lynx, "loss", 0.45, step=1)
c.log_metric(lynx, "val/acc", 0.8, step=1)
c.set_terminated(lynx, "FINISHED")
exp = c.get_experiment_by_name(exp_name).experiment_id
new = c.create_run(exp, run_name="late-lark").info.run_id
c.log_batch(new, params=[Param("lr", "0.02"), Param("batch_size", "16"), Param("optimizer", "sgd")])
c.log_metric(new, "loss", 0.35, step=0)
c.set_terminated(new, "FAILED")
c.delete_run(owl)
print("NEW", new)
"""


def first_runs(server: str, experiment: str) -> dict[str, str]:
    out = mlflow_script(server, FIRST, experiment)
    line = next(x for x in out.splitlines() if x.startswith("IDS "))
    return dict(pair.split("=", 1) for pair in line.split()[1:])


def only(source: MLflowServerRuns, experiment: str) -> dict[str, Any]:
    """The source's runs of one experiment, by name."""
    return {r.label: r for r in source() if r.operation == experiment}


def test_detection():
    assert detect_kind("http://127.0.0.1:1") == "mlflow"
    source = detect_source("https://mlflow.example.com:8443/")
    assert isinstance(source, MLflowServerRuns)
    assert source.roots() == [] and not source.knows_roots
    assert isinstance(detect_source("http://h:5000", kind="mlflow"), MLflowServerRuns)
    with pytest.raises(ValueError, match="tracking server"):
        detect_source("http://h:5000", kind="dirs")


@pytest.mark.slow  # a real mlflow server: 6 s and 400 MB, once for the module
def test_runs_statuses_params_and_histories(server):
    ids = first_runs(server, "basics")
    source = detect_source(server)
    runs = only(source, "basics")
    assert set(runs) == {"bold-fox", "sad-owl", "live-lynx"}
    fox, owl, lynx = runs["bold-fox"], runs["sad-owl"], runs["live-lynx"]
    assert fox.id == ids["bold-fox"]
    assert (fox.status, owl.status, lynx.status) == (COMPLETED, ERROR, RUNNING)
    assert fox.flags == {"lr": 0.1, "batch_size": 32, "optimizer": "adam"}
    assert fox.started == 1700000000.0 and fox.stopped == 1700000002.0
    assert lynx.stopped is None
    points = sorted((p.tag, p.step, p.value, p.wall_time) for p in fox.scalars())
    assert points == [
        ("loss", 0, 1.0, 1700000000.0),
        ("loss", 1, 0.7, 1700000001.0),
        ("val/acc", 0, 0.5, 1700000000.0),
        ("val/acc", 1, 0.6, 1700000001.0),
    ]
    owl_loss = [p.value for p in sorted(owl.scalars(), key=lambda p: p.step) if p.tag == "loss"]
    assert owl_loss[0] == 2.0 and math.isnan(owl_loss[1])
    assert not os.path.exists(fox.dir) and fox.dir.startswith(os.devnull + os.sep)
    assert fox.attrs["tags"]["mlflow.runName"] == "bold-fox"


@pytest.mark.slow  # a real mlflow server: 6 s and 400 MB, once for the module
def test_unchanged_poll_fetches_no_history(server):
    ids = first_runs(server, "quiet")
    mlflow_script(
        server,
        "import sys\nfrom mlflow import MlflowClient\n"
        "MlflowClient().set_terminated(sys.argv[1], 'KILLED')",
        ids["live-lynx"],
    )
    source = detect_source(server)
    source.running_recheck = 3600.0  # other tests' runs are running
    runs = source()
    assert history_requests(source) >= 1
    before = dict(source.requests)
    histories = history_requests(source)
    assert source() is runs, "nothing changed: the very same list"
    spent = {k: v - before.get(k, 0) for k, v in source.requests.items()}
    assert history_requests(source) == histories, "no history request"
    assert spent["runs/search"] == 1

    # One run logs a step of one metric: only that history is fetched.
    mlflow_script(
        server,
        "import sys\nfrom mlflow import MlflowClient\n"
        "MlflowClient().log_metric(sys.argv[1], 'loss', 0.5, step=2)",
        ids["bold-fox"],
    )
    histories = history_requests(source)
    runs = {r.id: r for r in source()}
    assert history_requests(source) - histories == 1  # loss moved, val/acc did not
    fox = [p.value for p in runs[ids["bold-fox"]].scalars() if p.tag == "loss"]
    assert fox == [1.0, 0.7, 0.5]


@pytest.mark.slow  # a real mlflow server: 6 s and 400 MB, once for the module
def test_long_history_is_read_whole(server, monkeypatch):
    """A run with more points than a bulk request returns is read through get-history."""
    code = (
        "import sys\nfrom mlflow import MlflowClient\nfrom mlflow.entities import Metric\n"
        "c = MlflowClient()\nexp = c.create_experiment('long')\n"
        "r = c.create_run(exp, run_name='long').info.run_id\n"
        "c.log_batch(r, metrics=[Metric('x', float(s), 1700000000000 + s, s) "
        "for s in range(30)])\nc.set_terminated(r)\n"
    )
    mlflow_script(server, code)
    whole = [float(s) for s in range(30)]
    source = detect_source(server)
    assert [p.value for p in only(source, "long")["long"].scalars()] == whole
    assert "metrics/get-history-bulk-interval" not in source.requests

    # A request that may have left points out is asked again another way.
    monkeypatch.setattr("runsmon.sources.mlflow_server.AJAX_TOTAL", 10)
    monkeypatch.setattr("runsmon.sources.mlflow_server.BULK_POINTS", 10)
    source = detect_source(server)
    assert [p.value for p in only(source, "long")["long"].scalars()] == whole
    assert source.requests["metrics/get-history-bulk-interval"] >= 1
    assert source.requests["metrics/get-history"] >= 1


@pytest.mark.slow  # a real mlflow server: 6 s and 400 MB, once for the module
def test_public_endpoint_gives_the_same_histories(server):
    """A server (or proxy) without the web page's endpoint: the public one, same points."""
    first_runs(server, "public")
    web = {
        r.id: sorted(map(repr, r.scalars()))
        for r in detect_source(server)()
        if r.operation == "public"
    }
    source = detect_source(server)
    source._ajax = False
    public = {r.id: sorted(map(repr, r.scalars())) for r in source() if r.operation == "public"}
    assert "metrics/get-history-bulk" not in source.requests
    assert len(public) == 3 and public == web  # as text: NaN equals NaN


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 401
    delay = 0.0
    seen: list[str | None] = []

    def _answer(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        time.sleep(self.delay)
        body = json.dumps({"error_code": "UNAUTHENTICATED", "message": "no"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up waiting: expected here


@pytest.fixture
def refusing() -> Iterator[str]:
    """A server that answers every request with 401."""
    _Handler.seen, _Handler.status, _Handler.delay = [], 401, 0.0
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_credentials_as_mlflow_takes_them(refusing, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    source = detect_source(refusing)
    with caplog.at_level(logging.WARNING):
        assert source() == []
        assert source() == []
    assert _Handler.seen[0] == "Basic YWRhOnMzY3JldA=="  # base64 of ada:s3cret
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok")
    source()
    assert _Handler.seen[-1] == "Bearer tok"
    lines = [r.getMessage() for r in caplog.records if "HTTP 401" in r.getMessage()]
    assert len(lines) == 1, "one line while the cause holds"
    assert "MLFLOW_TRACKING_TOKEN" in lines[0] and "\n" not in lines[0]


@pytest.mark.parametrize(
    ("status", "delay", "cause"),
    [(503, 0.0, "HTTP 503 Service Unavailable"), (200, 1.0, "no answer within 0.3 s")],
    ids=["5xx", "timeout"],
)
def test_failing_server_is_one_line(refusing, caplog, status, delay, cause):
    _Handler.status, _Handler.delay = status, delay
    source = detect_source(refusing, timeout=0.3)
    with caplog.at_level(logging.WARNING):
        assert source() == [] and source() == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and cause in lines[0], lines


@pytest.mark.slow  # a real mlflow server: 6 s and 400 MB, once for the module
def test_server_down_keeps_runs(server, caplog):
    first_runs(server, "outage")
    source = detect_source(server)
    runs = only(source, "outage")
    assert len(runs) == 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        source.url = dead
        with caplog.at_level(logging.WARNING):
            kept = {r.label for r in source() if r.operation == "outage"}
            source()
    assert kept == set(runs), "the runs already read stay"
    lines = [r.getMessage() for r in caplog.records if dead in r.getMessage()]
    assert len(lines) == 1 and "cannot reach the server" in lines[0]
    source.url = server
    assert set(only(source, "outage")) == set(runs)
    assert not [k for k in source.reporter.active() if server in k[0]]


@pytest.mark.slow  # a real mlflow server: 6 s and 400 MB, once for the module
def test_cli_table_reads_a_server(server):
    first_runs(server, "cli")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-m", "runsmon", "table", "--format", "json", server],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    # Read as data: the text table fits the run names to the terminal's width.
    rows = [row for row in json.loads(done.stdout) if " cli " in row["run"]]
    assert sorted(row["status"] for row in rows) == ["completed", "error", "running"]
    assert {row["hparams"]["optimizer"] for row in rows} == {"adam", "sgd"}


@pytest.mark.slow  # a real mlflow server: 6 s and 400 MB, once for the module
def test_served_live_through_tensorboard(server, tmp_path, tensorboard):
    ids = first_runs(server, "live")
    source = detect_source(server)
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), source)
    monitor.run_once()
    names = monitor.run_names
    mine = {label: names[rid] for label, rid in ids.items()}
    assert not os.path.exists(os.path.join(os.devnull, "mlflow"))

    tb = tensorboard(logdir)
    table = tb.wait_for(
        lambda t: (
            set(mine.values()) <= set(t)
            and all(("loss", "") in t[n]["metrics"] for n in mine.values())
        ),
        timeout=30,
        what="the three runs with their losses",
    )
    fox, owl, lynx = mine["bold-fox"], mine["sad-owl"], mine["live-lynx"]
    assert table[fox]["hparams"] == {"lr": 0.1, "batch_size": 32.0, "optimizer": "adam"}
    assert table[fox]["metrics"][("loss", "")] == pytest.approx(0.7, rel=1e-6)
    assert table[fox]["metrics"][("val/acc", "")] == pytest.approx(0.6, rel=1e-6)
    assert (table[fox]["status"], table[owl]["status"]) == ("STATUS_SUCCESS", "STATUS_FAILURE")
    assert table[lynx]["status"] == "STATUS_RUNNING"
    query = urllib.parse.urlencode({"run": fox, "tag": "loss"})
    points = tb.get(f"/data/plugin/scalars/scalars?{query}")
    assert [p[1] for p in points] == [0, 1]
    assert [p[2] for p in points] == pytest.approx([1.0, 0.7], rel=1e-6)

    # The running run logs a step and ends, a new run fails, the failed one is deleted.
    out = mlflow_script(server, LATER, ids["live-lynx"], ids["sad-owl"], "live")
    new_id = next(x for x in out.splitlines() if x.startswith("NEW ")).split()[1]
    monitor.sync_changes()
    names = monitor.run_names
    assert ids["sad-owl"] not in names
    lynx, new = names[ids["live-lynx"]], names[new_id]
    table = tb.wait_for(
        lambda t: (
            new in t
            and owl not in t
            and lynx in t
            and t[lynx]["status"] == "STATUS_SUCCESS"
            and t[lynx]["metrics"].get(("loss", "")) == pytest.approx(0.45, rel=1e-6)
        ),
        timeout=30,
        what="the ended run, the new one, the deleted one gone",
    )
    assert table[new]["status"] == "STATUS_FAILURE"
    assert table[new]["metrics"][("loss", "")] == pytest.approx(0.35, rel=1e-6)
    assert table[new]["hparams"] == {"lr": 0.02, "batch_size": 16.0, "optimizer": "sgd"}
    assert fox in table


#: argv[1]'s run gets a tag and a note; then argv[2] says which note.
TAG = """
import sys
from mlflow import MlflowClient
c = MlflowClient()
c.set_tag(sys.argv[1], "baseline", "")
c.set_tag(sys.argv[1], "team", "vision")
c.set_tag(sys.argv[1], "mlflow.note.content", sys.argv[2])
"""


@pytest.mark.slow
def test_tags_and_note_follow_the_client(server):
    ids = first_runs(server, "tagged")
    source = detect_source(server)
    fox = only(source, "tagged")["bold-fox"]
    assert fox.tags == frozenset() and fox.note == ""
    mlflow_script(server, TAG, ids["bold-fox"], "first try")
    fox = only(source, "tagged")["bold-fox"]
    assert fox.tags == frozenset({"baseline", "team=vision"}) and fox.note == "first try"
    mlflow_script(server, TAG, ids["bold-fox"], "lr too high?")  # the note edited
    assert only(source, "tagged")["bold-fox"].note == "lr too high?"

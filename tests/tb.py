"""A real TensorBoard in a subprocess, and a client for its HParams plugin.

End-to-end tests start ``python -m tensorboard.main`` on 127.0.0.1 and read
what the HParams dashboard would read, over HTTP (stdlib only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ALL_STATUSES = ("STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING")
# The dashboard lists the values of a discrete domain with fewer entries than
# this as checkboxes (filterDiscrete); longer ones get a regexp box.
DISCRETE_CHECKBOX_LIMIT = 10
_BIND_ERRORS = ("could not bind", "address already in use", "port", "errno 98")


class TensorBoardError(RuntimeError):
    """TensorBoard failed to start, died, or answered with an error."""


class HTTPAnswerError(TensorBoardError):
    """TensorBoard answered a request with an HTTP error status."""

    def __init__(self, status: int, url: str, body: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body}")
        self.status = status
        self.url = url
        self.body = body


class WaitTimeout(AssertionError):
    """Polling gave up; the message holds the last value seen."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(
    fetch: Callable[[], T],
    predicate: Callable[[T], bool],
    timeout: float = 20.0,
    interval: float = 0.25,
    what: str = "condition",
) -> T:
    """Call ``fetch`` until ``predicate`` holds for its value; return that value.

    An exception from ``fetch`` counts as "not yet". On timeout, raise
    :class:`WaitTimeout` with the last value (or exception) seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = "<nothing fetched>"
    while True:
        try:
            value = fetch()
        except Exception as exc:  # noqa: BLE001 - keep polling, report it later
            last = exc
        else:
            last = value
            if predicate(value):
                return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} not met after {timeout:.1f}s; last seen: {last!r}")
        time.sleep(interval)


def live_group_members(pgid: int) -> list[int]:
    """Pids of the process group ``pgid`` that are running (zombies excluded).

    Reads /proc (Linux); elsewhere, falls back to whether the group exists.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


def request_json(url: str, body: Any = None, timeout: float = 30) -> Any:
    """GET ``url`` (POST ``body`` as JSON when given); the JSON answer.

    An HTTP error answer raises :class:`HTTPAnswerError` with its body.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method="GET" if data is None else "POST",
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        raise HTTPAnswerError(exc.code, url, text) from None
    return json.loads(raw) if raw else None


def session_groups_at(
    base_url: str,
    col_params: list[dict[str, Any]] | None = None,
    statuses: Iterable[str] = ALL_STATUSES,
    slice_size: int = 1000,
    timeout: float = 30,
) -> dict[str, Any]:
    """``session_groups`` of the TensorBoard at ``base_url`` (any process, not only ours)."""
    body = {
        "experimentName": "",
        "allowedStatuses": list(statuses),
        "colParams": list(col_params or []),
        "startIndex": 0,
        "sliceSize": slice_size,
    }
    return request_json(base_url + "/data/plugin/hparams/session_groups", body, timeout)


class TensorBoardProcess:
    """``python -m tensorboard.main`` serving ``logdir`` on 127.0.0.1.

    ``load_fast`` picks the loader: True for the Rust data server, False for
    the Python multiplexer, None for TensorBoard's default ("auto").
    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        load_fast: bool | None = False,
        reload_interval: float | None = 1,
        extra_args: Iterable[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.logdir = Path(logdir)
        self.load_fast = load_fast
        self.reload_interval = reload_interval
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tb-proc-")
        self.log_path = Path(self._tmp.name) / "tensorboard.log"

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        if self.port is None:
            raise TensorBoardError("TensorBoard is not started")
        return f"http://127.0.0.1:{self.port}"

    def _argv(self, port: int) -> list[str]:
        argv = [
            sys.executable, "-m", "tensorboard.main",
            "--logdir", str(self.logdir),
            "--host", "127.0.0.1",
            "--port", str(port),
        ]  # fmt: skip
        if self.reload_interval is not None:  # None: TensorBoard's default (5 s)
            argv += ["--reload_interval", str(self.reload_interval)]
        if self.load_fast is not None:
            argv.append(f"--load_fast={'true' if self.load_fast else 'false'}")
        return argv + self.extra_args

    def log_tail(self, lines: int = 40) -> str:
        """The last lines TensorBoard printed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, attempts: int = 3) -> TensorBoardProcess:
        """Start TensorBoard and wait until it answers; retry on a taken port."""
        for attempt in range(attempts):
            port = free_port()
            with open(self.log_path, "ab") as log:
                log.write(f"--- start attempt {attempt + 1} on port {port}\n".encode())
                log.flush()
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                self.proc = subprocess.Popen(
                    self._argv(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: the data server too
                )
            self.port = port
            try:
                self._wait_ready()
                return self
            except TensorBoardError:
                died = self.proc.poll() is not None
                tail = self.log_tail()
                self._kill()
                if died and any(s in tail.lower() for s in _BIND_ERRORS) and attempt + 1 < attempts:
                    continue
                raise
        raise TensorBoardError("unreachable")  # pragma: no cover

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise TensorBoardError(
                    f"TensorBoard exited with code {self.proc.returncode}; log tail:\n"
                    + self.log_tail()
                )
            try:
                self.get("/data/plugins_listing", timeout=2)
                return
            except (OSError, HTTPAnswerError):
                pass
            if time.monotonic() >= deadline:
                raise TensorBoardError(
                    f"TensorBoard not answering after {self.start_timeout}s; log tail:\n"
                    + self.log_tail()
                )
            time.sleep(0.2)

    def _kill(self) -> None:
        """Terminate the process group, then kill it; reap the leader.

        The group is the one ``start_new_session`` made for this process, so it
        holds TensorBoard and its data server and nothing else.
        """
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                proc.poll()
                if proc.returncode is not None and not live_group_members(pgid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        """Stop TensorBoard (and its data server); idempotent."""
        self._kill()

    def close(self) -> None:
        """Stop and remove the temporary log directory."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> TensorBoardProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """Whether the TensorBoard process is running."""
        return self.proc is not None and self.proc.poll() is None

    # -- HTTP --------------------------------------------------------------

    def _request(self, path: str, body: Any = None, timeout: float = 30) -> Any:
        return request_json(self.url + path, body, timeout)

    def get(self, path: str, timeout: float = 30) -> Any:
        """GET ``path`` and parse the JSON answer."""
        return self._request(path, None, timeout)

    def post(self, path: str, body: Any, timeout: float = 30) -> Any:
        """POST ``body`` as JSON to ``path`` and parse the JSON answer."""
        return self._request(path, body, timeout)

    def runs(self) -> list[str]:
        """``/data/runs``: the runs the Time Series and Scalars dashboards list."""
        return list(self.get("/data/runs"))

    def experiment(self) -> dict[str, Any]:
        """The HParams experiment (hparamInfos, metricInfos), as JSON."""
        return self.post("/data/plugin/hparams/experiment", {"experimentName": ""})

    def session_groups(
        self,
        col_params: list[dict[str, Any]] | None = None,
        statuses: Iterable[str] = ALL_STATUSES,
        slice_size: int = 1000,
    ) -> dict[str, Any]:
        """``session_groups`` with the given colParams; HTTP 400 raises."""
        return session_groups_at(self.url, col_params, statuses, slice_size)

    def table(self, col_params: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Session groups by name: ``{"hparams", "metrics", "status", "sessions"}``.

        ``metrics`` is keyed by ``(tag, group)``; ``status`` is the first
        session's status (runsmon writes one session per group).
        """
        out: dict[str, dict[str, Any]] = {}
        for g in self.session_groups(col_params).get("sessionGroups", []):
            metrics = {
                (m["name"].get("tag", ""), m["name"].get("group", "")): m.get("value")
                for m in g.get("metricValues", [])
            }
            sessions = g.get("sessions", [])
            out[g["name"]] = {
                "hparams": g.get("hparams", {}),
                "metrics": metrics,
                "status": sessions[0].get("status", "STATUS_UNKNOWN") if sessions else None,
                "sessions": sessions,
            }
        return out

    def wait_for(
        self,
        predicate: Callable[[Any], bool],
        timeout: float = 20.0,
        fetch: Callable[[], Any] | None = None,
        what: str = "condition",
    ) -> Any:
        """Poll ``fetch`` (default :meth:`table`) until ``predicate`` holds; return the value.

        On timeout raise :class:`WaitTimeout` with the last value seen; fail
        early, with the log tail, if TensorBoard died.
        """
        get = self.table if fetch is None else fetch

        def checked() -> Any:
            if not self.alive:
                raise TensorBoardError("TensorBoard died; log tail:\n" + self.log_tail())
            return get()

        return poll(checked, predicate, timeout=timeout, what=what)

    def wait_without_gap(
        self,
        predicate: Callable[[dict[str, dict[str, Any]]], bool],
        rows: int,
        timeout: float,
        what: str = "change",
    ) -> dict[str, dict[str, Any]]:
        """:func:`wait_without_gap` on this TensorBoard's :meth:`table`."""
        return wait_without_gap(self.table, predicate, rows, timeout, what)

    def dashboard_filters(self, experiment: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """colParams with every filter of the HPARAMS tab set, letting everything through.

        Built the way TensorBoard 2.21's dashboard builds its filters
        (``_computeHParams`` / ``_buildListSessionGroupsRequest``): a discrete
        domain under 10 values gets ``filterDiscrete`` with all its values; one
        of 10 or more gets ``filterRegexp`` ""; a FLOAT64 hparam without a
        discrete domain gets ``filterInterval`` (the domain's bounds, or
        -Infinity..Infinity); every metric gets ``filterInterval``
        -Infinity..Infinity. The dashboard sends a filter only once the user
        touches it and has no filter at all for a non-FLOAT64 hparam without
        a discrete domain; here those get ``filterRegexp`` "" (the strictest
        thing a filter could do to them: fail on a non-string value).
        """
        exp = self.experiment() if experiment is None else experiment
        return dashboard_filters(exp)


def table_at(base_url: str) -> dict[str, dict[str, Any]]:
    """:meth:`TensorBoardProcess.table` of the TensorBoard at ``base_url``."""
    out: dict[str, dict[str, Any]] = {}
    for g in session_groups_at(base_url).get("sessionGroups", []):
        sessions = g.get("sessions", [])
        out[g["name"]] = {
            "hparams": g.get("hparams", {}),
            "metrics": {
                (m["name"].get("tag", ""), m["name"].get("group", "")): m.get("value")
                for m in g.get("metricValues", [])
            },
            "status": sessions[0].get("status", "STATUS_UNKNOWN") if sessions else None,
            "sessions": sessions,
        }
    return out


def wait_without_gap(
    fetch: Callable[[], dict[str, dict[str, Any]]],
    predicate: Callable[[dict[str, dict[str, Any]]], bool],
    rows: int,
    timeout: float,
    what: str = "change",
    interval: float = 0.3,
) -> dict[str, dict[str, Any]]:
    """Poll the dashboard's table every ``interval`` s until ``predicate`` holds;
    fail at once if a poll shows fewer than ``rows`` rows (a row vanished), and
    after ``timeout`` s.  Returns the table."""
    t0 = time.monotonic()
    while True:
        table = fetch()
        if len(table) < rows:
            raise AssertionError(
                f"{what}: {len(table)} rows shown, fewer than {rows}, "
                f"{time.monotonic() - t0:.1f} s in: {sorted(table)}"
            )
        if predicate(table):
            return table
        if time.monotonic() - t0 > timeout:
            raise WaitTimeout(f"{what} not shown within {timeout:.1f} s; last seen: {table!r}")
        time.sleep(interval)


def dashboard_filters(experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """See :meth:`TensorBoardProcess.dashboard_filters`."""
    out: list[dict[str, Any]] = []
    for info in experiment.get("hparamInfos", []):
        p: dict[str, Any] = {"hparam": info["name"], "includeInResult": True}
        if "domainDiscrete" in info:
            values = list(info["domainDiscrete"])
            if len(values) < DISCRETE_CHECKBOX_LIMIT:
                p["filterDiscrete"] = values
            else:
                p["filterRegexp"] = ""
        elif info.get("type") == "DATA_TYPE_FLOAT64":
            dom = info.get("domainInterval", {})
            p["filterInterval"] = {
                "minValue": dom.get("minValue", "-Infinity"),
                "maxValue": dom.get("maxValue", "Infinity"),
            }
        else:
            p["filterRegexp"] = ""
        out.append(p)
    for info in experiment.get("metricInfos", []):
        out.append(
            {
                "metric": info["name"],
                "includeInResult": True,
                "filterInterval": {"minValue": "-Infinity", "maxValue": "Infinity"},
            }
        )
    return out

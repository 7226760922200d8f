"""Runs from an MLflow tracking server (``runsmon serve http://host:5000``).

The server is read through its REST API with the standard library's
``urllib``: a handful of endpoints, JSON in and out, so no MLflow client
(``mlflow-skinny`` requires 21 packages: FastAPI, the Databricks SDK,
OpenTelemetry, ...) is needed:

- ``POST experiments/search``: the experiments (active ones), paged;
- ``POST runs/search``: every active run of them, 1,000 a page, each with
  its params, tags, status, start and end times and, per metric, the latest
  value with its step and timestamp;
- one metric's history for up to 100 runs a request: ``GET
  /ajax-api/2.0/mlflow/metrics/get-history-bulk`` (what MLflow's web page
  reads: every point, 25,000 a request; 2.5 times as fast as the public
  endpoint for 300 runs x 5 metrics x 50 steps) where the server offers it,
  else ``GET metrics/get-history-bulk-interval`` (up to 2,500 points a run;
  a run with more is read through ``GET metrics/get-history``, paged, so no
  point is sampled away).

A poll is one ``runs/search`` page per 1,000 runs. Histories are fetched
only for the metrics that moved: a run's latest (step, timestamp, value) of
the metric differs from the last poll's, or (all of a run's metrics) the run
is RUNNING and its histories were read more than
:attr:`MLflowServerRuns.running_recheck` seconds ago (a point logged below
the latest step moves no latest point). Per run, as the SQLite store source
(:mod:`runsmon.sources.mlflow_sqlite`) reads them: params as flags
(:func:`~runsmon.sources.mlflow.param_value`), status, start and end, the
name from ``run_name`` or the ``mlflow.runName`` tag, the experiment's name
as the operation, the histories through :attr:`Run.scalars`. Deleted runs
and the runs of deleted experiments are left out (``runs/search`` lists
active runs only).

A run has no directory on this machine: its ``dir`` is a path below
``os.devnull`` named after the server, which no file can have, so the
monitor finds nothing there to watch or link.  The source names no roots:
the monitor polls it every ``interval``.

Authentication is what MLflow's clients take: ``MLFLOW_TRACKING_TOKEN``
(a bearer token), else ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (basic).  A server that is down, refuses the
credentials, fails or times out is one warning line; the runs already read
stay, and the next poll tries again.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Hashable
from functools import partial
from typing import Any

from runsmon.fs import LOCAL, FileSystem
from runsmon.report import Reporter
from runsmon.run import RUNNING, Run, ScalarPoint
from runsmon.sources.base import RunSource
from runsmon.sources.mlflow import _status, mlflow_run

#: Runs a ``get-history-bulk-interval`` request may name (the server's limit).
BULK_RUNS = 100
#: Points a run may have per ``get-history-bulk-interval`` request (the
#: server's limit); a run with as many is read through ``get-history``.
BULK_POINTS = 2500
#: Points a request of the web page's ``get-history-bulk`` returns at most (the
#: server's limit; a request with as many is asked again another way).
AJAX_TOTAL = 25000
#: Points (estimated from the runs' last steps) runsmon puts in one such request.
BULK_TOTAL = 20000
#: Runs a ``runs/search`` page holds.
SEARCH_PAGE = 1000


def is_server_url(text: str) -> bool:
    """Whether ``text`` names a tracking server (an ``http://`` or ``https://`` URL).

    >>> [is_server_url(t) for t in ("http://host:5000", "https://mlflow.example.com/")]
    [True, True]
    >>> [is_server_url(t) for t in ("mlruns", "sqlite:///mlflow.db", "s3://b/p", "http:x")]
    [False, False, False, False]
    """
    parsed = urllib.parse.urlsplit(text)
    return parsed.scheme.lower() in ("http", "https") and bool(parsed.netloc)


def server_dir(url: str) -> str:
    """Where the runs of the server at ``url`` seem to be: below ``os.devnull``.

    >>> server_dir("http://127.0.0.1:5000/") == os.path.join(os.devnull, "mlflow", "127.0.0.1_5000")
    True
    >>> os.path.basename(server_dir("https://user@ml.example.com/mlflow"))
    'ml.example.com_mlflow'
    """
    parsed = urllib.parse.urlsplit(url)
    name = (parsed.hostname or "server") + (f"_{parsed.port}" if parsed.port else "")
    path = parsed.path.strip("/").replace("/", "_")
    return os.path.join(os.devnull, "mlflow", f"{name}_{path}" if path else name)


def _float(value: Any) -> float:
    """A metric value as JSON gives it (``"NaN"``, ``"Infinity"`` as strings)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _ms(value: Any) -> int | None:
    """Milliseconds as JSON gives them (a number, or an int64 as a string)."""
    return None if value is None or value == "" else _int(value)


class ServerError(OSError):
    """The server could not be read; the message says why, in one line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status, when the server answered with an error.
        self.status = status


class MLflowServerRuns(RunSource):
    """Runs of an MLflow tracking server at ``url`` (``http://`` or ``https://``)."""

    kind = "mlflow"
    #: No directory names where new runs appear: the monitor polls.
    knows_roots = False
    #: Seconds a request may take.
    timeout = 30.0
    #: Seconds after which a RUNNING run's histories are read again although
    #: its latest points held (a point logged below the latest step moves none).
    running_recheck = 30.0

    def __init__(
        self,
        url: str,
        fs: FileSystem = LOCAL,
        reporter: Reporter | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(fs, reporter)
        self.url = url.rstrip("/")
        self.path = self.url
        if timeout is not None:
            self.timeout = timeout
        self.base = server_dir(url)
        self._experiments: dict[str, str] = {}  # id -> name
        self._infos: dict[str, dict[str, Any]] = {}  # run id -> info
        self._params: dict[str, dict[str, str]] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._latest: dict[str, dict[str, tuple]] = {}  # run id -> key -> (step, ts, value)
        self._hist: dict[str, dict[str, list[ScalarPoint]]] = {}  # run id -> key -> points
        self._fetched: dict[str, float] = {}  # run id -> when its histories were read
        self._version: dict[str, int] = {}
        self._run_dirs: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self._counter = 0
        self._ajax: bool | None = None  # whether the web page's bulk history endpoint works
        #: Requests made, by endpoint (for tests and benchmarks).
        self.requests: dict[str, int] = {}

    def roots(self) -> list[str]:
        return []

    def describe(self) -> str:
        return f"{self.kind} runs at {self.url}"

    def __call__(self, changed: Collection[str] | None = None) -> list[Run]:
        """The runs: every call asks the server (no watcher can report its changes)."""
        return super().__call__(None)

    # -- HTTP ----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "runsmon"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {pair}"
        return headers

    def _request(
        self, endpoint: str, body: dict | None = None, query: list | None = None, api: str = "api"
    ) -> dict:
        url = f"{self.url}/{api}/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers)
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            raise ServerError(self._http_cause(e), e.code) from None
        except urllib.error.URLError as e:
            reason = e.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise ServerError(f"cannot reach the server: {str(text).lower()}") from None
        except TimeoutError:
            raise ServerError(f"no answer within {self.timeout:g} s") from None
        except OSError as e:  # a dropped connection
            raise ServerError(f"connection failed: {e}") from None
        try:
            answer = json.loads(payload or b"{}")
        except ValueError:
            raise ServerError(
                f"{endpoint}: the answer is not JSON: not an MLflow server?"
            ) from None
        if not isinstance(answer, dict):
            raise ServerError(f"{endpoint}: unexpected answer: not an MLflow server?")
        return answer

    @staticmethod
    def _http_cause(e: urllib.error.HTTPError) -> str:
        try:
            detail = json.loads(e.read() or b"{}").get("message", "")
        except (ValueError, OSError, AttributeError):
            detail = ""
        detail = str(detail).strip().splitlines()[0][:150] if detail else ""
        cause = f"HTTP {e.code} {e.reason}"
        if e.code in (401, 403):
            cause += (
                "; set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD"
            )
        elif e.code == 404:
            cause += ": no MLflow REST API at this URL"
        return f"{cause} ({detail})" if detail else cause

    def _paged(self, endpoint: str, body: dict, field: str) -> list[dict]:
        items: list[dict] = []
        token = None
        while True:
            answer = self._request(endpoint, {**body, "page_token": token} if token else body)
            items.extend(answer.get(field) or [])
            token = answer.get("next_page_token")
            if not token:
                return items

    # -- reading the server ----------------------------------------------------------

    def list_run_dirs(self) -> list[str]:
        """Ask the server; commit what it said only once every answer is in."""
        experiments = {
            str(e.get("experiment_id")): str(e.get("name") or "")
            for e in self._paged(
                "experiments/search",
                {"max_results": 1000, "view_type": "ACTIVE_ONLY"},
                "experiments",
            )
            if e.get("lifecycle_stage", "active") != "deleted"
        }
        found = []
        if experiments:
            found = self._paged(
                "runs/search",
                {
                    "experiment_ids": sorted(experiments),
                    "run_view_type": "ACTIVE_ONLY",
                    "max_results": SEARCH_PAGE,
                },
                "runs",
            )
        infos: dict[str, dict[str, Any]] = {}
        params: dict[str, dict[str, str]] = {}
        tags: dict[str, dict[str, str]] = {}
        latest: dict[str, dict[str, tuple]] = {}
        for run in found:
            info = run.get("info") or {}
            run_id = info.get("run_id") or info.get("run_uuid")
            if not run_id or info.get("lifecycle_stage") == "deleted":
                continue
            data = run.get("data") or {}
            infos[run_id] = info
            params[run_id] = {p["key"]: str(p.get("value", "")) for p in data.get("params") or []}
            tags[run_id] = {t["key"]: str(t.get("value", "")) for t in data.get("tags") or []}
            latest[run_id] = {
                m["key"]: (_int(m.get("step")), _int(m.get("timestamp")), str(m.get("value")))
                for m in data.get("metrics") or []
            }
        now = time.monotonic()
        wanted: dict[str, list[str]] = {}  # run id -> the metrics to read
        for r, keys in latest.items():
            old = self._latest.get(r, {})
            if r not in self._hist or (
                keys
                and _status(infos[r].get("status")) == RUNNING
                and now - self._fetched.get(r, 0.0) > self.running_recheck
            ):
                wanted[r] = list(keys)
            elif keys != old:
                wanted[r] = [k for k, v in keys.items() if old.get(k) != v]
        hist = self._histories(wanted, latest)
        # Every answer is in: take it.
        for r, keys in wanted.items():
            fetched = hist.get(r, {})
            if len(keys) == len(latest[r]):
                self._fetched[r] = now
            have = self._hist.get(r, {})
            self._hist[r] = {k: fetched[k] if k in fetched else have.get(k, []) for k in latest[r]}
        moved = list(wanted)
        dirty = set(moved)
        for r, info in infos.items():
            if (
                self._infos.get(r) != info
                or self._params.get(r) != params[r]
                or self._tags.get(r) != tags[r]
                or self._experiments.get(str(info.get("experiment_id")))
                != experiments.get(str(info.get("experiment_id")))
            ):
                dirty.add(r)
        self._experiments = experiments
        self._infos, self._params, self._tags, self._latest = infos, params, tags, latest
        for r in list(self._run_dirs):
            if r not in infos:
                self._ids.pop(self._run_dirs.pop(r), None)
                self._version.pop(r, None)
                self._hist.pop(r, None)
                self._fetched.pop(r, None)
        for r in dirty:
            self._counter += 1
            self._version[r] = self._counter
            if r not in self._run_dirs:
                d = os.path.join(self.base, str(infos[r].get("experiment_id")), r)
                self._run_dirs[r] = d
                self._ids[d] = r
        return sorted(self._run_dirs[r] for r in infos)

    def _histories(
        self, wanted: dict[str, list[str]], latest: dict[str, dict[str, tuple]]
    ) -> dict[str, dict[str, list[ScalarPoint]]]:
        """The histories of the metrics ``wanted`` names per run: one request per
        metric and up to 100 runs."""
        by_key: dict[str, list[str]] = {}
        for r, keys in wanted.items():
            for key in keys:
                by_key.setdefault(key, []).append(r)
        points: dict[str, dict[str, list[ScalarPoint]]] = {r: {} for r in wanted}
        for key in sorted(by_key):
            for chunk in self._chunks(by_key[key], key, latest):
                for r, pts in self._bulk(key, chunk).items():
                    pts.sort(key=lambda p: (p.step, p.wall_time))
                    points[r][key] = pts
        return points

    @staticmethod
    def _chunks(runs: list[str], key: str, latest: dict[str, dict[str, tuple]]) -> list[list[str]]:
        """Up to 100 runs a chunk, and about :data:`BULK_TOTAL` points (by their last step)."""
        chunks: list[list[str]] = []
        chunk: list[str] = []
        size = 0
        for r in runs:
            n = max(1, latest[r][key][0] + 1)
            if chunk and (len(chunk) >= BULK_RUNS or size + n > BULK_TOTAL):
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(r)
            size += n
        if chunk:
            chunks.append(chunk)
        return chunks

    def _bulk(self, key: str, chunk: list[str]) -> dict[str, list[ScalarPoint]]:
        """One metric's whole history for each run of ``chunk``.

        Through the endpoint MLflow's own web page reads (``ajax-api``,
        every point of up to 100 runs, 25,000 points a request; measured
        2.5 times as fast as the public one) where the server offers it;
        else, or when a request holds as many points as it may (some may
        be missing), through the public ``get-history-bulk-interval``.
        """
        got: dict[str, list[ScalarPoint]] = {r: [] for r in chunk}
        if self._ajax is not False:
            try:
                answer = self._request(
                    "metrics/get-history-bulk",
                    query=[("run_id", r) for r in chunk] + [("metric_key", key)],
                    api="ajax-api",
                )
            except ServerError as e:
                if self._ajax is None and e.status in (404, 405):
                    self._ajax = False  # not offered (a proxy, another server)
                else:
                    raise
            else:
                self._ajax = True
                metrics = answer.get("metrics") or []
                if len(metrics) < AJAX_TOTAL:
                    for m in metrics:
                        r = m.get("run_id")
                        if r in got:
                            got[r].append(self._point(key, m))
                    return got
        answer = self._request(
            "metrics/get-history-bulk-interval",
            query=[("run_ids", r) for r in chunk]
            + [("metric_key", key), ("max_results", BULK_POINTS)],
        )
        for m in answer.get("metrics") or []:
            r = m.get("run_id")
            if r in got:
                got[r].append(self._point(key, m))
        for r, pts in got.items():
            if len(pts) >= BULK_POINTS:
                got[r] = self._full_history(r, key)  # sampled: read every point
        return got

    def _full_history(self, run_id: str, key: str) -> list[ScalarPoint]:
        pts: list[ScalarPoint] = []
        token = None
        while True:
            query = [("run_id", run_id), ("metric_key", key), ("max_results", 25000)]
            if token:
                query.append(("page_token", token))
            answer = self._request("metrics/get-history", query=query)
            pts.extend(self._point(key, m) for m in answer.get("metrics") or [])
            token = answer.get("next_page_token")
            if not token:
                return sorted(pts, key=lambda p: (p.step, p.wall_time))

    @staticmethod
    def _point(key: str, m: dict) -> ScalarPoint:
        return ScalarPoint(
            key, _float(m.get("value")), _int(m.get("step")), _int(m.get("timestamp")) / 1000.0
        )

    # -- runs --------------------------------------------------------------------

    def fingerprint(self, run_dir: str) -> Hashable:
        run_id = self._ids[run_dir]
        return (run_id, self._version[run_id])

    def read_run(self, run_dir: str) -> Run | None:
        run_id = self._ids.get(run_dir)
        if run_id is None or run_id not in self._infos:
            return None
        info = self._infos[run_id]
        eid = str(info.get("experiment_id"))
        experiment = self._experiments.get(eid)
        hist = self._hist.get(run_id) or {}
        points = [p for key in sorted(hist) for p in hist[key]]
        return mlflow_run(
            run_id=run_id,
            run_dir=run_dir,
            kind=self.kind,
            params=dict(sorted(self._params.get(run_id, {}).items())),
            tags=dict(sorted(self._tags.get(run_id, {}).items())),
            run_name=info.get("run_name"),
            status=info.get("status"),
            start_ms=_ms(info.get("start_time")),
            end_ms=_ms(info.get("end_time")),
            experiment_id=eid,
            experiment=experiment,
            user=info.get("user_id"),
            scalars=partial(list, points),
            fingerprint=(run_id, self._version[run_id]),
            server=self.url,
        )

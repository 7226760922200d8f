"""Runs from an MLflow file store (``mlruns/``).

Experiments are the store's directories with a ``meta.yaml`` (``.trash`` and
deleted experiments skipped); runs are their subdirectories with a
``meta.yaml`` (deleted runs skipped).  Per run:

- flags: ``params/<name>`` (names with ``/`` are files in subdirectories).
  MLflow stores ``str(value)``, so text that reads as a Python literal
  number or boolean (``3``, ``0.1``, ``1e-05``, ``True``) becomes that
  number or boolean, ``None`` becomes no value, and the rest stays text.
- status, start and end (milliseconds) from ``meta.yaml``; the name from
  ``run_name`` or the ``mlflow.runName`` tag; tags in ``attrs["tags"]``.
- metrics ``metrics/<name>`` (lines ``<ms timestamp> <value> <step>``) come
  out through :attr:`Run.scalars`, read when called.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from runsmon.fs import LOCAL, FileSystem
from runsmon.report import Reporter, describe_error
from runsmon.run import (
    COMPLETED,
    ERROR,
    PENDING,
    RUNNING,
    TERMINATED,
    UNKNOWN,
    Run,
    ScalarPoint,
)
from runsmon.sources.base import RunSource
from runsmon.sources.flagsfiles import load_yaml

#: MLflow's ``RunStatus`` values (mlflow/protos/service.proto) as runsmon statuses.
STATUS = {
    1: RUNNING,  # RUNNING
    2: PENDING,  # SCHEDULED
    3: COMPLETED,  # FINISHED
    4: ERROR,  # FAILED
    5: TERMINATED,  # KILLED
}
_STATUS_NAMES = {"RUNNING": 1, "SCHEDULED": 2, "FINISHED": 3, "FAILED": 4, "KILLED": 5}

_INT_RE = re.compile(r"[-+]?\d+")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)


def param_value(text: str) -> Any:
    """An MLflow param (``str(value)``) back as a number or boolean where it reads as one.

    >>> [param_value(t) for t in ("3", "0.5", "1e-05", "True", "false", "None", "adam", "0x1")]
    [3, 0.5, 1e-05, True, False, None, 'adam', '0x1']
    """
    s = text.strip()
    if _INT_RE.fullmatch(s):
        return int(s)
    if _FLOAT_RE.fullmatch(s):
        return float(s)
    if s in ("True", "true"):
        return True
    if s in ("False", "false"):
        return False
    if s == "None":
        return None
    return text


def store_dir(path: str, fs: FileSystem = LOCAL) -> str:
    """The store itself: ``path``, or ``path/mlruns`` when that exists."""
    inner = os.path.join(path, "mlruns")
    if os.path.basename(os.path.normpath(path)) != "mlruns":
        st = fs.stat(inner)
        if st is not None and st.is_dir:
            return inner
    return os.path.normpath(path)


class MLflowRuns(RunSource):
    """Runs of an MLflow file store; ``path`` is ``mlruns`` or a directory holding it."""

    kind = "mlflow"

    def __init__(self, path: str, fs: FileSystem = LOCAL, reporter: Reporter | None = None):
        super().__init__(fs, reporter)
        self.path = store_dir(path, fs)
        self._experiments: dict[str, tuple[Hashable, dict[str, Any] | None]] = {}
        self._exp_dirs: list[str] = []

    def roots(self) -> list[str]:
        return [self.path, *self._exp_dirs]

    # -- listing -----------------------------------------------------------

    def list_run_dirs(self) -> list[str]:
        runs: list[str] = []
        exp_dirs: list[str] = []
        for e in self.fs.scandir(self.path):
            if not e.is_dir or e.name.startswith(".") or e.name == "models":
                continue
            meta = self._experiment(e.path)
            if meta is None or meta.get("lifecycle_stage") == "deleted":
                continue
            exp_dirs.append(e.path)
            try:
                entries = self.fs.scandir(e.path)
            except OSError as err:
                self.reporter.warn(e.path, "list", f"cannot list {e.path}: {describe_error(err)}")
                continue
            runs.extend(r.path for r in entries if r.is_dir and not r.name.startswith("."))
        self._exp_dirs = sorted(exp_dirs)
        return sorted(runs)

    def _experiment(self, exp_dir: str) -> dict[str, Any] | None:
        """An experiment's meta.yaml (cached by stat); None when it is no experiment."""
        path = os.path.join(exp_dir, "meta.yaml")
        st = self.fs.stat(path)
        if st is None or not st.is_file:
            return None
        cached = self._experiments.get(exp_dir)
        if cached is not None and cached[0] == st.key:
            return cached[1]
        try:
            meta = load_yaml(self.fs.read_text(path))
            if not isinstance(meta, Mapping):
                raise ValueError("meta.yaml is not a mapping")
            meta = dict(meta)
            self.reporter.clear(exp_dir, "meta")
        except Exception as e:
            self.reporter.warn(
                exp_dir, "meta", f"experiment {exp_dir}: cannot read meta.yaml: {describe_error(e)}"
            )
            meta = None
        self._experiments[exp_dir] = (st.key, meta)
        return meta

    # -- one run -------------------------------------------------------------

    def fingerprint(self, run_dir: str) -> Hashable:
        parts: list[Any] = []
        for name in ("meta.yaml", "params", "tags", "metrics"):
            st = self.fs.stat(os.path.join(run_dir, name))
            parts.append(st.key if st else None)
        parts.extend(sorted((p, key) for p, key in self._metric_files(run_dir)))
        # MLflow rewrites a tag's file in place (a note edited): its stat says so.
        parts.extend(sorted(self._metric_files(run_dir, "tags")))
        return tuple(parts)

    def read_run(self, run_dir: str) -> Run | None:
        meta_path = os.path.join(run_dir, "meta.yaml")
        st = self.fs.stat(meta_path)
        if st is None or not st.is_file:
            return None  # datasets/, traces/, tags/ or a run being created
        try:
            meta = load_yaml(self.fs.read_text(meta_path))
            if not isinstance(meta, Mapping):
                raise ValueError("meta.yaml is not a mapping")
        except Exception as e:
            self.reporter.warn(
                run_dir, "meta", f"run {run_dir}: cannot read meta.yaml: {describe_error(e)}"
            )
            return None
        self.reporter.clear(run_dir, "meta")
        if meta.get("lifecycle_stage") == "deleted":
            return None
        exp_dir = os.path.dirname(run_dir)
        experiment = self._experiment(exp_dir) or {}
        return mlflow_run(
            run_id=str(meta.get("run_id") or meta.get("run_uuid") or os.path.basename(run_dir)),
            run_dir=run_dir,
            kind=self.kind,
            params=self._read_dir(run_dir, "params"),
            tags=self._read_dir(run_dir, "tags"),
            run_name=meta.get("run_name"),
            status=meta.get("status"),
            start_ms=meta.get("start_time"),
            end_ms=meta.get("end_time"),
            experiment_id=str(meta.get("experiment_id") or os.path.basename(exp_dir)),
            experiment=experiment.get("name"),
            user=meta.get("user_id"),
            scalars=lambda: list(self.scalars(run_dir)),
            fingerprint=self.fingerprint(run_dir),
        )

    def _files(self, top: str) -> Iterator[tuple[str, str]]:
        """(name with "/", path) of every file below ``top``."""
        stack = [(top, "")]
        while stack:
            d, prefix = stack.pop()
            try:
                entries = self.fs.scandir(d)
            except FileNotFoundError:
                continue
            for e in entries:
                name = f"{prefix}{e.name}"
                if e.is_dir:
                    stack.append((e.path, name + "/"))
                else:
                    yield name, e.path

    def _read_dir(self, run_dir: str, sub: str) -> dict[str, str]:
        """Every file of ``run_dir/sub`` as {name: text}; unreadable ones warn."""
        out: dict[str, str] = {}
        for name, path in sorted(self._files(os.path.join(run_dir, sub))):
            try:
                out[name] = self.fs.read_text(path)
            except (OSError, UnicodeDecodeError) as e:
                self.reporter.warn(
                    run_dir,
                    f"{sub}/{name}",
                    f"run {run_dir}: cannot read {sub}/{name}: {describe_error(e)}",
                )
        return out

    def _metric_files(self, run_dir: str, sub: str = "metrics") -> list[tuple[str, Hashable]]:
        out = []
        for name, path in self._files(os.path.join(run_dir, sub)):
            st = self.fs.stat(path)
            out.append((name, st.key if st else None))
        return out

    def scalars(self, run_dir: str) -> Iterator[ScalarPoint]:
        """Every metric point of the run, read now; bad lines are skipped with a warning."""
        for name, path in sorted(self._files(os.path.join(run_dir, "metrics"))):
            try:
                text = self.fs.read_text(path)
            except (OSError, UnicodeDecodeError) as e:
                self.reporter.warn(
                    run_dir,
                    f"metrics/{name}",
                    f"run {run_dir}: cannot read metrics/{name}: {describe_error(e)}",
                )
                continue
            bad = 0
            lines = text.split("\n")
            if not text.endswith("\n"):
                lines = lines[:-1]  # a line being written
            for line in lines:
                if not line.strip():
                    continue
                point = _metric_point(name, line)
                if point is None:
                    bad += 1
                else:
                    yield point
            if bad:
                self.reporter.warn(
                    run_dir,
                    f"metrics/{name}",
                    f"run {run_dir}: metrics/{name}: {bad} unreadable line(s) skipped",
                )


def _metric_point(name: str, line: str) -> ScalarPoint | None:
    parts = line.split()
    if len(parts) not in (2, 3):
        return None
    try:
        timestamp = int(parts[0])
        value = float(parts[1])
        step = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        return None
    return ScalarPoint(tag=name, value=value, step=step, wall_time=timestamp / 1000.0)


def _status(value: Any) -> str:
    if isinstance(value, str):
        value = _STATUS_NAMES.get(value.upper(), value)
    if isinstance(value, int):
        return STATUS.get(value, UNKNOWN)
    return UNKNOWN


def _seconds(ms: Any) -> float | None:
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return None
    return ms / 1000.0


def mlflow_run(
    *,
    run_id: str,
    run_dir: str,
    kind: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    run_name: Any,
    status: Any,
    start_ms: Any,
    end_ms: Any,
    experiment_id: str,
    experiment: Any,
    user: Any,
    scalars: Callable[[], list[ScalarPoint]],
    fingerprint: Hashable,
    **where: Any,
) -> Run:
    """A Run from what every MLflow store records of a run (file store,
    ``mlflow.db``, tracking server): params as text, tags, name, status, times
    in milliseconds.  ``where`` adds the store's own attrs (``database``, ...).
    """
    name = str(run_name or tags.get("mlflow.runName") or "")
    shown = _status(status)
    return Run(
        id=run_id,
        dir=run_dir,
        flags={k: param_value(v) for k, v in params.items()},
        status=shown,
        started=_seconds(start_ms),
        stopped=_seconds(end_ms) if shown in (COMPLETED, ERROR, TERMINATED) else None,
        label=name,
        operation=str(experiment or ""),
        attrs={
            "source": kind,
            **where,
            "experiment_id": experiment_id,
            "experiment": experiment,
            "run_name": name,
            "user": user,
            "tags": dict(tags),
        },
        scalars=scalars,
        fingerprint=fingerprint,
        tags=user_tags(tags),
        note=str(tags.get(NOTE_TAG) or "").strip(),
    )


#: The tag MLflow keeps a run's note (its description) in.
NOTE_TAG = "mlflow.note.content"
#: Tag values that say "tagged" and nothing more: the tag is ``KEY``.
_PLAIN_VALUES = frozenset({"", "true", "True", "TRUE", "1", "yes"})


def user_tags(tags: Mapping[str, str]) -> frozenset[str]:
    """A run's tags as runsmon shows them: every tag but MLflow's own
    (``mlflow.*``), as ``KEY`` when its value is empty or true, else ``KEY=VALUE``.

    >>> sorted(user_tags({"baseline": "", "team": "vision", "mlflow.runName": "x", "ok": "true"}))
    ['baseline', 'ok', 'team=vision']
    """
    out = set()
    for key, value in tags.items():
        key = key.strip()
        if not key or key.startswith("mlflow."):
            continue
        value = str(value).strip()
        out.add(key if value in _PLAIN_VALUES else f"{key}={value}")
    return frozenset(out)

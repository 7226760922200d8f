"""Runs from an MLflow SQLite database (``mlflow.db``, MLflow 3's default store).

MLflow 3 keeps runs in ``mlflow.db`` in the working directory and only their
artifacts in ``mlruns/<experiment id>/<run id>/artifacts``.  This source reads
the database with the standard library's ``sqlite3``, read-only: tables
``experiments``, ``runs``, ``params``, ``tags`` and ``metrics`` as MLflow's
``store/tracking/dbmodels/models.py`` defines them.  Deleted runs and the runs
of deleted experiments are left out.  Per run, as the file store source
(:mod:`runsmon.sources.mlflow`) reads them:

- flags: the params (MLflow stores ``str(value)``; :func:`param_value`
  reads numbers and booleans back);
- status, start and end from the ``runs`` row; the name from ``runs.name``
  or the ``mlflow.runName`` tag; the experiment's name as the operation;
- metric histories come out through :attr:`Run.scalars` in the order MLflow
  inserted them (NaN as NaN).

A run's ``dir`` is its artifact directory's run directory
(``mlruns/<experiment id>/<run id>``, whether it exists yet or not) when the
artifacts are local files, else a path below the database file, which no
file can have.

Nothing is written, in the database's directory either.  A database in
rollback-journal mode (MLflow's default) is read through one ``mode=ro``
connection kept open, so an unchanged poll costs two ``stat`` calls and
``PRAGMA data_version``.  A database in WAL mode is read through a connection
opened for each read and closed at once (an open reader would keep the
writer from removing its ``-wal`` and ``-shm`` files when it closes);
``mode=ro`` while the ``-wal`` and ``-shm`` files exist, ``immutable=1`` when
they do not (``mode=ro`` would create them; without them the database file is
complete and no writer is at work).  A poll then compares the database's and
the ``-wal`` file's (size, mtime), and reads anyway every
:attr:`~MLflowSQLiteRuns.recheck_after` seconds.

When the database moved, a read asks for the ``runs`` and ``experiments``
rows and for the ``metrics`` rows added since the last read (by ``rowid``,
which grows as MLflow inserts); params and tags are read again only for the
runs that changed, gained rows or appeared, or whose user tags or note
(MLflow updates those rows in place) differ from what was read.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import operator
import os
import re
import sqlite3
import time
import urllib.parse
from array import array
from collections.abc import Hashable
from functools import partial
from typing import Any, NamedTuple

from runsmon.fs import LOCAL, FileSystem
from runsmon.report import Reporter
from runsmon.run import Run, ScalarPoint
from runsmon.sources.base import RunSource
from runsmon.sources.mlflow import NOTE_TAG, mlflow_run

#: The database file MLflow 3 makes by default (``sqlite:///mlflow.db``).
DB_NAME = "mlflow.db"

_HEADER = b"SQLite format 3\x00"
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
#: How many runs to re-read params and tags for one by one; more: one scan.
_PER_RUN_MAX = 100


def db_uri_path(text: str) -> str | None:
    """The file a ``sqlite:///`` URI names, as SQLAlchemy (and so MLflow) reads it.

    Three slashes and a relative path, four and an absolute one:

    >>> db_uri_path("sqlite:////tmp/p/mlflow.db")
    '/tmp/p/mlflow.db'
    >>> db_uri_path("sqlite:///mlflow.db") == os.path.abspath("mlflow.db")
    True
    >>> [db_uri_path(t) for t in ("sqlite://", "sqlite:///:memory:", "/tmp/mlflow.db")]
    [None, None, None]
    """
    if not text.startswith("sqlite://"):
        return None
    rest = text[len("sqlite://") :].split("?", 1)[0]
    if not rest.startswith("/"):
        return None  # "sqlite://" (in memory) or a host
    path = urllib.parse.unquote(rest[1:])
    if not path or path == ":memory:":
        return None
    return os.path.abspath(path)


def _is_db_file(path: str, fs: FileSystem, name: str | None = None) -> bool:
    """An SQLite file; with ``name``, also an empty file of that name (being created)."""
    st = fs.stat(path)
    if st is None or st.is_dir:
        return False
    if st.size == 0:
        return name is not None and os.path.basename(path) == name
    try:
        return fs.read_bytes(path, 0, len(_HEADER)) == _HEADER
    except OSError:
        return False


def database_path(path: str, fs: FileSystem = LOCAL) -> str | None:
    """The MLflow database ``path`` names: a ``sqlite:///`` URI, an SQLite file,
    or a directory holding ``mlflow.db``; None when it names none."""
    path = os.fspath(path)
    from_uri = db_uri_path(path)
    if from_uri is not None:
        return from_uri
    if _is_db_file(path, fs):
        return os.path.normpath(path)
    inner = os.path.join(path, DB_NAME)
    if _is_db_file(inner, fs, DB_NAME):
        return os.path.normpath(inner)
    return None


class _History:
    """One run's metric points, compactly (arrays), in MLflow's insertion order.

    Points are only ever appended, so a reader that took ``len()`` earlier
    reads a consistent prefix while the next read appends.
    """

    __slots__ = ("keys", "index", "kidx", "values", "steps", "times")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.kidx = array("I")
        self.values = array("d")
        self.steps = array("q")
        self.times = array("q")

    def __len__(self) -> int:
        return len(self.values)

    def extend(self, rows: list[tuple]) -> None:
        """Append rows ``(run_uuid, key, value, timestamp, step, is_nan)``."""
        index = self.index
        for row in rows:
            if row[1] not in index:
                index[row[1]] = len(self.keys)
                self.keys.append(row[1])
        self.kidx.extend([index[r[1]] for r in rows])
        self.values.extend([math.nan if r[5] else r[2] for r in rows])
        self.steps.extend([r[4] or 0 for r in rows])
        self.times.extend([r[3] or 0 for r in rows])

    def points(self, n: int) -> list[ScalarPoint]:
        keys = self.keys
        return [
            ScalarPoint(keys[k], v, s, t / 1000.0)
            for k, v, s, t in zip(
                self.kidx[:n], self.values[:n], self.steps[:n], self.times[:n], strict=True
            )
        ]


class _Row(NamedTuple):
    """The ``runs`` columns runsmon reads."""

    name: str | None
    status: str | None
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str | None
    artifact_uri: str | None
    experiment_id: Any
    user_id: str | None


_RUN_COLUMNS = _Row._fields


class NotMLflowDatabase(sqlite3.DatabaseError):
    """An SQLite database without MLflow's tables."""


class MLflowSQLiteRuns(RunSource):
    """Runs of an MLflow SQLite database.

    ``path`` is the database file, a directory holding ``mlflow.db`` or a
    ``sqlite:///`` URI.
    """

    kind = "mlflow"
    #: Seconds after which a database read through per-read connections (WAL
    #: mode) is read again although its files' (size, mtime) held.
    recheck_after = 30.0
    #: Seconds a read waits for a writer's lock before giving up (and trying
    #: again at the next poll).
    busy_timeout = 5.0

    def __init__(self, path: str, fs: FileSystem = LOCAL, reporter: Reporter | None = None):
        super().__init__(fs, reporter)
        path = os.fspath(path)
        db = database_path(path, fs)
        if db is None:
            st = fs.stat(path)
            db = path if st is not None and not st.is_dir else os.path.join(path, DB_NAME)
        db = os.path.abspath(db)
        self.db = db
        self._conn: sqlite3.Connection | None = None  # kept open: rollback-journal mode
        self._conn_ino: tuple[int, int] | None = None
        self._keys: tuple | None = None  # the files' stats at the last read
        self._data_version: int | None = None
        self._read_at = 0.0
        self._schema: int | None = None
        self._columns: dict[str, set[str]] = {}
        self._experiments: dict[Any, tuple[str | None, str | None, str | None]] = {}
        self._rows: dict[str, _Row] = {}
        self._visible: set[str] = set()
        self._params: dict[str, dict[str, str]] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._hist: dict[str, _History] = {}
        self._marks: dict[str, int] = {}  # table -> the highest rowid read
        self._version: dict[str, int] = {}  # run id -> bumped when anything of it changed
        self._run_dirs: dict[str, str] = {}  # run id -> its dir
        self._ids: dict[str, str] = {}  # dir -> run id
        self._counter = 0
        #: How many data reads were made (for tests and benchmarks).
        self.reads = 0

    def roots(self) -> list[str]:
        return [os.path.dirname(self.db)]

    def describe(self) -> str:
        return f"{self.kind} runs in {self.db}"

    def close(self) -> None:
        """Close the connection kept open (a later call opens it again)."""
        with self._lock:
            self._disconnect()

    # -- the callable ---------------------------------------------------------

    def __call__(self, changed: Any = None) -> list[Run]:
        """The runs; the database is the one place they change, so ``changed`` is not needed.

        While the database did not move this costs a few ``stat`` calls and
        one pragma, and returns the very same list.
        """
        with self._lock:
            if self._runs is not None and self._dirs is not None and not self._moved():
                return self._runs
        return super().__call__(None)

    def _file_keys(self) -> tuple:
        """(dev, ino, size, mtime) of the database; (size, mtime) of its -wal; -shm there."""
        st = os.stat(self.db)
        try:
            wal = os.stat(self.db + "-wal")
            wal_key: tuple[int, int] | None = (wal.st_size, wal.st_mtime_ns)
        except FileNotFoundError:
            wal_key = None
        shm = os.path.exists(self.db + "-shm")
        return ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), wal_key, shm)

    def _moved(self) -> bool:
        """Whether the database may hold news since the last read."""
        try:
            if self._file_keys() != self._keys:
                return True
        except OSError:
            return True
        if self._conn is None:
            return time.monotonic() - self._read_at > self.recheck_after
        try:
            return self._conn.execute("PRAGMA data_version").fetchone()[0] != self._data_version
        except sqlite3.Error:
            self._disconnect()
            return True

    # -- connections -------------------------------------------------------------

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._conn_ino = None

    def _open(self, query: str) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(self.db)}?{query}"
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=self.busy_timeout,
            isolation_level=None,  # explicit BEGIN: one snapshot per read
            check_same_thread=False,  # the monitor lists runs from a thread of its own
        )

    def _connection(self, keys: tuple) -> tuple[sqlite3.Connection, bool]:
        """A connection fit for the database's journal mode; True when it is kept."""
        (dev, ino, _, _), wal, shm = keys
        try:
            with open(self.db, "rb") as f:
                header = f.read(20)
        except OSError:
            header = b""
        if len(header) < 20 or header[18] != 2:
            # Rollback journal (or an empty file being created): readers make no files.
            if self._conn is not None and self._conn_ino != (dev, ino):
                self._disconnect()  # the file was replaced
            if self._conn is None:
                self._conn = self._open("mode=ro")
                self._conn_ino = (dev, ino)
            return self._conn, True
        self._disconnect()
        if wal is not None and shm:
            return self._open("mode=ro"), False
        # No writer at work: the file is complete; mode=ro would create -wal and -shm.
        return self._open("mode=ro&immutable=1"), False

    # -- reading the database ------------------------------------------------------

    def list_run_dirs(self) -> list[str]:
        try:
            keys = self._file_keys()
        except FileNotFoundError:
            self._forget()
            raise
        try:
            self._read(keys)
        except NotMLflowDatabase as e:
            raise OSError(str(e)) from None
        except sqlite3.Error as e:
            self._disconnect()
            raise OSError(f"cannot read the database: {e}") from None
        self._keys = keys
        self._read_at = time.monotonic()
        return sorted(self._run_dirs[r] for r in self._visible)

    def _forget(self) -> None:
        """The database is gone: drop what was read from it."""
        self._disconnect()
        self._keys = self._data_version = self._schema = None
        self._experiments, self._rows, self._visible = {}, {}, set()
        self._params, self._tags, self._hist, self._marks = {}, {}, {}, {}
        self._run_dirs, self._ids = {}, {}

    def _read(self, keys: tuple) -> None:
        conn, kept = self._connection(keys)
        self.reads += 1
        try:
            conn.execute("BEGIN")
            try:
                self._read_in(conn)
                if kept:
                    self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            if not kept:
                conn.close()

    def _read_in(self, conn: sqlite3.Connection) -> None:
        schema = conn.execute("PRAGMA schema_version").fetchone()[0]
        if schema != self._schema:
            # New tables or a migration (which may copy tables, renumbering rows).
            self._columns = {
                t: {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
                for t in ("experiments", "runs", "params", "tags", "metrics")
            }
            self._marks, self._hist = {}, {}
            self._params, self._tags = {}, {}
            self._schema = schema
        cols = self._columns
        if not cols["runs"]:
            has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if has_tables:
                raise NotMLflowDatabase("no table 'runs': not an MLflow database")
            self._rows, self._visible = {}, set()  # a database being created
            return
        missing = [c for c in ("run_uuid", *_RUN_COLUMNS) if c not in cols["runs"]]
        if missing:
            raise NotMLflowDatabase(f"table 'runs' has no column {missing[0]!r}")

        experiments: dict[Any, tuple[str | None, str | None, str | None]] = {}
        if {"experiment_id", "name", "lifecycle_stage"} <= cols["experiments"]:
            location = "artifact_location" if "artifact_location" in cols["experiments"] else "NULL"
            for eid, name, stage, loc in conn.execute(
                f"SELECT experiment_id, name, lifecycle_stage, {location} FROM experiments"
            ):
                experiments[eid] = (name, stage, loc)
        renamed = {e for e, v in experiments.items() if self._experiments.get(e) != v}
        self._experiments = experiments

        rows: dict[str, _Row] = {}
        runs_mark = self._marks.get("runs", 0)
        created = set()  # runs made since the last read: all their metric rows are new
        top = 0
        for r in conn.execute(f"SELECT rowid, run_uuid, {', '.join(_RUN_COLUMNS)} FROM runs"):
            rows[r[1]] = _Row(*r[2:])
            top = max(top, r[0])
            if r[0] > runs_mark:
                created.add(r[1])
        self._marks["runs"] = top
        if any(r not in rows for r in self._rows):
            # Runs deleted for good (mlflow gc): their rows may be numbered anew.
            self._marks.pop("metrics", None)
            self._hist = {}
        visible = {
            r
            for r, row in rows.items()
            if row.lifecycle_stage != "deleted"
            and (experiments.get(row.experiment_id) or (None, None))[1] != "deleted"
        }
        dirty = {
            r for r in visible if self._rows.get(r) != rows[r] or rows[r].experiment_id in renamed
        }
        self._rows = rows
        for r in list(self._hist):
            if r not in visible:
                del self._hist[r]
        entering = [r for r in visible if r not in self._hist]
        dirty.update(entering)
        dirty.update(self._read_metrics(conn, visible, entering, created))
        for table in ("params", "tags"):
            dirty.update(r for r in self._new_rows(conn, table) if r in visible)
        dirty.update(self._retagged(conn, visible - dirty))
        for table, store in (("params", self._params), ("tags", self._tags)):
            for r in list(store):
                if r not in visible:
                    del store[r]
            self._read_pairs(conn, table, store, [r for r in dirty if r in visible])
        self._visible = visible
        for r in list(self._run_dirs):
            if r not in visible:
                self._ids.pop(self._run_dirs.pop(r), None)
                self._version.pop(r, None)
        for r in dirty:
            self._counter += 1
            self._version[r] = self._counter
            self._place(r)

    def _top(self, conn: sqlite3.Connection, table: str) -> int:
        return conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0

    def _read_metrics(
        self, conn: sqlite3.Connection, visible: set[str], entering: list[str], created: set[str]
    ) -> set[str]:
        """Append the metric rows added since the last read; the runs that gained some."""
        cols = self._columns["metrics"]
        if not {"key", "value", "run_uuid"} <= cols:
            return set()
        top = self._top(conn, "metrics")
        mark = self._marks.get("metrics", 0)
        if top < mark:  # rows deleted at the end: numbers may be given again
            mark = 0
            self._hist = {}
            entering = list(visible)
        select = ", ".join(
            [
                "key",
                "value",
                "timestamp" if "timestamp" in cols else "0",
                "step" if "step" in cols else "0",
                "is_nan" if "is_nan" in cols else "0",
            ]
        )
        hist = self._hist
        gained: set[str] = set()
        loaded = set()
        for r in entering:
            h = hist[r] = _History()
            if not mark or r not in created:
                # Read first, or hidden until now (deleted, then restored): its
                # rows so far, through MLflow's run_uuid index (faster than a
                # scan of the whole table, even for every run at once).
                h.extend(
                    conn.execute(
                        f"SELECT run_uuid, {select} FROM metrics WHERE run_uuid = ? "
                        "AND rowid <= ? ORDER BY rowid",
                        (r, top),
                    ).fetchall()
                )
                loaded.add(r)
        if mark and top > mark:
            rows = conn.execute(
                f"SELECT run_uuid, {select} FROM metrics WHERE rowid > ? AND rowid <= ? "
                "ORDER BY rowid",
                (mark, top),
            )
            # A run's rows come in runs (log_batch, a training loop): one extend each.
            for run_id, group in itertools.groupby(rows, key=operator.itemgetter(0)):
                h = hist.get(run_id)
                if h is not None and run_id not in loaded:
                    h.extend(list(group))
                    gained.add(run_id)
        self._marks["metrics"] = top
        return gained

    def _new_rows(self, conn: sqlite3.Connection, table: str) -> set[str]:
        """The runs with rows of ``table`` added since the last read."""
        if not {"key", "value", "run_uuid"} <= self._columns[table]:
            return set()
        top = self._top(conn, table)
        mark = self._marks.get(table, 0)
        self._marks[table] = top
        if top == mark:
            return set()
        if top < mark:
            return set(self._rows)
        return {
            r
            for (r,) in conn.execute(
                f"SELECT DISTINCT run_uuid FROM {table} WHERE rowid > ? AND rowid <= ?",
                (mark, top),
            )
        }

    def _retagged(self, conn: sqlite3.Connection, runs: set[str]) -> set[str]:
        """Of ``runs``, those whose user tags or note changed in place (MLflow
        updates a tag's row when it is set again: no new row says so)."""
        if not runs or not {"key", "value", "run_uuid"} <= self._columns["tags"]:
            return set()
        now: dict[str, dict[str, str]] = {}
        for r, key, value in conn.execute(
            "SELECT run_uuid, key, value FROM tags WHERE key NOT LIKE 'mlflow.%' OR key = ?",
            (NOTE_TAG,),
        ):
            if r in runs:
                now.setdefault(r, {})[key] = value
        out = set()
        for r in runs:
            had = self._tags.get(r)
            if had is None:
                continue
            mine = {k: v for k, v in had.items() if not k.startswith("mlflow.") or k == NOTE_TAG}
            if mine != now.get(r, {}):
                out.add(r)
        return out

    def _read_pairs(
        self, conn: sqlite3.Connection, table: str, store: dict[str, dict[str, str]], runs: list
    ) -> None:
        """Read ``table``'s (key, value) pairs of ``runs`` into ``store``."""
        if not runs:
            return
        if not {"key", "value", "run_uuid"} <= self._columns[table]:
            for r in runs:
                store[r] = {}
            return
        if len(runs) > _PER_RUN_MAX:
            wanted = set(runs)
            fresh: dict[str, dict[str, str]] = {r: {} for r in runs}
            for r, key, value in conn.execute(f"SELECT run_uuid, key, value FROM {table}"):
                if r in wanted:
                    fresh[r][key] = value
            store.update(fresh)
            return
        query = f"SELECT key, value FROM {table} WHERE run_uuid = ?"
        for r in runs:
            store[r] = dict(conn.execute(query, (r,)).fetchall())

    # -- runs --------------------------------------------------------------------

    def _place(self, run_id: str) -> None:
        """Give a run its dir (kept while its artifact location holds)."""
        row = self._rows[run_id]
        wanted = self._artifact_run_dir(run_id, row.artifact_uri)
        if wanted is None or self._ids.get(wanted, run_id) != run_id:
            wanted = os.path.join(self.db, str(row.experiment_id), run_id)
        old = self._run_dirs.get(run_id)
        if old == wanted:
            return
        if old is not None:
            self._ids.pop(old, None)
        self._run_dirs[run_id] = wanted
        self._ids[wanted] = run_id

    def _artifact_run_dir(self, run_id: str, uri: str | None) -> str | None:
        """``mlruns/<exp>/<run>`` for local artifacts ``.../<run>/artifacts``; else the
        artifact directory itself when local; None when the artifacts are elsewhere."""
        if not uri:
            return None
        if uri.startswith("file:"):
            parsed = urllib.parse.urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                return None
            path = urllib.parse.unquote(parsed.path)
        elif _SCHEME_RE.match(uri) and not re.match(r"[A-Za-z]:[\\/]", uri):
            return None  # s3:, gs:, mlflow-artifacts:, dbfs:, ...
        else:
            path = uri
        path = os.path.normpath(os.path.join(os.path.dirname(self.db), path))
        parent = os.path.dirname(path)
        if os.path.basename(path) == "artifacts" and os.path.basename(parent) == run_id:
            return parent
        return path

    def fingerprint(self, run_dir: str) -> Hashable:
        run_id = self._ids[run_dir]
        return (run_id, self._version[run_id])

    def read_run(self, run_dir: str) -> Run | None:
        run_id = self._ids.get(run_dir)
        if run_id is None or run_id not in self._visible:
            return None
        row = self._rows[run_id]
        experiment = self._experiments.get(row.experiment_id) or (None, None, None)
        hist = self._hist.get(run_id) or _History()
        return mlflow_run(
            run_id=run_id,
            run_dir=run_dir,
            kind=self.kind,
            params=dict(sorted(self._params.get(run_id, {}).items())),
            tags=dict(sorted(self._tags.get(run_id, {}).items())),
            run_name=row.name,
            status=row.status,
            start_ms=row.start_time,
            end_ms=row.end_time,
            experiment_id=str(row.experiment_id),
            experiment=experiment[0],
            user=row.user_id,
            scalars=partial(hist.points, len(hist)),
            fingerprint=(run_id, self._version[run_id]),
            database=self.db,
        )

"""The fault catalogue's harness: good runs, a faulty one, and what a sync must keep.

``faults`` (the fixture) makes a Guild runs directory with two good runs;
a test adds the faulty run (:data:`FAULT_ID`) on disk, calls
:meth:`Faults.snapshot`, syncs a few polls and calls :meth:`Faults.check`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guild_fake import end_status_of, logdir_runs, make_guild_run, session_of

from runsmon import RunsMonitor
from runsmon.logdir import TMP_PREFIX
from runsmon.report import Reporter
from runsmon.sources.guild import GuildRuns

FAULT_ID = "fa017fa017fa017fa017fa017fa017fa"
GOOD = {
    "900d0001900d0001900d0001900d0001": {"lr": 0.1, "opt": "adam"},
    "900d0002900d0002900d0002900d0002": {"lr": 0.01, "opt": "sgd"},
}
POLLS = 4


# -- the source tree, byte for byte -------------------------------------------------


def tree_state(root: str | os.PathLike[str]) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: type, mode, and content digest / link target.

    Never follows a symlink and never opens anything but a regular file (a
    FIFO would block). An unreadable file counts by its stat alone.
    """
    out: dict[str, tuple[Any, ...]] = {}
    root = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode)
            elif stat.S_ISREG(st.st_mode):
                try:
                    with open(path, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                except PermissionError:
                    digest = "unreadable"
                out[rel] = ("file", mode, st.st_size, st.st_mtime_ns, digest)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode), mode)
    return out


# -- permissions that hold for root too ---------------------------------------------

_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_SYS_CAPGET, _SYS_CAPSET = 125, 126  # x86_64


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _capset(drop: int | None, saved: Any = None) -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    if libc.syscall(_SYS_CAPGET, ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    before = (data[0].effective, data[1].effective)
    if drop is not None:
        data[0].effective &= ~drop
    else:
        data[0].effective, data[1].effective = saved
    if libc.syscall(_SYS_CAPSET, ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    return before


@contextlib.contextmanager
def permissions_enforced() -> Iterator[None]:
    """File permissions hold in this thread (and threads it starts), even for root.

    Root bypasses them through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; these
    are dropped from this thread's effective set for the block, then restored.
    """
    if os.geteuid() != 0:
        yield
        return
    if os.uname().machine != "x86_64":
        pytest.skip("permission faults as root need capset (x86_64 here)")
    try:
        saved = _capset((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    except OSError as e:
        pytest.skip(f"cannot drop capabilities: {e}")
    try:
        yield
    finally:
        _capset(None, saved)


# -- the harness --------------------------------------------------------------------


class Faults:
    """Two good Guild runs, room for a faulty one, and the checks every case makes."""

    def __init__(self, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: Any) -> None:
        self.tmp_path = tmp_path
        self.caplog = caplog
        self.capfd = capfd
        self.runs_dir = tmp_path / "runs"
        self.runs_dir.mkdir()
        self.logdir = tmp_path / "logdir"
        self.fault_dir = self.runs_dir / FAULT_ID
        self.reporter = Reporter()
        for run_id, flags in GOOD.items():
            make_guild_run(
                self.runs_dir, run_id, flags, scalars={"loss": [(0, 1.0), (1, flags["lr"])]}
            )
        self.before: dict[str, tuple[Any, ...]] | None = None

    def add(self, **kwargs: Any) -> Path:
        """The faulty run, written as a good one first (``make_guild_run`` options)."""
        return Path(make_guild_run(self.runs_dir, FAULT_ID, **kwargs))

    def source(self) -> GuildRuns:
        return GuildRuns(str(self.runs_dir), reporter=self.reporter, settle=0)

    def monitor(self, source: Any = None, **kwargs: Any) -> RunsMonitor:
        options: dict[str, Any] = {
            "watch": False,
            "callback_timeout": 5.0,
            "reporter": self.reporter,
        }
        options.update(kwargs)
        return RunsMonitor(str(self.logdir), source or self.source(), **options)

    def snapshot(self) -> None:
        """Remember the source tree as it is now (the fault built)."""
        self.before = tree_state(self.runs_dir)

    def sync(self, monitor: RunsMonitor | None = None, polls: int = POLLS) -> RunsMonitor:
        """A few polls: a fault must be reported once, not once per poll."""
        if self.before is None:
            self.snapshot()
        monitor = monitor or self.monitor()
        for _ in range(polls):
            monitor.run_once()
        return monitor

    def warnings(self) -> list[str]:
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.name.startswith("runsmon") and r.levelno >= logging.WARNING
        ]

    def check(
        self,
        *,
        warn: str | None,
        shown: bool | None,
        hparams: dict[str, Any] | None = None,
        subject: str | None = FAULT_ID[:8],
        unchanged: bool = True,
    ) -> dict[str, str]:
        """What every case asserts; returns run id -> logdir name.

        ``warn``: the one warning's cause (a substring; None: no warning at
        all). ``shown``: whether the faulty run has a session in the logdir
        (None: not checked). ``hparams``: its session's hparams, when shown.
        """
        warnings = self.warnings()
        if warn is None:
            assert warnings == []
        else:
            assert len(warnings) == 1, warnings
            assert warn.lower() in warnings[0].lower(), warnings
            if subject is not None:
                assert subject in warnings[0], warnings
        for record in self.caplog.records:
            assert record.exc_info is None, record.getMessage()
        out, err = self.capfd.readouterr()
        for text in (out, err, self.caplog.text):
            assert "Traceback" not in text, text
        names = logdir_runs(self.logdir)
        for run_id, flags in GOOD.items():
            assert run_id in names, (run_id, names)
            run_logdir = self.logdir / names[run_id]
            assert session_of(run_logdir) == pytest.approx(flags), run_id
            assert end_status_of(run_logdir) == "STATUS_SUCCESS"
            links = [p for p in run_logdir.iterdir() if p.is_symlink()]
            assert len(links) == 1 and links[0].resolve().is_file(), links
        if shown is not None:
            assert (
                FAULT_ID in names and session_of(self.logdir / names[FAULT_ID]) is not None
            ) == shown, names
            if shown and hparams is not None:
                got = session_of(self.logdir / names[FAULT_ID])
                assert got == pytest.approx(hparams)
        for dirpath, dirnames, filenames in os.walk(self.logdir):
            for name in dirnames + filenames:
                assert not name.startswith(TMP_PREFIX), os.path.join(dirpath, name)
        if unchanged:
            assert self.before is not None
            assert tree_state(self.runs_dir) == self.before, "the source tree changed"
        return names


@pytest.fixture
def faults(tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: Any, monkeypatch) -> Faults:
    """The harness, with runsmon's warnings captured (also after the CLI set them up)."""
    log = logging.getLogger("runsmon")
    monkeypatch.setattr(log, "propagate", True)
    monkeypatch.setattr(log, "handlers", [])
    caplog.set_level(logging.WARNING, logger="runsmon")
    return Faults(tmp_path, caplog, capfd)


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    """Fail when a test leaves a thread running (a daemon must stop whole)."""
    before = set(threading.enumerate())
    yield
    deadline = 50
    while deadline:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            return
        threading.Event().wait(0.1)
        deadline -= 1
    raise AssertionError(f"threads left behind: {left}")

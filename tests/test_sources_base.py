"""RunSource on its own: a cached listing that re-reads only what changed."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from runsmon.run import COMPLETED, RUNNING, Run
from runsmon.sources.base import CombinedRuns, RunSource


class NoteRuns(RunSource):
    """Each directory under ``root`` with a ``status`` file is a run."""

    kind = "notes"

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = str(root)
        self.reads: Counter[str] = Counter()
        self.fingerprints: Counter[str] = Counter()
        self.fail_listing: OSError | None = None

    def roots(self) -> list[str]:
        return [self.root]

    def list_run_dirs(self) -> list[str]:
        if self.fail_listing is not None:
            raise self.fail_listing
        return sorted(e.path for e in os.scandir(self.root) if e.is_dir())

    def fingerprint(self, run_dir: str):
        self.fingerprints[os.path.basename(run_dir)] += 1
        st = os.stat(os.path.join(run_dir, "status"))
        return (st.st_size, st.st_mtime_ns)

    def read_run(self, run_dir: str) -> Run | None:
        name = os.path.basename(run_dir)
        self.reads[name] += 1
        status = Path(run_dir, "status").read_text().strip()
        if status == "bad":
            raise ValueError("status file says bad")
        return Run(id=name, dir=run_dir, status=status)


def _write(root: Path, name: str, status: str = COMPLETED) -> str:
    run_dir = root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "status"
    # A new mtime each time (a rewrite within one clock tick may keep it).
    mtime = path.stat().st_mtime_ns + 10**9 if path.exists() else time.time_ns()
    path.write_text(status)
    os.utime(path, ns=(mtime, mtime))
    return str(run_dir)


def test_a_full_check_reads_each_run_once_then_only_what_moved(tmp_path):
    for name in "abc":
        _write(tmp_path, name)
    source = NoteRuns(tmp_path)
    first = source()
    assert [r.id for r in first] == ["a", "b", "c"] and source.reads == Counter("abc")
    assert source() is first  # nothing moved: the very same list, nothing read
    assert source.reads == Counter("abc")
    _write(tmp_path, "b", "error")
    second = source()
    assert second is not first and source.reads == Counter("abbc")
    assert [r.status for r in second] == [COMPLETED, "error", COMPLETED]
    assert second[0] is first[0] and second[2] is first[2]  # unchanged runs: the same objects


def test_changed_paths_recheck_only_the_runs_under_them(tmp_path):
    dirs = {name: _write(tmp_path, name) for name in "abc"}
    source = NoteRuns(tmp_path)
    first = source()
    source.fingerprints.clear()
    assert source(changed=set()) is first and not source.fingerprints
    _write(tmp_path, "c", "error")
    _write(tmp_path, "a", "error")  # not reported: not seen yet
    runs = source(changed={os.path.join(dirs["c"], "status")})
    assert source.fingerprints == Counter("c")
    assert [r.status for r in runs] == [COMPLETED, COMPLETED, "error"]
    assert [r.status for r in source()] == ["error", COMPLETED, "error"]  # a full check sees all


def test_runs_that_have_not_ended_are_rechecked_on_every_report(tmp_path):
    _write(tmp_path, "done")
    live = _write(tmp_path, "live", RUNNING)
    source = NoteRuns(tmp_path)
    source()
    source.fingerprints.clear()
    source(changed=set())
    assert source.fingerprints == Counter({"live": 1})
    _write(tmp_path, "live", COMPLETED)  # its status moves with no report naming it
    assert {r.id: r.status for r in source(changed=set())}["live"] == COMPLETED
    source.fingerprints.clear()
    source(changed=set())
    assert not source.fingerprints  # ended: no longer re-checked unasked
    assert os.path.isdir(live)


def test_a_new_run_is_found_when_its_root_is_reported(tmp_path):
    _write(tmp_path, "a")
    source = NoteRuns(tmp_path)
    source()
    _write(tmp_path, "b")
    assert [r.id for r in source(changed={str(tmp_path)})] == ["a", "b"]


def test_a_run_that_cannot_be_read_is_left_out_with_one_warning(tmp_path, caplog):
    _write(tmp_path, "a")
    bad = _write(tmp_path, "b", "bad")
    source = NoteRuns(tmp_path)
    assert [r.id for r in source()] == ["a"]
    assert [r.id for r in source()] == ["a"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and bad in warnings[0] and "status file says bad" in warnings[0]
    _write(tmp_path, "b", COMPLETED)
    assert [r.id for r in source()] == ["a", "b"]
    assert not source.reporter.active()


def test_a_listing_that_fails_keeps_what_was_known_and_a_gone_root_has_no_runs(tmp_path, caplog):
    _write(tmp_path, "a")
    source = NoteRuns(tmp_path)
    assert [r.id for r in source()] == ["a"]
    source.fail_listing = PermissionError(13, "Permission denied")
    assert [r.id for r in source()] == ["a"]  # unreadable for a moment: runs kept
    assert "cannot list notes runs" in caplog.records[-1].getMessage()
    source.fail_listing = FileNotFoundError(2, "No such file or directory")
    assert source() == []  # gone is gone
    source.fail_listing = None
    assert [r.id for r in source()] == ["a"] and not source.reporter.active()


def test_combined_sources_show_a_run_once_and_keep_the_same_list(tmp_path):
    _write(tmp_path / "x", "a")
    _write(tmp_path / "x", "b")
    outer, inner = NoteRuns(tmp_path / "x"), NoteRuns(tmp_path / "x")
    combined = CombinedRuns([outer, inner])
    first = combined()
    assert [r.id for r in first] == ["a", "b"]
    assert combined(changed=set()) is first
    assert combined.roots() == [str(tmp_path / "x")] * 2

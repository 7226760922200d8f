"""The compact layout judged by a real TensorBoard, beside the linked layout of the same runs.

The same runs (event files at the root, in ``train/`` and ``val/``; ended,
failed and running) go into two logdirs, one per layout; TensorBoard must
show the same rows, hparams, metric values and statuses in both, with the
compact layout's metrics at the root and the group in the tag (``train/loss``).
Both loaders.  Then a logdir written linked is taken over by a compact
monitor: every row stays at every poll while each run is written anew.
"""

from __future__ import annotations

import dataclasses

import pytest
from runs_helpers import write_scalars
from tb import wait_without_gap

from runsmon import Run, RunsMonitor

LOADERS = pytest.mark.parametrize("load_fast", [False, True], ids=["python", "rust"])
T0 = 1_700_000_000.0
STATUS = {
    "completed": "STATUS_SUCCESS",
    "error": "STATUS_FAILURE",
    "running": "STATUS_RUNNING",
}


def _runs(root) -> list[Run]:
    runs = []
    for i, status in enumerate(("completed", "error", "running", "completed")):
        run_dir = root / f"run{i}"
        write_scalars(run_dir, {"lr": [(0, 0.1), (1, 0.01 * (i + 1))]})
        write_scalars(run_dir / "train", {"loss": [(0, 2.0), (1, 1.0 / (i + 1))]})
        write_scalars(run_dir / "val", {"loss": [(0, 3.0 + i)], "acc": [(0, 0.1 * i)]})
        runs.append(
            Run(
                f"run{i}",
                str(run_dir),
                flags={"lr": 0.1 * (i + 1), "opt": ("adam", "sgd")[i % 2], "layers": i},
                status=status,
                started=T0 + i,
                stopped=T0 + 100 + i if status != "running" else None,
                operation="train",
            )
        )
    return runs


def _compact_names(metrics: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {(f"{g}/{t}" if g else t, ""): v for (t, g), v in metrics.items()}


def _complete(n: int, metrics: int):
    def done(table: dict) -> bool:
        return len(table) == n and all(len(row["metrics"]) >= metrics for row in table.values())

    return done


@LOADERS
def test_compact_shows_what_linked_shows(tmp_path, tensorboard, load_fast):
    runs = _runs(tmp_path / "runs")
    logdirs = {}
    for layout in ("linked", "compact"):
        monitor = RunsMonitor(str(tmp_path / layout), lambda: runs, layout=layout, watch=False)
        monitor.run_once()
        assert monitor.layout == layout
        logdirs[layout] = monitor
    linked = tensorboard(logdirs["linked"].logdir.path, load_fast=load_fast)
    compact = tensorboard(logdirs["compact"].logdir.path, load_fast=load_fast)
    # root lr, train/loss, val/loss, val/acc, time (the running run has no time)
    want = _complete(len(runs), 4)
    seen_linked = linked.wait_for(want, timeout=60, what="linked rows")
    seen_compact = compact.wait_for(want, timeout=60, what="compact rows")
    assert sorted(seen_compact) == sorted(seen_linked)
    for name, row in seen_linked.items():
        other = seen_compact[name]
        assert other["hparams"] == row["hparams"]
        assert other["status"] == row["status"]
        assert other["metrics"] == _compact_names(row["metrics"])
        assert len(other["sessions"]) == 1
    by_status = sorted(row["status"] for row in seen_compact.values())
    assert by_status == sorted(STATUS[r.status] for r in runs)
    row = next(iter(seen_compact.values()))
    assert ("train/loss", "") in row["metrics"] and ("val/loss", "") in row["metrics"]
    assert ("loss", "train") in next(iter(seen_linked.values()))["metrics"]
    metric_infos = {
        (m["name"].get("tag"), m["name"].get("group", ""))
        for m in compact.experiment()["metricInfos"]
    }
    assert {("train/loss", ""), ("val/loss", ""), ("val/acc", ""), ("lr", "")} <= metric_infos


@LOADERS
def test_a_linked_logdir_goes_compact_without_a_gap(tmp_path, tensorboard, load_fast):
    runs = _runs(tmp_path / "runs")
    logdir = str(tmp_path / "logdir")
    linked = RunsMonitor(logdir, lambda: runs, layout="linked", watch=False)
    linked.run_once()
    tb = tensorboard(logdir, load_fast=load_fast)
    before = tb.wait_for(_complete(len(runs), 4), timeout=60, what="linked rows")
    linked.logdir.release()
    del linked
    compact = RunsMonitor(logdir, lambda: runs, layout="compact", watch=False)
    assert compact.run_once().rewrites == len(runs)

    def shown_compact(table: dict) -> bool:
        return all(
            row["metrics"] == _compact_names(before[name]["metrics"]) for name, row in table.items()
        )

    after = wait_without_gap(tb.table, shown_compact, len(runs), timeout=30, what="compact")
    assert {n: r["status"] for n, r in after.items()} == {n: r["status"] for n, r in before.items()}
    assert {n: r["hparams"] for n, r in after.items()} == {
        n: r["hparams"] for n, r in before.items()
    }


@LOADERS
def test_an_end_info_appended_to_the_one_file_is_shown(tmp_path, tensorboard, load_fast):
    # A status guessed from idleness: no end info while it runs, then one appended.
    runs = _runs(tmp_path / "runs")[:1]
    runs[0] = dataclasses.replace(
        runs[0], status="running", stopped=None, attrs={"status_rule": "idle"}
    )
    monitor = RunsMonitor(str(tmp_path / "logdir"), lambda: runs, layout="compact", watch=False)
    monitor.run_once()
    tb = tensorboard(monitor.logdir.path, load_fast=load_fast)
    first = tb.wait_for(_complete(1, 4), timeout=60, what="the running run")
    assert next(iter(first.values()))["status"] == "STATUS_UNKNOWN"
    runs[0] = dataclasses.replace(runs[0], status="completed", stopped=T0 + 100)
    assert monitor.run_once().rewrites == 0
    shown = tb.wait_for(
        lambda t: (
            next(iter(t.values()))["status"] == "STATUS_SUCCESS"
            and ("time", "") in next(iter(t.values()))["metrics"]
        ),
        timeout=30,
        what="its end",
    )
    assert next(iter(shown.values()))["metrics"][("time", "")] == 100

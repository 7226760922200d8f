"""End to end: a RunsMonitor feeding a real TensorBoard process."""

from __future__ import annotations

import dataclasses
import os

import pytest
from runs_helpers import write_scalars
from tb import TensorBoardProcess

from runsmon import Run, RunsMonitor

ALL_DONE = ("STATUS_SUCCESS", "STATUS_FAILURE")


class ListSource:
    """A run-listing callback over a dict that the test edits."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.expected: dict[str, bytes] = {}

    def __call__(self) -> list[Run]:
        return list(self.runs.values())

    def add(self, run: Run) -> None:
        """List ``run``; its files as they are now become the expected ones."""
        self.expected.update(_tree_digest(run.dir, prefix=run.id))
        self.runs[run.id] = run


def _run(tmp_path, run_id, flags, status, scalars=None, **kw) -> Run:
    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    for group, tags in (scalars or {}).items():
        write_scalars(run_dir / group if group else run_dir, tags)
    stopped = 1_700_000_100.0 if status in ("completed", "error", "terminated") else None
    return Run(
        run_id,
        str(run_dir),
        flags=flags,
        status=status,
        started=1_700_000_000.0,
        stopped=stopped,
        operation="train",
        **kw,
    )


def _name(monitor: RunsMonitor, run_id: str) -> str | None:
    return monitor.run_names.get(run_id)


@pytest.mark.tb
@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_runs_live_in_a_running_tensorboard(tmp_path, load_fast):
    source = ListSource()
    source.add(
        _run(
            tmp_path,
            "aaaa1111",
            {"lr": 0.1, "opt": "adam", "model": {"layers": 2}, "aug": True, "note": None},
            "completed",
            {
                "": {"acc": [(0, 0.5), (1, 0.75)], "sys/gpu": [(0, 1.0)]},
                "train": {"loss": [(0, 2.0), (1, 1.0)]},
                "val": {"loss": [(0, 3.0), (1, 1.5)]},
            },
        )
    )
    source.add(
        _run(
            tmp_path, "bbbb2222", {"lr": 0.01, "opt": "sgd"}, "running", {"": {"acc": [(0, 0.25)]}}
        )
    )
    source.add(_run(tmp_path, "cccc3333", {"lr": 0.5, "opt": "sgd", "aug": False}, "error"))
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), source, interval=0.5)
    with monitor, TensorBoardProcess(logdir, load_fast=load_fast) as tb:
        a, b, c = (_name(monitor, r) for r in ("aaaa1111", "bbbb2222", "cccc3333"))
        table = tb.wait_for(lambda t: len(t) == 3 and t[a]["metrics"].get(("loss", "val")) == 1.5)
        assert table[a]["hparams"] == {
            "lr": 0.1,
            "opt": "adam",
            "model.layers": 2,
            "aug": True,
        }
        assert table[a]["metrics"][("loss", "train")] == 1.0
        assert table[a]["metrics"][("acc", "")] == 0.75
        assert table[a]["metrics"][("time", "")] == 100.0
        assert table[a]["status"] == "STATUS_SUCCESS"
        assert table[b]["status"] == "STATUS_RUNNING"
        assert table[c]["status"] == "STATUS_FAILURE"
        assert table[c]["hparams"]["aug"] is False
        exp = tb.experiment()
        metrics = {(m["name"].get("group", ""), m["name"]["tag"]) for m in exp["metricInfos"]}
        assert metrics == {("", "acc"), ("train", "loss"), ("val", "loss"), ("", "time")}
        domains = {h["name"]: h for h in exp["hparamInfos"]}
        assert domains["lr"]["domainInterval"] == {"minValue": 0.01, "maxValue": 0.5}
        assert set(tb.table(tb.dashboard_filters())) == {a, b, c}

        # A new run with a new flag and a new metric; a running run ends; a run goes.
        source.add(
            _run(
                tmp_path,
                "dddd4444",
                {"lr": 0.2, "dropout": 0.3},
                "completed",
                {"": {"f1": [(0, 0.9)]}},
            )
        )
        source.add(
            dataclasses.replace(
                source.runs["bbbb2222"], status="completed", stopped=1_700_000_050.0
            )
        )
        del source.runs["cccc3333"]
        # Within a poll (0.5 s), a reload (1 s) and 2 s, no row ever missing
        # (the removed run's row may go; the others stay).
        table = tb.wait_without_gap(
            lambda t: (
                set(t) == {a, b, _name(monitor, "dddd4444")}
                and t[b]["status"] == "STATUS_SUCCESS"
                and t[_name(monitor, "dddd4444")]["metrics"].get(("f1", "")) == pytest.approx(0.9)
            ),
            rows=2,
            timeout=3.5,
            what="new run, ended run, removed run",
        )
        assert {a, b} <= set(table)
        d = _name(monitor, "dddd4444")
        assert table[d]["hparams"] == {"lr": 0.2, "dropout": 0.3}
        exp = tb.wait_for(
            lambda e: (
                {h["name"] for h in e["hparamInfos"]} >= {"dropout"}
                and any(m["name"]["tag"] == "f1" for m in e["metricInfos"])
            ),
            fetch=tb.experiment,
        )

        # An off-type value turns the column into text everywhere; filters still work.
        source.add(_run(tmp_path, "eeee5555", {"lr": "auto"}, "completed"))
        table = tb.wait_without_gap(
            lambda t: (
                len(t) == 4 and all(isinstance(r["hparams"].get("lr"), str) for r in t.values())
            ),
            rows=3,
            timeout=3.5,
            what="lr turned to text",
        )
        assert table[a]["hparams"]["lr"] == "0.1"
        assert set(tb.table(tb.dashboard_filters())) == set(table)
    assert _tree_digest(tmp_path / "runs") == source.expected  # nothing written into runs


def _tree_digest(root, prefix: str = "") -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.join(prefix, os.path.relpath(path, root))] = fh.read()
    return out

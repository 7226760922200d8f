"""Seed groups through a real TensorBoard: one row per configuration whose
metrics are the mean over its runs, and which follows seeds as they come
and go, staying one row with one name."""

from __future__ import annotations

import shutil
import time

import pytest
from tb import WaitTimeout

from runsmon import RunsMonitor
from runsmon.seeds import RUNS_HPARAM, SeedGroups
from runsmon.sources.guild import GuildRuns
from runsmon.testing import make_guild_run

CONFIG = "lr=0.01 opt=adam"
OTHER = "lr=0.1 opt=adam"


def _seed(runs_dir, seed: int, acc: float, lr: float = 0.01) -> str:
    return make_guild_run(
        runs_dir,
        flags={"lr": lr, "opt": "adam", "seed": seed},
        scalars={"acc": [(0, 0.5), (1, acc)]},
        started=1_700_000_000.0 + seed,
    )


def _steady(tb, predicate, rows: int, timeout: float = 30.0) -> dict:
    """Poll the dashboard until ``predicate``; every poll must show exactly
    ``rows`` rows (a row neither vanishes nor splits in two)."""
    t0 = time.monotonic()
    while True:
        table = tb.table()
        assert len(table) == rows, f"{len(table)} rows, not {rows}: {sorted(table)}"
        if predicate(table):
            return table
        if time.monotonic() - t0 > timeout:
            raise WaitTimeout(f"not shown within {timeout} s; last seen: {table!r}")
        time.sleep(0.2)


def _row(table: dict, n: int, mean: float) -> bool:
    row = table.get(CONFIG)
    return (
        row is not None
        and len(row["sessions"]) == n
        and row["hparams"].get(RUNS_HPARAM) == n
        and row["metrics"].get(("acc", "")) == pytest.approx(mean, abs=1e-6)
    )


@pytest.mark.parametrize("load_fast", [True, False], ids=["load_fast", "python_loader"])
def test_a_seed_group_is_one_row_with_the_mean_and_follows_its_seeds(
    tmp_path, tensorboard, load_fast
):
    runs_dir = tmp_path / "runs"
    made = {seed: _seed(runs_dir, seed, acc) for seed, acc in ((1, 0.90), (2, 0.91), (3, 0.92))}
    _seed(runs_dir, 1, 0.95, lr=0.1)
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(
        str(logdir), GuildRuns(str(runs_dir)), watch=False, seed_groups=SeedGroups()
    )
    monitor.run_once()
    tb = tensorboard(logdir, load_fast=load_fast)
    table = tb.wait_for(lambda t: _row(t, 3, 0.91) and OTHER in t, what="the two groups")
    assert sorted(table) == [CONFIG, OTHER]
    row = table[CONFIG]
    # No seed on the row: it is the mean of three seeds.
    assert row["hparams"] == {"lr": 0.01, "opt": "adam", RUNS_HPARAM: 3}
    assert table[OTHER]["metrics"][("acc", "")] == pytest.approx(0.95, abs=1e-6)
    # "Show Metrics" plots each session's curve: the sessions are the runs'
    # own directories, each a run of the Scalars dashboard.
    dirs = monitor.run_dirs
    members = {
        dirs[run_id] for run_id in dirs if run_id in {p.rsplit("/", 1)[-1] for p in made.values()}
    }
    assert {s["name"] for s in row["sessions"]} == members
    assert members <= set(tb.runs())
    # The experiment declares the count and no seed.
    names = [h["name"] for h in tb.experiment()["hparamInfos"]]
    assert RUNS_HPARAM in names and "seed" not in names

    # A fourth seed joins: the same row, the mean of four.
    _seed(runs_dir, 4, 0.93)
    monitor.run_once()
    _steady(tb, lambda t: _row(t, 4, 0.915), rows=2)

    # One is deleted: the mean of the three left.
    shutil.rmtree(made[1])
    monitor.run_once()
    _steady(tb, lambda t: _row(t, 3, 0.92), rows=2)

"""Columns and names a person can read, through a real TensorBoard.

- The experiment says which hparams differ between runs (``differs``), and
  lists them first: the HPARAMS tab shows only the first five hparams by
  default and puts differing ones first.
- Session group names (the Trial ID column, cut after about 16 characters)
  start with what tells runs apart, and stay put when other runs come.
- Runs at the same relative path under two PATHs are two runs.
"""

from __future__ import annotations

import os

import pytest

from runsmon import RunsMonitor
from runsmon.sources import combine, detect_source
from sample_projects.layouts import hydra_multirun, lightning

#: How many characters of a name the dashboard's Trial ID column shows.
TRIAL_ID_CHARS = 16
#: How many hparams the HPARAMS tab shows as columns by default.
DEFAULT_COLUMNS = 5

SWEEP = [
    ["model.lr=0.1", "optimizer=adam"],
    ["model.lr=0.01", "optimizer=adam"],
    ["model.lr=0.1", "optimizer=sgd"],
    ["model.lr=0.01", "optimizer=sgd"],
]


def _multirun(root: str, jobs: list[list[str]], time: str, monkeypatch) -> list[str]:
    """A Hydra multirun of ``jobs`` under ``root``/multirun/<date>/<time>; the job dirs."""
    monkeypatch.setattr(hydra_multirun, "JOBS", jobs)
    monkeypatch.setattr(hydra_multirun, "TIME", time)
    return list(hydra_multirun.make(root))


def _experiment(tb) -> list[tuple[str, bool]]:
    return [(h["name"], bool(h.get("differs", False))) for h in tb.experiment()["hparamInfos"]]


def test_differs_and_names_in_the_dashboard(tmp_path, tensorboard, monkeypatch):
    root = str(tmp_path / "project")
    # model.lr and optimizer are swept; seed, trainer.max_epochs... are the same.
    jobs = [[o.replace("optimizer=", "optimizer.name=") for o in job] for job in SWEEP]
    _multirun(root, jobs, "07-18-27", monkeypatch)
    monitor = RunsMonitor(str(tmp_path / "logdir"), detect_source(root), watch=False)
    monitor.run_once()
    tb = tensorboard(tmp_path / "logdir")
    table = tb.wait_for(lambda t: len(t) == 4, timeout=30, what="four session groups")

    # Only what differs says so; it comes first, so the default view shows it.
    infos = _experiment(tb)
    differing = {name for name, differs in infos if differs}
    assert differing == {"model.lr", "optimizer.name"}, infos
    assert {name for name, _ in infos[: len(differing)]} == differing
    constant = {name for name, differs in infos if not differs}
    assert {"seed", "trainer.max_epochs", "optimizer.momentum", "model.depth"} <= constant

    # Each row tells itself apart within what the Trial ID column shows.
    names = sorted(table)
    assert len({n[:TRIAL_ID_CHARS] for n in names}) == 4, names
    assert [n.split()[0] for n in names] == ["0", "1", "2", "3"], names
    assert names[0].startswith("0 lr=0.1 name=adam"), names

    # A second sweep comes: the first sweep's rows keep their names, and an
    # hparam the new sweep changes now differs.
    before = dict(monitor.run_names)
    _multirun(root, [["model.lr=0.1", "optimizer.name=adam", "seed=8"]], "09-00-00", monkeypatch)
    monitor.run_once()
    assert {k: v for k, v in monitor.run_names.items() if k in before} == before
    table = tb.wait_for(lambda t: len(t) == 5, timeout=30, what="the new sweep's run")
    assert set(before.values()) < set(table)
    infos = tb.wait_for(
        lambda i: ("seed", True) in i, fetch=lambda: _experiment(tb), what="seed differs"
    )
    differing = {name for name, differs in infos if differs}
    assert differing == {"model.lr", "optimizer.name", "seed"}, infos
    assert {name for name, _ in infos[:DEFAULT_COLUMNS]} >= differing


def test_the_same_relative_path_under_two_paths_is_two_runs(tmp_path, tensorboard):
    paths = [str(tmp_path / "projA"), str(tmp_path / "elsewhere" / "projB")]
    for path in paths:
        lightning.make(path)  # lightning_logs/version_0 and version_1 in each
    source = combine([detect_source(p) for p in paths])
    monitor = RunsMonitor(str(tmp_path / "logdir"), source, watch=False)
    stats = monitor.run_once()
    assert stats.runs == stats.sessions == 4
    tb = tensorboard(tmp_path / "logdir")
    table = tb.wait_for(lambda t: len(t) == 4, timeout=30, what="four session groups")
    assert sorted(table) == [
        "projA version_0",
        "projA version_1",
        "projB version_0",
        "projB version_1",
    ]
    for name, row in table.items():
        assert row["metrics"], name  # each run's own curves
    ids = sorted(monitor.run_names)
    assert ids == [
        "projA/lightning_logs/version_0",
        "projA/lightning_logs/version_1",
        "projB/lightning_logs/version_0",
        "projB/lightning_logs/version_1",
    ]


def test_overlapping_paths_show_a_run_once(tmp_path):
    root = tmp_path / "projA"
    lightning.make(str(root))
    source = combine([detect_source(str(root)), detect_source(str(root / "lightning_logs"))])
    runs = source()
    assert sorted(os.path.basename(r.dir) for r in runs) == ["version_0", "version_1"]


@pytest.mark.parametrize("order", [0, 1])
def test_two_path_names_do_not_depend_on_the_runs(tmp_path, order):
    """A PATH's short name comes from the PATHs given, not from the runs in them."""
    a, b = tmp_path / "x" / "runs", tmp_path / "y" / "runs"
    lightning.make(str(a))
    os.makedirs(b)
    paths = [str(a), str(b)][:: 1 if order == 0 else -1]
    source = combine([detect_source(p, kind="dirs") for p in paths])
    first = sorted(r.id for r in source())
    assert first == ["x/runs/lightning_logs/version_0", "x/runs/lightning_logs/version_1"]
    lightning.make(str(b))  # runs appear under the other PATH
    ids = sorted(r.id for r in source())
    assert set(first) < set(ids) and len(ids) == 4

"""Tags and notes as columns and filters, through a real TensorBoard: each
tag a boolean hparam ``tag:NAME`` the dashboard's checkbox filter selects
by, a note the string hparam ``note``, and both follow the user's tagging
live (Guild's attrs as ``guild tag`` writes them, MLflow's tags set by the
``mlflow`` client)."""

from __future__ import annotations

import textwrap

import pytest

from runsmon import RunsMonitor
from runsmon.sources.guild import GuildRuns
from runsmon.sources.mlflow import MLflowRuns
from runsmon.sources.mlflow_sqlite import MLflowSQLiteRuns
from runsmon.testing import make_guild_run, write_attr
from sample_projects.layouts import mlflow_sqlite

BASELINE = [{"hparam": "tag:baseline", "filterDiscrete": [True], "includeInResult": True}]


def _tagged(table: dict) -> dict[str, bool | None]:
    return {name: row["hparams"].get("tag:baseline") for name, row in table.items()}


def _notes(table: dict) -> dict[str, str | None]:
    """The note of each row, by the last word of its name (the run's label)."""
    return {name.split()[-1]: row["hparams"].get("note") for name, row in table.items()}


@pytest.mark.parametrize("load_fast", [True, False], ids=["load_fast", "python_loader"])
def test_guild_tags_filter_the_dashboard_and_follow_guild_tag(tmp_path, tensorboard, load_fast):
    runs_dir = tmp_path / "runs"
    a = make_guild_run(runs_dir, flags={"lr": 0.1}, label="a")
    make_guild_run(runs_dir, flags={"lr": 0.2}, label="b", attrs={"tags": ["baseline"]})
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), GuildRuns(str(runs_dir)), watch=False)
    monitor.run_once()
    tb = tensorboard(logdir, load_fast=load_fast)
    table = tb.wait_for(lambda t: len(t) == 2, what="both runs")
    infos = {h["name"]: h for h in tb.experiment()["hparamInfos"]}
    assert infos["tag:baseline"]["type"] == "DATA_TYPE_BOOL"
    assert sorted(_tagged(table).values()) == [False, True]
    # The checkbox filter with only "true" checked keeps the tagged run.
    only = tb.table(BASELINE)
    assert [name.split()[-1] for name in only] == ["b"]

    # `guild tag a baseline` and `guild comment`: the run shows both.
    write_attr(a, "tags", ["baseline"])
    comment = {"body": "lr too high?", "host": "vm", "time": 1796031911613622, "user": ""}
    write_attr(a, "comments", [comment])
    monitor.run_once()
    tb.wait_for(lambda t: len(t) == 2, fetch=lambda: tb.table(BASELINE), what="a tagged")
    table = tb.wait_for(lambda t: _notes(t)["a"], what="a's note")
    assert _notes(table) == {"a": "lr too high?", "b": ""}
    # A regexp filter on the note, as the dashboard sends it.
    noted = tb.table([{"hparam": "note", "filterRegexp": "too high", "includeInResult": True}])
    assert [name.split()[-1] for name in noted] == ["a"]


_FIRST = textwrap.dedent(
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    c = MlflowClient()
    exp = c.create_experiment("tags")
    ids = []
    for name, lr in (("a", "0.1"), ("b", "0.2")):
        run_id = c.create_run(exp, run_name=name).info.run_id
        c.log_batch(run_id, params=[Param("lr", lr)], metrics=[Metric("acc", 0.9, 0, 1)])
        c.set_terminated(run_id)
        ids.append(run_id)
    c.set_tag(ids[1], "baseline", "")
    c.set_tag(ids[0], "mlflow.note.content", "first try")
    print(" ".join(ids))
    """
)
_LATER = textwrap.dedent(
    """
    import sys
    from mlflow import MlflowClient

    c = MlflowClient()
    a = sys.argv[1]
    c.set_tag(a, "baseline", "true")
    c.set_tag(a, "mlflow.note.content", "lr too high?")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["file", "sqlite"])
def test_mlflow_tags_and_note_set_by_the_client_show_live(tmp_path, tensorboard, store):
    if not mlflow_sqlite.available():
        pytest.skip("mlflow is not installed")
    root = tmp_path / "mlflow"
    root.mkdir()
    uri = f"file:{root / 'mlruns'}" if store == "file" else "sqlite:///mlflow.db"
    a, _ = mlflow_sqlite.run_mlflow(str(root), _FIRST, uri=uri).split()
    source = MLflowRuns(str(root)) if store == "file" else MLflowSQLiteRuns(str(root))
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), source, watch=False)
    monitor.run_once()
    tb = tensorboard(logdir)
    table = tb.wait_for(lambda t: len(t) == 2, what="both runs")
    shown = {name.split()[-1]: row["hparams"] for name, row in table.items()}
    assert shown["a"]["tag:baseline"] is False and shown["a"]["note"] == "first try"
    assert shown["b"]["tag:baseline"] is True and shown["b"]["note"] == ""
    assert [n.split()[-1] for n in tb.table(BASELINE)] == ["b"]

    # The client tags run a and edits its note (a tag set again, in place).
    mlflow_sqlite.run_mlflow(str(root), _LATER, a, uri=uri)
    monitor.run_once()
    tb.wait_for(lambda t: len(t) == 2, fetch=lambda: tb.table(BASELINE), what="a tagged")
    table = tb.wait_for(lambda t: _notes(t)["a"] != "first try", what="a's new note")
    assert _notes(table) == {"a": "lr too high?", "b": ""}

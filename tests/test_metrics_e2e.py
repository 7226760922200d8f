"""Which scalars are metrics, through runsmon into a real TensorBoard, and `runsmon table`.

A metric is (tag, group) for every scalar tag of every event directory of a
run, the group being the directory ("" at the run's root), ``sys/*`` left
out; include and exclude globs match the tag, ``GROUP#TAG`` names a group.
``runsmon table`` and the dashboard share one definition of a run's view, so
they never disagree: the last test checks that for every sample layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from guild_fake import make_guild_run, write_event_file

from runsmon import RunsMonitor
from runsmon import table as runs_table
from runsmon.fs import LOCAL
from runsmon.runfiles import FILTER, RunFiles
from runsmon.sources import GuildRuns, detect_source
from sample_projects.layouts import LAYOUTS, lightning, wandb_offline
from sample_projects.layouts._events import T0, write_events, write_text

ROOT = Path(__file__).resolve().parent.parent
LOADERS = pytest.mark.parametrize("load_fast", [False, True], ids=["python", "rust"])

Metric = tuple[str, str]


def metric_key(metric: Metric) -> str:
    """A metric as `runsmon table` and the globs name it: TAG at the root, else GROUP#TAG."""
    tag, group = metric
    return f"{group}#{tag}" if group else tag


def runsmon_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runsmon", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=dict(os.environ, COLUMNS="200"),
    )


def experiment_metrics(tb: Any) -> list[Metric]:
    """The experiment's metrics, in its order."""
    return [(m["name"]["tag"], m["name"].get("group", "")) for m in tb.experiment()["metricInfos"]]


def serve_once(logdir: Path, *args: str) -> None:
    done = runsmon_cli("serve", "--once", "--no-tensorboard", "--logdir", str(logdir), *args)
    assert done.returncode == 0, done.stderr


def table_json(*args: str) -> list[dict[str, Any]]:
    done = runsmon_cli("table", "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- 1. every scalar tag, whatever "/" it holds; globs match the tag --------------------


def _tutorial_runs(root: str) -> None:
    """PyTorch's tutorial and Hydra/Lightning conventions in one tree, two runs."""
    for i in range(2):
        run = os.path.join(root, f"run{i}")
        start = T0 + i * 100
        write_text(os.path.join(run, "config.yaml"), yaml.safe_dump({"lr": 0.1 / (i + 1)}), start)
        write_events(
            run,
            {
                "Loss/train": [1.0, 0.5 + i],
                "Loss/test": [1.1, 0.6 + i],
                "Accuracy/test": [0.3, 0.7 + i / 10],
                "train/loss": [0.9, 0.4 + i],
                "acc/top1": [0.2, 0.4 + i / 10],
                "epoch": [0.0, 1.0],
                "sys/gpu": [50.0, 60.0],
            },
            start,
        )
        write_events(os.path.join(run, "val"), {"loss": [1.2, 0.8 + i]}, start)


@LOADERS
def test_every_scalar_tag_is_a_metric_in_a_stable_order(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "runs")
    _tutorial_runs(root)
    logdir = tmp_path / "logdir"
    RunsMonitor(str(logdir), detect_source(root), watch=False).run_once()
    tb = tensorboard(logdir, load_fast=load_fast)
    tb.wait_for(lambda t: len(t) == 2, timeout=30, what="two runs")
    # The user's splits first (train, val, test), then the rest alphabetically, time last.
    assert experiment_metrics(tb) == [
        ("Loss/train", ""),
        ("train/loss", ""),
        ("loss", "val"),
        ("Accuracy/test", ""),
        ("Loss/test", ""),
        ("acc/top1", ""),
        ("epoch", ""),
        ("time", ""),
    ]
    table = tb.wait_for(
        lambda t: all(len(r["metrics"]) == 8 for r in t.values()), timeout=30, what="values"
    )
    by_lr = sorted(table.values(), key=lambda row: -row["hparams"]["lr"])  # run0, run1
    for i, row in enumerate(by_lr):
        metrics = row["metrics"]
        assert metrics[("Loss/train", "")] == pytest.approx(0.5 + i)
        assert metrics[("train/loss", "")] == pytest.approx(0.4 + i)
        assert metrics[("loss", "val")] == pytest.approx(0.8 + i)
        assert metrics[("acc/top1", "")] == pytest.approx(0.4 + i / 10)
        assert ("sys/gpu", "") not in metrics


@pytest.mark.parametrize(
    "include, expected",
    [
        # A "/" is part of the tag: train/* is the tag train/loss, not val's loss or a group.
        ("train/*", {"train/loss"}),
        ("acc/*", {"acc/top1"}),
        ("val#*", {"val#loss"}),
        ("*loss*", {"train/loss", "val#loss", "Loss/train", "Loss/test"}),
    ],
)
def test_table_and_dashboard_agree_on_metric_globs(tmp_path, tensorboard, include, expected):
    root = str(tmp_path / "runs")
    _tutorial_runs(root)
    if include == "*loss*":
        glob_args = ("--metric-include", include.lower(), "--metric-include", "*Loss*")
    else:
        glob_args = ("--metric-include", include)
    rows = table_json(*glob_args, root)
    logdir = tmp_path / "logdir"
    serve_once(logdir, *glob_args, root)
    tb = tensorboard(logdir, load_fast=True)
    tb.wait_for(lambda t: len(t) == 2, timeout=30, what="two runs")
    declared = {metric_key(m) for m in experiment_metrics(tb)}
    assert declared == expected | {"time"}
    table = tb.wait_for(
        lambda t: all(len(r["metrics"]) == len(declared) for r in t.values()),
        timeout=30,
        what="every value",
    )
    for row in rows:
        assert set(row["metrics"]) == declared
        shown = {metric_key(m): v for m, v in table[row["run"]]["metrics"].items()}
        assert row["metrics"] == pytest.approx(shown, rel=1e-6), row["run"]
        assert all(v is not None for v in row["metrics"].values())


# -- 2. Lightning's hp_metric placeholder ---------------------------------------------


@LOADERS
def test_lightning_hp_metric_placeholder_left_out(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "project")
    versions = lightning.make(root)
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), detect_source(root), watch=False)
    monitor.run_once()
    names = {os.path.basename(v): monitor.run_names[os.path.relpath(v, root)] for v in versions}
    tb = tensorboard(logdir, load_fast=load_fast)
    # version_1's code set hp_metric: the column is there; version_0 never did: no value.
    assert ("hp_metric", "") in experiment_metrics(tb)
    table = tb.wait_for(
        lambda t: len(t) == 2 and ("hp_metric", "") in t[names["version_1"]]["metrics"],
        timeout=30,
        what="hp_metric of version_1",
    )
    assert table[names["version_1"]]["metrics"][("hp_metric", "")] == pytest.approx(0.45)
    assert ("hp_metric", "") not in table[names["version_0"]]["metrics"]
    assert table[names["version_0"]]["metrics"][("train_loss", "")] == pytest.approx(0.4)
    rows = {r["run"]: r for r in table_json(root)}
    assert rows[names["version_0"]]["metrics"]["hp_metric"] is None
    assert rows[names["version_1"]]["metrics"]["hp_metric"] == pytest.approx(0.45)


def test_lightning_placeholder_only_no_column(tmp_path):
    root = str(tmp_path / "project")
    lightning.make(root)
    # Only the run that never set hp_metric: no such column at all.
    source = detect_source(os.path.join(root, "lightning_logs", "version_0"))
    data = runs_table.collect(source)
    assert ("hp_metric", "") not in data.metrics
    assert ("train_loss", "") in data.metrics


# -- 3. Guild: an operation's compare columns decide its runs' metrics -------------------

GUILD_YML = textwrap.dedent(
    """\
    train:
      main: train
      flags:
        lr: 0.1
      compare:
        - =lr
        - loss step
        - last val#acc as val_acc
        - min loss as best
    """
)


def _guild_runs(tmp_path: Path) -> tuple[str, Path]:
    """Two runs of a Guild file operation (opref as Guild 0.9 writes it) with `compare`."""
    project = tmp_path / "project"
    project.mkdir()
    guildfile = project / "guild.yml"
    guildfile.write_text(GUILD_YML)
    runs = tmp_path / "home" / "runs"
    for i in range(2):
        run_dir = make_guild_run(
            runs,
            flags={"lr": 0.1 * (i + 1)},
            scalars={"loss": [(0, 1.0), (1, 0.5 - i / 10), (2, 0.9)], "epoch": [(1, 1.0)]},
            started=T0 + i * 100,
        )
        with open(os.path.join(run_dir, ".guild", "opref"), "w") as f:
            f.write(f"guildfile:{guildfile} 9a7572116f1371bb019c1b6ef5a36d0c '' train")
        write_event_file(os.path.join(run_dir, "val"), {"acc": [(1, 0.8 + i / 10)]})
        write_event_file(run_dir, {"extra/x": [(1, 3.0)]})
    return str(tmp_path / "home"), guildfile


def test_guild_compare_decides_metrics(tmp_path, tensorboard):
    home, guildfile = _guild_runs(tmp_path)
    logdir = tmp_path / "logdir"
    RunsMonitor(str(logdir), GuildRuns(home), watch=False).run_once()
    tb = tensorboard(logdir, load_fast=True)
    tb.wait_for(lambda t: len(t) == 2, timeout=30, what="two runs")
    # Guild's _run_compare_metrics: scalar columns, last values; no epoch, no extra/x.
    # runsmon also honours `min loss`: the running minimum, as a column of its own.
    assert experiment_metrics(tb) == [
        ("acc", "val"),
        ("loss", ""),
        ("loss (min)", ".runsmon"),
        ("time", ""),
    ]
    names = [m.get("displayName", "") for m in tb.experiment()["metricInfos"]]
    assert names == ["", "", "loss (min)", ""]
    table = tb.wait_for(
        lambda t: all(len(r["metrics"]) == 4 for r in t.values()), timeout=30, what="values"
    )
    rows = table_json(home)
    assert [set(r["metrics"]) for r in rows] == [{"val#acc", "loss", "loss (min)", "time"}] * 2
    for row in rows:
        shown = {
            m[0] if m[1] == ".runsmon" else metric_key(m): v
            for m, v in table[row["run"]]["metrics"].items()
        }
        assert row["metrics"] == pytest.approx(shown, rel=1e-6)
    assert sorted(r["metrics"]["loss (min)"] for r in rows) == pytest.approx([0.4, 0.5])
    assert [r["metrics"]["loss"] for r in rows] == pytest.approx([0.9, 0.9])
    # Without compare columns, every scalar is a metric again.
    guildfile.write_text(GUILD_YML.split("  compare:")[0])
    data = runs_table.collect(GuildRuns(home))
    assert {metric_key(m) for m in data.metrics} == {"val#acc", "loss", "epoch", "extra/x", "time"}


def test_guild_compare_attr_of_older_runs(tmp_path):
    """Older Guild versions recorded the columns in the run's `compare` attr."""
    from guild_fake import write_attr

    run_dir = make_guild_run(tmp_path / "runs", scalars={"loss": [(0, 1.0)], "acc": [(0, 0.5)]})
    write_attr(run_dir, "compare", ["=lr", "acc", "scalar:val#loss step"])
    (run,) = GuildRuns(str(tmp_path / "runs"))()
    data = runs_table.collect(lambda: [run])
    assert data.metrics == [("loss", "val"), ("acc", ""), ("time", "")]


# -- 4. wandb runs synced from TensorBoard, written by wandb itself ----------------------

_WANDB_TB_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import wandb
    from tensorboard.compat.proto import event_pb2, summary_pb2

    root = sys.argv[1]
    run = wandb.init(project="demo", dir=root, config={"lr": 0.1}, sync_tensorboard=True,
                     mode="offline", settings=wandb.Settings(console="off"))
    # What torch.utils.tensorboard's SummaryWriter uses; wandb patched it.
    import tensorboard.summary.writer.event_file_writer as efw
    for sub, tag in (("", "Loss/train"), ("val", "loss")):
        w = efw.EventFileWriter(os.path.join(root, "tb", sub))
        for step in range(3):
            s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
                tag=tag, simple_value=1.0 / (step + 1))])
            w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=s))
        w.close()
    wandb.log({"extra": 5.0})
    time.sleep(1.0)
    run.finish()
    """
)


@pytest.mark.skipif(not wandb_offline.available(), reason="wandb is not installed")
def test_wandb_sync_tensorboard_scalars_once(tmp_path, tensorboard):
    root = tmp_path / "project"
    root.mkdir()
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_GIT="true")
    env.pop("WANDB_API_KEY", None)
    subprocess.run(
        [sys.executable, "-c", _WANDB_TB_SCRIPT, str(root)],
        check=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    logdir = tmp_path / "logdir"
    source = detect_source(str(root))
    assert source.kind == "wandb"
    RunsMonitor(str(logdir), source, watch=False).run_once()
    tb = tensorboard(logdir, load_fast=True)
    tb.wait_for(lambda t: len(t) == 1, timeout=30, what="the run")
    # The user's logdir as it was: Loss/train at the root, loss in val; wandb's own
    # key; each once (the event files wandb linked into files/, groups relative to it).
    assert experiment_metrics(tb) == [
        ("Loss/train", ""),
        ("loss", "val"),
        ("extra", ""),
        ("time", ""),
    ]
    (row,) = tb.wait_for(
        lambda t: all(len(r["metrics"]) == 4 for r in t.values()), timeout=30, what="values"
    ).values()
    assert row["metrics"][("Loss/train", "")] == pytest.approx(1 / 3)
    assert row["metrics"][("loss", "val")] == pytest.approx(1 / 3)
    assert row["metrics"][("extra", "")] == 5.0
    scalar_tags = tb.get("/data/plugin/scalars/tags")
    tags = [t for run_tags in scalar_tags.values() for t in run_tags]
    assert sorted(tags) == ["Loss/train", "extra", "loss", "time"]  # no scalar twice


# -- 5. runsmon table == TensorBoard's session_groups, for every sample layout -------------


def _layouts() -> list[str]:
    names = sorted(LAYOUTS)
    return [*names, "wandb"]


@pytest.mark.parametrize("layout", _layouts())
def test_table_matches_tensorboard_for_every_layout(tmp_path, tensorboard, layout):
    root = tmp_path / layout
    root.mkdir()
    if layout == "wandb":
        if not wandb_offline.available():
            pytest.skip("wandb is not installed")
        wandb_offline.make(str(root))
    else:
        LAYOUTS[layout].make(str(root))
    rows = table_json(str(root))
    assert rows, "the layout has runs"
    logdir = tmp_path / "logdir"
    serve_once(logdir, str(root))
    tb = tensorboard(logdir, load_fast=True)
    declared = {metric_key(m) for m in experiment_metrics(tb)}
    assert set(rows[0]["metrics"]) == declared  # the same metric columns

    def complete(table: dict[str, Any]) -> bool:
        return set(table) == {r["run"] for r in rows} and all(
            len(table[r["run"]]["metrics"]) == sum(v is not None for v in r["metrics"].values())
            for r in rows
        )

    table = tb.wait_for(complete, timeout=30, what="the table's runs and values")
    for row in rows:
        shown = table[row["run"]]
        hparams = {k: v for k, v in row["hparams"].items() if v is not None}
        as_tb = {
            k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in hparams.items()
        }
        assert as_tb == shown["hparams"], row["run"]
        values = {k: v for k, v in row["metrics"].items() if v is not None}
        tb_values = {metric_key(m): v for m, v in shown["metrics"].items()}
        assert values == pytest.approx(tb_values, rel=1e-6), row["run"]


# -- 6. add_hparams' metric_dict: the run's own metrics, at its root -------------------


def test_add_hparams_metrics_at_the_root(tmp_path):
    from sample_projects.layouts.torch_hparams import hparams_summaries

    root = tmp_path / "runs"
    # A run that only called add_hparams (no curves of its own) ...
    only = root / "only"
    write_events(
        str(only / "1704164685.123456"),
        {"hparam/acc": [0.9]},
        T0,
        summaries=hparams_summaries({"lr": 0.1}, {"hparam/acc": 0.9}),
    )
    # ... and one with curves beside it.
    both = root / "both"
    write_events(str(both), {"loss": [1.0, 0.5]}, T0)
    write_events(
        str(both / "1704164745.5"),
        {"hparam/acc": [0.8]},
        T0 + 60,
        summaries=hparams_summaries({"lr": 0.2}, {"hparam/acc": 0.8}),
    )
    # (Where a tree holds only the timestamp directory, that directory is the run.)
    rows = {r["id"].split("/")[0]: r for r in table_json(str(root))}
    assert rows["only"]["metrics"]["hparam/acc"] == pytest.approx(0.9)
    assert rows["both"]["metrics"]["hparam/acc"] == pytest.approx(0.8)
    assert rows["both"]["metrics"]["loss"] == 0.5
    assert {k for k in rows["only"]["metrics"] if "#" in k} == set()  # no timestamp group
    # A run directory whose only event file is add_hparams' (a Guild run, say).
    files = RunFiles(str(only), LOCAL)
    files.refresh()
    assert files.metrics() == {("hparam/acc", "")}
    assert list(files.placed(FILTER)) == [os.listdir(only / "1704164685.123456")[0]]

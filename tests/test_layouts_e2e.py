"""Every run layout of sample_projects.layouts, through runsmon into a real TensorBoard.

Each test writes one layout into tmp_path, lets ``detect_source`` pick the
source, syncs a :class:`RunsMonitor` into a fresh logdir and reads back what
the HParams dashboard would show: one session group per run holding exactly
one session, its hparams (values and types, as TensorBoard returns them), its
metrics (the last values the layout wrote) and its status.  A logdir is one
experiment, so each layout gets its own TensorBoard.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from tb import TensorBoardProcess, poll

from runsmon import RunsMonitor
from runsmon.hparams import Selection
from runsmon.sources import DirRuns, detect_source
from runsmon.sources.wandb import wandb_pb
from sample_projects.layouts import (
    hydra_multirun,
    keras,
    knowit_sweep,
    mlflow_sqlite,
    mlflow_store,
    torch_hparams,
    wandb_offline,
    yaml_experiment,
)
from sample_projects.layouts._events import T0, write_events, write_text

ROOT = Path(__file__).resolve().parent.parent
SUCCESS, FAILURE, UNKNOWN = "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_UNKNOWN"
RUNNING = "STATUS_RUNNING"
LOADERS = pytest.mark.parametrize("load_fast", [False, True], ids=["python", "rust"])
NO_MLFLOW = "mlflow is not installed: pip install -e '.[test]' to test MLflow's SQLite store"
NO_WANDB = "wandb is not installed: pip install 'runsmon[wandb]' to test wandb offline runs"

Metric = tuple[str, str]  # (tag, group)


class Expected:
    """What the dashboard must show for one run."""

    def __init__(
        self, hparams: Mapping[str, Any], metrics: Mapping[Metric, float | None], status: str
    ) -> None:
        self.hparams = dict(hparams)
        self.metrics = dict(metrics)  # a value of None: present, any value
        self.status = status


# -- expected values, derived from what the generators wrote ---------------------


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config flattened with dots (independent of runsmon's own code)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def as_shown(config: Mapping[str, Any]) -> dict[str, Any]:
    """Hparams as TensorBoard's JSON shows them: numbers as floats, lists as text."""
    out: dict[str, Any] = {}
    for key, value in flat(config).items():
        if isinstance(value, (bool, str)):
            out[key] = value
        elif isinstance(value, (int, float)):
            out[key] = float(value)
        else:
            out[key] = str(value)
    return out


def typed(values: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Values with their type names, so that True and 1.0 are told apart."""
    return {k: (type(v).__name__, v) for k, v in values.items()}


def snapshot(root: str) -> dict[str, tuple[int, int]]:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(d, name))
            out[os.path.join(d, name)] = (st.st_size, st.st_mtime_ns)
    return out


# -- the common check ------------------------------------------------------------


def show(
    tmp_path: Path,
    root: str,
    kind: str,
    expected: Mapping[str, Expected],
    tensorboard: Any,
    *,
    load_fast: bool = False,
    selection: Selection | None = None,
    columns: set[str] | None = None,
) -> tuple[TensorBoardProcess, RunsMonitor, dict[str, dict[str, Any]]]:
    """Sync ``root`` into a logdir, serve it and check every run; returns (tb, monitor, table).

    ``expected`` is keyed by run id; ``columns`` are the hparams the
    experiment declares (default: every hparam of every run).
    """
    before = snapshot(root)
    source = detect_source(root)
    assert source.kind == kind
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), source, selection=selection)
    stats = monitor.run_once()
    assert stats.runs == stats.sessions == len(expected)
    names = monitor.run_names
    assert set(names) == set(expected)
    want = {names[rid]: exp for rid, exp in expected.items()}

    tb = tensorboard(logdir, load_fast=load_fast)
    table = tb.wait_for(
        lambda t: (
            set(t) == set(want) and all(set(t[n]["metrics"]) >= set(want[n].metrics) for n in t)
        ),
        timeout=30,
        what="every run with its metrics",
    )
    for name, exp in want.items():
        row = table[name]
        assert [s["name"] for s in row["sessions"]] == [name], "one session per run"
        assert typed(row["hparams"]) == typed(exp.hparams), name
        assert set(row["metrics"]) == set(exp.metrics), name
        for metric, value in exp.metrics.items():
            if value is not None:
                assert row["metrics"][metric] == pytest.approx(value, rel=1e-6), (name, metric)
        assert row["status"] == exp.status, name

    experiment = tb.experiment()
    declared = {h["name"] for h in experiment.get("hparamInfos", [])}
    all_hparams = {k for exp in expected.values() for k in exp.hparams}
    assert declared == (all_hparams if columns is None else columns)
    metrics = {(m["name"]["tag"], m["name"].get("group", "")) for m in experiment["metricInfos"]}
    assert metrics == {m for exp in expected.values() for m in exp.metrics}
    # Every filter the HPARAMS tab can set, letting everything through: no HTTP 400.
    assert set(tb.table(tb.dashboard_filters(experiment))) == set(want)
    assert snapshot(root) == before, "nothing is written into the runs"
    return tb, monitor, table


# -- 1. a YAML-configured experiment: config.yaml, events in train/ and val/ -----------


@LOADERS
def test_yaml_experiment(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "runs")
    configs = yaml_experiment.make(root)
    expected = {}
    for i, (run_id, config) in enumerate(configs.items()):
        base = 1.0 + i
        metrics = {("loss", "train"): base / 4, ("loss", "val"): base / 1.5, ("time", ""): 20.0}
        expected[run_id] = Expected(as_shown(config), metrics, SUCCESS)
    show(tmp_path, root, "dirs", expected, tensorboard, load_fast=load_fast)


def test_dirs_status_follows_idle_after(tmp_path, tensorboard):
    """A run whose event files changed lately is running, and ends once idle."""
    root = tmp_path / "runs"
    yaml_experiment.make(str(root))
    [train] = (root / "run-b" / "train").iterdir()
    now = time.time()
    os.utime(train, (now, now))  # run-b was written to just now
    source = DirRuns(str(root), idle_after=4)
    assert {r.id: r.status for r in source()} == {"run-a": "completed", "run-b": "running"}
    logdir = tmp_path / "logdir"
    with RunsMonitor(str(logdir), source, interval=0.3, full_check_interval=0.5) as monitor:
        tb = tensorboard(logdir)
        names = poll(lambda: monitor.run_names, lambda n: len(n) == 2, what="both runs named")
        a, b = names["run-a"], names["run-b"]
        table = tb.wait_for(lambda t: set(t) == {a, b}, timeout=30)
        if table[b]["status"] != SUCCESS:  # not yet idle when TensorBoard first read it
            assert table[b]["status"] == UNKNOWN and table[a]["status"] == SUCCESS
        table = tb.wait_for(lambda t: t[b]["status"] == SUCCESS, timeout=30)
        # From the first event file's name to the last change (float32 in TensorBoard).
        assert table[b]["metrics"][("time", "")] == pytest.approx(now - (T0 + 1000), rel=1e-6)
        assert len(table[b]["sessions"]) == 1


def test_dirs_run_active_again_runs_again_and_its_time_follows(tmp_path, tensorboard):
    """An ended run written to again is running again; its time follows its new end.

    Written again and idle again before the next check too: the source must
    not keep the first end (the directory's mtime does not move on an append).
    """
    root = tmp_path / "runs"
    path = write_events(str(root / "r" / "train"), {"loss": [1.0, 0.5]}, T0)  # ends at T0 + 10
    now = [T0 + 100]
    source = DirRuns(str(root), idle_after=60, clock=lambda: now[0])
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), source)
    monitor.run_once()
    tb = tensorboard(logdir)
    [name] = monitor.run_names.values()

    def sync_until(status, time_value):
        """One sync; the dashboard shows ``status`` and ``time`` within a reload
        (1 s) and 2 s, and the run's row is there at every poll meanwhile."""

        def shown(t):
            row = t[name]
            return row["status"] == status and row["metrics"].get(("time", "")) == time_value

        monitor.run_once()
        tb.wait_without_gap(shown, rows=1, timeout=3.0, what=f"{status}, time {time_value}")

    sync_until(SUCCESS, 10.0)
    os.utime(path, (T0 + 200, T0 + 200))  # written again
    now[0] = T0 + 205
    sync_until(UNKNOWN, None)  # running again: no end, no time yet
    now[0] = T0 + 400
    sync_until(SUCCESS, 200.0)
    os.utime(path, (T0 + 500, T0 + 500))  # written again, and idle again by the next check
    now[0] = T0 + 700
    sync_until(SUCCESS, 500.0)


# -- TensorBoard's HParams tutorial, written by TensorFlow itself ------------------------

TUTORIAL = ROOT / "tests" / "data" / "hparams-tutorial"


def _tutorial_last_values(run_dir: Path) -> dict[Metric, float]:
    """The last value of each scalar of the run, read by TensorBoard's loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    out: dict[Metric, tuple[int, float]] = {}
    for group in ("", "train", "validation"):
        for path in sorted((run_dir / group).iterdir()):
            if not path.is_file():
                continue
            for event in EventFileLoader(str(path)).Load():
                for v in event.summary.value:
                    if v.metadata.plugin_data.plugin_name != "scalars":
                        continue  # the hparams plugin's session info
                    value = float(tensor_util.make_ndarray(v.tensor))
                    key = (v.tag, group)
                    if key not in out or event.step >= out[key][0]:
                        out[key] = (event.step, value)
    return {k: v for k, (_, v) in out.items()}


@LOADERS
def test_hparams_tutorial(tmp_path, tensorboard, load_fast):
    """Keras and hp.KerasCallback runs: one session each, with its hparams and status.

    The user's experiment (declaring a metric ``accuracy`` Keras never
    writes) is not copied: Keras' ``epoch_accuracy`` and ``epoch_loss`` show.
    ``run-3`` wrote ``accuracy`` itself (the tutorial's first version), into
    the file holding its session info: that value shows too.
    """
    import shutil

    root = tmp_path / "project"
    shutil.copytree(TUTORIAL, root)
    for d, _, files in os.walk(root):
        for name in files:
            m = re.search(r"tfevents\.(\d+)", name)
            if m:
                os.utime(os.path.join(d, name), (int(m.group(1)) + 2,) * 2)
    logs = root / "logs"
    grid = {
        0: {"num_units": 4.0, "dropout": 0.1, "optimizer": "adam"},
        1: {"num_units": 8.0, "dropout": 0.1, "optimizer": "sgd"},
        2: {"num_units": 8.0, "dropout": 0.2, "optimizer": "adam"},
        3: {"num_units": 4.0, "dropout": 0.2, "optimizer": "sgd"},
    }
    expected = {}
    for n, hparams in grid.items():
        metrics: dict[Metric, float | None] = dict(
            _tutorial_last_values(logs / "hparam_tuning" / f"run-{n}")
        )
        assert {("epoch_accuracy", "train"), ("epoch_loss", "validation")} <= set(metrics)
        metrics[("time", "")] = None
        expected[f"hparam_tuning/run-{n}"] = Expected(hparams, metrics, SUCCESS)
    assert ("accuracy", "") in expected["hparam_tuning/run-3"].metrics
    assert ("accuracy", "") not in expected["hparam_tuning/run-0"].metrics
    show(tmp_path, str(logs), "dirs", expected, tensorboard, load_fast=load_fast)


# -- 2. Keras: train/ and validation/ with epoch_accuracy and epoch_loss --------------


@LOADERS
def test_keras(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "project")
    runs = keras.make(root)
    expected = {}
    for i, run in enumerate(runs):
        acc = 0.5 + 0.1 * 2 + 0.01 * i
        metrics = {
            ("epoch_accuracy", "train"): acc,
            ("epoch_loss", "train"): 0.6,
            ("epoch_accuracy", "validation"): acc - 0.05,
            ("epoch_loss", "validation"): 0.7,
            ("time", ""): 21.0,  # validation/ starts 1 s later
        }
        expected[os.path.relpath(run, root)] = Expected({}, metrics, SUCCESS)
    show(tmp_path, root, "dirs", expected, tensorboard, load_fast=load_fast)


# -- 3. a grid sweep: model_args.yaml and lightning_logs/version_0/ per combination ----


def _sweep_expected(root: str) -> dict[str, Expected]:
    combos = knowit_sweep.make(root)
    group = "lightning_logs/version_0"
    expected = {}
    for combo, args in combos.items():
        last = 1.0 / 3 + args["trainer"]["learning_rate"] * 10
        metrics = {
            ("train_loss", group): last,
            ("valid_loss", group): last + 0.05,
            ("epoch", group): 2.0,
            ("time", ""): 20.0,
        }
        expected[f"lr_sweep/{combo}"] = Expected(as_shown(args), metrics, SUCCESS)
    return expected


@LOADERS
def test_grid_sweep(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "sweeps")
    expected = _sweep_expected(root)
    _, _, table = show(tmp_path, root, "dirs", expected, tensorboard, load_fast=load_fast)
    row = next(iter(table.values()))
    assert row["hparams"]["data.in_components"] == "['x1', 'x2']"  # a list shows as text


def test_grid_sweep_hparams_differing(tmp_path, tensorboard):
    """``--hparams differing``: only the swept flags are columns; sessions keep all."""
    root = str(tmp_path / "sweeps")
    expected = _sweep_expected(root)
    swept = {"trainer.batch_size", "trainer.learning_rate"}
    tb, monitor, _ = show(
        tmp_path,
        root,
        "dirs",
        expected,
        tensorboard,
        selection=Selection(hparams="differing"),
        columns=swept,
    )
    # A new combination arrives while runsmon runs; it differs in the optimizer
    # too, so that column joins the experiment.
    with monitor:
        args = knowit_sweep.model_args(0.1, 16)
        args["trainer"]["optim"] = "SGD"
        run = os.path.join(root, "lr_sweep", "learning_rate-0.1-optim-SGD")
        write_text(os.path.join(run, "model_args.yaml"), yaml.safe_dump(args), T0)
        write_events(os.path.join(run, "lightning_logs", "version_0"), {"train_loss": [0.7]}, T0)
        tb.wait_for(
            lambda e: {h["name"] for h in e["hparamInfos"]} == swept | {"trainer.optim"},
            fetch=tb.experiment,
            timeout=30,
            what="trainer.optim in the experiment",
        )
        table = tb.wait_for(lambda t: len(t) == 5, timeout=30, what="the new run")
    assert {r["hparams"]["trainer.optim"] for r in table.values()} == {"Adam", "SGD"}
    assert set(tb.table(tb.dashboard_filters())) == set(table)


def test_grid_sweep_consolidated_model_dir(tmp_path, tensorboard):
    """The model dir a sweep's best run was copied into is a run; each sweep run is one."""
    root = str(tmp_path / "experiment")
    made = knowit_sweep.make_consolidated(root)
    group = "lightning_logs/version_0"

    def metrics(args):
        last = 1.0 / 3 + args["trainer"]["learning_rate"] * 10
        return {
            ("train_loss", group): last,
            ("valid_loss", group): last + 0.05,
            ("epoch", group): 2.0,
            ("time", ""): None,
        }

    expected = {
        f"models/my_model/sweeps/lr_sweep/{combo}": Expected(as_shown(args), metrics(args), SUCCESS)
        for combo, args in made["runs"].items()
    }
    best = made["runs"][made["best"]]
    # Its own curves only: none of the sweep runs' show as its groups.
    expected["models/my_model"] = Expected(as_shown(best), metrics(best), SUCCESS)
    show(tmp_path, root, "dirs", expected, tensorboard)


# -- 4. PyTorch add_hparams: hparams and a one-off metric in a timestamp subdirectory ---


@LOADERS
def test_torch_add_hparams(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "project")
    runs = torch_hparams.make(root)
    expected = {}
    for name, (hp, acc) in runs.items():
        # torch stores every number (booleans too) as a float.
        shown = {k: (float(v) if isinstance(v, (bool, int)) else v) for k, v in hp.items()}
        # The curves' last values, and add_hparams' metric_dict at the run's root.
        metrics = {
            ("accuracy", ""): acc,
            ("loss", ""): 0.3,
            ("hparam/accuracy", ""): acc,
            ("time", ""): 40.0,
        }
        expected[f"runs/{name}"] = Expected(shown, metrics, SUCCESS)
    tb, monitor, _ = show(tmp_path, root, "dirs", expected, tensorboard, load_fast=load_fast)
    # Shown once: no TensorBoard run for the timestamp subdirectory.
    assert sorted(r for r in tb.runs() if not r.startswith(".")) == sorted(
        monitor.run_names.values()
    )


# -- 5. a Hydra multirun: multirun/<date>/<time>/<n>/.hydra/ --------------------------


def _hydra_expected(root: str) -> dict[str, Expected]:
    jobs = hydra_multirun.make(root)
    expected = {}
    for num, (job, (config, _)) in enumerate(jobs.items()):
        metrics = {("loss", "tb"): 0.5 - num / 10, ("time", ""): 10.0}
        expected[os.path.relpath(job, root)] = Expected(as_shown(config), metrics, SUCCESS)
    return expected


@LOADERS
def test_hydra_multirun(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "outputs")
    expected = _hydra_expected(root)
    _, monitor, _ = show(tmp_path, root, "dirs", expected, tensorboard, load_fast=load_fast)
    # The job number and the overrides name the row, before the sweep.
    name = monitor.run_names["multirun/2024-01-02/03-04-05/1"]
    assert name == "1 lr=0.01 model=vit precision=16 2024-01-02_03-04-05"


def test_hydra_multirun_hparams_overridden(tmp_path, tensorboard):
    """``--hparams overridden``: the flags the command line set (a group: all of it)."""
    root = str(tmp_path / "outputs")
    expected = _hydra_expected(root)
    overridden = {"optimizer.lr", "model.name", "model.depth", "trainer.precision"}
    show(
        tmp_path,
        root,
        "dirs",
        expected,
        tensorboard,
        selection=Selection(hparams="overridden"),
        columns=overridden,
    )


# -- 6. an MLflow file store with two runs ---------------------------------------


@LOADERS
def test_mlflow_store(tmp_path, tensorboard, load_fast):
    root = str(tmp_path / "project")
    runs = mlflow_store.make(root)
    shown = {
        "0f2a9c4e5b6d47f8a1b2c3d4e5f60718": {
            "lr": 0.01,
            "epochs": 3.0,
            "optimizer": "adam",
            "use_bn": True,
            "weight_decay": 1e-05,
            "model/depth": 4.0,
        },
        "9e8d7c6b5a4f43e2b1a0f9e8d7c6b5a4": {
            "lr": 0.1,
            "epochs": 3.0,
            "optimizer": "sgd",
            "use_bn": False,
            "weight_decay": 0.0,
            "model/depth": 2.0,
        },
    }
    expected = {}
    for run_id, spec in runs.items():
        metrics: dict[Metric, float | None] = {}
        for name, values in spec["metrics"].items():
            metrics[(name, "")] = values[-1]  # under the key it was logged as
        # meta.yaml's end_time - start_time (the generator logs one point a second).
        metrics[("time", "")] = float(max(len(v) for v in spec["metrics"].values()))
        status = SUCCESS if spec["status"] == 3 else FAILURE
        expected[run_id] = Expected(shown[run_id], metrics, status)
    tb, monitor, _ = show(tmp_path, root, "mlflow", expected, tensorboard, load_fast=load_fast)

    # The metrics are scalar event files in the logdir: the Scalars dashboard has them.
    run_id = "0f2a9c4e5b6d47f8a1b2c3d4e5f60718"
    name = monitor.run_names[run_id]
    tags = tb.get("/data/plugin/scalars/tags")
    assert {"loss", "accuracy", "val/loss"} <= set(tags[name])
    for run, tag, values in (
        (name, "loss", runs[run_id]["metrics"]["loss"]),
        (name, "val/loss", runs[run_id]["metrics"]["val/loss"]),
    ):
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        points = tb.get(f"/data/plugin/scalars/scalars?{query}")
        assert [p[1] for p in points] == list(range(len(values)))
        assert [p[2] for p in points] == pytest.approx(values, rel=1e-6)


# -- 6b. MLflow 3's default store: mlflow.db, written by MLflow itself -------------


@pytest.fixture(scope="module")
def mlflow_root(tmp_path_factory) -> str:
    """A project where MLflow logged runs into mlflow.db (see mlflow_sqlite.RUNS)."""
    if not mlflow_sqlite.available():
        pytest.skip(NO_MLFLOW)
    root = str(tmp_path_factory.mktemp("mlflow-project"))
    mlflow_sqlite.make(root)
    return root


def mlflow_expected(runs: Mapping[str, str]) -> dict[str, Expected]:
    """What the dashboard must show for the runs mlflow_sqlite logged ({name: id})."""
    statuses = {"FINISHED": SUCCESS, "FAILED": FAILURE, "KILLED": SUCCESS, "RUNNING": RUNNING}
    expected = {}
    for name, (experiment, params, logged, status) in mlflow_sqlite.RUNS.items():
        if status == "DELETED" or experiment in mlflow_sqlite.DELETED_EXPERIMENTS:
            continue
        metrics: dict[Metric, float | None] = {}
        for key, values in logged.items():
            metrics[(key, "")] = values[-1]  # the tag as logged, "/" included
        if status != "RUNNING":  # end - start: the generator logs one step a second
            metrics[("time", "")] = float(max(len(v) for v in logged.values()))
        expected[runs[name]] = Expected(as_shown(params), metrics, statuses[status])
    return expected


MLFLOW_LATER = """
import sys
from mlflow import MlflowClient
from mlflow.entities import Param
client = MlflowClient()
lynx = sys.argv[1]
client.log_metric(lynx, "loss", 0.45, step=1)
client.set_terminated(lynx, "FINISHED")
exp = client.get_experiment_by_name("second").experiment_id
new = client.create_run(exp, run_name="late-lark").info.run_id
params = {"lr": "0.02", "batch_size": "16", "optimizer": "sgd"}
client.log_batch(new, params=[Param(k, v) for k, v in params.items()])
client.log_metric(new, "loss", 0.35, step=0)
client.set_terminated(new, "FAILED")
print(new)
"""


@LOADERS
def test_mlflow_sqlite(tmp_path, tensorboard, mlflow_root, load_fast):
    root = str(tmp_path / "project")
    shutil.copytree(mlflow_root, root)
    runs = {r.label: r.id for r in detect_source(root)()}
    expected = mlflow_expected(runs)
    assert set(runs.values()) == set(expected)
    tb, monitor, _ = show(tmp_path, root, "mlflow", expected, tensorboard, load_fast=load_fast)
    fox = monitor.run_dirs[runs["bold-fox"]]  # the Scalars tab names runs by directory
    query = urllib.parse.urlencode({"run": fox, "tag": "val/loss"})
    points = tb.get(f"/data/plugin/scalars/scalars?{query}")
    assert [p[1] for p in points] == [0, 1]
    assert [p[2] for p in points] == pytest.approx([1.0, 0.7], rel=1e-6)

    # MLflow logs on: the running run ends with one more value, a new run appears.
    # The running run shows Running, then its end: a new generation, no gap.
    lynx = monitor.run_names[runs["live-lynx"]]
    assert tb.table()[lynx]["status"] == RUNNING
    new_id = mlflow_sqlite.run_mlflow(root, MLFLOW_LATER, runs["live-lynx"]).split()[-1]
    monitor.run_once()
    new = monitor.run_names[new_id]
    table = tb.wait_without_gap(
        lambda t: new in t and t[lynx]["status"] == SUCCESS,
        rows=len(expected),
        timeout=3.0,
        what="the new run and the ended one",
    )
    assert table[lynx]["metrics"][("loss", "")] == pytest.approx(0.45, rel=1e-6)
    assert table[new]["status"] == FAILURE
    assert table[new]["metrics"][("loss", "")] == pytest.approx(0.35, rel=1e-6)
    assert table[new]["hparams"] == {"lr": 0.02, "batch_size": 16.0, "optimizer": "sgd"}


# -- 7. two wandb offline runs, written by wandb itself ---------------------------


@pytest.fixture(scope="module")
def wandb_root(tmp_path_factory) -> str:
    """A project where wandb wrote two offline runs (the second syncing TensorBoard)."""
    if wandb_pb() is None:
        pytest.skip(NO_WANDB)
    root = str(tmp_path_factory.mktemp("wandb-project"))
    wandb_offline.make(root)
    return root


@LOADERS
def test_wandb_offline(tmp_path, tensorboard, wandb_root, load_fast):
    labels = {r.label: r.id for r in detect_source(wandb_root)()}
    assert set(labels) == {"run-0", "run-1"}
    expected = {}
    for i, config in enumerate(wandb_offline.CONFIGS):
        # What the generator's script logged: loss = 1/(step+1) + i, acc = step/10 + i/10.
        metrics: dict[Metric, float | None] = {
            ("loss", ""): 1.0 / 3 + i,
            ("acc", ""): 0.2 + i / 10,
            ("time", ""): None,  # wandb's own runtime
        }
        if i == 1:
            # sync_tensorboard: its event files show once, from the files wandb linked.
            # Groups relative to files/, where wandb mirrors the logdir.
            metrics[("tb_loss", "train")] = 2.0 / 3
        status = SUCCESS if i == 0 else FAILURE  # exit codes 0 and 1
        expected[labels[f"run-{i}"]] = Expected(as_shown(config), metrics, status)
    show(tmp_path, wandb_root, "wandb", expected, tensorboard, load_fast=load_fast)


# -- the command line picks the source by itself and says which --------------------


@pytest.mark.parametrize(
    "layout, kind, runs",
    [
        (yaml_experiment, "dirs", 2),
        (keras, "dirs", 2),
        (knowit_sweep, "dirs", 4),
        (torch_hparams, "dirs", 2),
        (hydra_multirun, "dirs", 2),
        (mlflow_store, "mlflow", 2),
        # MLflow and wandb write these projects themselves: seconds each.
        pytest.param(mlflow_sqlite, "mlflow", 4, marks=pytest.mark.slow),
        pytest.param(wandb_offline, "wandb", 2, marks=pytest.mark.slow),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", "").rsplit(".")[-1],
)
def test_cli_detects_the_source(tmp_path, request, layout, kind, runs):
    if layout is wandb_offline:
        root = request.getfixturevalue("wandb_root")
    elif layout is mlflow_sqlite:
        root = request.getfixturevalue("mlflow_root")
    else:
        root = str(tmp_path / "project")
        layout.make(root)
    logdir = tmp_path / "logdir"
    done = subprocess.run(
        [sys.executable, "-m", "runsmon", "serve", "--once", "--no-tensorboard"]
        + ["--logdir", str(logdir), root],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if "reading" in line]
    assert len(said) == 1 and f"reading {kind} runs in " in said[0], done.stdout
    assert f"runsmon: {runs} runs, {runs} sessions" in done.stdout
    made = [p for p in os.listdir(logdir) if not p.startswith(".")]
    assert len(made) == runs
    assert all((logdir / p / ".runsmon-run.json").is_file() for p in made)

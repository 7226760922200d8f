"""Facts about TensorBoard that runsmon's logdir layout relies on.

Each test starts a real TensorBoard (``--reload_interval 1``) with both
loaders: the Rust data server (``load_fast=true``) and the Python
multiplexer (``load_fast=false``). If one fails after a TensorBoard upgrade,
the design choice it backs (see ARCHITECTURE.md) must be revisited.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from conftest import TensorBoardFactory
from tb import (
    HTTPAnswerError,
    TensorBoardProcess,
    WaitTimeout,
    dashboard_filters,
    live_group_members,
)
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

START_FILE = "events.out.tfevents.0000000000.runsmon-session"
END_FILE = "events.out.tfevents.9999999999.runsmon-end"
RELOAD = 1.0  # --reload_interval of every TensorBoard started here


@pytest.fixture(scope="module", params=[True, False], ids=["load_fast", "python_loader"])
def load_fast(request: pytest.FixtureRequest) -> bool:
    """Both loaders: the Rust data server and the Python multiplexer."""
    return bool(request.param)


# -- writing event files ---------------------------------------------------


def _event(summary: summary_pb2.Summary | None = None, step: int = 0) -> event_pb2.Event:
    e = event_pb2.Event(wall_time=time.time(), step=step)
    if summary is not None:
        e.summary.CopyFrom(summary)
    return e


def _plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    s = summary_pb2.Summary()
    s.value.add(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return s


def start_info(hparams: dict[str, object], group: str) -> event_pb2.Event:
    """A ``session_start_info`` event."""
    return _event(summary_v2.hparams_pb(hparams, trial_id=group, start_time_secs=1000.0))


def end_info(status: str = "STATUS_SUCCESS") -> event_pb2.Event:
    """A ``session_end_info`` event."""
    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status), end_time_secs=2e3)
    data = plugin_data_pb2.HParamsPluginData(session_end_info=info)
    return _event(_plugin_summary(metadata.SESSION_END_INFO_TAG, data))


def hparam(
    name: str,
    dtype: str = "DATA_TYPE_FLOAT64",
    discrete: Iterable[object] | None = None,
    interval: tuple[float, float] | None = None,
) -> api_pb2.HParamInfo:
    """An experiment's hparam column."""
    info = api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(dtype))
    if discrete is not None:
        info.domain_discrete.extend(list(discrete))
    if interval is not None:
        info.domain_interval.min_value, info.domain_interval.max_value = interval
    return info


def experiment(hparams: list[api_pb2.HParamInfo], metrics: Iterable[str]) -> event_pb2.Event:
    """An ``_hparams_/experiment`` event (built by hand: domains may mix types)."""
    exp = api_pb2.Experiment(
        hparam_infos=hparams,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics],
        time_created_secs=1.0,
    )
    data = plugin_data_pb2.HParamsPluginData(experiment=exp)
    return _event(_plugin_summary(metadata.EXPERIMENT_TAG, data))


def scalar(tag: str, value: float, step: int = 0) -> event_pb2.Event:
    """A scalar event (``simple_value``, as TF1 and many tools write it)."""
    s = summary_pb2.Summary()
    s.value.add(tag=tag, simple_value=value)
    return _event(s, step)


def write(path: Path, events: Iterable[event_pb2.Event]) -> Path:
    """Append records to the event file ``path`` (exact name); create it if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "ab") as f:
        w = RecordWriter(f)
        if new:
            w.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                    .SerializeToString())  # fmt: skip
        for e in events:
            w.write(e.SerializeToString())
        w.flush()
    return path


def run_file(run_dir: Path, events: Iterable[event_pb2.Event]) -> tuple[EventFileWriter, Path]:
    """A run's own event file, as a training script writes it; the writer stays open."""
    run_dir.mkdir(parents=True, exist_ok=True)
    w = EventFileWriter(str(run_dir), flush_secs=3600)
    for e in events:
        w.add_event(e)
    w.flush()
    (path,) = run_dir.glob("events.out.tfevents.*")
    return w, path


def write_session(run_dir: Path, hparams: dict[str, object], group: str, *extra: event_pb2.Event):
    """A session dir: start info (and ``extra`` events) in the file that sorts first."""
    write(run_dir / START_FILE, [start_info(hparams, group), *extra])


def names(tb: TensorBoardProcess) -> list[str]:
    """Hparam names of the served experiment."""
    return [h["name"] for h in tb.experiment()["hparamInfos"]]


# -- the harness itself ----------------------------------------------------


@pytest.mark.tb
def test_harness_stops_tensorboard_and_its_data_server(tmp_path: Path) -> None:
    """stop() leaves no process of the group behind (the Rust data server too)."""
    tb = TensorBoardProcess(tmp_path, load_fast=True).start()
    pgid = tb.proc.pid if tb.proc else 0
    assert tb.get("/data/plugins_listing")
    assert len(live_group_members(pgid)) == 2  # tensorboard and its data server
    tb.close()
    assert live_group_members(pgid) == []


@pytest.mark.tb
def test_harness_reports_a_dead_tensorboard(tmp_path: Path) -> None:
    """A TensorBoard that exits at once fails start() with its log tail."""
    tb = TensorBoardProcess(tmp_path, extra_args=["--no_such_flag"])
    with pytest.raises(RuntimeError, match="no_such_flag"):
        tb.start()
    tb.close()


# -- a, g: where the experiment lives, what the runs list shows ------------


def test_experiment_in_dot_dir_without_session(
    tmp_path: Path, load_fast: bool, tensorboard: TensorBoardFactory
) -> None:
    """a, g: a dot-dir holding only the experiment is used; it and hparams-only
    sessions are listed as runs in /data/runs, but only sessions are groups."""
    exp_dir = ".runsmon-experiment-000003"
    write(tmp_path / exp_dir / START_FILE, [experiment([hparam("lr"), hparam("bs")], ["loss"])])
    write_session(tmp_path / "run", {"lr": 0.1}, "run", scalar("loss", 1.0))
    write_session(tmp_path / "only", {"lr": 0.2}, "only")  # no scalars at all
    tb = tensorboard(tmp_path, load_fast=load_fast)

    table = tb.wait_for(lambda t: set(t) == {"run", "only"})
    assert names(tb) == ["bs", "lr"]  # from the experiment, not inferred from sessions
    assert table["only"]["metrics"] == {}
    assert table["run"]["metrics"] == {("loss", ""): 1.0}
    assert sorted(tb.runs()) == sorted([exp_dir, "run", "only"])


# -- b: replacing the experiment -------------------------------------------


def test_experiment_replaced_by_new_dir_then_delete(
    tmp_path: Path, load_fast: bool, tensorboard: TensorBoardFactory
) -> None:
    """b: gen N+1 written in a new dir, gen N deleted: served within ~1 reload."""
    write(tmp_path / ".runsmon-experiment-000001" / START_FILE, [experiment([hparam("a")], [])])
    write_session(tmp_path / "run", {"a": 1.0}, "run")
    tb = tensorboard(tmp_path, load_fast=load_fast)
    tb.wait_for(lambda n: n == ["a"], fetch=lambda: names(tb))

    write(tmp_path / ".runsmon-experiment-000002" / START_FILE,
          [experiment([hparam("a"), hparam("b")], [])])  # fmt: skip
    shutil.rmtree(tmp_path / ".runsmon-experiment-000001")
    t0 = time.monotonic()
    tb.wait_for(lambda n: n == ["a", "b"], fetch=lambda: names(tb), timeout=10)
    assert time.monotonic() - t0 < 3 * RELOAD + 2


# -- c: a session replaced with no gap; a name used again ----------------


def _gapless(tb: TensorBoardProcess, done, rows: int, timeout: float) -> tuple[dict, float, int]:
    """Poll every 0.3 s until ``done(table)``: never fewer than ``rows`` rows.
    Returns the table, the seconds it took and the most sessions one row had."""
    t0 = time.monotonic()
    most = 0
    while True:
        table = tb.table()
        assert len(table) >= rows, f"{len(table)} rows after {time.monotonic() - t0:.1f} s"
        most = max([most, *(len(r["sessions"]) for r in table.values())])
        if done(table):
            return table, time.monotonic() - t0, most
        assert time.monotonic() - t0 < timeout, f"not shown after {timeout} s: {table}"
        time.sleep(0.3)


def test_new_directory_with_the_same_group_replaces_a_session_with_no_gap(
    tmp_path: Path, load_fast: bool, tensorboard: TensorBoardFactory
) -> None:
    """c: a session written into a NEW directory with the same group_name, then
    the old directory deleted: the row is there at every poll and shows the new
    session within a reload and 2 s; for a moment the row may hold both
    sessions (never two rows).  A RUNNING end info (in the file that sorts
    first) goes to SUCCESS the same way."""
    write(tmp_path / ".runsmon-experiment-000001" / START_FILE,
          [experiment([hparam("a", "DATA_TYPE_STRING")], ["loss"])])  # fmt: skip
    groups = [f"r{i}" for i in range(4)]
    for i, g in enumerate(groups):
        write_session(tmp_path / g, {"a": float(i)}, g, end_info("STATUS_RUNNING"),
                      scalar("loss", float(i)))  # fmt: skip
    tb = tensorboard(tmp_path, load_fast=load_fast)
    table = tb.wait_for(lambda t: set(t) == set(groups))
    assert {t["status"] for t in table.values()} == {"STATUS_RUNNING"}

    for i, g in enumerate(groups):  # numbers turned to text, the run ended
        write_session(tmp_path / f"{g}~", {"a": str(i)}, g, end_info("STATUS_SUCCESS"),
                      scalar("loss", float(i)))  # fmt: skip
        shutil.rmtree(tmp_path / g)
    table, took, most = _gapless(
        tb,
        lambda t: all(
            t[g]["hparams"] == {"a": str(i)} and t[g]["status"] == "STATUS_SUCCESS"
            for i, g in enumerate(groups)
        ),
        rows=len(groups),
        timeout=RELOAD + 2,
    )
    assert set(table) == set(groups) and most <= 2
    assert [len(table[g]["sessions"]) for g in groups] == [1] * 4
    assert table["r3"]["metrics"] == {("loss", ""): 3.0}
    assert sorted(tb.runs()) == sorted([".runsmon-experiment-000001", *(f"{g}~" for g in groups)])

    # And back to the first name, once it has been gone for 2 reloads (see below).
    time.sleep(2 * RELOAD)
    write_session(tmp_path / "r0", {"a": "back"}, "r0", end_info("STATUS_FAILURE"))
    shutil.rmtree(tmp_path / "r0~")
    table, took, _ = _gapless(
        tb, lambda t: t["r0"]["hparams"] == {"a": "back"}, rows=len(groups), timeout=RELOAD + 2
    )
    assert table["r0"]["status"] == "STATUS_FAILURE" and len(table["r0"]["sessions"]) == 1


def _big_event_file(path: Path, steps: int = 215_000, tags: int = 10) -> None:
    """About 30 MB of scalars (``tags`` values a step), written fast."""
    from runsmon import events as rs_events

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(rs_events.encode_events([], file_version=True, wall_time=1.0))
        for start in range(0, steps, 10_000):
            chunk = []
            for step in range(start, min(steps, start + 10_000)):
                e = event_pb2.Event(wall_time=2.0 + step, step=step)
                for t in range(tags):
                    e.summary.value.add(tag=f"m{t}", simple_value=float(step))
                chunk.append(rs_events.encode_record(e.SerializeToString()))
            f.write(b"".join(chunk))


def test_data_server_shows_a_new_large_directory_only_once_read(
    tmp_path: Path, tensorboard: TensorBoardFactory
) -> None:
    """c: the data server drops a vanished run at once but lists a new one only
    once it has read all its files: a 30 MB run replaced at once is missing
    for a moment; kept beside its replacement for 2 reloads and a second
    (``RunsMonitor.handover_delay``) it is there at every poll."""
    data = tmp_path / "data" / "events.out.tfevents.1.big"
    _big_event_file(data)
    write(tmp_path / ".runsmon-experiment-000001" / START_FILE,
          [experiment([hparam("a")], ["m0"])])  # fmt: skip

    def generation(name: str, a: float) -> None:
        write_session(tmp_path / name, {"a": a}, "big")
        (tmp_path / name / data.name).symlink_to(data)

    generation("big", 1.0)
    tb = tensorboard(tmp_path, load_fast=True)
    tb.wait_for(lambda t: t.get("big", {}).get("metrics") == {("m0", ""): 214_999.0}, timeout=60)

    def watch(until: Callable[[], bool], seconds: float) -> float:
        """Poll every 0.02 s for ``seconds`` (at least until ``until()``); how
        long the row was missing, in all."""
        missing, t0, last = 0.0, time.monotonic(), time.monotonic()
        while time.monotonic() - t0 < seconds or not until():
            now = time.monotonic()
            if "big" not in tb.table():
                missing += now - last
            last = now
            time.sleep(0.02)
            assert now - t0 < 60
        return missing

    generation("big~", 2.0)  # kept beside it for 2 reloads and a second
    time.sleep(2 * RELOAD + 1)
    shutil.rmtree(tmp_path / "big")
    shown = lambda: tb.table().get("big", {}).get("hparams") == {"a": 2.0}  # noqa: E731
    assert watch(shown, 3 * RELOAD) == 0.0

    generation("big~2", 3.0)  # the old one deleted at once
    shutil.rmtree(tmp_path / "big~")
    shown = lambda: tb.table().get("big", {}).get("hparams") == {"a": 3.0}  # noqa: E731
    assert watch(shown, 3 * RELOAD) > 0.05


# -- c: a name used again too soon --------------------------------------------------------


def test_recreated_run_needs_one_reload_absent(
    tmp_path: Path, load_fast: bool, tensorboard: TensorBoardFactory
) -> None:
    """c: a run dir recreated at once keeps its old start info for good; one left
    deleted for 2 reload intervals takes the new one.  So runsmon never deletes
    and rewrites a session under one name, and takes a name again only long
    after it was left (sessions.REUSE_AFTER)."""
    exp = experiment([hparam("lr")], ["loss"])
    write(tmp_path / ".runsmon-experiment-000001" / START_FILE, [exp])
    for r in ("now", "later"):
        write(tmp_path / r / "events.out.tfevents.1.a", [start_info({"lr": 0.1}, f"old-{r}")])
    tb = tensorboard(tmp_path, load_fast=load_fast)
    tb.wait_for(lambda t: {"old-now", "old-later"} <= set(t))

    def recreate(r: str) -> None:
        write(tmp_path / r / "events.out.tfevents.2.b",
              [start_info({"lr": 0.2}, f"new-{r}"), scalar("loss", 2.0)])  # fmt: skip

    shutil.rmtree(tmp_path / "now")
    shutil.rmtree(tmp_path / "later")
    recreate("now")
    t_now = time.monotonic()
    time.sleep(2 * RELOAD)
    recreate("later")
    table = tb.wait_for(lambda t: "new-later" in t, timeout=10)
    time.sleep(max(0.0, t_now + 4 * RELOAD + 1 - time.monotonic()))
    table = tb.table()
    assert "old-now" in table and "new-now" not in table, table
    assert table["old-now"]["hparams"] == {"lr": 0.1}
    assert table["new-later"]["hparams"] == {"lr": 0.2}


# -- d, e: missing values, mixed domains, the dashboard's filters ----------


@pytest.fixture(scope="module")
def filter_tb(
    tmp_path_factory: pytest.TempPathFactory, load_fast: bool
) -> Iterator[TensorBoardProcess]:
    """Sessions with missing hparams/metrics and a mixed-type discrete column (one per loader)."""
    tmp_path = tmp_path_factory.mktemp("filters")
    exp = experiment(
        [
            hparam("lr", interval=(0.0, 1.0)),
            hparam("opt", "DATA_TYPE_STRING", discrete=["adam", "sgd"]),
            hparam("name", "DATA_TYPE_STRING"),
            hparam("mix", "DATA_TYPE_STRING", discrete=[1.0, "x", True]),
        ],
        ["loss", "acc"],
    )
    write(tmp_path / ".runsmon-experiment-000001" / START_FILE, [exp])
    full = {"lr": 0.5, "opt": "adam", "name": "n", "mix": 1.0}
    write_session(tmp_path / "full", full, "full", scalar("loss", 1.0), scalar("acc", 0.5))
    write_session(tmp_path / "sparse", {"mix": "x"}, "sparse", scalar("loss", 2.0))
    write_session(tmp_path / "flag", {"mix": True}, "flag", scalar("loss", 3.0))
    with TensorBoardProcess(tmp_path, load_fast=load_fast) as tb:
        tb.wait_for(lambda t: len(t) == 3)
        yield tb


ALL3 = ["flag", "full", "sparse"]
INF = {"minValue": "-Infinity", "maxValue": "Infinity"}


@pytest.mark.tb
@pytest.mark.parametrize(
    "col, expected",
    [
        ({"hparam": "lr", "filterInterval": {"minValue": 0, "maxValue": 1}}, ALL3),
        ({"hparam": "opt", "filterDiscrete": ["adam", "sgd"]}, ALL3),
        ({"hparam": "opt", "filterDiscrete": ["sgd"]}, ["flag", "sparse"]),
        ({"hparam": "name", "filterRegexp": ""}, ALL3),
        ({"hparam": "name", "filterRegexp": "^zz$"}, ["flag", "sparse"]),
        ({"metric": {"tag": "acc"}, "filterInterval": INF}, ALL3),
        ({"metric": {"tag": "acc"}, "filterInterval": {"minValue": 0.9, "maxValue": 1}},
         ["flag", "sparse"]),
        # the dashboard never sends excludeMissingValues; with it, missing values drop
        ({"hparam": "lr", "filterInterval": INF, "excludeMissingValues": True}, ["full"]),
    ],
)  # fmt: skip
def test_missing_values_pass_every_filter(
    filter_tb: TensorBoardProcess, col: dict, expected: list[str]
) -> None:
    """d: a session without a value for the filtered hparam/metric is kept."""
    assert sorted(filter_tb.table([col])) == expected


@pytest.mark.tb
@pytest.mark.parametrize(
    "values, expected",
    [
        ([1.0, "x", True], ALL3),
        (["x"], ["sparse"]),
        ([1.0], ["flag", "full"]),  # Python ==: 1.0 == True
        (["1"], []),  # a string never matches a number
    ],
)
def test_mixed_discrete_domain(
    filter_tb: TensorBoardProcess, values: list, expected: list[str]
) -> None:
    """e: filterDiscrete over a mixed-type domain compares values with ==."""
    exp = {h["name"]: h for h in filter_tb.experiment()["hparamInfos"]}
    assert exp["mix"]["domainDiscrete"] == [1.0, "x", True]
    col = {"hparam": "mix", "filterDiscrete": values}
    assert sorted(filter_tb.table([col])) == expected


@pytest.mark.tb
def test_regexp_filter_meeting_a_number_is_http_400(filter_tb: TensorBoardProcess) -> None:
    """e: filterRegexp (even "") on a column holding a number answers 400."""
    with pytest.raises(HTTPAnswerError) as err:
        filter_tb.session_groups([{"hparam": "mix", "filterRegexp": ""}])
    assert err.value.status == 400
    assert "regexp filter" in err.value.body


@pytest.mark.tb
def test_dashboard_filters_on_consistent_experiment(filter_tb: TensorBoardProcess) -> None:
    """e: with every dashboard filter set to let all through, all sessions stay."""
    cols = filter_tb.dashboard_filters()
    assert {c.get("hparam") or c["metric"]["tag"]: sorted(c) for c in cols} == {
        "lr": ["filterInterval", "hparam", "includeInResult"],
        "mix": ["filterDiscrete", "hparam", "includeInResult"],
        "name": ["filterRegexp", "hparam", "includeInResult"],
        "opt": ["filterDiscrete", "hparam", "includeInResult"],
        "loss": ["filterInterval", "includeInResult", "metric"],
        "acc": ["filterInterval", "includeInResult", "metric"],
    }
    assert sorted(filter_tb.table(cols)) == ALL3


def test_dashboard_filters_shape() -> None:
    """The UI's rule: discrete under 10 values -> checkboxes, 10+ -> regexp box."""
    exp = {
        "hparamInfos": [
            {"name": "few", "type": "DATA_TYPE_FLOAT64", "domainDiscrete": [1, 2]},
            {"name": "many", "type": "DATA_TYPE_FLOAT64", "domainDiscrete": list(range(10))},
            {"name": "f", "type": "DATA_TYPE_FLOAT64", "domainInterval": {"minValue": 0,
                                                                          "maxValue": 2}},
            {"name": "s", "type": "DATA_TYPE_STRING"},
        ],
        "metricInfos": [{"name": {"tag": "loss", "group": "train"}}],
    }  # fmt: skip
    cols = {c.get("hparam", "metric"): c for c in dashboard_filters(exp)}
    assert cols["few"]["filterDiscrete"] == [1, 2]
    assert cols["many"]["filterRegexp"] == ""
    assert cols["f"]["filterInterval"] == {"minValue": 0, "maxValue": 2}
    assert cols["s"]["filterRegexp"] == ""
    assert cols["metric"]["filterInterval"] == INF
    assert cols["metric"]["metric"] == {"tag": "loss", "group": "train"}


# -- f, h: symlinks, the end file, growing linked files --------------------


def test_symlinks_and_live_end_info(
    tmp_path: Path, load_fast: bool, tensorboard: TensorBoardFactory
) -> None:
    """f: symlinked event files and run dirs are read by both loaders.
    h: an end file that sorts last, created live, is picked up by both; after
    it exists only the Rust loader still reads growth of the run's own file."""
    logdir, elsewhere = tmp_path / "logdir", tmp_path / "elsewhere"
    write(logdir / ".runsmon-experiment-000001" / START_FILE,
          [experiment([hparam("lr")], ["loss"])])  # fmt: skip
    # f: a linked file, and a linked directory
    _, real = run_file(elsewhere / "a", [scalar("loss", 1.0)])
    write_session(logdir / "file-link", {"lr": 0.1}, "file-link")
    (logdir / "file-link" / real.name).symlink_to(real)
    write_session(elsewhere / "b", {"lr": 0.2}, "dir-link", scalar("loss", 2.0))
    (logdir / "dir-link").symlink_to(elsewhere / "b", target_is_directory=True)
    # h: a running run, its file linked and still open
    writer, real_c = run_file(elsewhere / "c", [scalar("loss", 5.0, 1)])
    write_session(logdir / "live", {"lr": 0.3}, "live")
    (logdir / "live" / real_c.name).symlink_to(real_c)
    tb = tensorboard(logdir, load_fast=load_fast)

    table = tb.wait_for(lambda t: len(t) == 3)
    assert table["file-link"]["metrics"] == {("loss", ""): 1.0}
    assert table["dir-link"]["metrics"] == {("loss", ""): 2.0}
    assert table["dir-link"]["hparams"] == {"lr": 0.2}
    assert table["live"]["status"] == "STATUS_UNKNOWN"

    writer.add_event(scalar("loss", 4.0, 2))
    writer.flush()
    tb.wait_for(lambda t: t["live"]["metrics"] == {("loss", ""): 4.0}, timeout=10)

    write(logdir / "live" / END_FILE, [end_info("STATUS_SUCCESS")])
    tb.wait_for(lambda t: t["live"]["status"] == "STATUS_SUCCESS", timeout=10)

    writer.add_event(scalar("loss", 3.0, 3))
    writer.flush()
    writer.close()
    seen = lambda t: t["live"]["metrics"] == {("loss", ""): 3.0}  # noqa: E731
    if load_fast:
        tb.wait_for(seen, timeout=10)
    else:
        with pytest.raises(WaitTimeout):
            tb.wait_for(seen, timeout=4 * RELOAD + 1)

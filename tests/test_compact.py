"""The compact layout without TensorBoard: one event file a run, and the auto choice."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
from runs_helpers import session_in, write_scalars
from tensorboard.compat.proto import event_pb2, summary_pb2

from runsmon import Run, RunsMonitor, events, hparams, layout
from runsmon.compact import compact_metrics
from runsmon.logdir import MANIFEST, SESSION_FILE
from runsmon.run import ScalarPoint
from runsmon.testing import read_events

T0 = 1_700_000_000.0


def _run(root, run_id="r1", status="completed", flags=None, **kwargs) -> Run:
    return Run(
        run_id,
        str(root / run_id),
        flags=flags if flags is not None else {"lr": 0.1},
        status=status,
        started=T0,
        stopped=T0 + 10 if status in ("completed", "error") else None,
        operation="train",
        **kwargs,
    )


def _guild_like(root, run_id="r1", **kwargs) -> Run:
    """A run with event files at its root, in train/ and in val/."""
    run_dir = root / run_id
    write_scalars(run_dir, {"lr": [(0, 0.1), (1, 0.05)]})
    write_scalars(run_dir / "train", {"loss": [(0, 2.0), (1, 1.0)]})
    write_scalars(run_dir / "val", {"loss": [(0, 3.0)], "acc": [(0, 0.5)]})
    return _run(root, run_id, **kwargs)


def _monitor(tmp_path, runs, **kwargs) -> RunsMonitor:
    kwargs.setdefault("layout", "compact")
    return RunsMonitor(str(tmp_path / "logdir"), lambda: list(runs), watch=False, **kwargs)


def _dirs(monitor) -> list[str]:
    return sorted(n for n in os.listdir(monitor.logdir.path) if not n.startswith("."))


def _only_file(monitor, run_id="r1") -> str:
    run_dir = os.path.join(monitor.logdir.path, monitor.run_dirs[run_id])
    names = sorted(n for n in os.listdir(run_dir) if n != MANIFEST)
    assert names == [SESSION_FILE]
    return os.path.join(run_dir, SESSION_FILE)


def _points(path) -> list[tuple[str, int, float]]:
    """Every scalar point of an event file, in file order, as (tag, step, value)."""
    out = []
    for event in read_events(path):
        for v in event.summary.value:
            if v.HasField("simple_value"):
                out.append((v.tag, event.step, round(v.simple_value, 6)))
    return out


def _tags(path) -> list[str]:
    return [v.tag for e in read_events(path) for v in e.summary.value]


def _append_raw(path, events_: list[event_pb2.Event]) -> bytes:
    data = b"".join(events.encode_record(e.SerializeToString()) for e in events_)
    with open(path, "ab") as f:
        f.write(data)
    return data


def _newest(directory) -> str:
    names = sorted(n for n in os.listdir(directory) if "tfevents" in n)
    return os.path.join(directory, names[-1])


def _running(tmp_path) -> tuple[RunsMonitor, str, list[tuple[str, int, float]]]:
    """A running run synced once: its monitor, its file and the points in it."""
    monitor = _monitor(tmp_path, [_guild_like(tmp_path / "runs", status="running")])
    monitor.run_once()
    path = _only_file(monitor)
    return monitor, path, _points(path)


def test_one_file_a_run_with_groups_in_the_tags(tmp_path):
    run = _guild_like(tmp_path / "runs")
    monitor = _monitor(tmp_path, [run])
    monitor.run_once()
    assert monitor.layout == "compact"
    path = _only_file(monitor)
    first = next(iter(read_events(path)))
    assert first.file_version == "brain.Event:2"
    tags = _tags(path)
    assert tags[0] == "_hparams_/session_start_info"
    assert sorted(set(_points(path))) == sorted(
        {
            ("lr", 0, 0.1),
            ("lr", 1, 0.05),
            ("train/loss", 0, 2.0),
            ("train/loss", 1, 1.0),
            ("val/loss", 0, 3.0),
            ("val/acc", 0, 0.5),
            ("time", 0, 10.0),
        }
    )
    assert tags.count("_hparams_/session_end_info") == 1
    assert session_in(os.path.dirname(path))["statuses"] == ["STATUS_SUCCESS"]
    # The experiment names the metrics as the file does; runsmon keeps (tag, group) inside.
    assert ("loss", "train") in monitor.experiment_columns()[1]
    exp = next(
        e
        for d in os.listdir(monitor.logdir.path)
        if d.startswith(".runsmon-experiment")
        for e in read_events(
            os.path.join(
                monitor.logdir.path, d, os.listdir(os.path.join(monitor.logdir.path, d))[0]
            )
        )
        if e.summary.value
    )
    assert "train/loss" in exp.summary.value[0].metadata.plugin_data.content.decode("latin-1")
    assert monitor.event_files() == 2  # the run's file and the experiment


def test_only_scalars_are_copied(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    path = write_scalars(run_dir / "train", {"loss": [(0, 1.0)]})
    image = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="img", image=summary_pb2.Summary.Image(height=1))]
    )
    hp = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="_hparams_/x", simple_value=1)])
    _append_raw(
        path,
        [
            event_pb2.Event(wall_time=T0, step=1, summary=image),
            event_pb2.Event(wall_time=T0, step=1, graph_def=b"graph"),
            event_pb2.Event(wall_time=T0, step=1, summary=hp),
            events.scalar_event("loss", 0.5, 1, T0),
        ],
    )
    monitor = _monitor(tmp_path, [_run(tmp_path / "runs")])
    monitor.run_once()
    out = _only_file(monitor)
    assert [p for p in _points(out) if p[0] != "time"] == [
        ("train/loss", 0, 1.0),
        ("train/loss", 1, 0.5),
    ]
    assert "train/img" not in _tags(out) and "img" not in _tags(out)
    assert not any(e.graph_def for e in read_events(out))


def test_appended_bytes_only(tmp_path):
    monitor, path, before = _running(tmp_path)
    _append_raw(
        _newest(tmp_path / "runs" / "r1" / "train"), [events.scalar_event("loss", 0.25, 2, T0)]
    )
    monitor.run_once()
    after = _points(path)
    assert after == [*before, ("train/loss", 2, 0.25)]
    monitor.run_once()  # nothing new: nothing written
    assert _points(path) == after
    assert monitor.run_dirs["r1"] == monitor.run_names["r1"]  # no rewrite


def test_a_cut_record_waits_for_the_rest(tmp_path):
    monitor, path, before = _running(tmp_path)
    source = _newest(tmp_path / "runs" / "r1" / "val")
    record = events.encode_record(events.scalar_event("acc", 0.75, 1, T0).SerializeToString())
    with open(source, "ab") as f:
        f.write(record[:10])
    monitor.run_once()
    assert _points(path) == before
    with open(source, "ab") as f:
        f.write(record[10:])
    monitor.run_once()
    assert _points(path) == [*before, ("val/acc", 1, 0.75)]


def test_a_corrupt_record_is_skipped_with_one_warning(tmp_path, caplog):
    monitor, path, before = _running(tmp_path)
    source = _newest(tmp_path / "runs" / "r1" / "train")
    bad = bytearray(
        events.encode_record(events.scalar_event("loss", 9.0, 2, T0).SerializeToString())
    )
    bad[-6] ^= 0xFF  # a byte of its data: the data checksum fails
    with open(source, "ab") as f:
        f.write(bytes(bad))
    _append_raw(source, [events.scalar_event("loss", 0.1, 3, T0)])
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        monitor.run_once()
        monitor.run_once()
    assert _points(path) == [*before, ("train/loss", 3, 0.1)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and monitor.run_names["r1"] in warnings[0], warnings


def test_a_replaced_file_rewrites_the_run(tmp_path):
    run = _guild_like(tmp_path / "runs", status="running")
    monitor = _monitor(tmp_path, [run])
    monitor.run_once()
    name = monitor.run_names["r1"]
    source = _newest(tmp_path / "runs" / "r1" / "train")
    os.unlink(source)
    write_scalars(tmp_path / "runs" / "r1" / "train", {"loss": [(0, 7.0)]})
    monitor.run_once()
    assert _dirs(monitor) == [f"{name}~"]  # a new generation; the old one went
    points = _points(_only_file(monitor))
    assert [p for p in points if p[0] == "train/loss"] == [("train/loss", 0, 7.0)]
    assert ("lr", 1, 0.05) in points and ("val/acc", 0, 0.5) in points
    assert _tags(_only_file(monitor)).count("_hparams_/session_start_info") == 1


def test_a_shrunk_file_rewrites_the_run(tmp_path):
    run = _guild_like(tmp_path / "runs", status="running")
    monitor = _monitor(tmp_path, [run])
    monitor.run_once()
    source = _newest(tmp_path / "runs" / "r1" / "val")
    with open(source, "r+b") as f:
        data = f.read()
        f.seek(0)
        f.truncate()
        split = events.split_records(data)
        f.write(b"".join(events.encode_record(r) for r in split.records[:2]))
    monitor.run_once()
    points = _points(_only_file(monitor))
    assert monitor.run_dirs["r1"].endswith("~")
    assert ("val/loss", 0, 3.0) in points and not any(p[0] == "val/acc" for p in points)


def test_a_session_rewrite_keeps_the_scalars(tmp_path):
    run = _guild_like(tmp_path / "runs", status="running")
    runs = [run]
    monitor = _monitor(tmp_path, runs)
    monitor.run_once()
    before = _points(_only_file(monitor))
    assert session_in(os.path.dirname(_only_file(monitor)))["statuses"] == ["STATUS_RUNNING"]
    _append_raw(
        _newest(tmp_path / "runs" / "r1" / "train"), [events.scalar_event("loss", 0.5, 2, T0)]
    )
    runs[0] = dataclasses.replace(run, flags={"lr": 0.2}, status="completed", stopped=T0 + 10)
    monitor.run_once()
    assert monitor.run_dirs["r1"].endswith("~")
    path = _only_file(monitor)
    session = session_in(os.path.dirname(path))
    assert session["hparams"] == {"lr": 0.2}
    assert session["statuses"] == ["STATUS_SUCCESS"]
    after = _points(path)
    assert after == [*before, ("train/loss", 2, 0.5), ("time", 0, 10.0)]
    tags = _tags(path)
    assert tags.count("_hparams_/session_start_info") == 1
    assert tags.count("_hparams_/session_end_info") == 1


def test_the_end_info_is_appended_when_the_run_ends(tmp_path):
    # A status guessed from idleness: no end info while it runs, no rewrite when it ends.
    run = _guild_like(tmp_path / "runs", status="running", attrs={"status_rule": "idle"})
    runs = [run]
    monitor = _monitor(tmp_path, runs)
    monitor.run_once()
    path = _only_file(monitor)
    assert "_hparams_/session_end_info" not in _tags(path)
    runs[0] = dataclasses.replace(run, status="completed", stopped=T0 + 10)
    monitor.run_once()
    assert monitor.run_dirs["r1"] == monitor.run_names["r1"]
    tags = _tags(path)
    assert tags.count("_hparams_/session_end_info") == 1 and tags[-1] == "time"
    assert session_in(os.path.dirname(path))["statuses"] == ["STATUS_SUCCESS"]


def test_scalars_outside_event_files_are_appended_with_their_group(tmp_path):
    points = [ScalarPoint("loss", 1.0, 0, T0, "val"), ScalarPoint("acc", 0.5, 0, T0)]
    runs = [_run(tmp_path / "runs", status="running", scalars=lambda: list(points))]
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    monitor = _monitor(tmp_path, runs)
    monitor.run_once()
    path = _only_file(monitor)
    assert _points(path) == [("val/loss", 0, 1.0), ("acc", 0, 0.5)]
    points.append(ScalarPoint("loss", 0.5, 1, T0, "val"))
    runs[0] = dataclasses.replace(runs[0], fingerprint=2)
    monitor.run_once()
    assert _points(path) == [("val/loss", 0, 1.0), ("acc", 0, 0.5), ("val/loss", 1, 0.5)]


def test_a_restart_cuts_what_the_manifest_does_not_count(tmp_path):
    run = _guild_like(tmp_path / "runs", status="running")
    monitor = _monitor(tmp_path, [run])
    monitor.run_once()
    path = _only_file(monitor)
    whole = _points(path)
    with open(path, "ab") as f:  # appended, then killed before the manifest was saved
        f.write(
            events.encode_record(events.scalar_event("train/loss", 5.0, 9, T0).SerializeToString())
        )
    monitor.logdir.release()
    del monitor
    again = _monitor(tmp_path, [run])
    again.run_once()
    assert _points(_only_file(again)) == whole


def test_restart_from_linked_to_compact_rewrites_each_run_once(tmp_path):
    runs = [
        _guild_like(tmp_path / "runs", "r1"),
        _guild_like(tmp_path / "runs", "r2", status="running"),
    ]
    linked = _monitor(tmp_path, runs, layout="linked")
    linked.run_once()
    names = dict(linked.run_names)
    assert linked.event_files() > 2 * 4
    linked.logdir.release()
    del linked
    compact = _monitor(tmp_path, runs)
    stats = compact.run_once()
    assert stats.rewrites == 2
    assert _dirs(compact) == sorted(f"{n}~" for n in names.values())
    for run_id in names:
        points = _points(_only_file(compact, run_id))
        assert ("train/loss", 1, 1.0) in points and ("val/acc", 0, 0.5) in points
        manifest = os.path.join(compact.logdir.path, compact.run_dirs[run_id], MANIFEST)
        with open(manifest) as f:
            assert '"layout": "compact"' in f.read()
    assert compact.run_once().rewrites == 0
    compact.logdir.release()
    del compact
    back = _monitor(tmp_path, runs, layout="linked")
    assert back.run_once().rewrites == 2
    assert _dirs(back) == sorted(names.values())
    assert back.event_files() > 2 * 4


def test_compact_metrics_name_the_group_in_the_tag():
    assert compact_metrics([("loss", "train"), ("time", "")]) == [("train/loss", ""), ("time", "")]


@pytest.mark.parametrize(
    ("limit", "chosen"), [(None, "linked"), (10_000, "linked"), (60, "compact")]
)
def test_auto_chooses_by_the_open_file_limit(tmp_path, caplog, limit, chosen):
    runs = [_guild_like(tmp_path / "runs", f"r{i}") for i in range(3)]
    with caplog.at_level(logging.INFO, logger="runsmon"):
        monitor = _monitor(tmp_path, runs, layout="auto", open_files_limit=limit or 1 << 30)
        assert monitor.layout is None
        monitor.run_once()
    assert monitor.layout == chosen
    # 3 runs x (3 event files + a session) + the experiment: 13, and 64 + a tenth: 78
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("layout")]
    assert len(lines) == 1 and "13 event files" in lines[0] and "78 open files" in lines[0]
    assert monitor.layout_note == lines[0]
    files = monitor.event_files()
    assert files == (4 if chosen == "compact" else 13)
    # Chosen once: more runs later do not change it.
    runs.extend(_guild_like(tmp_path / "runs", f"s{i}") for i in range(20))
    monitor.run_once()
    assert monitor.layout == chosen


def test_auto_rule():
    assert layout.choose(100, 25, 1000)[0] == "linked"  # 100 + 10 + 64 = 174 <= 500
    assert layout.choose(400, 100, 1000)[0] == "compact"  # 400 + 40 + 64 = 504 > 500
    assert layout.choose(400, 100, 1008)[0] == "linked"


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        _monitor(tmp_path, [], layout="flat")


def _tensor_scalar(tag: str, value: float, meta: bool) -> summary_pb2.Summary.Value:
    import numpy as np
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    v = summary_pb2.Summary.Value(
        tag=tag, tensor=tensor_util.make_tensor_proto(np.array(value, dtype=np.float32))
    )
    if meta:
        v.metadata.CopyFrom(
            scalar_metadata.create_summary_metadata(display_name="", description="")
        )
        v.metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
    return v


def _histogram(tag: str) -> summary_pb2.Summary.Value:
    import numpy as np
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.util import tensor_util

    meta = histogram_metadata.create_summary_metadata(display_name=tag, description="")
    data = np.array([[0.0, 1.0, 2.0]], dtype=np.float64)
    return summary_pb2.Summary.Value(
        tag=tag, metadata=meta, tensor=tensor_util.make_tensor_proto(data)
    )


def test_tensor_scalars_keep_their_metadata_and_histograms_go(tmp_path):
    # TF2's writers: a scalar is a tensor whose first value carries the plugin.
    run_dir = tmp_path / "runs" / "r1" / "val"
    run_dir.mkdir(parents=True)
    path = str(run_dir / "events.out.tfevents.1.host")
    evs = [events.file_version_event(T0)]
    for step in range(3):
        ev = event_pb2.Event(wall_time=T0, step=step)
        ev.summary.value.extend([_tensor_scalar("acc", 0.1 * step, step == 0), _histogram("w")])
        evs.append(ev)
    with open(path, "wb") as f:
        f.write(events.encode_events(evs))
    monitor = _monitor(tmp_path, [_run(tmp_path / "runs")])
    monitor.run_once()
    out = [e for e in read_events(_only_file(monitor)) if e.summary.value]
    copied = [(e.step, v) for e in out for v in e.summary.value if v.tag.startswith("val/")]
    assert [(step, v.tag) for step, v in copied] == [(0, "val/acc"), (1, "val/acc"), (2, "val/acc")]
    assert copied[0][1].metadata.plugin_data.plugin_name == "scalars"
    assert round(events.scalar_value(copied[2][1]), 6) == 0.2
    assert ("val/w" not in _tags(_only_file(monitor))) and ("w" not in _tags(_only_file(monitor)))


def test_a_file_with_hparams_of_its_own_gives_its_scalars_only(tmp_path):
    # Lightning: hparams summaries and curves in one file, and hp_metric = -1 at step 0.
    run_dir = tmp_path / "runs" / "r1"
    hp = hparams.session_start_summary({"lr": 0.5}, "theirs", None)
    path = write_scalars(run_dir, {"hp_metric": [(0, -1.0)], "loss": [(0, 1.0), (1, 0.5)]})
    _append_raw(path, [event_pb2.Event(wall_time=T0, step=0, summary=hp)])
    monitor = _monitor(tmp_path, [_run(tmp_path / "runs")])
    monitor.run_once()
    file = _only_file(monitor)
    assert [p for p in _points(file) if p[0] != "time"] == [("loss", 0, 1.0), ("loss", 1, 0.5)]
    assert _tags(file).count("_hparams_/session_start_info") == 1
    assert session_in(os.path.dirname(file))["hparams"] == {"lr": 0.1}


def test_a_record_larger_than_a_chunk_is_stepped_over(tmp_path, monkeypatch):
    from runsmon import compact

    monkeypatch.setattr(compact, "CHUNK", 256)
    run_dir = tmp_path / "runs" / "r1"
    path = write_scalars(run_dir / "train", {"loss": [(0, 1.0)]})
    big = summary_pb2.Summary(
        value=[
            summary_pb2.Summary.Value(
                tag="img", image=summary_pb2.Summary.Image(encoded_image_string=b"x" * 1000)
            )
        ]
    )
    _append_raw(
        path,
        [
            event_pb2.Event(wall_time=T0, step=1, summary=big),
            events.scalar_event("loss", 0.5, 1, T0),
        ],
    )
    monitor = _monitor(tmp_path, [_run(tmp_path / "runs")])
    monitor.run_once()
    points = [p for p in _points(_only_file(monitor)) if p[0] != "time"]
    assert points == [("train/loss", 0, 1.0), ("train/loss", 1, 0.5)]


def test_a_restart_goes_on_from_where_it_was(tmp_path):
    monitor, path, before = _running(tmp_path)
    run = next(row["run"] for row in monitor.table() if row["run"].id == "r1")
    monitor.logdir.release()
    del monitor
    _append_raw(_newest(tmp_path / "runs" / "r1" / "val"), [events.scalar_event("acc", 0.9, 1, T0)])
    again = _monitor(tmp_path, [run])
    assert again.run_once().rewrites == 0
    assert _points(_only_file(again)) == [*before, ("val/acc", 1, 0.9)]

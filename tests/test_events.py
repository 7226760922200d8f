"""Tests of runsmon.events: framing, the incremental scanner, encoding."""

from __future__ import annotations

import math
import os
import pathlib
import random
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked_crc
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from runsmon import events
from runsmon.fs import LOCAL

# -- helpers -----------------------------------------------------------------


class CountingFS:
    """The local filesystem, remembering every read."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int, int]] = []  # (offset, size asked, got)

    def stat(self, path):
        return LOCAL.stat(path)

    def read_bytes(self, path, offset=0, size=-1):
        data = LOCAL.read_bytes(path, offset, size)
        self.reads.append((offset, size, len(data)))
        return data

    def bytes_read(self) -> int:
        return sum(r[2] for r in self.reads)


def write_events(directory: str, evs, suffix: str = "") -> str:
    """Write ``evs`` with tensorboard's EventFileWriter; returns the file."""
    writer = EventFileWriter(directory, max_queue_size=1000, filename_suffix=suffix)
    for ev in evs:
        writer.add_event(ev)
    writer.close()
    names = sorted(n for n in os.listdir(directory) if n.endswith(suffix) and "tfevents" in n)
    return os.path.join(directory, names[-1])


def scalars(n: int, tags=("loss", "acc"), start: int = 0):
    """``n`` steps of simple_value scalars, one event per tag and step."""
    rng = random.Random(start)
    return [
        events.scalar_event(tag, rng.random(), step, 1.7e9 + step)
        for step in range(start, start + n)
        for tag in tags
    ]


def tensor_value(tag, number, dtype=np.float32, metadata=None):
    value = summary_pb2.Summary.Value(
        tag=tag, tensor=tensor_util.make_tensor_proto(np.array(number, dtype=dtype))
    )
    if metadata is not None:
        value.metadata.CopyFrom(metadata)
    return value


def scalar_meta():
    meta = scalar_metadata.create_summary_metadata(display_name="", description="")
    meta.data_class = summary_pb2.DATA_CLASS_SCALAR
    return meta


def event_with(values, step, wall_time=None):
    ev = event_pb2.Event(step=step, wall_time=1.7e9 + step if wall_time is None else wall_time)
    ev.summary.value.extend(values)
    return ev


def histogram_value(tag, step):
    meta = histogram_metadata.create_summary_metadata(display_name=tag, description="")
    data = np.array([[0.0, 1.0, float(step)], [1.0, 2.0, 3.0]], dtype=np.float64)
    return summary_pb2.Summary.Value(
        tag=tag, metadata=meta, tensor=tensor_util.make_tensor_proto(data)
    )


def legacy_histo_value(tag, step):
    histo = summary_pb2.HistogramProto(
        min=0.0, max=float(step), num=3, sum=1.0, sum_squares=1.0, bucket_limit=[1.0], bucket=[3.0]
    )
    return summary_pb2.Summary.Value(tag=tag, histo=histo)


def image_value(tag, step):
    image = summary_pb2.Summary.Image(
        height=2, width=2, colorspace=3, encoded_image_string=b"\x89PNG fake " + bytes([step % 256])
    )
    return summary_pb2.Summary.Value(tag=tag, image=image)


def text_value(tag, step):
    meta = text_metadata.create_summary_metadata(display_name=tag, description="")
    tensor = tensor_util.make_tensor_proto(np.array(f"text {step}".encode(), dtype=object))
    return summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)


def tensorboard_view(path: str):
    """(plugin-scalar flag per tag, last value per scalar tag) per TensorBoard."""
    kinds: dict[str, bool] = {}
    last: dict[str, tuple[int, float]] = {}
    for ev in EventFileLoader(path).Load():
        for value in ev.summary.value:
            if value.tag not in kinds:
                kinds[value.tag] = value.metadata.data_class == summary_pb2.DATA_CLASS_SCALAR
            if kinds[value.tag]:
                last[value.tag] = (ev.step, float(tensor_util.make_ndarray(value.tensor).item()))
    return kinds, last


def runsmon_view(scan: events.FileScan):
    kinds = {tag: plugin == "scalars" for tag, plugin in scan.tags.items()}
    return kinds, {tag: (v.step, v.value) for tag, v in scan.scalars.items()}


def frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, frame length) of each record of a well-formed file."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, length + 16))
        pos += length + 16
    return out


# -- framing and encoding ----------------------------------------------------


def test_masked_crc_matches_tensorboard():
    for data in (b"", b"a", b"hello world" * 10, bytes(range(256))):
        assert events.masked_crc32c(data) == tb_masked_crc(data)


def test_encode_record_round_trip_and_split():
    datas = [b"", b"x", b"y" * 300]
    buf = b"".join(events.encode_record(d) for d in datas)
    split = events.split_records(buf + events.encode_record(b"partial")[:-3])
    assert split.records == datas
    assert split.end == len(buf)
    assert split.bad_records == 0 and split.error is None and not split.framing_lost


def test_split_records_bad_length_checksum_stops():
    good = events.encode_record(b"one")
    bad = bytearray(events.encode_record(b"two"))
    bad[8] ^= 1
    split = events.split_records(good + bytes(bad) + events.encode_record(b"three"))
    assert split.records == [b"one"]
    assert split.framing_lost and split.end == len(good)
    assert "length checksum" in split.error


@pytest.mark.skipif(not events.CHECKSUMS_VERIFIED, reason="google-crc32c not installed")
def test_split_records_bad_data_checksum_skips():
    bad = bytearray(events.encode_record(b"two"))
    bad[12] ^= 1
    buf = events.encode_record(b"one") + bytes(bad) + events.encode_record(b"three")
    split = events.split_records(buf)
    assert split.records == [b"one", b"three"]
    assert split.bad_records == 1 and "data checksum" in split.error
    assert split.end == len(buf)


def test_encode_events_read_by_tensorboard(tmp_path):
    evs = [events.scalar_event("loss", 0.5, 3, 10.0), events.scalar_event("loss", 0.25, 4, 11.0)]
    path = tmp_path / "events.out.tfevents.1.x"
    path.write_bytes(events.encode_events(evs, file_version=True, wall_time=9.0))
    loaded = list(EventFileLoader(str(path)).Load())
    assert loaded[0].file_version == events.FILE_VERSION and loaded[0].wall_time == 9.0
    assert [(e.step, e.wall_time) for e in loaded[1:]] == [(3, 10.0), (4, 11.0)]
    values = [tensor_util.make_ndarray(e.summary.value[0].tensor).item() for e in loaded[1:]]
    assert values == [0.5, 0.25]
    header = len(events.encode_events([], file_version=True, wall_time=9.0))
    assert events.encode_events(evs) == path.read_bytes()[header:]


def test_summary_event_helpers():
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=1.0)])
    ev = events.summary_event(summary, step=7, wall_time=2.0)
    assert ev.step == 7 and ev.wall_time == 2.0 and ev.summary == summary
    assert events.file_version_event(1.0).file_version == "brain.Event:2"
    assert events.summary_event(summary).wall_time > 1e9


# -- scanning ----------------------------------------------------------------


def test_scan_collects_tags_and_last_values(tmp_path):
    path = write_events(str(tmp_path), scalars(50))
    scan = events.scan_file(LOCAL, path)
    assert scan.tags == {"loss": "scalars", "acc": "scalars"}
    assert scan.offset == os.path.getsize(path)
    assert scan.bad_records == 0 and scan.error is None
    assert runsmon_view(scan) == tensorboard_view(path)
    assert scan.scalars["loss"].step == 49 and scan.scalars["loss"].wall_time == 1.7e9 + 49
    assert scan.records == 101  # with the file_version event


def test_last_value_is_last_record_not_highest_step(tmp_path):
    evs = [events.scalar_event("loss", v, s, float(s)) for s, v in [(5, 1.0), (9, 2.0), (3, 3.0)]]
    path = write_events(str(tmp_path), evs)
    scan = events.scan_file(LOCAL, path)
    assert scan.scalars["loss"] == events.ScalarValue(3, 3.0, 3.0)
    assert runsmon_view(scan) == tensorboard_view(path)


def test_appended_events_read_incrementally(tmp_path):
    fs = CountingFS()
    writer = EventFileWriter(str(tmp_path), max_queue_size=1000)
    for ev in scalars(20):
        writer.add_event(ev)
    writer.flush()
    (name,) = os.listdir(tmp_path)
    path = str(tmp_path / name)
    scan = events.FileScan()
    assert scan.update(fs, path)
    first = scan.offset
    assert first == os.path.getsize(path)
    assert scan.scalars["loss"].step == 19

    fs.reads.clear()
    assert not scan.update(fs, path)  # nothing new: no read at all
    assert fs.reads == []

    for ev in scalars(5, start=20) + [events.scalar_event("new", 1.5, 30, 1.0)]:
        writer.add_event(ev)
    writer.close()
    assert scan.update(fs, path, os.path.getsize(path))
    assert all(offset >= first for offset, _, _ in fs.reads)
    assert fs.bytes_read() == os.path.getsize(path) - first
    assert scan.scalars["loss"].step == 24 and scan.scalars["new"].value == 1.5
    assert runsmon_view(scan) == tensorboard_view(path)


class GrowingFS(CountingFS):
    """A file that another process appends to after every read."""

    def __init__(self, path: str, pieces: list[bytes]) -> None:
        super().__init__()
        self.path = path
        self.pieces = list(pieces)

    def read_bytes(self, path, offset=0, size=-1):
        data = super().read_bytes(path, offset, size)
        if self.pieces:
            with open(self.path, "ab") as f:
                f.write(self.pieces.pop(0))
        return data


def test_file_growing_while_read(tmp_path):
    ref = write_events(str(tmp_path / "ref"), scalars(300, tags=("loss", "acc", "lr")))
    data = pathlib.Path(ref).read_bytes()
    path = str(tmp_path / "events.out.tfevents.2.grow")
    cut = [0, 5, 700, 701, 3000, 3333, 9000, len(data)]
    with open(path, "wb") as f:
        f.write(data[:100])
    pieces = [data[max(a, 100) : max(b, 100)] for a, b in zip(cut, cut[1:], strict=False)]
    fs = GrowingFS(path, pieces)
    scan = events.FileScan(chunk_size=1024)
    for _ in range(50):
        scan.update(fs, path)
        if scan.offset == len(data):
            break
    assert scan.offset == len(data) == os.path.getsize(path)
    assert scan.bad_records == 0
    assert runsmon_view(scan) == runsmon_view(events.scan_file(LOCAL, ref))
    assert runsmon_view(scan) == tensorboard_view(ref)


@pytest.mark.parametrize("cut", [1, 5, 11, 12, 13, -5, -1])
def test_truncated_last_record_completed_later(tmp_path, cut):
    ref = write_events(str(tmp_path / "ref"), scalars(10))
    data = pathlib.Path(ref).read_bytes()
    last_start, last_len = frames(data)[-1]
    stop = last_start + cut if cut > 0 else last_start + last_len + cut
    path = tmp_path / "events.out.tfevents.3.part"
    path.write_bytes(data[:stop])
    scan = events.FileScan()
    scan.update(LOCAL, str(path))
    assert scan.offset == last_start
    assert scan.bad_records == 0 and scan.error is None and not scan.framing_lost
    assert scan.scalars["acc"].step == 8  # the last record (acc, step 9) is partial
    with open(path, "ab") as f:
        f.write(data[stop:])
    assert scan.update(LOCAL, str(path))
    assert scan.offset == len(data)
    assert scan.scalars["acc"].step == 9 and scan.bad_records == 0


def test_zero_byte_file(tmp_path):
    path = tmp_path / "events.out.tfevents.0.empty"
    path.write_bytes(b"")
    scan = events.FileScan()
    assert not scan.update(LOCAL, str(path))
    assert scan.offset == 0 and scan.tags == {} and scan.error is None


def test_file_cut_mid_header(tmp_path):
    data = events.encode_events(scalars(3), file_version=True, wall_time=1.0)
    path = tmp_path / "events.out.tfevents.0.cut"
    path.write_bytes(data + events.encode_record(b"\x08\x01")[:7])
    scan = events.scan_file(LOCAL, str(path))
    assert scan.offset == len(data) and scan.error is None
    assert set(scan.scalars) == {"loss", "acc"}


def test_bad_length_checksum_stops_file(tmp_path):
    data = bytearray(events.encode_events(scalars(10), file_version=True, wall_time=1.0))
    start, _ = frames(bytes(data))[5]
    data[start + 9] ^= 0x40  # inside the length checksum
    path = tmp_path / "events.out.tfevents.0.bad"
    path.write_bytes(bytes(data))
    fs = CountingFS()
    scan = events.FileScan()
    scan.update(fs, str(path))
    assert scan.framing_lost and scan.offset == start
    assert scan.bad_records == 1 and "length checksum" in scan.error
    assert scan.scalars["acc"].step == 1  # records 1..4: loss 0, acc 0, loss 1, acc 1
    fs.reads.clear()
    assert not scan.update(fs, str(path))
    assert fs.reads == []  # same size: not read again
    with open(path, "ab") as f:
        f.write(events.encode_events(scalars(1, start=50)))
    scan.update(fs, str(path))
    assert scan.framing_lost and scan.bad_records == 1 and scan.offset == start


@pytest.mark.skipif(not events.CHECKSUMS_VERIFIED, reason="google-crc32c not installed")
def test_bad_data_checksum_skips_record(tmp_path):
    evs = scalars(10)
    data = bytearray(events.encode_events(evs, file_version=True, wall_time=1.0))
    start, frame = frames(bytes(data))[-1]  # acc at step 9
    data[start + 14] ^= 0x01
    path = tmp_path / "events.out.tfevents.0.bad"
    path.write_bytes(bytes(data))
    scan = events.scan_file(LOCAL, str(path))
    assert scan.bad_records == 1 and "data checksum" in scan.error
    assert scan.offset == len(data) and not scan.framing_lost
    assert scan.scalars["acc"].step == 8 and scan.scalars["loss"].step == 9


def test_garbage_bytes(tmp_path):
    good = events.encode_events(scalars(4), file_version=True, wall_time=1.0)
    path = tmp_path / "events.out.tfevents.0.garbage"
    path.write_bytes(good + b"this is not a record at all, just garbage" * 3)
    scan = events.scan_file(LOCAL, str(path))
    assert scan.offset == len(good) and scan.framing_lost and scan.bad_records == 1
    assert scan.scalars["loss"].step == 3

    path.write_bytes(os.urandom(5000))
    scan = events.scan_file(LOCAL, str(path))
    assert scan.offset == 0 and scan.framing_lost and scan.tags == {}


def test_record_that_is_not_an_event(tmp_path):
    data = (
        events.encode_events([events.scalar_event("loss", 1.0, 1, 1.0)])
        + events.encode_record(b"\xff\xff\xff not a protobuf")
        + events.encode_events([events.scalar_event("loss", 2.0, 2, 2.0)])
    )
    path = tmp_path / "events.out.tfevents.0.odd"
    path.write_bytes(data)
    scan = events.scan_file(LOCAL, str(path))
    assert scan.bad_records == 1 and "not an Event" in scan.error
    assert scan.scalars["loss"].value == 2.0 and scan.offset == len(data)


def test_file_replaced_by_shorter_one(tmp_path):
    path = str(tmp_path / "events.out.tfevents.0.repl")
    with open(path, "wb") as f:
        f.write(events.encode_events(scalars(30), file_version=True, wall_time=1.0))
    scan = events.FileScan()
    scan.update(LOCAL, path)
    assert set(scan.tags) == {"loss", "acc"}
    with open(path, "wb") as f:
        f.write(events.encode_events([events.scalar_event("other", 4.0, 1, 1.0)]))
    assert scan.update(LOCAL, path)
    assert scan.tags == {"other": "scalars"} and set(scan.scalars) == {"other"}
    assert scan.generation == 1 and scan.offset == os.path.getsize(path)


def test_tf2_tensor_scalars_metadata_on_first_occurrence_only(tmp_path):
    evs = []
    for step in range(40):
        meta = scalar_meta() if step == 0 else None
        evs.append(event_with([tensor_value("loss", 1.0 / (step + 1), metadata=meta)], step))
        meta_i = scalar_meta() if step == 0 else None
        evs.append(event_with([tensor_value("count", step * 3, np.int64, meta_i)], step))
        # A tensor without scalar metadata at first occurrence is no scalar.
        evs.append(event_with([tensor_value("plain", 5.0)], step))
    path = write_events(str(tmp_path), evs)
    scan = events.scan_file(LOCAL, path)
    assert scan.tags["loss"] == "scalars" and scan.tags["count"] == "scalars"
    assert scan.tags["plain"] == ""
    assert scan.scalars["loss"] == events.ScalarValue(39, 1.7e9 + 39, float(np.float32(1 / 40)))
    assert scan.scalars["count"].value == 117.0 and "plain" not in scan.scalars
    assert runsmon_view(scan) == tensorboard_view(path)


def test_non_scalar_summaries_and_nested_tags(tmp_path):
    evs = []
    for step in range(12):
        evs.append(
            event_with(
                [
                    histogram_value("weights", step),
                    legacy_histo_value("grads", step),
                    image_value("sample", step),
                    text_value("note", step),
                    summary_pb2.Summary.Value(tag="train/loss", simple_value=step / 10),
                    summary_pb2.Summary.Value(tag="loss", simple_value=step / 100),
                ],
                step,
            )
        )
    path = write_events(str(tmp_path), evs)
    scan = events.scan_file(LOCAL, path)
    assert scan.tags == {
        "weights": "histograms",
        "grads": "histograms",
        "sample": "images",
        "note": "text",
        "train/loss": "scalars",
        "loss": "scalars",
    }
    assert scan.scalar_tags == {"train/loss", "loss"}
    assert set(scan.scalars) == {"train/loss", "loss"}  # values are kept for every scalar tag
    assert runsmon_view(scan) == tensorboard_view(path)


def test_hparams_summaries_detected_and_decoded(tmp_path):
    hp = {"lr": 0.01, "optimizer": "adam", "layers": 3, "dropout": True}
    evs = [
        events.summary_event(hparams_summary.hparams_pb(hp, trial_id="t1"), 0, 1.0),
        *scalars(3),
    ]
    path = write_events(str(tmp_path), evs)
    scan = events.scan_file(LOCAL, path)
    assert scan.has_hparams
    assert scan.tags["_hparams_/session_start_info"] == "hparams"
    assert scan.hparams == {"lr": 0.01, "optimizer": "adam", "layers": 3.0, "dropout": True}

    plain = events.scan_file(LOCAL, write_events(str(tmp_path / "plain"), scalars(3)))
    assert not plain.has_hparams and plain.hparams is None


def test_pytorch_style_hparams_without_tensor(tmp_path):
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    ssi = plugin_data_pb2.HParamsPluginData(version=0)
    ssi.session_start_info.hparams["batch"].number_value = 32
    ssi.session_start_info.hparams["name"].string_value = "x"
    ssi.session_start_info.hparams["nothing"].null_value = 0
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "hparams"
    meta.plugin_data.content = ssi.SerializeToString()
    end = plugin_data_pb2.HParamsPluginData(version=0)
    end.session_end_info.status = api_pb2.STATUS_SUCCESS
    meta_end = summary_pb2.SummaryMetadata()
    meta_end.plugin_data.plugin_name = "hparams"
    meta_end.plugin_data.content = end.SerializeToString()
    evs = [
        event_with(
            [summary_pb2.Summary.Value(tag="_hparams_/session_start_info", metadata=meta)], 0
        ),
        event_with(
            [summary_pb2.Summary.Value(tag="_hparams_/session_end_info", metadata=meta_end)], 0
        ),
        events.scalar_event("hp/metric", 0.5, 0, 1.0),
    ]
    scan = events.scan_file(LOCAL, write_events(str(tmp_path), evs))
    assert scan.has_hparams
    assert scan.hparams == {"batch": 32.0, "name": "x", "nothing": None}
    assert scan.tags["hp/metric"] == "scalars" and scan.scalars["hp/metric"].value == 0.5


def test_huge_record_skipped_and_record_larger_than_chunk(tmp_path):
    big = event_with([image_value("img", 0)], 0)
    big.summary.value[0].image.encoded_image_string = b"z" * 5000
    evs = [events.scalar_event("loss", 1.0, 1, 1.0), big, events.scalar_event("loss", 2.0, 2, 2.0)]
    path = str(tmp_path / "events.out.tfevents.0.big")
    with open(path, "wb") as f:
        f.write(events.encode_events(evs))
    scan = events.scan_file(LOCAL, path, chunk_size=256)
    assert scan.tags == {"loss": "scalars", "img": "images"} and scan.skipped_records == 0
    skipping = events.scan_file(LOCAL, path, chunk_size=256, max_record_size=1000)
    assert skipping.skipped_records == 1 and skipping.tags == {"loss": "scalars"}
    assert skipping.scalars["loss"].value == 2.0 and skipping.offset == os.path.getsize(path)


def test_reads_are_bounded_by_chunk_size(tmp_path):
    path = write_events(str(tmp_path), scalars(2000, tags=("a", "b", "c")))
    fs = CountingFS()
    scan = events.FileScan(chunk_size=4096)
    scan.update(fs, path)
    assert scan.offset == os.path.getsize(path)
    assert max(size for _, size, _ in fs.reads) == 4096
    assert runsmon_view(scan) == tensorboard_view(path)


def test_fast_path_matches_slow_path_and_catches_corruption(tmp_path):
    evs = []
    rng = random.Random(3)
    for step in range(3000):
        evs.append(
            event_with(
                [summary_pb2.Summary.Value(tag=t, simple_value=rng.random()) for t in "abc"], step
            )
        )
        if step % 7 == 0:
            evs.append(events.scalar_event("sometimes", rng.random(), step, 1.0))
        evs.append(event_with([tensor_value("x/tensor", rng.random())], step))
    data = bytearray(events.encode_events(evs, file_version=True, wall_time=1.0))
    if events.CHECKSUMS_VERIFIED:
        start, frame = frames(bytes(data))[4000]
        data[start + frame - 7] ^= 0x10  # a value byte, inside a regular run
    path = str(tmp_path / "events.out.tfevents.0.fast")
    with open(path, "wb") as f:
        f.write(bytes(data))
    fast = events.scan_file(LOCAL, path)
    slow = events.scan_file(LOCAL, path, fast=False)
    small = events.scan_file(LOCAL, path, chunk_size=1000)
    for scan in (fast, slow, small):
        assert runsmon_view(scan) == runsmon_view(slow)
        assert scan.tags == slow.tags and scan.scalars == slow.scalars
        assert scan.bad_records == (1 if events.CHECKSUMS_VERIFIED else 0)
        assert scan.records == slow.records
        assert scan.offset == len(data)


# -- against TensorBoard ------------------------------------------------------

KINDS = ["simple", "tensor_first_meta", "tensor_int", "histogram", "legacy_histo", "image", "text"]


def make_value(tag: str, kind: str, first: bool, number: float, step: int):
    if kind == "simple":
        return summary_pb2.Summary.Value(tag=tag, simple_value=number)
    if kind == "tensor_first_meta":
        return tensor_value(tag, number, metadata=scalar_meta() if first else None)
    if kind == "tensor_int":
        return tensor_value(tag, int(number * 1000), np.int64, metadata=scalar_meta())
    if kind == "histogram":
        return histogram_value(tag, step)
    if kind == "legacy_histo":
        return legacy_histo_value(tag, step)
    if kind == "image":
        return image_value(tag, step)
    return text_value(tag, step)


tag_names = st.sampled_from(["loss", "acc", "a", "val/loss", "lr", "x/y/z", "m1", "m2", "ü"])
files = st.tuples(
    st.dictionaries(tag_names, st.sampled_from(KINDS), min_size=1, max_size=5),
    st.lists(
        st.tuples(
            st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=3), min_size=1, max_size=3),
            st.integers(1, 30),
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 2**32),
)


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(files)
def test_matches_tensorboard_loader(spec):
    kinds, blocks, seed = spec
    tags = list(kinds)
    rng = random.Random(seed)
    seen: set[str] = set()
    evs = []
    step = rng.randrange(200)
    for shapes, repeat in blocks:
        for _ in range(repeat):
            for shape in shapes:
                values = []
                for index in shape:
                    tag = tags[index % len(tags)]
                    number = float(np.float32(rng.uniform(-1e3, 1e3)))
                    values.append(make_value(tag, kinds[tag], tag not in seen, number, step))
                    seen.add(tag)
                evs.append(event_with(values, step, wall_time=1.7e9 + rng.random()))
                step += rng.choice([1, 1, 1, 130, -3])
    with tempfile.TemporaryDirectory() as directory:
        path = write_events(directory, evs)
        expected = tensorboard_view(path)
        for options in ({}, {"fast": False}, {"chunk_size": 97}):
            scan = events.scan_file(LOCAL, path, **options)
            assert runsmon_view(scan) == expected, options
            assert scan.bad_records == 0 and scan.offset == os.path.getsize(path)
            assert all(not math.isnan(v.value) for v in scan.scalars.values())


@pytest.mark.skipif(not events.CHECKSUMS_VERIFIED, reason="google-crc32c not installed")
@pytest.mark.parametrize("which", [-1, -2, -3, -20])
def test_bad_checksum_at_end_of_regular_run(tmp_path, which):
    rng = random.Random(5)
    evs = [
        event_with([summary_pb2.Summary.Value(tag=t, simple_value=rng.random()) for t in "ab"], s)
        for s in range(500)
    ]
    data = bytearray(events.encode_events(evs))
    start, frame = frames(bytes(data))[which]
    data[start + frame - 6] ^= 0x01
    path = str(tmp_path / "events.out.tfevents.0.end")
    with open(path, "wb") as f:
        f.write(bytes(data))
    fast = events.scan_file(LOCAL, path)
    slow = events.scan_file(LOCAL, path, fast=False)
    assert fast.scalars == slow.scalars and fast.bad_records == slow.bad_records == 1
    assert slow.scalars["b"].step == (498 if which == -1 else 499)

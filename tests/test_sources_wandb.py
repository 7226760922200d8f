"""WandbRuns: runs written by wandb itself, a hand-framed log, and older files."""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path

import pytest

from runsmon.run import COMPLETED, ERROR, RUNNING, TERMINATED
from runsmon.sources import detect_kind, detect_source
from runsmon.sources.wandb import BLOCK, HEADER, LogError, WandbRuns, iter_log, wandb_pb
from sample_projects.layouts import wandb_offline
from sample_projects.layouts._events import T0

needs_wandb = pytest.mark.skipif(
    wandb_pb() is None, reason="wandb is not installed (pip install 'runsmon[wandb]')"
)


def frame(payloads: list[bytes]) -> bytes:
    """A LevelDB-log as wandb writes it: header, then records split over 32 KiB blocks."""
    out = bytearray(HEADER)
    for data in payloads:
        first = True
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < 7:
                out += b"\0" * left
                left = BLOCK
            chunk, data = data[: left - 7], data[left - 7 :]
            kind = (1 if not data else 2) if first else (4 if not data else 3)
            crc = zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
            out += struct.pack("<IHB", crc, len(chunk), kind) + chunk
            first = False
            if not data:
                break
    return bytes(out)


def test_framing_round_trip():
    payloads = [b"a" * 10, b"b" * 40000, b"", b"c" * (BLOCK - 7 - 7 - 10 - 7 - 3), b"d" * 70000]
    data = frame(payloads)
    assert list(iter_log(data)) == payloads
    # A torn tail yields what is complete.
    assert list(iter_log(data[:-5])) == payloads[:-1]
    assert list(iter_log(data[:3])) == []
    broken = bytearray(data)
    broken[len(HEADER) + 8] ^= 0xFF
    with pytest.raises(LogError):
        list(iter_log(bytes(broken)))
    with pytest.raises(LogError):
        list(iter_log(b"PK\x03\x04" + data[4:]))


def legacy_source(tmp_path, **kw):
    kw.setdefault("clock", lambda: T0 + 10**6)
    return WandbRuns(str(tmp_path), **kw)


def test_legacy_files(tmp_path):
    run = wandb_offline.make_legacy(str(tmp_path))
    assert detect_kind(str(tmp_path)) == "wandb"
    [r] = legacy_source(tmp_path)()
    assert r.id == os.path.basename(run) and r.dir == run
    assert r.flags == {"batch_size": 64, "lr": 0.003, "optimizer": {"name": "adam", "beta1": 0.9}}
    assert r.status == COMPLETED and r.started == T0 and r.stopped == T0 + 60
    points = {p.tag: p for p in r.scalars()}
    assert set(points) == {"loss", "acc"}
    assert points["acc"].value == 0.91 and points["acc"].step == 99
    assert points["acc"].wall_time == T0 + 60
    assert r.attrs["wandb_id"] == "abc123xy"


def test_legacy_running_by_idle_rule(tmp_path):
    wandb_offline.make_legacy(str(tmp_path))
    [r] = legacy_source(tmp_path, clock=lambda: T0 + 70)()
    assert r.status == RUNNING and r.stopped is None


def test_without_wandb_warns_once(tmp_path, caplog):
    run = wandb_offline.make_legacy(str(tmp_path))
    with open(os.path.join(run, "run-abc123xy.wandb"), "wb") as f:
        f.write(frame([b"\x08\x01"]))
    src = legacy_source(tmp_path)
    src._pb = None  # as when wandb is not importable
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        [r] = src()
        os.utime(os.path.join(run, "run-abc123xy.wandb"))
        [r2] = src()
    assert r.flags["lr"] == 0.003 and r2.flags["lr"] == 0.003
    assert [m.getMessage() for m in caplog.records if "not installed" in m.getMessage()] != []
    assert len(caplog.records) == 1


def test_bad_files_warn(tmp_path, caplog):
    run = wandb_offline.make_legacy(str(tmp_path))
    with open(os.path.join(run, "files", "config.yaml"), "w") as f:
        f.write("lr: [\n")
    with open(os.path.join(run, "files", "wandb-summary.json"), "w") as f:
        f.write("{")
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        [r] = legacy_source(tmp_path)()
        assert list(r.scalars()) == []
    assert r.flags == {}
    assert len(caplog.records) == 2


@needs_wandb
def test_hand_framed_log_without_exit(tmp_path, caplog):
    pb = wandb_pb()
    run_dir = tmp_path / "wandb" / "offline-run-20240102_030405-zzz"
    run_dir.mkdir(parents=True)
    rec = pb.Record()
    rec.run.run_id = "zzz"
    rec.run.display_name = "hand"
    rec.run.start_time.seconds = int(T0)
    item = rec.run.config.update.add()
    item.key, item.value_json = "lr", "0.5"
    item = rec.run.config.update.add()
    item.key, item.value_json = "_wandb", "{}"
    cfg = pb.Record()
    item = cfg.config.update.add()
    item.nested_key.extend(["opt", "name"])
    item.value_json = '"adam"'
    hist = pb.Record()
    for key, value in (
        ("loss", "0.5"),
        ("_step", "7"),
        ("_timestamp", str(T0 + 9)),
        ("media", '{"_type": "image"}'),
    ):
        h = hist.history.item.add()
        h.key, h.value_json = key, value
    big = pb.Record()
    big.output_raw.line = "x" * 50000  # spans two blocks
    log = run_dir / "run-zzz.wandb"
    log.write_bytes(frame([r.SerializeToString() for r in (rec, cfg, big, hist)]))
    os.utime(log, (T0 + 10, T0 + 10))
    [r] = WandbRuns(str(tmp_path), clock=lambda: T0 + 20)()
    assert r.flags == {"lr": 0.5, "opt": {"name": "adam"}}
    assert r.status == RUNNING and r.label == "hand" and r.started == T0
    [p] = r.scalars()
    assert (p.tag, p.value, p.step, p.wall_time) == ("loss", 0.5, 7, T0 + 9)
    [r] = WandbRuns(str(tmp_path), clock=lambda: T0 + 1000)()
    assert r.status == TERMINATED and r.stopped == T0 + 9
    # A damaged log: one warning, what was read before it still shows.
    data = bytearray(log.read_bytes())
    data[-3] ^= 0xFF
    log.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        [r] = WandbRuns(str(tmp_path), clock=lambda: T0 + 20)()
    assert r.flags["lr"] == 0.5
    assert len(caplog.records) == 1 and "damaged record" in caplog.records[0].getMessage()


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory):
    if wandb_pb() is None:
        pytest.skip("wandb is not installed (pip install 'runsmon[wandb]')")
    root = tmp_path_factory.mktemp("wb")
    return str(root), wandb_offline.make(str(root))


@pytest.mark.slow
@needs_wandb
def test_offline_runs_written_by_wandb(offline_runs):
    root, dirs = offline_runs
    assert detect_kind(root) == "wandb"
    src = detect_source(root)
    runs = {r.label: r for r in src()}
    assert set(runs) == {"run-0", "run-1"}
    r0, r1 = runs["run-0"], runs["run-1"]
    assert r0.flags == wandb_offline.CONFIGS[0] and r1.flags == wandb_offline.CONFIGS[1]
    assert type(r0.flags["model"]["depth"]) is int and r0.flags["use_bn"] is True
    assert r0.status == COMPLETED and r1.status == ERROR  # exit codes 0 and 1
    assert r0.operation == "demo"
    assert r0.started is not None and r0.stopped >= r0.started
    assert r0.id == os.path.basename(r0.dir) and r0.dir in dirs
    loss = [(p.step, p.value) for p in r0.scalars() if p.tag == "loss"]
    assert loss == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]


@pytest.mark.slow
@needs_wandb
def test_tensorboard_synced_scalars_once(offline_runs):
    root, _ = offline_runs
    [r1] = [r for r in WandbRuns(root)() if r.label == "run-1"]
    assert r1.attrs["tensorboard_synced"] is True
    files = os.path.join(r1.dir, "files")
    linked = [f for _, _, fs in os.walk(files) for f in fs if "tfevents" in f]
    assert linked  # wandb linked the event files into the run
    tags = {p.tag for p in r1.scalars()}
    assert tags == {"loss", "acc"}  # not "tb_loss"/"train/tb_loss": the event files show those
    # wandb did log them as history: the log has them, with global_step.
    pb = wandb_pb()
    log = r1.attrs["log"]
    keys = set()
    for raw in iter_log(Path(log).read_bytes()):
        rec = pb.Record.FromString(raw)
        if rec.WhichOneof("record_type") == "history":
            keys |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
    assert "global_step" in keys and any("tb_loss" in k for k in keys)


def test_summary_json_shape(tmp_path):
    run = wandb_offline.make_legacy(str(tmp_path))
    data = json.loads(Path(run, "files", "wandb-summary.json").read_text())
    assert data["_step"] == 99


_TAGGED = """
import sys
import wandb

run = wandb.init(project="demo", dir=sys.argv[1], config={"lr": 0.1}, name="tagged",
                 tags=["baseline"], notes="first try", mode="offline",
                 settings=wandb.Settings(console="off"))
run.log({"loss": 1.0})
run.tags = run.tags + ("late",)  # tagged while it runs
run.finish()
"""


@needs_wandb
@pytest.mark.slow
def test_tags_and_notes_as_wandb_writes_them(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_GIT="true")
    env.pop("WANDB_API_KEY", None)
    subprocess.run(
        [sys.executable, "-c", _TAGGED, str(tmp_path)], check=True, env=env, cwd=tmp_path
    )
    [run] = WandbRuns(str(tmp_path))()
    assert run.tags == frozenset({"baseline", "late"})
    assert run.note == "first try"

"""A sample of the catalogue at once: the daemon and a real TensorBoard on a faulty tree."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from guild_fake import make_guild_run, write_event_file
from tb import TensorBoardProcess

from faults.conftest import GOOD, Faults
from runsmon.sources.guild import GuildRuns

# run id -> (what is wrong, the cause its one warning names; None: no warning)
FAULTY = {
    "bad00001bad00001bad00001bad00001": ("invalid YAML flags", "invalid YAML"),
    "bad00002bad00002bad00002bad00002": ("binary flags", "not UTF-8"),
    "bad00003bad00003bad00003bad00003": ("odd keys", None),
    "bad00004bad00004bad00004bad00004": ("odd values", None),
    "bad00005bad00005bad00005bad00005": ("garbage event file", "bad length checksum"),
    "bad00006bad00006bad00006bad00006": ("a FIFO event file", "not a regular file"),
    "bad00007bad00007bad00007bad00007": ("a symlink loop", None),
    "bad00008bad00008bad00008bad00008": ("flags not a mapping", "not a mapping"),
}
ODD_KEYS = {"a/b": 1, "with space": 2, "ünï": 3, "new\nline": 4, "": 5}
ODD_VALUES = {"nan": float("nan"), "inf": float("-inf"), "huge": 2**70, "long": "y" * 100_000}


def _build(faults: Faults) -> None:
    runs = faults.runs_dir
    ids = list(FAULTY)
    for run_id in ids:
        flags = {"lr": 0.5}
        if run_id == ids[2]:
            flags = dict(ODD_KEYS)
        elif run_id == ids[3]:
            flags = dict(ODD_VALUES)
        make_guild_run(runs, run_id, flags, scalars={"loss": [(0, 2.0), (1, 0.25)]})
    attrs = {rid: runs / rid / ".guild" / "attrs" / "flags" for rid in ids}
    attrs[ids[0]].write_bytes(b"lr: [0.1\n")
    attrs[ids[1]].write_bytes(bytes(range(256)))
    attrs[ids[7]].write_bytes(b"- 1\n")
    (runs / ids[4] / "events.out.tfevents.9.host").write_bytes(bytes(range(256)) * 8)
    os.mkfifo(runs / ids[5] / "events.out.tfevents.9.host")
    os.symlink(runs / ids[6], runs / ids[6] / "loop")
    write_event_file(runs / ids[6] / "train", {"acc": [(0, 0.5)]})


@pytest.mark.tb
@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_the_daemon_and_tensorboard_show_every_run_they_can(faults: Faults, load_fast) -> None:
    _build(faults)
    faults.snapshot()
    source = GuildRuns(str(faults.runs_dir), reporter=faults.reporter, settle=0)
    monitor = faults.monitor(source, interval=0.2, watch=True)
    with monitor, TensorBoardProcess(faults.logdir, load_fast=load_fast) as tb:
        want = len(GOOD) + len(FAULTY)
        table = tb.wait_for(lambda t: len(t) == want, timeout=40)
        filtered = tb.table(tb.dashboard_filters())
        assert set(filtered) == set(table)
        time.sleep(1.0)  # a few more polls: still one warning each
    names = monitor.run_names
    for run_id, flags in GOOD.items():
        row = table[names[run_id]]
        assert row["hparams"].get("lr") == pytest.approx(flags["lr"])
        assert row["hparams"].get("opt") == flags["opt"]
        assert row["metrics"][("loss", "")] == pytest.approx(flags["lr"])
        assert row["status"] == "STATUS_SUCCESS"
    ids = list(FAULTY)
    odd = table[names[ids[2]]]["hparams"]
    assert {k: odd.get(k) for k in ODD_KEYS} == ODD_KEYS
    values = table[names[ids[3]]]["hparams"]
    assert values["nan"] == "nan" and values["inf"] == "-inf" and values["huge"] == str(2**70)
    assert values["long"] == "y" * 100_000
    assert table[names[ids[6]]]["metrics"][("acc", "train")] == 0.5
    for run_id in (ids[0], ids[1], ids[7]):  # shown without flags, with their metrics
        assert table[names[run_id]]["metrics"][("loss", "")] == 0.25
    warnings = faults.warnings()
    per_run = Counter(rid for w in warnings for rid in FAULTY if rid[:8] in w)
    expected = {rid: 1 for rid, (_, cause) in FAULTY.items() if cause}
    assert per_run == expected, warnings
    assert len(warnings) == len(expected), warnings
    for run_id, (_, cause) in FAULTY.items():
        if cause:
            assert any(run_id[:8] in w and cause in w for w in warnings), (cause, warnings)
    faults.caplog.clear()  # the warnings were checked above; now the rest of the checks
    faults.check(warn=None, shown=None)

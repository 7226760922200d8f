"""Run names in the logdir: Guild-like defaults, safe components, unique and stable."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runsmon.naming import RunNamer, default_run_name, safe_name, trim_utf8
from runsmon.run import Run
from runsmon.select import flags_run_namer
from runsmon.sources import combine
from runsmon.sources.base import path_labels
from runsmon.sources.dirs import DirRuns
from runsmon.sources.guild import GuildRuns
from sample_projects.layouts import hydra_multirun, keras, lightning, torch_hparams
from sample_projects.layouts._events import write_events

START = datetime.datetime(2024, 5, 17, 9, 3, 4).timestamp()  # local time


def run(**kw: object) -> Run:
    base: dict[str, object] = {"id": "3f2a9c1b77aa44bb88cc99dd00ee11ff", "dir": "/runs/x"}
    base.update(kw)
    return Run(**base)  # type: ignore[arg-type]


def test_default_name_like_guild() -> None:
    name = default_run_name(run(operation="mnist:train", started=START, label="lr=0.1 best"))
    assert name == "3f2a9c1b mnist:train 2024-05-17 09:03:04 lr=0.1 best"


def test_default_name_leaves_out_empty_parts() -> None:
    assert default_run_name(run()) == "3f2a9c1b"
    assert default_run_name(run(operation="train.py")) == "3f2a9c1b train.py"
    assert default_run_name(run(started=START, label="  ")) == "3f2a9c1b 2024-05-17 09:03:04"


def test_safe_name_basics() -> None:
    assert safe_name("a/b//c\\d") == "a_b_c_d"
    assert safe_name("line\nbreak\ttab\x00nul\x7f") == "line break tab nul"
    assert safe_name(".") == "_"
    assert safe_name("..") == "_."
    assert safe_name(".runsmon") == "_runsmon"
    assert safe_name("") == "_"
    assert safe_name("   ") == "_"
    assert safe_name("\n") == "_"
    assert safe_name("  padded  ") == "padded"
    assert safe_name("mnist é/ü") == "mnist é_ü"
    assert safe_name("bad \udcff byte") == "bad ? byte"


def test_safe_name_trims_to_bytes_without_splitting() -> None:
    assert len(safe_name("x" * 300)) == 200
    euro = safe_name("€" * 300)  # 3 bytes each
    assert len(euro.encode()) <= 200 and euro == "€" * 66
    mixed = safe_name("a" + "😀" * 100, max_bytes=10)  # 4 bytes each
    assert mixed == "a😀😀"
    assert trim_utf8("abc", 3) == "abc"
    with pytest.raises(ValueError):
        safe_name("x", max_bytes=2)


@given(st.text(max_size=400), st.integers(min_value=4, max_value=255))
@settings(max_examples=500, deadline=None)
def test_safe_name_is_always_one_valid_component(name: str, max_bytes: int) -> None:
    safe = safe_name(name, max_bytes)
    data = safe.encode("utf-8")  # encodable: no lone surrogates
    assert 0 < len(data) <= max_bytes
    assert "/" not in safe and "\x00" not in safe and "\n" not in safe
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in safe)
    assert not safe.startswith(".")
    assert safe == safe.strip()
    assert safe_name(safe, max_bytes) == safe  # idempotent


def test_safe_names_are_creatable(tmp_path: Path) -> None:
    for name in ["a/b", "é" * 300, "..", "x\ny", "😀" * 80, ".hidden", "tab\there"]:
        path = tmp_path / safe_name(name)
        path.mkdir()
        assert path.is_dir() and path.parent == tmp_path
    assert len(os.listdir(tmp_path)) == 7


def test_namer_first_come_keeps_plain_name() -> None:
    namer = RunNamer()
    a = namer.name_for("id-a", "train lr=0.1")
    b = namer.name_for("id-b", "train lr=0.1")
    c = namer.name_for("id-c", "train lr=0.1")
    assert a == "train lr=0.1"
    assert b.startswith("train lr=0.1 (") and b.endswith(")")
    assert len({a, b, c}) == 3
    assert namer.name_for("id-b", "something else") == b  # stable
    assert namer.name_of("id-c") == c and namer.owner(c) == "id-c"


def test_namer_suffix_is_derived_from_run_id() -> None:
    one, other = RunNamer(), RunNamer()
    one.name_for("x", "same")
    other.name_for("y", "same")
    assert one.name_for("id-b", "same") == other.name_for("id-b", "same")
    assert one.name_for("id-c", "same") != one.name_for("id-b", "same")


def test_namer_collisions_after_making_safe() -> None:
    namer = RunNamer()
    a = namer.name_for("a", "lr/0.1")
    b = namer.name_for("b", "lr_0.1")  # "/" became "_": same name
    c = namer.name_for("c", "LR_0.1")  # differs only in case
    assert a == "lr_0.1" and b != a and c != a and c.startswith("LR_0.1 (")


def test_namer_long_colliding_names_stay_within_limit() -> None:
    namer = RunNamer(max_bytes=200)
    long = "é" * 300
    a = namer.name_for("a", long)
    b = namer.name_for("b", long)
    assert len(a.encode()) <= 200 and len(b.encode()) <= 200
    assert a != b and b.endswith(")")
    assert b.encode().decode() == b


def test_namer_release_and_reuse() -> None:
    namer = RunNamer()
    namer.name_for("a", "name")
    b = namer.name_for("b", "name")
    namer.release("a")
    assert namer.name_of("a") is None
    assert namer.name_for("c", "name") == "name"  # free again
    assert namer.name_for("b", "name") == b  # b keeps its suffixed name
    namer.release("unknown")  # no error
    assert len(namer) == 2


def test_namer_restore_after_restart() -> None:
    before = RunNamer()
    names = {rid: before.name_for(rid, "train") for rid in ("r1", "r2", "r3")}
    after = RunNamer()
    # The restarted monitor restores what it wrote, in any order.
    for rid in ("r3", "r1", "r2"):
        assert after.restore(rid, names[rid])
    assert after.names() == names
    assert after.name_for("r2", "train") == names["r2"]
    new = after.name_for("r4", "train")
    assert new not in names.values()


def test_namer_restore_conflicts() -> None:
    namer = RunNamer()
    namer.name_for("a", "taken")
    assert not namer.restore("b", "taken")
    assert not namer.restore("b", "TAKEN")  # collides ignoring case
    assert not namer.restore("b", "bad/name")
    assert not namer.restore("b", ".hidden")
    assert namer.name_of("b") is None
    assert namer.restore("a", "renamed")  # the run moves to another name
    assert namer.owner("taken") is None and namer.name_of("a") == "renamed"


def test_namer_rejects_tiny_limits() -> None:
    with pytest.raises(ValueError):
        RunNamer(max_bytes=10)


# Names Guild 0.9 itself gives the fixture runs (run_util.default_run_name, TZ=UTC).
GUILD_NAMES = {
    "15e87c1c": "15e87c1c train.py 2026-11-29 01:45:50"
    " dropout=yes epochs=3 fail=no layers='64 32' lr=0.5 optimizer=adam",
    "26effe29": "26effe29 train.py 2026-11-29 01:45:48 best try_1",
    "93cbb034": "93cbb034 mnist:sleepy 2026-11-29 01:48:49 running-one",
    "aebdc9bb": "aebdc9bb mnist:sleepy 2026-11-29 01:49:49 terminated-one",
    "b83a0269": "b83a0269 mnist:train 2026-11-29 01:48:26 mnist é_ü",
    # Guild writes just "+" for a batch; runsmon shows the batch's operation.
    "85f0798d": "85f0798d mnist:train+ 2026-11-29 01:48:40",
}


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_names_of_real_guild_runs_match_guilds(utc: None) -> None:
    runs = GuildRuns(str(Path(__file__).parent / "data" / "guild-0.9" / "runs"))()
    names = {r.short_id: safe_name(default_run_name(r)) for r in runs}
    for short_id, name in GUILD_NAMES.items():
        assert names[short_id] == name


#: The run directories `guild tensorboard` (Guild 0.9.0) made for the runs of
#: tests/data/guild-0.9/attrs-home: a label set by `guild label` or `guild run
#: -l` ends the name, as Guild's default label (the flags) does.
GUILD_NAMES_ATTRS_HOME = {
    "0014b529 train.py 2026-11-30 11:25:42 epochs=2 lr=0.2",
    "7d51b121 train.py 2026-11-30 11:25:46 epochs=2 lr=0.1",
    "84e07190 train.py 2026-11-30 11:25:40 tuned lr",
    "a16d8600 train.py 2026-11-30 11:25:47 epochs=2 lr=0.01",
    "cd2c2171 train.py 2026-11-30 11:25:44 first try",
    "fb3d8ee0 images.py 2026-11-30 11:25:49 size=8",
}


def test_labels_in_names_as_guild_writes_them(utc: None) -> None:
    home = Path(__file__).parent / "data" / "guild-0.9" / "attrs-home" / "runs"
    runs = [r for r in GuildRuns(str(home))() if not r.attrs.get("batch")]
    assert {safe_name(default_run_name(r)) for r in runs} == GUILD_NAMES_ATTRS_HOME


# -- runs of directory trees: what tells them apart comes first ---------------------------

#: What the dashboard's Trial ID column shows of a name.
TRIAL_ID_CHARS = 16


def _names(root: str, **kw: object) -> dict[str, str]:
    return {r.id: safe_name(default_run_name(r)) for r in DirRuns(root, **kw)()}


def test_hydra_multirun_jobs_start_with_job_number_and_overrides(tmp_path: Path) -> None:
    jobs = hydra_multirun.make(str(tmp_path))
    names = _names(str(tmp_path))
    assert len(names) == len(jobs) == 2
    assert names == {
        "multirun/2024-01-02/03-04-05/0": "0 lr=0.1 model=resnet 2024-01-02_03-04-05",
        "multirun/2024-01-02/03-04-05/1": "1 lr=0.01 model=vit precision=16 2024-01-02_03-04-05",
    }
    # The label (what --label matches) keeps the overrides as written.
    labels = sorted(r.label for r in DirRuns(str(tmp_path))())
    assert labels[0] == "optimizer.lr=0.01 model=vit +trainer.precision=16"


def test_hydra_jobs_of_one_sweep_differ_within_the_trial_id_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [[f"model.lr={lr}", f"optimizer={opt}"] for opt in ("adam", "sgd") for lr in (0.1, 0.01)]
    monkeypatch.setattr(hydra_multirun, "JOBS", jobs)
    monkeypatch.setattr(hydra_multirun, "job_config", lambda overrides: {"seed": 1})
    hydra_multirun.make(str(tmp_path))
    names = sorted(_names(str(tmp_path)).values())
    assert len({n[:TRIAL_ID_CHARS] for n in names}) == 4, names
    assert names[3].startswith("3 lr=0.01 optimizer=sgd"), names


def test_tree_names_leave_out_what_tools_put_above_every_run(tmp_path: Path) -> None:
    lightning.make(str(tmp_path / "lightning"))
    torch_hparams.make(str(tmp_path / "torch"))
    keras.make(str(tmp_path / "keras"))
    assert sorted(_names(str(tmp_path / "lightning")).values()) == ["version_0", "version_1"]
    assert sorted(_names(str(tmp_path / "torch")).values()) == [
        "Jan02_03-04-05_host",
        "Jan02_04-00-00_host",
    ]
    assert sorted(_names(str(tmp_path / "keras")).values()) == [
        "20240102-030405",
        "20240102-040000",
    ]
    deep = Run(id="experiments/2026-11/sweep/lr0.1/seed2", dir="/r")
    assert safe_name(default_run_name(deep)) == "lr0.1_seed2 experiments_2026-11_sweep"


def test_tree_names_do_not_change_when_other_runs_come(tmp_path: Path) -> None:
    """A name depends on its run alone: no run is renamed (its session rewritten)."""
    root = tmp_path / "experiments"
    write_events(str(root / "2026-11" / "sweep" / "lr0.1" / "seed1"), {"loss": [1.0]})
    before = _names(str(root))
    assert list(before.values()) == ["lr0.1_seed1 2026-11_sweep"]
    for other in ("2026-11/sweep/lr0.1/seed2", "2026-12/other/lr0.5/seed1", "top"):
        write_events(str(root / other), {"loss": [1.0]})
        after = _names(str(root))
        assert {k: after[k] for k in before} == before
        assert len(set(after.values())) == len(after)


def test_flag_names_use_the_tree_rule_too(tmp_path: Path) -> None:
    hydra_multirun.make(str(tmp_path))
    namer = flags_run_namer(["optimizer.lr"])
    names = sorted(namer(r) for r in DirRuns(str(tmp_path))())
    assert names == [
        "0 optimizer.lr=0.1 2024-01-02/03-04-05",
        "1 optimizer.lr=0.01 2024-01-02/03-04-05",
    ]


def test_wandb_runs_start_with_their_id() -> None:
    run = Run(
        id="offline-run-20240102_030405-abc123xy",
        dir="/w",
        operation="proj",
        label="calm-owl-7",
        attrs={"wandb_id": "abc123xy"},
    )
    assert default_run_name(run) == "abc123xy proj calm-owl-7"


def test_several_paths_name_their_path_first(tmp_path: Path) -> None:
    for name in ("projA", "projB"):
        lightning.make(str(tmp_path / name))
    source = combine([DirRuns(str(tmp_path / n)) for n in ("projA", "projB")])
    names = sorted(safe_name(default_run_name(r)) for r in source())
    assert names == ["projA version_0", "projA version_1", "projB version_0", "projB version_1"]
    assert path_labels(["/x/a/runs", "/y/a/runs", "/x/b"]) == ["x/a/runs", "y/a/runs", "b"]
    assert path_labels(["/p/projA"]) == ["projA"]

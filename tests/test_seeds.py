"""Seed groups and tag columns: the bookkeeping, the sessions the monitor
writes for them, and ``runsmon table --group-seeds``."""

from __future__ import annotations

import os
import shutil

from guild_fake import logdir_runs
from runs_helpers import session_in

from runsmon import Run, RunsMonitor
from runsmon.cli import main
from runsmon.runview import KnownTags
from runsmon.seeds import RUNS_HPARAM, SeedFlags, SeedGroups, Shaper, group_label, mean_std
from runsmon.sources.guild import GuildRuns
from runsmon.testing import make_guild_run, write_attr


def _run(run_id: str, operation: str = "train", **flags) -> Run:
    return Run(id=run_id, dir=f"/runs/{run_id}", flags=flags, operation=operation)


def test_runs_equal_but_for_seeds_share_a_group():
    groups = SeedGroups()
    runs = [
        _run("a", lr=0.01, opt="adam", seed=1),
        _run("b", lr=0.01, opt="adam", seed=2),
        _run("c", lr=0.01, opt="adam", data_seed=7, seed=3),  # data_seed: a seed flag too
        _run("d", lr=0.1, opt="adam", seed=1),
        _run("e", lr=0.01, opt="adam", seed=4, operation="eval"),  # another operation
        _run("f", lr=1, opt="adam", seed=1),
        _run("g", lr=True, opt="adam", seed=1),  # True is not 1
    ]
    for run in runs:
        groups.set_run(run, run.hparams())
    assert groups.settle() == {r.id for r in runs}
    found = {r.id: groups.group_of(r.id) for r in runs}
    assert found["a"] == found["b"] == found["c"]
    assert found["a"][1] == 3
    assert found["d"] == ("lr=0.1 opt=adam", 1)
    # Same flags, another operation: a group of its own; both names are made unique.
    assert found["e"][1] == 1 and found["e"][0] != found["a"][0]
    assert all(found[r][0].startswith("lr=0.01 opt=adam #") for r in "ae")
    assert found["f"] != found["g"]


def test_a_seed_joining_or_leaving_changes_its_group_only():
    groups = SeedGroups()
    for i in range(2):
        groups.set_run(_run(f"s{i}", lr=0.01, seed=i), {"lr": 0.01, "seed": i})
    groups.set_run(_run("other", lr=0.1, seed=0), {"lr": 0.1, "seed": 0})
    groups.settle()
    groups.set_run(_run("s2", lr=0.01, seed=2), {"lr": 0.01, "seed": 2})
    assert groups.settle() == {"s0", "s1", "s2"}
    assert groups.group_of("s0") == ("lr=0.01", 3)
    groups.remove_run("s1")
    assert groups.settle() == {"s0", "s2"}
    assert groups.group_of("s2") == ("lr=0.01", 2) and groups.group_of("s1") is None
    # Its flags changed: it moves to the other group, and both change.
    groups.set_run(_run("s2", lr=0.1, seed=2), {"lr": 0.1, "seed": 2})
    assert groups.settle() == {"s0", "s2", "other"}
    assert groups.group_of("other") == ("lr=0.1", 2)
    assert groups.settle() == set()


def test_a_name_shared_by_two_configurations_takes_a_digest_and_loses_it():
    groups = SeedGroups()
    user = frozenset({"lr"})  # a user set lr; epochs is a default
    a = Run(id="a", dir="/a", flags={"lr": 0.1, "epochs": 5}, user_flags=user)
    b = Run(id="b", dir="/b", flags={"lr": 0.1, "epochs": 9}, user_flags=user)
    groups.set_run(a, a.hparams())
    groups.settle()
    assert groups.group_of("a") == ("lr=0.1", 1)
    groups.set_run(b, b.hparams())
    assert groups.settle() == {"a", "b"}
    names = {groups.group_of("a")[0], groups.group_of("b")[0]}
    assert len(names) == 2 and all(n.startswith("lr=0.1 #") for n in names)
    groups.remove_run("b")
    assert groups.settle() == {"a"}
    assert groups.group_of("a") == ("lr=0.1", 1)


def test_seed_flags_and_labels():
    is_seed = SeedFlags(("seed", "*_seed", "*.seed", "random_state"))
    assert [n for n in ("seed", "init_seed", "model.seed", "random_state", "seeds") if is_seed(n)]
    assert not is_seed("seeds") and not is_seed("lr")
    custom = SeedFlags(("rep",))
    assert custom("rep") and not custom("seed")
    run = Run(id="x", dir="/x", operation="train")
    assert group_label(run, {"seed": 1}, is_seed) == "train"  # nothing but a seed
    long = {f"flag{i}": "x" * 20 for i in range(20)}
    assert len(group_label(run, long, is_seed)) <= 120


def test_mean_std():
    assert mean_std([]) is None
    assert mean_std([1.0]) == (1.0, 0.0, 1)
    mean, std, n = mean_std([1.0, 2.0, 3.0, float("inf")])
    assert (mean, round(std, 9), n) == (2.0, 1.0, 3)


class _State:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.base = run.hparams()
        self.hparams: dict = {}
        self.group = None


def test_shaper_fills_tags_false_and_shapes_groups():
    states = {
        "a": _State(Run(id="a", dir="/a", flags={"lr": 1, "seed": 1}, tags=frozenset({"x"}))),
        "b": _State(Run(id="b", dir="/b", flags={"lr": 1, "seed": 2})),
    }
    shaper = Shaper(SeedGroups())
    for st in states.values():
        shaper.note(st)
    assert {st.run.id for st in shaper.settle(states)} == {"a", "b"}
    # The base hparams hold no tags here (the view adds them): only the fill shows.
    assert states["b"].hparams == {"lr": 1, RUNS_HPARAM: 2, "tag:x": False}
    assert states["a"].group == states["b"].group == "lr=1"
    assert shaper.settle(states) == []
    # The only run tagged x goes: no tag column any more, b is shaped anew.
    shaper.remove("a")
    del states["a"]
    assert [st.run.id for st in shaper.settle(states)] == ["b"]
    assert states["b"].hparams == {"lr": 1, RUNS_HPARAM: 1}


def test_known_tags_count_names():
    tags = KnownTags()
    assert tags.set_run("a", frozenset({"x"})) is True
    assert tags.set_run("b", frozenset({"x"})) is False  # no new name
    assert tags.set_run("b", frozenset({"x", "y"})) is True
    assert tags.remove_run("a") is False
    assert tags.set_run("b", frozenset()) is True
    assert tags.names == {}


def _seed_sweep(runs_dir, seeds=(1, 2, 3)) -> dict[tuple[float, int], str]:
    """Guild runs: lr 0.01 with each seed, lr 0.1 with seed 1; ``acc`` known."""
    out = {}
    for lr, run_seeds in ((0.01, seeds), (0.1, (1,))):
        for seed in run_seeds:
            acc = 0.9 + 0.001 * seed + (0.05 if lr == 0.1 else 0.0)
            out[(lr, seed)] = make_guild_run(
                runs_dir,
                flags={"lr": lr, "opt": "adam", "seed": seed},
                scalars={"acc": [(0, 0.5), (1, acc)]},
                started=1_700_000_000.0 + seed,
            )
    return out


def _sessions(logdir) -> dict[str, dict]:
    """Run id -> its session (group and hparams) as written now."""
    return {
        run_id: session_in(os.path.join(logdir, name))
        for run_id, name in logdir_runs(logdir).items()
    }


def test_the_monitor_writes_one_group_per_configuration_live(tmp_path):
    runs_dir = tmp_path / "runs"
    made = _seed_sweep(runs_dir)
    logdir = str(tmp_path / "logdir")
    monitor = RunsMonitor(logdir, GuildRuns(str(runs_dir)), watch=False, seed_groups=SeedGroups())
    monitor.run_once()
    sessions = _sessions(logdir)
    groups = {s["group"] for s in sessions.values()}
    assert groups == {"lr=0.01 opt=adam", "lr=0.1 opt=adam"}
    grouped = [s for s in sessions.values() if s["group"] == "lr=0.01 opt=adam"]
    assert len(grouped) == 3
    assert all(s["hparams"] == {"lr": 0.01, "opt": "adam", RUNS_HPARAM: 3.0} for s in grouped)
    columns, _ = monitor.experiment_columns()
    assert "seed" not in {c.name for c in columns} and RUNS_HPARAM in {c.name for c in columns}

    # A fourth seed joins: every session of its group says 4, under the same name.
    make_guild_run(
        runs_dir, flags={"lr": 0.01, "opt": "adam", "seed": 4}, scalars={"acc": [(1, 0.9)]}
    )
    stats = monitor.run_once()
    assert stats.rewrites == 3
    sessions = _sessions(logdir)
    grouped = [s for s in sessions.values() if s["group"] == "lr=0.01 opt=adam"]
    assert len(grouped) == 4 and {s["hparams"][RUNS_HPARAM] for s in grouped} == {4.0}
    # The other group is untouched.
    assert [
        s["hparams"][RUNS_HPARAM] for s in sessions.values() if s["group"] != grouped[0]["group"]
    ] == [1.0]

    # One leaves: three again.
    shutil.rmtree(made[(0.01, 2)])
    monitor.run_once()
    grouped = [s for s in _sessions(logdir).values() if s["group"] == "lr=0.01 opt=adam"]
    assert len(grouped) == 3 and {s["hparams"][RUNS_HPARAM] for s in grouped} == {3.0}


def test_without_group_seeds_each_run_is_its_own_row(tmp_path):
    runs_dir = tmp_path / "runs"
    _seed_sweep(runs_dir)
    logdir = str(tmp_path / "logdir")
    monitor = RunsMonitor(logdir, GuildRuns(str(runs_dir)), watch=False)
    monitor.run_once()
    sessions = _sessions(logdir)
    assert {s["group"] for s in sessions.values()} == set(monitor.run_names.values())
    assert all(
        "seed" in s["hparams"] and RUNS_HPARAM not in s["hparams"] for s in sessions.values()
    )


def test_guild_tags_and_comments_are_columns_and_change_live(tmp_path):
    runs_dir = tmp_path / "runs"
    a = make_guild_run(runs_dir, flags={"lr": 0.1})
    b = make_guild_run(runs_dir, flags={"lr": 0.2}, attrs={"tags": ["baseline"]})
    logdir = str(tmp_path / "logdir")
    monitor = RunsMonitor(logdir, GuildRuns(str(runs_dir)), watch=False)
    monitor.run_once()
    ids = {a: os.path.basename(a), b: os.path.basename(b)}
    sessions = _sessions(logdir)
    assert sessions[ids[b]]["hparams"]["tag:baseline"] is True
    assert sessions[ids[a]]["hparams"]["tag:baseline"] is False  # so a checkbox filter works

    # `guild tag` and `guild comment` rewrite the run's attrs in place.
    write_attr(a, "tags", ["baseline", "v2"])
    write_attr(
        a,
        "comments",
        [{"body": "lr too high?", "host": "vm", "time": 1796031911613622, "user": ""}],
    )
    monitor.run_once()
    sessions = _sessions(logdir)
    assert sessions[ids[a]]["hparams"] == {
        "lr": 0.1,
        "tag:baseline": True,
        "tag:v2": True,
        "note": "lr too high?",
    }
    assert sessions[ids[b]]["hparams"]["tag:v2"] is False


def _table(capsys, *args) -> str:
    capsys.readouterr()
    assert main(["table", *args]) == 0
    return capsys.readouterr().out


def test_table_group_seeds(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    _seed_sweep(runs_dir)
    out = _table(capsys, str(runs_dir), "--group-seeds", "--sort", "-acc")
    lines = out.splitlines()
    assert lines[0].split() == ["run", "status", "lr", "runs", "acc", "time"]
    assert lines[2].split()[:2] == ["lr=0.1", "opt=adam"] and "0.951 (1)" in lines[2]
    assert lines[3].split()[:2] == ["lr=0.01", "opt=adam"]
    assert "0.902 ± 0.001 (3)" in lines[3]
    assert "constant: opt=adam" in out
    csv = _table(
        capsys, str(runs_dir), "--group-seeds", "--format", "csv", "--metric-include", "acc"
    )
    head, *rows = csv.splitlines()
    assert head == "run,status,lr,opt,runs,acc,acc std,acc n,time,time std,time n"
    assert sorted(r.split(",")[7] for r in rows) == ["1", "3"]


def test_table_seed_flags_options(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    for rep in (1, 2):
        make_guild_run(runs_dir, flags={"lr": 0.1, "rep": rep}, scalars={"acc": [(0, rep)]})
    out = _table(capsys, str(runs_dir), "--group-seeds", "--seed-flags", "rep")
    assert "1.5 ± 0.7 (2)" in out
    out = _table(capsys, str(runs_dir), "--group-seeds")  # rep is no seed: two rows
    assert out.count("(1)") >= 2
    assert main(["table", str(runs_dir), "--seed-flags", "rep"]) == 2
    assert "--seed-flags needs --group-seeds" in capsys.readouterr().err


def test_tags_are_set_by_a_user(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    make_guild_run(runs_dir, flags={"lr": 0.1}, attrs={"tags": ["baseline"], "user_flags": []})
    make_guild_run(runs_dir, flags={"lr": 0.2}, attrs={"user_flags": []})
    out = _table(capsys, str(runs_dir), "--hparams", "overridden", "--format", "csv")
    assert out.splitlines()[0] == "run,status,tag:baseline,loss,time"


def test_serve_group_seeds_writes_groups(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    _seed_sweep(runs_dir)
    logdir = tmp_path / "logdir"
    args = ["serve", "--once", "--no-tensorboard", "--logdir", str(logdir), str(runs_dir)]
    assert main([*args, "--group-seeds", "--seed-flags", "seed"]) == 0
    groups = sorted(s["group"] for s in _sessions(logdir).values())
    assert groups == ["lr=0.01 opt=adam"] * 3 + ["lr=0.1 opt=adam"]


def test_a_hydra_multirun_over_seeds_is_named_by_its_overrides(tmp_path, monkeypatch, capsys):
    from sample_projects.layouts import hydra_multirun

    jobs = [[f"model.lr={lr}", f"seed={s}"] for lr in (0.1, 0.01) for s in (1, 2)]
    monkeypatch.setattr(hydra_multirun, "JOBS", jobs)
    hydra_multirun.make(str(tmp_path))
    out = _table(capsys, str(tmp_path), "--group-seeds", "--format", "csv")
    names = sorted(line.split(",")[0] for line in out.splitlines()[1:])
    # The overrides a user typed name the row; the config's other flags do not.
    assert names == ["model.lr=0.01", "model.lr=0.1"]

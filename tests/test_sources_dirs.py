"""DirRuns and flags files, read from real layouts written into tmp_path."""

from __future__ import annotations

import json
import logging
import os

import pytest
import yaml

from runsmon.report import Reporter
from runsmon.run import COMPLETED, RUNNING
from runsmon.sources import detect_kind, detect_source
from runsmon.sources.dirs import DirRuns, event_file_time
from runsmon.sources.flagsfiles import FLAGS_FILES, parse_hydra_overrides
from sample_projects.layouts import (
    hydra_multirun,
    keras,
    knowit_sweep,
    lightning,
    make_all,
    torch_hparams,
    yaml_experiment,
)
from sample_projects.layouts._events import T0, write_events, write_text

FAR = T0 + 10**6  # a clock long after every sample run ended


def source(path, **kw) -> DirRuns:
    kw.setdefault("clock", lambda: FAR)
    return DirRuns(str(path), **kw)


def by_id(runs):
    return {r.id: r for r in runs}


def snapshot(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


# -- flags files ---------------------------------------------------------------


def _write_flags_file(run, rel, marker):
    data = {"src": marker, "n": 1}
    text = json.dumps(data) if rel.endswith(".json") else yaml.safe_dump(data)
    write_text(os.path.join(run, rel), text)


@pytest.mark.parametrize("index", range(len(FLAGS_FILES)), ids=FLAGS_FILES)
def test_flags_file_precedence(tmp_path, index):
    run = tmp_path / "run"
    for rel in FLAGS_FILES[index:]:
        _write_flags_file(str(run), rel, rel)
    runs = source(run)()
    assert len(runs) == 1
    assert runs[0].flags == {"src": FLAGS_FILES[index], "n": 1}
    assert runs[0].attrs["flags_file"] == FLAGS_FILES[index]


def test_flags_file_option_wins(tmp_path):
    run = tmp_path / "exp" / "r1"
    _write_flags_file(str(run), "flags.yaml", "flags.yaml")
    _write_flags_file(str(run), "cfg/run.json", "mine")
    (run / "other").mkdir()
    (run / "other" / "run.yaml").write_text("x: 1\n")
    [r] = source(tmp_path, flags_file="cfg/run.json")()
    assert r.flags["src"] == "mine"
    assert r.id == "exp/r1"


def test_custom_flags_file_makes_a_run(tmp_path):
    write_text(str(tmp_path / "a" / "setup.yml"), "lr: 0.5\n")
    assert source(tmp_path)() == []
    [r] = source(tmp_path, flags_file="setup.yml")()
    assert r.flags == {"lr": 0.5}


def test_hydra_overrides_forms():
    texts, names = parse_hydra_overrides(
        ["a=1", "+b.c=2", "++d=x", "~e", "~f=3", "group@pkg=opt", "noeq"]
    )
    assert names == {"a", "b.c", "d", "group"}
    assert texts[0] == "a=1"
    with pytest.raises(ValueError):
        parse_hydra_overrides({"a": 1})


def test_event_file_time():
    assert event_file_time("events.out.tfevents.1704164645.host.12.0.v2") == 1704164645.0
    assert event_file_time("foo.tfevents") is None


# -- layouts -------------------------------------------------------------------


def test_yaml_experiment(tmp_path):
    yaml_experiment.make(str(tmp_path))
    runs = by_id(source(tmp_path)())
    assert set(runs) == {"run-a", "run-b"}
    a = runs["run-a"]
    assert a.flags == {
        "model": {"name": "mlp", "layers": 2},
        "lr": 0.01,
        "batch_size": 32,
        "augment": True,
    }
    assert a.hparams() == {
        "model.name": "mlp",
        "model.layers": 2,
        "lr": 0.01,
        "batch_size": 32,
        "augment": True,
    }
    assert isinstance(a.flags["batch_size"], int) and isinstance(a.flags["augment"], bool)
    assert a.status == COMPLETED
    assert a.started == T0
    assert a.stopped == pytest.approx(T0 + 5 + 10)  # last val point
    assert a.user_flags is None
    assert a.attrs["event_files"] == 2
    assert a.dir == str(tmp_path / "run-a")


def test_keras_train_validation_is_one_run(tmp_path):
    keras.make(str(tmp_path))
    runs = by_id(source(tmp_path)())
    assert set(runs) == {f"logs/fit/{n}" for n in keras.RUN_NAMES}
    r = runs["logs/fit/20240102-030405"]
    assert r.flags == {} and r.status == COMPLETED
    assert r.started == T0 and r.attrs["event_files"] == 2
    # Pointed at a single Keras run, the root itself is the run.
    [single] = source(tmp_path / "logs" / "fit" / "20240102-040000")()
    assert single.id == "20240102-040000" and single.started == T0 + 3600


def test_knowit_sweep_one_run_per_combination(tmp_path):
    expected = knowit_sweep.make(str(tmp_path))
    runs = by_id(source(tmp_path)())
    assert set(runs) == {f"lr_sweep/{c}" for c in expected}
    r = runs["lr_sweep/learning_rate-0.001-batch_size-64"]
    assert r.flags == expected["learning_rate-0.001-batch_size-64"]
    hp = r.hparams()
    assert hp["trainer.learning_rate"] == 0.001 and hp["trainer.batch_size"] == 64
    assert hp["data.in_components"] == "['x1', 'x2']"
    assert r.attrs["flags_file"] == "model_args.yaml"
    assert r.started == T0 + 3 * 600


def test_lightning_versions(tmp_path):
    lightning.make(str(tmp_path))
    runs = by_id(source(tmp_path)())
    assert set(runs) == {"lightning_logs/version_0", "lightning_logs/version_1"}
    v0 = runs["lightning_logs/version_0"]
    # !!python/tuple reads as a list; nothing is constructed.
    assert v0.flags["betas"] == [0.9, 0.999]
    assert v0.flags["optimizer"] == {"name": "adamw", "weight_decay": 0.01}
    assert v0.flags["use_bn"] is True and v0.flags["hidden_dim"] == 128
    assert runs["lightning_logs/version_1"].flags["learning_rate"] == 0.001


def test_torch_add_hparams(tmp_path):
    torch_hparams.make(str(tmp_path))
    runs = by_id(source(tmp_path)())
    # The timestamp subdirectory belongs to its run.
    assert set(runs) == {f"runs/{n}" for n in torch_hparams.RUNS}
    r = runs["runs/Jan02_03-04-05_host"]
    assert r.flags == {"lr": 0.1, "bsize": 32.0, "optim": "sgd", "use_bn": 1.0}
    assert isinstance(r.flags["bsize"], float)  # torch stores every number as a float
    assert r.attrs["flags_file"] is None and r.attrs["event_files"] == 2
    assert r.started == T0 and r.stopped == T0 + 40


def test_hydra_multirun(tmp_path):
    expected = hydra_multirun.make(str(tmp_path))
    runs = by_id(source(tmp_path)())
    assert set(runs) == {"multirun/2024-01-02/03-04-05/0", "multirun/2024-01-02/03-04-05/1"}
    r1 = runs["multirun/2024-01-02/03-04-05/1"]
    config, overrides = expected[str(tmp_path / "multirun/2024-01-02/03-04-05/1")]
    assert r1.flags == config
    assert r1.flags["trainer"]["precision"] == 16
    assert r1.user_flags == {"optimizer.lr", "model", "trainer.precision"}
    assert r1.label == "optimizer.lr=0.01 model=vit +trainer.precision=16"
    assert r1.operation == "train"
    assert r1.started == T0 + 100 and r1.status == COMPLETED
    assert runs["multirun/2024-01-02/03-04-05/0"].flags["optimizer"]["lr"] == 0.1


def test_make_all_and_detection(tmp_path):
    made = make_all(str(tmp_path))
    kinds = {name: detect_kind(path) for name, path in made.items()}
    assert kinds == {
        "yaml": "dirs",
        "keras": "dirs",
        "knowit": "dirs",
        "torch": "dirs",
        "hydra": "dirs",
        "lightning": "dirs",
        "mlflow": "mlflow",
    }
    everything = by_id(detect_source(str(tmp_path), kind="dirs", idle_after=60)())
    assert "knowit/lr_sweep/learning_rate-0.01-batch_size-16" in everything
    assert "torch/runs/Jan02_03-04-05_host" in everything
    assert not any(i.startswith("mlflow") for i in everything)
    src = detect_source(str(made["hydra"]), flags_file="x.yaml", settle=3)
    assert isinstance(src, DirRuns) and src.flags_file == "x.yaml"


# -- status, change detection ---------------------------------------------------


def test_status_follows_idle_rule(tmp_path):
    now = [T0 + 5]
    run = tmp_path / "r"
    path = write_events(str(run), {"loss": [1.0]}, T0)  # mtime T0
    src = DirRuns(str(tmp_path), idle_after=60, clock=lambda: now[0])
    [r] = src()
    assert r.status == RUNNING and r.stopped is None and r.started == T0
    fp = src.fingerprint(str(run))
    now[0] = T0 + 61
    assert src.fingerprint(str(run)) != fp  # the idle transition is noticed
    [r] = src()
    assert r.status == COMPLETED and r.stopped == T0
    os.utime(path, (T0 + 100, T0 + 100))  # written again
    [r] = src()
    assert r.status == RUNNING


def test_new_run_found_through_roots(tmp_path):
    lightning.make(str(tmp_path))
    src = source(tmp_path)
    assert len(src()) == 2
    logs = str(tmp_path / "lightning_logs")
    assert logs in src.roots()
    write_events(os.path.join(logs, "version_2"), {"loss": [1.0]}, T0)
    runs = src(changed=[os.path.join(logs, "version_2")])
    assert len(runs) == 3


def test_unchanged_run_not_reread(tmp_path, monkeypatch):
    yaml_experiment.make(str(tmp_path))
    src = source(tmp_path)
    first = src()
    calls = []
    orig = src.read_run
    monkeypatch.setattr(src, "read_run", lambda d: calls.append(d) or orig(d))
    assert src() == first and calls == []
    (tmp_path / "run-a" / "config.yaml").write_text("lr: 1\n")
    runs = by_id(src())
    assert calls == [str(tmp_path / "run-a")] and runs["run-a"].flags == {"lr": 1}


# -- bad input -------------------------------------------------------------------


def test_corrupt_flags_warn_once_and_run_still_shows(tmp_path, caplog):
    yaml_experiment.make(str(tmp_path))
    (tmp_path / "run-a" / "config.yaml").write_text("lr: [1, 2\n")
    write_text(str(tmp_path / "bad-json" / "flags.json"), "{nope")
    write_text(str(tmp_path / "list" / "hparams.yaml"), "- 1\n- 2\n")
    reporter = Reporter()
    src = source(tmp_path, reporter=reporter)
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        runs = by_id(src())
        src()
    assert runs["run-a"].flags == {} and runs["run-b"].flags["lr"] == 0.001
    assert runs["bad-json"].flags == {} and runs["list"].flags == {}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert any("run run-a: cannot read config.yaml: bad YAML" in m for m in lines)
    assert any("run list: cannot read hparams.yaml: " in m and "mapping" in m for m in lines)


def test_bad_hydra_side_files(tmp_path, caplog):
    hydra_multirun.make(str(tmp_path))
    job = tmp_path / "multirun/2024-01-02/03-04-05/0/.hydra"
    (job / "overrides.yaml").write_text("a: 1\n")
    (job / "hydra.yaml").write_text(": : :\n")
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        runs = by_id(source(tmp_path)())
    r = runs["multirun/2024-01-02/03-04-05/0"]
    assert r.user_flags is None and r.operation == "" and r.flags["seed"] == 7
    assert len(caplog.records) == 2


def test_unreadable_and_vanishing(tmp_path, caplog):
    yaml_experiment.make(str(tmp_path))
    keras.make(str(tmp_path / "k"))
    src = source(tmp_path)
    assert len(src()) == 4
    import shutil

    shutil.rmtree(tmp_path / "run-b")
    assert {r.id for r in src(changed=[str(tmp_path / "run-b")])} == {
        "run-a",
        "k/logs/fit/20240102-030405",
        "k/logs/fit/20240102-040000",
    }
    assert len(src()) == 3
    # A flags file that is a directory, a FIFO posing as one: warned, not raised.
    (tmp_path / "d" / "flags.yaml").mkdir(parents=True)
    os.mkfifo(tmp_path / "run-a" / "flags.yaml")
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        runs = by_id(src())
    assert runs["run-a"].flags == {} and "d" not in runs
    assert any("run-a" in r.getMessage() for r in caplog.records)
    # A vanished root warns (once) and raises nothing; its runs are gone.
    shutil.rmtree(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        assert src() == [] and src() == []
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot list dirs runs in {tmp_path}: no such file or directory"
    ]


def test_corrupt_event_file_for_add_hparams(tmp_path, caplog):
    run = tmp_path / "r"
    write_events(str(run), {"loss": [1.0]}, T0)
    bad = run / "sub" / "events.out.tfevents.1704164645.h.1.0"
    bad.parent.mkdir()
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00abcd\xff\xff\xff\xff\xffzzzz")
    with caplog.at_level(logging.WARNING, logger="runsmon"):
        [r] = source(tmp_path)()
    assert r.flags == {}
    assert len(caplog.records) == 1 and "cannot read" in caplog.records[0].getMessage()


def test_nothing_written_and_logdir_skipped(tmp_path):
    make_all(str(tmp_path / "src"))
    logdir = tmp_path / "src" / "logdir"
    (logdir / "x").mkdir(parents=True)
    (logdir / ".runsmon").write_text("")
    write_events(str(logdir / "x"), {"loss": [1.0]}, T0)
    before = snapshot(tmp_path)
    runs = source(tmp_path / "src")()
    assert not any(r.id.startswith("logdir") for r in runs)
    for r in runs:
        r.hparams()
    assert snapshot(tmp_path) == before


def test_detect_guild_and_override(tmp_path):
    write_text(str(tmp_path / "home" / "runs" / "abc" / ".guild" / "opref"), "guildfile:x a b c\n")
    write_text(str(tmp_path / "home" / "runs" / "abc" / ".guild" / "attrs" / "flags"), "lr: 1\n")
    assert detect_kind(str(tmp_path / "home")) == "guild"
    assert detect_kind(str(tmp_path / "home" / "runs")) == "guild"
    src = detect_source(str(tmp_path / "home" / "runs"), kind="dirs")
    [r] = src()
    assert r.flags == {"lr": 1} and r.attrs["flags_file"] == ".guild/attrs/flags"
    with pytest.raises(ValueError, match="unknown source kind"):
        detect_source(str(tmp_path), kind="nope")


# -- YAML values as the writing tool reads them -----------------------------------

# What OmegaConf 2.4 (Hydra's reader) gives for each plain scalar, checked with
# ``yaml.load(text, Loader=omegaconf._yaml.get_yaml_loader())``: YAML 1.2 floats
# without a dot are floats; ``yes``/``off`` stay booleans and ``017`` octal as in
# PyYAML; ``0o17`` and ``-.5e-2`` stay strings.
OMEGACONF_READS = {
    "1e-3": 0.001,
    "1E-3": 0.001,
    "1e+3": 1000.0,
    "+1e3": 1000.0,
    "1.0e-3": 0.001,
    "5.": 5.0,
    ".5": 0.5,
    "yes": True,
    "off": False,
    "017": 15,
    "0x1F": 31,
    "1_000": 1000,
    "0o17": "0o17",
    "-.5e-2": "-.5e-2",
    "1e-3x": "1e-3x",
}


@pytest.mark.parametrize("rel", ["config.yaml", ".hydra/config.yaml", "flags.yaml"])
def test_config_yaml_read_as_omegaconf_reads_it(tmp_path, rel):
    text = "".join(f"v{i}: {plain}\n" for i, plain in enumerate(OMEGACONF_READS))
    write_text(str(tmp_path / "run" / rel), text)
    [r] = source(tmp_path)()
    got = {plain: r.flags[f"v{i}"] for i, plain in enumerate(OMEGACONF_READS)}
    assert got == OMEGACONF_READS
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in OMEGACONF_READS.items()}


def test_lr_column_stays_numeric_with_1e_notation(tmp_path):
    # One hand-written config with 1e-3 must not turn the lr column into text.
    write_text(str(tmp_path / "a" / "config.yaml"), "lr: 0.01\n")
    write_text(str(tmp_path / "b" / "config.yaml"), "lr: 1e-3\n")
    runs = by_id(source(tmp_path)())
    assert runs["a"].flags["lr"] == 0.01
    assert runs["b"].flags["lr"] == 0.001 and isinstance(runs["b"].flags["lr"], float)


@pytest.mark.parametrize("rel", [".guild/attrs/flags", "hparams.yaml", "model_args.yaml"])
def test_pyyaml_written_files_keep_pyyaml_rules(tmp_path, rel):
    # PyYAML writes the string "1e-3" unquoted (its YAML 1.1 resolver reads it
    # back as a string), and these tools read their files back with PyYAML.
    text = yaml.safe_dump({"lr": "1e-3", "wd": 1e-5, "on": "yes"})
    assert "lr: 1e-3\n" in text
    write_text(str(tmp_path / "run" / rel), text)
    [r] = source(tmp_path)()
    assert r.flags == yaml.safe_load(text) == {"lr": "1e-3", "wd": 1e-5, "on": "yes"}


def test_run_active_again_between_two_checks_gets_its_new_end(tmp_path):
    # Ended, written again (an append: no directory changes), and idle again
    # before the next check: its end (and so its time) is the new last write.
    now = [T0 + 100]
    run = tmp_path / "r"
    path = write_events(str(run / "train"), {"loss": [1.0, 0.5]}, T0)  # mtime T0 + 10
    src = DirRuns(str(tmp_path), idle_after=60, clock=lambda: now[0])
    [r] = src()
    assert r.status == COMPLETED and r.stopped == T0 + 10 and r.duration == 10
    with open(path, "ab") as f:
        f.write(b"")  # a real append changes only the file
    os.utime(path, (T0 + 200, T0 + 200))
    now[0] = T0 + 400
    [r] = src()
    assert r.status == COMPLETED and r.stopped == T0 + 200 and r.duration == 200


# -- runs inside runs, trees that are not runs --------------------------------------

TUTORIAL = os.path.join(os.path.dirname(__file__), "data", "hparams-tutorial")


def copy_tutorial(dest) -> str:
    """The HParams tutorial fixture, each file's mtime set from the time in its name."""
    import shutil

    shutil.copytree(TUTORIAL, dest)
    for d, _, files in os.walk(dest):
        for name in files:
            t = event_file_time(name)
            if t is not None:
                os.utime(os.path.join(d, name), (t + 2, t + 2))
    return str(dest)


def test_hparams_tutorial_one_run_per_session(tmp_path):
    root = copy_tutorial(tmp_path / "project")
    runs = by_id(source(os.path.join(root, "logs"), clock=lambda: 2e9)())
    # The experiment directory is no run: only its hparams_config summary is there.
    assert set(runs) == {f"hparam_tuning/run-{n}" for n in range(4)}
    r0 = runs["hparam_tuning/run-0"]
    assert r0.flags == {"num_units": 4.0, "optimizer": "adam", "dropout": 0.1}
    assert runs["hparam_tuning/run-2"].flags == {
        "num_units": 8.0,
        "optimizer": "adam",
        "dropout": 0.2,
    }
    # hp.KerasCallback's session end info: its status and end time.
    assert r0.status == COMPLETED
    assert r0.stopped == _session_end_time(os.path.join(r0.dir))  # not a file's mtime
    assert r0.started <= r0.stopped < r0.started + 5
    assert r0.attrs["event_files"] == 3  # session info, train/, validation/
    # hp.hparams without a callback: no end info, so the idle rule decides.
    assert runs["hparam_tuning/run-3"].status == COMPLETED


def _session_end_time(run_dir):
    """The end time of the session end info in the run's root event files, read by TensorBoard."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    for name in os.listdir(run_dir):
        if "tfevents" in name:
            for event in EventFileLoader(os.path.join(run_dir, name)).Load():
                for v in event.summary.value:
                    if v.tag == "_hparams_/session_end_info":
                        content = v.metadata.plugin_data.content
                        data = plugin_data_pb2.HParamsPluginData.FromString(content)
                        return data.session_end_info.end_time_secs
    return None


def test_hparams_tutorial_session_end_status(tmp_path):
    """A failed session (``hp.KerasCallback`` on an exception) is an error."""
    from tensorboard.plugins.hparams import summary_v2

    from runsmon.hparams import session_end_summary

    start = summary_v2.hparams_pb({"lr": 0.1}, start_time_secs=T0)
    end = session_end_summary("error", T0 + 7)  # STATUS_FAILURE, as hp.KerasCallback writes
    write_events(str(tmp_path / "run-0"), {}, T0, summaries=[start, end])
    write_events(str(tmp_path / "run-0" / "train"), {"epoch_loss": [1.0]}, T0)
    [r] = source(tmp_path)()
    assert r.flags == {"lr": 0.1}
    assert r.status == "error" and r.stopped == T0 + 7


def test_consolidated_sweep_model_dir_and_sweep_runs(tmp_path):
    made = knowit_sweep.make_consolidated(str(tmp_path))
    runs = by_id(source(tmp_path)())
    sweep_ids = {f"models/my_model/sweeps/lr_sweep/{c}" for c in made["runs"]}
    assert set(runs) == {"models/my_model"} | sweep_ids
    model = runs["models/my_model"]
    assert model.flags == made["runs"][made["best"]]
    assert model.attrs["event_files"] == 1  # its own lightning_logs, none of the sweep's
    assert model.nested == {f"sweeps/lr_sweep/{c}" for c in made["runs"]}
    for run_id in sweep_ids:
        assert runs[run_id].attrs["event_files"] == 1 and not runs[run_id].nested


def test_nested_run_files_are_not_the_parents(tmp_path):
    from runsmon.fs import LOCAL
    from runsmon.runfiles import RunFiles

    made = knowit_sweep.make_consolidated(str(tmp_path))
    model = by_id(source(tmp_path)())["models/my_model"]
    files = RunFiles(model.dir, LOCAL, exclude=model.nested)
    files.refresh()
    assert {f.rel for f in files.files.values()} == {
        os.path.relpath(p, made["model_dir"])
        for p in _event_files(os.path.join(made["model_dir"], "lightning_logs"))
    }
    assert {g for _, g in files.metrics()} == {"lightning_logs/version_0"}


def _event_files(root):
    return [os.path.join(d, n) for d, _, fs in os.walk(root) for n in fs if "tfevents" in n]


def test_a_nested_run_that_appears_later(tmp_path):
    made = knowit_sweep.make_consolidated(str(tmp_path))
    src = source(tmp_path)
    before = by_id(src())
    assert len(before) == 5
    new = os.path.join(made["model_dir"], "sweeps", "lr_sweep", "learning_rate-0.1-batch_size-8")
    write_text(os.path.join(new, "model_args.yaml"), yaml.safe_dump({"lr": 0.1}))
    write_events(os.path.join(new, "lightning_logs", "version_0"), {"train_loss": [0.3]}, T0)
    after = by_id(src())
    assert len(after) == 6
    model = after["models/my_model"]
    assert "sweeps/lr_sweep/learning_rate-0.1-batch_size-8" in model.nested
    assert model.attrs["event_files"] == 1
    # Where sweep runs are, a new one is seen through the roots.
    assert os.path.join(made["model_dir"], "sweeps", "lr_sweep") in src.roots()


def test_hydra_config_tree_is_not_a_run(tmp_path):
    # A Hydra project: its source config tree beside the runs it made.
    write_text(
        str(tmp_path / "conf" / "config.yaml"),
        "defaults:\n  - model: resnet\n  - _self_\nlr: 1e-3\n",
    )
    write_text(str(tmp_path / "conf" / "model" / "resnet.yaml"), "depth: 18\n")
    hydra_multirun.make(str(tmp_path))
    runs = by_id(source(tmp_path)())
    assert set(runs) == {"multirun/2024-01-02/03-04-05/0", "multirun/2024-01-02/03-04-05/1"}
    # A config.yaml a script saved (composed: no defaults list) is still a run.
    write_text(str(tmp_path / "saved" / "config.yaml"), "lr: 0.1\nmodel:\n  depth: 18\n")
    assert "saved" in by_id(source(tmp_path)())


def test_experiment_file_seen_before_its_summary_is_written(tmp_path):
    # A writer's first record (the file version) lands before the experiment summary.
    root = copy_tutorial(tmp_path / "project")
    tuning = os.path.join(root, "logs", "hparam_tuning")
    [name] = [n for n in os.listdir(tuning) if "tfevents" in n]
    path = os.path.join(tuning, name)
    with open(path, "rb") as f:
        data = f.read()
    from runsmon import events

    first = events.split_records(data).records[0]
    header_len = 12 + len(first) + 4
    with open(path, "wb") as f:
        f.write(data[:header_len])
    src = source(os.path.join(root, "logs"), clock=lambda: 2e9)
    assert [r.id for r in src()] == ["hparam_tuning"]  # events of its own: a run, for now
    with open(path, "ab") as f:
        f.write(data[header_len:])
    assert sorted(r.id for r in src()) == [f"hparam_tuning/run-{n}" for n in range(4)]


def test_add_hparams_end_info_does_not_end_a_live_run(tmp_path):
    # add_hparams writes a "success" end info whenever it is called: the run
    # still being written is running.
    torch_hparams.make(str(tmp_path))
    runs = by_id(source(tmp_path, clock=lambda: T0 + 45)())
    assert runs["runs/Jan02_03-04-05_host"].status == RUNNING

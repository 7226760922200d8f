"""Value and type rules of the HParams columns (pure synthesis)."""

from __future__ import annotations

import pytest
from tensorboard.plugins.hparams import api_pb2, metadata

from runsmon import hparams
from runsmon.run import COMPLETED, ERROR, TERMINATED, Run, flatten_flags


def _columns(*runs: dict) -> dict[str, hparams.Column]:
    cols = hparams.Columns()
    for i, flags in enumerate(runs):
        cols.set_run(str(i), flatten_flags(flags), [])
    return {c.name: c for c in cols.columns()}


def test_numbers_make_an_interval_with_real_min_and_max():
    col = _columns({"lr": 0.1}, {"lr": 3}, {"lr": -2.5})["lr"]
    info = hparams.hparam_info(col)
    assert col.kind == hparams.NUMBER
    assert info.type == api_pb2.DATA_TYPE_FLOAT64
    assert (info.domain_interval.min_value, info.domain_interval.max_value) == (-2.5, 3.0)


def test_booleans_stay_booleans():
    col = _columns({"aug": True}, {"aug": False})["aug"]
    info = hparams.hparam_info(col)
    assert info.type == api_pb2.DATA_TYPE_BOOL
    assert [v.bool_value for v in info.domain_discrete.values] == [False, True]
    assert col.encode(True) is True


def test_strings_are_a_discrete_set_of_seen_values():
    info = hparams.hparam_info(_columns({"opt": "sgd"}, {"opt": "adam"}, {"opt": "sgd"})["opt"])
    assert info.type == api_pb2.DATA_TYPE_STRING
    assert [v.string_value for v in info.domain_discrete.values] == ["adam", "sgd"]


def test_none_is_no_value_and_keeps_a_numeric_column_numeric():
    cols = _columns({"lr": 0.1}, {"lr": None}, {"lr": 0.2})
    assert cols["lr"].kind == hparams.NUMBER
    assert "lr" not in flatten_flags({"lr": None})


def test_mixed_kinds_become_text_everywhere():
    cols = _columns({"x": 1}, {"x": "auto"}, {"x": True})
    col = cols["x"]
    assert col.kind == hparams.MIXED
    assert col.values == ("1", "auto", "true")
    assert col.encode(1) == "1" and col.encode(True) == "true"
    info = hparams.hparam_info(col)
    assert info.type == api_pb2.DATA_TYPE_STRING


def test_removing_a_run_restores_the_column():
    cols = hparams.Columns()
    cols.set_run("a", {"x": 1}, [("loss", "")])
    cols.set_run("b", {"x": "auto"}, [("loss", "val")])
    assert cols.column("x").kind == hparams.MIXED
    cols.remove_run("b")
    assert cols.column("x").kind == hparams.NUMBER
    assert cols.metrics() == [("loss", "")]
    cols.set_run("a", {}, [])
    assert cols.column("x") is None and cols.metrics() == []


def test_metrics_keep_train_and_val_apart():
    cols = hparams.Columns()
    cols.set_run("a", {}, [("loss", "train"), ("loss", "val"), ("acc", "")])
    # Metrics of the user's data splits first (train, then val), then the others.
    assert cols.metrics() == [("loss", "train"), ("loss", "val"), ("acc", "")]


def test_experiment_summary_round_trips_through_tensorboard_parser():
    cols = hparams.Columns()
    cols.set_run("a", {"lr": 0.1, "opt": "adam"}, [("loss", "train")])
    summary = hparams.experiment_summary(cols.columns(), cols.metrics(), 5.0)
    value = summary.value[0]
    assert value.tag == metadata.EXPERIMENT_TAG
    exp = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
    assert [h.name for h in exp.hparam_infos] == ["lr", "opt"]
    assert [(m.name.tag, m.name.group) for m in exp.metric_infos] == [("loss", "train")]
    assert exp.time_created_secs == 5.0


def test_experiment_says_which_hparams_differ_and_lists_them_first():
    cols = hparams.Columns()
    cols.set_run("a", {"a_const": 1, "lr": 0.1, "opt": "adam", "seed": 7}, [])
    cols.set_run("b", {"a_const": 1, "lr": 0.01, "opt": "adam", "seed": 7, "extra": True}, [])

    def declared() -> list[tuple[str, bool]]:
        summary = hparams.experiment_summary(cols.columns(), [], differs=cols.differs)
        content = summary.value[0].metadata.plugin_data.content
        exp = metadata.parse_experiment_plugin_data(content)
        return [(h.name, h.differs) for h in exp.hparam_infos]

    # Differing (a value differs, or a run lacks it) first, each part in name order.
    assert declared() == [
        ("extra", True),
        ("lr", True),
        ("a_const", False),
        ("opt", False),
        ("seed", False),
    ]
    cols.set_run("c", {"a_const": 1, "lr": 0.1, "opt": "sgd", "seed": 7, "extra": False}, [])
    assert [n for n, d in declared() if d] == ["extra", "lr", "opt"]
    cols.remove_run("b")
    cols.remove_run("c")
    assert all(not d for _, d in declared())  # one run: nothing differs
    # Without a ``differs`` callable (older callers), nothing is said to differ.
    summary = hparams.experiment_summary(cols.columns(), [])
    exp = metadata.parse_experiment_plugin_data(summary.value[0].metadata.plugin_data.content)
    assert not any(h.differs for h in exp.hparam_infos)


def test_session_summaries_carry_values_group_and_status():
    start = hparams.session_start_summary({"lr": 0.1, "aug": True, "opt": "sgd"}, "run-1", 10.0)
    info = metadata.parse_session_start_info_plugin_data(
        start.value[0].metadata.plugin_data.content
    )
    assert info.group_name == "run-1" and info.start_time_secs == 10.0
    assert info.hparams["lr"].number_value == 0.1
    assert info.hparams["aug"].bool_value is True
    assert info.hparams["opt"].string_value == "sgd"
    for status, expected in (
        (COMPLETED, api_pb2.STATUS_SUCCESS),
        (TERMINATED, api_pb2.STATUS_SUCCESS),
        (ERROR, api_pb2.STATUS_FAILURE),
    ):
        end = hparams.session_end_summary(status, 20.0)
        parsed = metadata.parse_session_end_info_plugin_data(
            end.value[0].metadata.plugin_data.content
        )
        assert parsed.status == expected and parsed.end_time_secs == 20.0


def test_run_hparams_flatten_and_normalise():
    run = Run(
        "abc",
        "/r",
        flags={
            "opt": {"lr": 0.1, "betas": [0.9, 0.99]},
            "big": 2**70,
            "nan": float("nan"),
            "n": None,
        },
    )
    assert run.hparams() == {
        "opt.lr": 0.1,
        "opt.betas": "[0.9, 0.99]",
        "big": str(2**70),
        "nan": "nan",
    }


def test_selection_differing_keeps_only_columns_that_vary():
    cols = hparams.Columns()
    cols.set_run("a", {"lr": 0.1, "epochs": 10, "opt": "adam"}, [])
    cols.set_run("b", {"lr": 0.2, "epochs": 10}, [])
    selected, _ = cols.selected(hparams.Selection(hparams=hparams.DIFFERING))
    assert [c.name for c in selected] == ["lr", "opt"]  # opt: missing in b


def test_selection_overridden_keeps_user_set_flags():
    cols = hparams.Columns()
    cols.set_run("a", {"lr": 0.1, "epochs": 10}, [], user_flags=["lr"])
    cols.set_run("b", {"lr": 0.2, "epochs": 10}, [])
    selected, _ = cols.selected(hparams.Selection(hparams=hparams.OVERRIDDEN))
    assert [c.name for c in selected] == ["lr"]
    cols.remove_run("a")
    assert cols.selected(hparams.Selection(hparams=hparams.OVERRIDDEN))[0] == []


def test_selection_globs_for_hparams_and_metrics():
    cols = hparams.Columns()
    cols.set_run(
        "a",
        {"model.lr": 0.1, "model.depth": 3, "seed": 1},
        [("loss", "train"), ("acc", ""), ("sys/gpu", ""), ("lr/group0", ""), ("time", "")],
    )
    sel = hparams.Selection(hparam_include=("model.*",), hparam_exclude=("*.depth",))
    selected, metrics = cols.selected(sel)
    assert [c.name for c in selected] == ["model.lr"]
    # Every scalar but sys/*, whatever "/" its tag holds; time last.
    assert metrics == [("loss", "train"), ("acc", ""), ("lr/group0", ""), ("time", "")]
    # A glob matches the tag; "train/*" is no group: it does not match loss in train.
    sel = hparams.Selection(metric_include=("lr/*", "train/*"), metric_exclude=("sys/*",))
    assert cols.selected(sel)[1] == [("lr/group0", ""), ("time", "")]
    sel = hparams.Selection(metric_include=("train#*",))
    assert cols.selected(sel)[1] == [("loss", "train"), ("time", "")]
    assert hparams.Selection(metric_include=("#acc",)).wants_metric(("acc", "")) is True
    assert hparams.Selection(metric_include=("#acc",)).wants_metric(("acc", "val")) is False
    assert hparams.Selection().wants_metric(("sys", "")) is True
    assert hparams.Selection().wants_metric(("sys/gpu", "train")) is False
    with pytest.raises(ValueError):
        hparams.Selection(hparams="some")

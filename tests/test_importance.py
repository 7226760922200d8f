"""``runsmon table --importance``: the statistics, the ranking on runs whose answer
is known, the optional forest, and the command line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from runsmon import importance
from runsmon.cli import main
from sample_projects import lr_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the statistics ---------------------------------------------------------------


def _spearman_without_ties(x, y) -> float:
    """1 - 6 sum d² / (n (n² - 1)): the textbook form, exact without ties."""
    n = len(x)
    rx = np.argsort(np.argsort(x)) + 1
    ry = np.argsort(np.argsort(y)) + 1
    return 1 - 6 * float(((rx - ry) ** 2).sum()) / (n * (n * n - 1))


def test_spearman_without_ties_is_the_textbook_formula():
    rng = np.random.default_rng(1)
    for n in (3, 5, 20, 101):
        x, y = rng.normal(size=n), rng.normal(size=n)
        assert importance.spearman(x, y) == pytest.approx(_spearman_without_ties(x, y), abs=1e-12)
    assert importance.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert importance.spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)


def test_average_ranks_share_ties():
    assert importance.average_ranks([5, 5, 5]).tolist() == [2.0, 2.0, 2.0]
    assert importance.average_ranks([3, 1, 2, 1, 3]).tolist() == [4.5, 1.5, 3.0, 1.5, 4.5]
    assert importance.average_ranks([]).tolist() == []


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    for trial in range(200):
        n = int(rng.integers(3, 60))
        # Few distinct values on both sides: many ties.
        x = rng.integers(0, 1 + trial % 6, size=n).astype(float)
        y = np.round(rng.normal(size=n), trial % 3)
        ours = importance.spearman(x, y)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns of a side with one value
            theirs = stats.spearmanr(x, y).statistic
        if math.isnan(theirs):
            assert ours is None, (x, y)
        else:
            assert ours == pytest.approx(theirs, abs=1e-12), (x, y)


def test_eta_is_the_anova_share_of_variance():
    rng = np.random.default_rng(3)
    for k in (2, 3, 5):
        labels = rng.integers(0, k, size=40)
        y = labels * 0.3 + rng.normal(size=40)
        groups = [y[labels == g] for g in range(k)]
        within = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
        total = float(((y - y.mean()) ** 2).sum())
        assert importance.eta([f"v{v}" for v in labels], y) == pytest.approx(
            math.sqrt(1 - within / total), abs=1e-12
        )
    # Two groups: eta is the absolute point-biserial (Pearson) correlation.
    flags = rng.random(30) < 0.5
    y = rng.normal(size=30) + flags
    assert importance.eta(list(flags), y) == pytest.approx(
        abs(np.corrcoef(flags.astype(float), y)[0, 1]), abs=1e-12
    )
    assert importance.eta(["a", "b"], [1.0, 1.0]) is None


def test_eta_matches_scipy_f_oneway():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    for trial in range(50):
        k, n = 2 + trial % 4, 30 + trial
        labels = rng.integers(0, k, size=n)
        labels[:k] = np.arange(k)  # every group has a run
        y = rng.normal(size=n) + 0.2 * labels
        f = stats.f_oneway(*(y[labels == g] for g in range(k))).statistic
        eta2 = f * (k - 1) / (f * (k - 1) + (n - k))
        assert importance.eta(list(labels), y) ** 2 == pytest.approx(eta2, abs=1e-12)


def test_chance_is_what_noise_shows():
    """Over pure noise, the mean of rho² is 1 / (n - 1) and of eta² (k - 1) / (n - 1):
    the ``chance`` column and the runs a figure needs rest on these."""
    rng = np.random.default_rng(5)
    n, trials = 12, 3000
    rho2 = [importance.spearman(rng.normal(size=n), rng.normal(size=n)) ** 2 for _ in range(trials)]
    assert np.mean(rho2) == pytest.approx(1 / (n - 1), rel=0.08)
    labels = [i % 3 for i in range(n)]
    eta2 = [importance.eta(labels, rng.normal(size=n)) ** 2 for _ in range(trials)]
    assert np.mean(eta2) == pytest.approx(2 / (n - 1), rel=0.08)
    item = importance.Importance("x", "string", "eta", 0.5, runs=n, values=3)
    assert item.chance == pytest.approx(math.sqrt(2 / (n - 1)))
    assert item.needed == 19 and item.few
    number = importance.Importance("lr", "number", "spearman", -0.5, runs=10, values=10)
    assert number.needed == 10 and not number.few and number.strength == 0.5


# -- the ranking on runs whose answer is known --------------------------------------


def _known_rows(n: int, seed: int = 0) -> list[dict]:
    """loss depends on lr alone; acc on optimizer and augment, not on activation."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        optimizer = str(rng.choice(["adam", "sgd", "rmsprop"]))
        activation = str(rng.choice(["relu", "gelu", "tanh"]))
        augment = bool(rng.random() < 0.5)
        rows.append(
            {
                "lr": lr,
                "optimizer": optimizer,
                "activation": activation,
                "augment": augment,
                "epochs": 10,
                "loss": 1.0 - 0.2 * math.log10(lr) + rng.normal(0, 0.1),
                "acc": 0.6
                + {"adam": 0.1, "sgd": 0.0, "rmsprop": 0.05}[optimizer]
                + 0.03 * augment
                + rng.normal(0, 0.02),
            }
        )
    return rows


HPARAMS = ["activation", "augment", "epochs", "lr", "optimizer"]


def test_a_metric_of_lr_alone_ranks_lr_first():
    ranking = importance.rank(_known_rows(200), HPARAMS, "loss", forest_model=False)
    assert ranking.runs == 200
    by_name = {i.hparam: i for i in ranking.items}
    assert ranking.items[0].hparam == "lr"
    assert by_name["lr"].statistic == "spearman" and by_name["lr"].value < -0.8
    for name in ("activation", "augment", "optimizer"):
        item = by_name[name]
        assert item.statistic == "eta" and item.strength < 3 * item.chance, item
    assert by_name["augment"].kind == "bool" and by_name["optimizer"].kind == "string"
    assert by_name["epochs"].value is None and by_name["epochs"].note == "one value"
    assert ranking.items[-1].hparam == "epochs"  # no figure: last
    assert not ranking.warnings()


def test_a_category_that_matters_and_one_that_does_not():
    ranking = importance.rank(_known_rows(200), HPARAMS, "acc", forest_model=False)
    order = [i.hparam for i in ranking.items]
    by_name = {i.hparam: i for i in ranking.items}
    assert order[0] == "optimizer" and by_name["optimizer"].value > 0.8
    assert by_name["augment"].strength > 3 * by_name["augment"].chance
    assert order.index("augment") < order.index("activation")
    assert by_name["activation"].strength < 3 * by_name["activation"].chance
    assert by_name["lr"].strength < 3 * by_name["lr"].chance


def test_each_hparam_rests_on_the_runs_that_have_it_and_the_metric():
    rows = _known_rows(30)
    for row in rows[:5]:
        del row["augment"]
    rows[5]["loss"] = float("nan")
    rows[6]["loss"] = float("inf")
    del rows[7]["loss"]
    rows[8]["loss"] = None
    ranking = importance.rank(rows, HPARAMS, "loss", forest_model=False)
    by_name = {i.hparam: i for i in ranking.items}
    assert ranking.runs == 26
    assert by_name["lr"].runs == 26 and by_name["augment"].runs == 21
    # 21 runs are enough for a number or a boolean, 26 for a category of 3 values.
    assert not ranking.warnings()
    few = importance.rank(rows[:12], HPARAMS, "loss", forest_model=False)
    assert few.runs == 8
    (text,) = few.warnings()
    assert text.startswith("warning: too few runs with loss for a figure to stand out"), text
    assert "lr (8 of 10)" in text and {i.hparam: i for i in few.items}["augment"].runs == 3
    assert "optimizer (8 of 19 for 3 values)" in text, text


def test_hparams_without_a_figure_say_why():
    rows = [{"name": f"r{i}", "one": 1, "two": i % 2, "m": float(i % 3)} for i in range(6)]
    rows += [{"name": "x", "one": 1, "two": 0, "m": float("nan")}]
    flat = [{"s": "a" if i % 2 else "b", "m": 1.0} for i in range(6)]
    ranking = importance.rank(rows, ["name", "one", "two", "gone"], "m", forest_model=False)
    notes = {i.hparam: i.note for i in ranking.items if i.value is None}
    assert notes == {"name": "one run per value", "one": "one value", "gone": "no run has it"}
    assert importance.rank(flat, ["s"], "m", False).items[0].note == "the metric has one value"
    two = importance.rank(rows[:2], ["two"], "m", False).items[0]
    assert two.value is None and two.note == "2 runs"
    text = importance.render_text(ranking)
    assert "no figure: " in text and "name (one run per value)" in text


def test_mixed_values_are_judged_as_text():
    rows = [{"h": ["1", 2, True][i % 3], "m": float(i % 3) + 0.01 * i} for i in range(30)]
    item = importance.rank(rows, ["h"], "m", forest_model=False).items[0]
    assert item.kind == "string" and item.statistic == "eta" and item.values == 3
    assert item.value > 0.9


# -- the forest -----------------------------------------------------------------------


@pytest.mark.slow
def test_the_forest_sees_what_matters():
    pytest.importorskip("sklearn")
    rows = _known_rows(150)
    loss = importance.rank(rows, HPARAMS, "loss")
    assert loss.has_forest and loss.forest_r2 > 0.5
    scores = {i.hparam: i.forest for i in loss.items}
    assert max(scores, key=lambda h: scores[h] or -1) == "lr"
    assert scores["activation"] < 0.05 and scores["optimizer"] < 0.05
    acc = importance.rank(rows, HPARAMS, "acc")
    scores = {i.hparam: i.forest for i in acc.items}
    assert scores["optimizer"] > scores["augment"] > scores["activation"]
    assert scores["activation"] < 0.05 < scores["augment"]
    assert "forest" in importance.render_csv(acc).splitlines()[0].split(",")
    assert "held-out R²" in importance.render_text(acc)
    # The same runs give the same figures.
    again = importance.rank(rows, HPARAMS, "acc")
    assert [i.forest for i in again.items] == [i.forest for i in acc.items]


def test_without_scikit_learn_the_forest_column_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn fails
    ranking = importance.rank(_known_rows(50), HPARAMS, "loss")
    assert not ranking.has_forest and all(i.forest is None for i in ranking.items)
    assert ranking.notes() == [f"no forest column: {importance.EXTRA_NOTE}"]
    text = importance.render_text(ranking)
    assert "forest" not in text.splitlines()[1]
    assert text.splitlines()[-1] == f"no forest column: {importance.EXTRA_NOTE}"
    assert "forest" not in importance.render_csv(ranking).splitlines()[0]
    assert all("forest" not in o for o in json.loads(importance.render_json(ranking)))


def test_the_forest_needs_ten_runs():
    pytest.importorskip("sklearn")
    ranking = importance.rank(_known_rows(9), HPARAMS, "loss")
    assert not ranking.has_forest and "needs 10 runs" in ranking.forest_note


# -- the command line -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("sweep"))
    lr_sweep.make(root)
    return root


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["table", *args])
    return code, out.getvalue(), err.getvalue()


def _ranked(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("---")))
    return [line.split()[0] for line in lines[start + 1 :] if line and ":" not in line]


def test_cli_ranks_the_sweeps_hparams(sweep):
    code, out, err = _cli(sweep, "--importance", "val#loss")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "val#loss: 40 runs"
    assert lines[1].split()[:7] == [
        "hparam", "kind", "statistic", "value", "strength", "chance", "runs"
    ]  # fmt: skip
    assert _ranked(out)[0] == "lr"
    lr = lines[3].split()
    assert lr[:3] == ["lr", "number", "spearman"] and float(lr[3]) < -0.9 and lr[6] == "40"
    assert "no figure: epochs (one value)" in lines
    code, out, err = _cli(sweep, "--importance", "val#acc")
    assert code == 0, err
    ranked = _ranked(out)
    assert ranked[0] == "optimizer" and ranked.index("augment") < ranked.index("activation")


def test_cli_formats_and_output_file(sweep, tmp_path):
    code, out, err = _cli(sweep, "--importance", "val#loss", "--format", "csv")
    assert code == 0, err
    records = list(csv.DictReader(io.StringIO(out)))
    assert records[0]["hparam"] == "lr" and float(records[0]["value"]) < -0.9
    assert {r["hparam"] for r in records} == {
        "lr", "optimizer", "augment", "seed", "activation", "epochs"
    }  # fmt: skip
    epochs = next(r for r in records if r["hparam"] == "epochs")
    assert epochs["value"] == epochs["chance"] == "" and epochs["note"] == "one value"
    assert epochs["runs"] == "40"
    assert "val#loss" not in out  # data only: the notes go to stderr
    target = tmp_path / "importance.json"
    code, out, err = _cli(sweep, "--importance", "val#acc", "-o", str(target))
    assert code == 0 and out == "", err
    records = json.loads(target.read_text())
    assert records[0]["hparam"] == "optimizer" and records[0]["statistic"] == "eta"
    assert records[0]["runs"] == 40 and 0.7 < records[0]["strength"] <= 1


def test_cli_warns_below_the_runs_a_figure_needs(sweep):
    code, out, err = _cli(sweep, "--importance", "val#acc", "--limit", "8")
    assert code == 0, err
    assert out.splitlines()[0] == "val#acc: 8 runs"
    warning = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "optimizer (8 of 10)" in warning[0], out
    code, out, err = _cli(sweep, "--importance", "val#acc", "--limit", "8", "--format", "json")
    assert code == 0 and json.loads(out)
    assert "runsmon table: warning: too few runs with val#acc" in err


def test_cli_mistakes_are_one_line(sweep):
    code, out, err = _cli(sweep, "--importance", "accuracy")
    assert code == 2 and out == ""
    assert err.strip() == (
        "runsmon table: error: --importance: no metric 'accuracy' "
        "(metrics: val#acc, val#loss, time)"
    )
    code, _, err = _cli(sweep, "--importance", "val#acc", "--sort", "lr")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--sort" in err


def test_cli_names_metrics_as_the_table_does(tmp_path):
    from sample_projects.layouts import mlflow_store

    _ = mlflow_store.make(str(tmp_path))
    for metric in ("val/loss", "loss", "time"):
        code, out, err = _cli(str(tmp_path), "--importance", metric, "--format", "json")
        assert code == 0, err
        assert {r["hparam"] for r in json.loads(out)} >= {"lr", "optimizer"}


def test_cli_without_scikit_learn(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    code, out, err = _cli(sweep, "--importance", "val#loss")
    assert code == 0, err
    assert "forest" not in out.splitlines()[1]
    assert out.splitlines()[-1] == f"no forest column: {importance.EXTRA_NOTE}"


@pytest.mark.slow
def test_console_script_runs_it(sweep):
    done = subprocess.run(
        [sys.executable, "-m", "runsmon", "table", sweep, "--importance", "val#loss"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _ranked(done.stdout)[0] == "lr"

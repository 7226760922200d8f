"""Any flags YAML or JSON can express reach TensorBoard's HParams dashboard.

Each example writes one run (a Guild run with YAML flags, or a directory run
with a ``flags.json``) into one runs tree, syncs, and asks one TensorBoard
(started once for the module) for ``session_groups``, with and without the
dashboard's filters: both must answer and list the run with every hparam.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from guild_fake import make_guild_run
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tb import TensorBoardProcess

from runsmon import RunsMonitor
from runsmon.run import flatten_flags
from runsmon.sources import DirRuns, GuildRuns, combine
from runsmon.testing import encode_yaml

# Every test here shows its examples in one TensorBoard (the `world` fixture).
pytestmark = pytest.mark.tb

SPECIAL_INTS = st.sampled_from([2**53 + 1, 2**64 + 1, -(2**70), 10**30, 0, -1])
SPECIAL_FLOATS = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324])
ODD_KEYS = st.sampled_from(["", "a/b", "dot.ted", "with space", "new\nline", "ünï", "日本", "\t"])


def _leaves(dates: bool) -> st.SearchStrategy[Any]:
    base = [
        st.none(),
        st.booleans(),
        st.integers(),
        SPECIAL_INTS,
        st.floats(allow_nan=True, allow_infinity=True),
        SPECIAL_FLOATS,
        st.text(max_size=30),
    ]
    if dates:
        base += [
            st.dates(),
            st.datetimes(min_value=datetime.datetime(1900, 1, 1)).map(
                lambda d: d.replace(microsecond=0)
            ),
        ]
    return st.one_of(*base)


def _flags(dates: bool) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.one_of(st.text(max_size=12), ODD_KEYS)
    values = st.recursive(
        _leaves(dates),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)
        ),
        max_leaves=12,
    )
    return st.dictionaries(keys, values, max_size=8)


YAML_FLAGS = _flags(dates=True)
JSON_FLAGS = _flags(dates=False)


class World:
    """One runs tree (Guild runs and directory runs), one logdir, one TensorBoard."""

    def __init__(self, root: Path, tb: TensorBoardProcess) -> None:
        self.guild = root / "guild"
        self.dirs = root / "dirs"
        self.tb = tb
        source = combine([GuildRuns(str(self.guild), settle=0), DirRuns(str(self.dirs))])
        self.monitor = RunsMonitor(str(root / "logdir"), source, watch=False)

    def add_yaml(self, flags: dict[str, Any]) -> str:
        run_id = uuid.uuid4().hex
        make_guild_run(self.guild, run_id, flags, scalars={})
        return run_id

    def add_json(self, flags: dict[str, Any]) -> str:
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        path = self.dirs / run_id
        path.mkdir()
        (path / "flags.json").write_text(json.dumps(flags))
        old = 1_600_000_000
        os.utime(path / "flags.json", (old, old))  # at rest: ended
        return run_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("properties")
    for name in ("guild", "dirs", "logdir"):
        (root / name).mkdir()
    # Seeds, so each source finds its kind of run from the start.
    make_guild_run(root / "guild", "5eed" * 8, {"lr": 0.1}, scalars={})
    with TensorBoardProcess(root / "logdir", load_fast=False) as tb:
        yield World(root, tb)


def _check(world: World, run_id: str, expected: dict[str, Any]) -> None:
    world.monitor.run_once()
    name = world.monitor.run_names[run_id]
    tb = world.tb
    row = tb.wait_for(lambda t: name in t, timeout=30, what=f"run {name!r} listed")[name]
    assert set(row["hparams"]) == set(expected)
    for key, value in expected.items():
        if isinstance(value, bool) or (isinstance(value, str) and value):
            got = row["hparams"][key]
            assert got == value or got == str(value).lower() or got == str(value), (key, got)
    # The dashboard's filters, built from the experiment as it is now.
    exp = tb.wait_for(
        lambda e: set(expected) <= {h["name"] for h in e.get("hparamInfos", [])},
        fetch=tb.experiment,
        timeout=30,
        what="the experiment holds the run's hparams",
    )
    filtered = tb.table(tb.dashboard_filters(exp))
    assert name in filtered
    assert set(filtered) == set(tb.table())


COMMON = settings(
    max_examples=13,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # An example costs a TensorBoard reload: a failure is reported as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


@COMMON
@given(flags=YAML_FLAGS)
def test_any_yaml_flags_reach_the_dashboard(world: World, flags: dict[str, Any]) -> None:
    run_id = world.add_yaml(flags)
    # As Guild wrote them (YAML sorts mapping keys) and as YAML reads them back.
    _check(world, run_id, flatten_flags(yaml.safe_load(encode_yaml(flags))))


@COMMON
@given(flags=JSON_FLAGS)
def test_any_json_flags_reach_the_dashboard(world: World, flags: dict[str, Any]) -> None:
    run_id = world.add_json(flags)
    _check(world, run_id, flatten_flags(json.loads(json.dumps(flags))))

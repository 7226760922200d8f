"""Shared fixtures: a factory of real TensorBoard processes, test options and markers.

A test that uses a fixture of :data:`TB_FIXTURES` (directly or through another
fixture) is marked ``tb`` here, so ``make test-fast`` (``-m "not tb and not
browser and not soak and not slow"``) leaves it out without anyone
remembering to mark it.  A test that starts a :class:`tb.TensorBoardProcess`
itself must be marked ``tb``: an unmarked one fails, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from tb import TensorBoardProcess

TensorBoardFactory = Callable[..., TensorBoardProcess]

#: Fixtures that start TensorBoard: the tests using them are marked ``tb``.
TB_FIXTURES = frozenset({"tensorboard", "tensorboard_session"})
#: Doctest files (which cannot carry a marker) marked ``slow``: this one has
#: MLflow and wandb write a project each.
SLOW_DOCTESTS = frozenset({"docs/sources.md"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.tb)
        if item.nodeid.partition("::")[0] in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)


_marked_tb = True  # whether the test being set up may start TensorBoard
_start = TensorBoardProcess.start


def _checked_start(self: TensorBoardProcess, *args: object, **kwargs: object) -> object:
    if not _marked_tb:
        pytest.fail(
            "this test starts TensorBoard: mark it @pytest.mark.tb or use the tensorboard fixture"
        )
    return _start(self, *args, **kwargs)


TensorBoardProcess.start = _checked_start  # type: ignore[method-assign]


def pytest_runtest_setup(item: pytest.Item) -> None:
    global _marked_tb
    _marked_tb = item.get_closest_marker("tb") is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options for the end-to-end tests."""
    group = parser.getgroup("runsmon")
    group.addoption(
        "--soak-seconds",
        type=int,
        default=10,
        help="how long soak tests keep runsmon and TensorBoard running (default 10)",
    )
    group.addoption(
        "--screenshot",
        default=None,
        metavar="PATH",
        help="where UI tests save a screenshot of the dashboard (default: none)",
    )


def _factory() -> Iterator[TensorBoardFactory]:
    started: list[TensorBoardProcess] = []

    def start(
        logdir: str | os.PathLike[str], load_fast: bool | None = False, **kwargs: object
    ) -> TensorBoardProcess:
        tb = TensorBoardProcess(logdir, load_fast=load_fast, **kwargs)  # type: ignore[arg-type]
        started.append(tb)
        return tb.start()

    try:
        yield start
    finally:
        for tb in started:
            tb.close()


@pytest.fixture
def tensorboard() -> Iterator[TensorBoardFactory]:
    """``tensorboard(logdir, load_fast=...)`` starts one; all are stopped at teardown."""
    yield from _factory()


@pytest.fixture(scope="session")
def tensorboard_session() -> Iterator[TensorBoardFactory]:
    """Like ``tensorboard``, but processes live until the end of the test session."""
    yield from _factory()

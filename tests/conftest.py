"""Shared fixtures: a factory of real TensorBoard processes, and test options."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from tb import TensorBoardProcess

TensorBoardFactory = Callable[..., TensorBoardProcess]


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

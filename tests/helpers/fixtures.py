"""Fixtures every folder may use (registered by tests/conftest.py next to the stack plugin)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.helpers.cli import RunCli, make_run_cli
from tests.stack.pg_server import PostgresServer


@pytest.fixture
def new_database(pg: PostgresServer) -> Iterator[Callable[[], str]]:
    """Names of databases that do not exist yet in `pg` (restore creates them); each dropped after the test, so a
    failed restore never leaves one for the next test to trip over."""
    names: list[str] = []

    def make() -> str:
        names.append(f"restored_{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield make
    for name in names:
        pg.drop_database(name)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """`drtool --json ARGS` in this process: (exit code, JSON events). In-process, so the settings a fixture put in
    the environment with `monkeypatch` apply."""
    return make_run_cli(capsys)

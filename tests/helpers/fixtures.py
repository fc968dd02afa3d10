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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "own_servers(*fixtures): this module's tests judge servers of their own; "
                                       "asking for the session's shared fixtures named here is an error")


@pytest.hookimpl(trylast=True)  # after tests/audit/conftest.py has marked its items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked `own_servers("minio_pair", ...)` (tests/audit, and modules whose verdicts cover every bucket of
    a pair) must not reach the session's shared server of that name: state other files left there would decide it
    (shuffled seed 393396751 found tests/audit doing so). Judged on the fixtures a test asks for at collection, so a
    fixture that falls back to the shared server on purpose (own_minio_pair with DRTOOL_TEST_MINIO_* set) is not
    counted."""
    wrong = []
    for item in items:
        marker = item.get_closest_marker("own_servers")
        shared = sorted(set(marker.args) & set(getattr(item, "fixturenames", ()))) if marker else []
        if shared:
            wrong.append(f"  {item.nodeid}: {', '.join(shared)}")
    if wrong:
        raise pytest.UsageError("tests marked own_servers ask for shared servers (ask for own_minio_pair / "
                                "isolated_minio_pair / isolated_pg instead):\n" + "\n".join(wrong))

"""The `pg` fixture is a real PostgreSQL 15 that demands a password over TCP."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from tests.stack.pg_server import PostgresServer
from tests.stack.versions import POSTGRES_MAJOR


def test_server_version_is_postgres_15(pg: PostgresServer) -> None:
    with psycopg.connect(pg.admin_dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    if not os.environ.get("DRTOOL_TEST_PG_DSN"):
        assert str(row[0]).startswith(f"{POSTGRES_MAJOR}.")
    else:
        assert str(row[0]) == pg.server_version()


def test_pg_dump_matches_the_server_major_version(pg: PostgresServer) -> None:
    out = subprocess.run(
        [str(pg.bin_dir / "pg_dump"), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-1].split(".")[0] == pg.server_version().split(".")[0]


def test_password_is_required(pg: PostgresServer) -> None:
    if not os.environ.get("DRTOOL_TEST_PG_DSN"):
        assert pg.host == "127.0.0.1" and pg.password
    wrong = pg.dsn("postgres").replace(f":{pg.password}@", ":not-the-password@", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_create_database_returns_dsn_of_an_empty_database(pg: PostgresServer) -> None:
    name = "smoke_empty_db"
    pg.drop_database(name)
    dsn = pg.create_database(name)
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT current_database(), count(*) FROM information_schema.tables"
                " WHERE table_schema = 'public'"
            ).fetchone()
        assert row == (name, 0)
    finally:
        pg.drop_database(name)

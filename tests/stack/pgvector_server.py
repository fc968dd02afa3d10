"""A real PostgreSQL with the pgvector extension for the tests, from the PyPI wheel ``pgserver``.

Why it looks the way it does:
- Dify's pgvector backend keeps vectors in a Postgres with the ``vector`` extension; drtool's adapter must be
  tested against the real extension (HNSW, ``<=>``, jsonb), not a stand-in. The ``pgserver`` wheel carries
  PostgreSQL 16.2 with pgvector 0.6.2 (``vector.so`` and its SQL scripts inside ``pgserver/pginstall``); HNSW,
  which Dify's index uses, needs pgvector >= 0.5. No apt package, no Docker, no network at test time.
- pgserver's own Python launcher is not used: it picks its own folder, trusts local connections and runs the
  server as the calling user, and Postgres refuses root (sessions and CI run as root). The binaries it ships are
  started by ``tests.stack.pg_server.local_postgres`` instead, with that module's root handling (initdb through
  ``runuser -u postgres``, the postmaster under the postgres uid), a free loopback port and scram-sha-256
  password auth, exactly like the metadata Postgres of the ``pg`` fixture.
- Each test gets its own database (``PgvectorServer.create_database``) with the extension created in it, as a
  Dify operator's does, so tables named like Dify's never meet between tests.
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.stack.pg_server import PostgresServer, external_postgres, local_postgres
from tests.stack.process import StackStartError

__all__ = ["PgvectorDatabase", "PgvectorServer", "external_pgvector_server", "local_pgvector_server",
           "pgserver_bin_dir"]

MIN_PGVECTOR = (0, 5)  # HNSW indexes (Dify's `USING hnsw`) arrived in pgvector 0.5.0


def pgserver_bin_dir() -> Path:
    """pginstall/bin inside the installed ``pgserver`` wheel, found without importing it (its import probes
    the user's runtime folders and starts nothing we need)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise StackStartError("the PyPI package pgserver is not installed (pip install -e '.[dev]'), or set "
                              "DRTOOL_TEST_PGVECTOR_DSN to a Postgres with pgvector >= 0.5")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


@dataclass(frozen=True)
class PgvectorDatabase:
    """One database of the server, with the ``vector`` extension, for one test."""

    server: PgvectorServer
    dbname: str

    @property
    def dsn(self) -> str:
        return self.server.pg.dsn(self.dbname)

    def settings(self, **overrides: Any) -> Any:
        """drtool.config.PgvectorSettings that reach this database as the superuser."""
        from drtool.config import PgvectorSettings

        pg = self.server.pg
        values: dict[str, Any] = {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password,
                                  "database": self.dbname, "sslmode": "disable"}
        values.update(overrides)
        return PgvectorSettings(**values)

    def env(self) -> dict[str, str]:
        """The same as DRTOOL_* variables, for CLI runs."""
        pg = self.server.pg
        return {"DRTOOL_PGVECTOR_HOST": pg.host, "DRTOOL_PGVECTOR_PORT": str(pg.port),
                "DRTOOL_PGVECTOR_USER": pg.user, "DRTOOL_PGVECTOR_PASSWORD": pg.password,
                "DRTOOL_PGVECTOR_DATABASE": self.dbname, "DRTOOL_PGVECTOR_SSLMODE": "disable"}

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, **kwargs)

    def create_role(self, name: str, *, privileges: str = "") -> str:
        """A login role with a random password and, optionally, `GRANT <privileges> ON SCHEMA public`; returns
        the password. Dropped with the database's roles when the test ends (PgvectorServer.drop_database)."""
        password = secrets.token_urlsafe(12)
        with psycopg.connect(self.server.pg.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name),
                                                                          sql.Literal(password)))
        self.server.roles.append(name)
        if privileges:
            with self.connect(autocommit=True) as conn:
                conn.execute(sql.SQL("GRANT " + privileges + " ON SCHEMA public TO {}").format(sql.Identifier(name)))
        return password


@dataclass
class PgvectorServer:
    """A Postgres with pgvector >= 0.5 that tests may create and drop databases in."""

    pg: PostgresServer
    pgvector_version: str
    server_version: str
    roles: list[str] = field(default_factory=list)

    def create_database(self, name: str) -> PgvectorDatabase:
        self.pg.create_database(name)
        with psycopg.connect(self.pg.dsn(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return PgvectorDatabase(self, name)

    def drop_database(self, name: str) -> None:
        self.pg.drop_database(name)
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as conn:
            for role in self.roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        self.roles.clear()


def _describe(pg: PostgresServer) -> PgvectorServer:
    """Check that the extension is available in a version with HNSW, and report both versions."""
    with psycopg.connect(pg.admin_dsn, connect_timeout=10) as conn:
        server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if row is None:
        raise StackStartError(f"the server at {pg.host}:{pg.port} has no pgvector extension available")
    version = str(row[0])
    if _version_tuple(version) < MIN_PGVECTOR:
        raise StackStartError(f"pgvector {version} has no HNSW index (Dify's); >= 0.5 is needed")
    return PgvectorServer(pg, version, server)


@contextmanager
def local_pgvector_server() -> Iterator[PgvectorServer]:
    """Run pgserver's PostgreSQL + pgvector on a free loopback port for the block, then stop it."""
    with local_postgres(pgserver_bin_dir()) as pg:
        yield _describe(pg)


def external_pgvector_server(admin_dsn: str) -> PgvectorServer:
    """An existing Postgres with pgvector from its superuser DSN (DRTOOL_TEST_PGVECTOR_DSN)."""
    return _describe(external_postgres(admin_dsn))

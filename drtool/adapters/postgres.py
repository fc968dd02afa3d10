"""PostgreSQL through psycopg 3; pg_dump and pg_restore arrive with the snapshot commands."""

from __future__ import annotations

from typing import Any

import psycopg

from drtool.config import PostgresSettings
from drtool.errors import AuthError, DrtoolError, NotFoundError, UnavailableError


def conninfo(pg: PostgresSettings, *, database: str | None = None) -> dict[str, Any]:
    """Connection keywords; the password travels in the keywords, never in a DSN string or argv."""
    params: dict[str, Any] = {
        "host": pg.host, "port": pg.port, "user": pg.user, "dbname": database or pg.database,
        "sslmode": pg.sslmode, "connect_timeout": pg.connect_timeout, "application_name": "drtool",
    }
    if pg.password:
        params["password"] = pg.password
    return params


def connect(pg: PostgresSettings, *, database: str | None = None, autocommit: bool = False) -> psycopg.Connection:
    try:
        return psycopg.connect(**conninfo(pg, database=database), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise translate_error(exc, pg) from None


def translate_error(exc: Exception, pg: PostgresSettings) -> DrtoolError:
    system = f"postgres {pg.host}:{pg.port}"
    text = str(exc)
    lowered = text.lower()
    sqlstate = getattr(exc, "sqlstate", None)
    auth_failed = "password authentication failed" in lowered or "no password supplied" in lowered
    if sqlstate in ("28P01", "28000") or auth_failed:
        return AuthError(f"authentication failed for user {pg.user}",
                         hint="check postgres.user and postgres.password", system=system)
    if sqlstate == "42501" or "permission denied" in lowered:
        return AuthError(f"permission denied: {text.strip()}", hint="grant the role the privileges in docs/security.md",
                         system=system)
    if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return NotFoundError(f"database {pg.database} does not exist", hint="check postgres.database", system=system)
    return UnavailableError(f"cannot connect: {text.strip().splitlines()[0] if text.strip() else type(exc).__name__}",
                            hint="check postgres.host and postgres.port, and that the server accepts connections",
                            system=system)


def check(pg: PostgresSettings) -> dict[str, Any]:
    with connect(pg, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        has_dify = conn.execute("SELECT to_regclass('public.datasets') IS NOT NULL").fetchone()[0]
    return {"version": version, "database": pg.database, "dify_tables": bool(has_dify)}

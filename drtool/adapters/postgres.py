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


# --- snapshots (issue 3): pg_dump / pg_restore and the exported snapshot ----------------------------------------

def subprocess_env(pg: PostgresSettings, *, database: str | None = None, password: str | None = None,
                   host: str | None = None, port: int | None = None, user: str | None = None) -> dict[str, str]:
    """Environment for pg_dump/pg_restore/psql: every connection fact in PG* variables, nothing in argv.

    argv is visible to every user of the machine (ps, /proc); the environment of a process is not.
    """
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({
        "PGHOST": host or pg.host, "PGPORT": str(port or pg.port), "PGUSER": user or pg.user,
        "PGDATABASE": database or pg.database, "PGSSLMODE": pg.sslmode,
        "PGCONNECT_TIMEOUT": str(pg.connect_timeout), "PGAPPNAME": "drtool",
    })
    secret = password if password is not None else pg.password
    if secret:
        env["PGPASSWORD"] = secret
    elif "PGPASSFILE" in os.environ:
        env["PGPASSFILE"] = os.environ["PGPASSFILE"]
    return env


def find_pg_tool(name: str, *, server_major: int | None, bin_dir: str | None) -> str:
    """pg_dump / pg_restore: from snapshot.pg_bin_dir, else the server's major version's folder, else PATH."""
    import shutil
    from pathlib import Path

    from drtool.errors import ConfigError

    if bin_dir:
        path = Path(bin_dir) / name
        if not path.is_file():
            raise ConfigError(f"{name} not found in {bin_dir} (snapshot.pg_bin_dir)",
                              hint="point snapshot.pg_bin_dir at the PostgreSQL bin folder")
        return str(path)
    if server_major:
        path = Path(f"/usr/lib/postgresql/{server_major}/bin") / name
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found", hint="install the PostgreSQL client tools or set snapshot.pg_bin_dir")
    return found


def tool_version(path: str) -> tuple[int, str]:
    """(major, full text) of a PostgreSQL client tool, from `<tool> --version`."""
    import re
    import subprocess

    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if not match:
        raise UnavailableError(f"cannot tell the version of {path} (it printed {out.strip()[:80]!r})")
    return int(match.group(1)), out.strip()


def check_tool_not_older(tool: str, tool_major: int, tool_text: str, server_major: int, server_text: str) -> None:
    """pg_dump refuses (or worse, silently misses features of) a newer server: fail first, naming both versions."""
    from drtool.errors import ConfigError

    if tool_major < server_major:
        raise ConfigError(
            f"{tool} is PostgreSQL {tool_major} ({tool_text}) but the server is PostgreSQL {server_text}: "
            f"{tool} must be at least as new as the server",
            hint=f"install postgresql-client-{server_major} or point snapshot.pg_bin_dir at its bin folder")


def server_major_of(version_num: int) -> int:
    return version_num // 10000


def open_exported_snapshot(pg: PostgresSettings) -> tuple[psycopg.Connection, str, Any, int, str, Any]:
    """A REPEATABLE READ, READ ONLY transaction whose snapshot pg_dump can share.

    Returns (connection, snapshot id, fence, server_version_num, server_version, window_start). The fence is
    clock_timestamp() of the statement that takes the snapshot, so it is at or just after the snapshot (never
    before: now() would be the transaction's start, which precedes the snapshot and would leave rows committed in
    between without their objects). window_start is the database clock just before that statement, so the
    snapshot lies in [window_start, fence] (milliseconds apart unless the server is starved of CPU).
    The connection must stay open (and idle in that transaction) until pg_dump has started using the snapshot.
    """
    conn = connect(pg, autocommit=True)
    try:
        start_row = conn.execute("SELECT clock_timestamp()").fetchone()
        conn.autocommit = False
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), clock_timestamp(), current_setting('server_version_num')::int,"
            " current_setting('server_version')").fetchone()
    except psycopg.Error as exc:
        conn.close()
        raise translate_error(exc, pg) from None
    assert row is not None and start_row is not None
    return conn, row[0], row[1], row[2], row[3], start_row[0]


def iter_column_values(conn: psycopg.Connection, column: tuple[str, ...], *, batch: int = 5000) -> Any:
    """Distinct non-null values of one [schema.]table.column, streamed by a server-side cursor.

    Yields nothing (and the caller is told by `table_exists`) when the table is absent: older Dify versions lack
    some tables.
    """
    from psycopg import sql

    *table, col = column
    ident = sql.Identifier(*table)
    query = sql.SQL("SELECT DISTINCT {col} FROM {table} WHERE {col} IS NOT NULL").format(
        col=sql.Identifier(col), table=ident)
    with conn.cursor(name=f"drtool_refs_{'_'.join(column)}"[:60]) as cur:
        cur.itersize = batch
        cur.execute(query)
        for (value,) in cur:
            yield str(value)


def column_exists(conn: psycopg.Connection, column: tuple[str, ...]) -> bool:
    *table, col = column
    qualified = ".".join(f'"{t}"' for t in table)
    row = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
        (qualified, col)).fetchone()
    return row is not None

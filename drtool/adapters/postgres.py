"""PostgreSQL through psycopg 3, and the pg_dump / pg_restore programs that snapshot and restore run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drtool.config import PostgresSettings
from drtool.errors import AuthError, ConfigError, DrtoolError, NotFoundError, UnavailableError


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


# Debian's and Ubuntu's layout (also the official postgres images'): one folder per installed major, side by side.
PG_LIB_ROOT = "/usr/lib/postgresql"


def installed_majors(name: str, *, root: str = PG_LIB_ROOT) -> list[tuple[int, str]]:
    """(major, path) of every `<root>/<major>/bin/<name>`, newest first."""
    found: list[tuple[int, str]] = []
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return found
    for entry in entries:
        tool = entry / "bin" / name
        if entry.name.isdigit() and tool.is_file():
            found.append((int(entry.name), str(tool)))
    return sorted(found, reverse=True)


def find_pg_tool(name: str, *, server_major: int | None, bin_dir: str | None, min_major: int | None = None,
                 root: str = PG_LIB_ROOT) -> str:
    """pg_dump / pg_restore, in this order:

    1. snapshot.pg_bin_dir when it is set: the operator's choice is used as it is, and the caller's version check
       refuses it when it is too old for the server (or for the dump), instead of drtool quietly taking another;
    2. `/usr/lib/postgresql/<server major>/bin`: the same major as the server, when it is at least `min_major`
       (pg_restore must be at least as new as the pg_dump that wrote the archive). A dump written by the server's
       own major can be restored by that major's pg_restore too, which a newer pg_dump's archive cannot;
    3. else the newest `/usr/lib/postgresql/<N>/bin`: a newer pg_dump reads every older server, and if even the
       newest is too old, the caller's check names it and the version to install;
    4. else PATH (Alpine, Homebrew, a source install).
    """
    if bin_dir:
        path = Path(bin_dir) / name
        if not path.is_file():
            raise ConfigError(f"{name} not found in {bin_dir} (snapshot.pg_bin_dir)",
                              hint="point snapshot.pg_bin_dir at the PostgreSQL bin folder")
        return str(path)
    installed = installed_majors(name, root=root)
    for major, path_text in installed:
        if server_major and major == server_major and major >= (min_major or 0):
            return path_text
    if installed:
        return installed[0][1]
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found", hint="install the PostgreSQL client tools or set snapshot.pg_bin_dir")
    return found


def tool_version(path: str) -> tuple[int, str]:
    """(major, full text) of a PostgreSQL client tool, from `<tool> --version`."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if not match:
        raise UnavailableError(f"cannot tell the version of {path} (it printed {out.strip()[:80]!r})")
    return int(match.group(1)), out.strip()


def check_tool_not_older(tool: str, tool_major: int, tool_text: str, server_major: int, server_text: str, *,
                         path: str | None = None) -> None:
    """Refuse a pg_dump older than the server, naming both versions and what to install.

    pg_dump itself refuses a newer server ("aborting because of server version mismatch"), but only after drtool
    has opened the exported snapshot and started the upload; checked first, the run stops with nothing written.
    """
    if tool_major < server_major:
        where = f" at {path}" if path else ""
        raise ConfigError(
            f"{tool}{where} is PostgreSQL {tool_major} ({tool_text}) but the server is PostgreSQL {server_text}: "
            f"{tool} must be at least as new as the server",
            hint=f"install the PostgreSQL {server_major} client tools (Debian/Ubuntu: postgresql-client-{server_major}"
                 f" from the PGDG apt repository; they also read every older server) or point snapshot.pg_bin_dir "
                 f"at a PostgreSQL {server_major} (or newer) bin folder")


def check_pg_restore_reads(path: str, dump_major: int, *, install_major: int | None = None) -> None:
    """Refuse a pg_restore older than the pg_dump that wrote the archive, naming both and what to install.

    An older pg_restore stops with "unsupported version (1.16) in file header", which would read as a damaged
    snapshot (verify's exit 4) when only the client is too old (a setting: exit 2).
    """
    tool_major, tool_text = tool_version(path)
    if tool_major < dump_major:
        wanted = max(dump_major, install_major or 0)
        raise ConfigError(f"pg_restore at {path} is PostgreSQL {tool_major} ({tool_text}) but the dump was written "
                          f"by pg_dump {dump_major}: an older pg_restore cannot read it; nothing was changed",
                          hint=f"install the PostgreSQL {wanted} client tools (postgresql-client-{wanted}) or point "
                               f"snapshot.pg_bin_dir at a PostgreSQL {dump_major} (or newer) bin folder")


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

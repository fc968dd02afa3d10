"""`drtool restore`, the database: where the dump goes (--target-db, --target-plugin-db), every check before
anything changes, then pg_restore in a single transaction.

A dump is downloaded once into an anonymous file, its checksum and `pg_restore --list` checked, before the first
object is copied; the database is marked as drtool's work in progress while pg_restore runs, so a re-run after a
kill replaces it without --yes.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from drtool.adapters import postgres as pga
from drtool.config import PostgresSettings, Settings
from drtool.core import manifest as mf
from drtool.errors import ConfigError, UnavailableError, UsageError, VerificationFailed
from drtool.ops.snapshot import databases as snapshot_databases
from drtool.ops.snapshot.catalog import DecryptingReader, SnapshotInfo, open_artifact, plaintext
from drtool.ops.snapshot.destination import Destination
from drtool.ops.snapshot.restore_result import RestoreResult
from drtool.redact import register_secret

log = logging.getLogger("drtool.restore")


@dataclass
class Target:
    pg: PostgresSettings
    dbname: str

    @property
    def label(self) -> str:
        return f"{self.pg.host}:{self.pg.port}/{self.dbname}"


def parse_target(settings: Settings, text: str) -> Target:
    """A DSN (URL or key=value) or a bare database name on the configured server; the password may come from
    postgres.password or PGPASSWORD so it need not be typed on the command line."""
    if "=" not in text and "://" not in text:
        params: dict[str, Any] = {"dbname": text}
    else:
        try:
            params = conninfo_to_dict(text)
        except psycopg.ProgrammingError as exc:
            raise UsageError(f"--target-db is not a valid DSN: {str(exc).splitlines()[0]}") from None
    if not params.get("dbname"):
        raise UsageError("--target-db names no database", hint="e.g. postgresql://user@host:5432/dify_restore")
    base = settings.postgres
    password = params.get("password") or base.password or os.environ.get("PGPASSWORD")
    register_secret(password)
    pg = dataclasses.replace(base, host=params.get("host") or base.host, port=int(params.get("port") or base.port),
                             user=params.get("user") or base.user, password=password,
                             database=str(params["dbname"]), sslmode=params.get("sslmode") or base.sslmode)
    return Target(pg=pg, dbname=str(params["dbname"]))


def plugin_target(settings: Settings, text: str) -> Target:
    """--target-plugin-db (or the derived name): a bare name is on the plugin database's server
    (postgres.plugin_host/plugin_user, default the main one)."""
    return parse_target(snapshot_databases.plugin_settings(settings), text)

PENDING_PREFIX = "drtool: restoring snapshot "
PENDING_SUFFIX = " (incomplete)"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function for the pg_restore child: be killed when drtool dies (kill -9 included), so its
    transaction rolls back instead of committing behind a run that no longer exists (Linux PR_SET_PDEATHSIG).
    libc is looked up here, before the fork, so the child only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


@dataclass
class PreparedDump:
    """A database restore that passed every check: what remains is creating the database and running pg_restore
    on `dump`, a verified plaintext copy in an anonymous temporary file."""

    target: Target
    state: dict[str, Any]
    exists: bool
    tables: int
    tool: str
    dump: IO[bytes]
    slot: str = "database"  # the RestoreResult field that reports it (plugin_database for the plugin daemon's)


def prepare_database(settings: Settings, dest: Destination, info: SnapshotInfo, sums: dict[str, str],
                      target: Target, *, dry_run: bool, yes: bool, identities: list[Any] | None,
                      result: RestoreResult, stack: contextlib.ExitStack, db_meta: dict[str, Any] | None = None,
                      dump_name: str | None = None, slot: str = "database") -> PreparedDump | None:
    """Every check of the database restore, before anything is changed anywhere. None: nothing left to do (already
    restored, or a dry run; `result.database` says which)."""
    # The main database by default; the plugin daemon's (issue 13) with its own meta section, dump and result slot.
    db_meta = db_meta if isinstance(db_meta, dict) else info.meta.get("database", {})
    source_major = pga.server_major_of(int(db_meta.get("server_version_num") or 0))
    marker = f"drtool: restored from snapshot {info.id}"
    with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
        version_num = int(admin.execute("SELECT current_setting('server_version_num')::int").fetchone()[0])
        target_major = pga.server_major_of(version_num)
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                            (target.dbname,)).fetchone()
    if source_major and target_major < source_major:
        raise ConfigError(
            f"the dump comes from PostgreSQL {db_meta.get('server_version')} but the target server is "
            f"PostgreSQL {target_major}: a dump cannot be restored into an older major version",
            hint=f"restore into a PostgreSQL {source_major} (or newer) server")
    exists = row is not None
    state: dict[str, Any] = {"target": target.label, "exists": exists}
    setattr(result, slot, state)
    if exists and row[0] == marker:
        state["action"] = "already restored"
        return None
    # A restore killed after pg_restore committed but before the marker, or while pg_restore ran: the database is
    # drtool's own work in progress, so the re-run replaces it without --yes (the runbook says: run it again).
    interrupted = exists and bool(row[0]) and str(row[0]).startswith(PENDING_PREFIX) \
        and str(row[0]).endswith(PENDING_SUFFIX)
    if interrupted:
        state["interrupted_restore"] = str(row[0])
    tables = 0
    if exists:
        with pga.connect(target.pg, autocommit=True) as conn:
            tables = int(conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
                "('r','p','v','m','S') AND n.nspname NOT IN ('pg_catalog','information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%%'").fetchone()[0])
    state["tables_before"] = tables
    if tables and not yes and not interrupted:
        raise UsageError(f"target database {target.label} is not empty ({tables} relations); nothing was changed",
                         hint="pass --yes to replace its objects with the snapshot's (pg_restore --clean)")
    state["action"] = "replace" if tables else ("restore" if exists else "create and restore")
    if source_major and target_major > source_major:
        log.warning("restoring a PostgreSQL %s dump into PostgreSQL %s", source_major, target_major)
    if dry_run:
        return None
    dump_major = int(db_meta.get("pg_dump_major") or 0)
    tool = pga.find_pg_tool("pg_restore", server_major=target_major, bin_dir=settings.snapshot.pg_bin_dir,
                            min_major=dump_major)
    pga.check_pg_restore_reads(tool, dump_major, install_major=target_major)
    name = dump_name or info.meta.get("artifacts", {}).get("dump", mf.DUMP)
    # An anonymous file, handed to pg_restore as /dev/fd/N: a killed run leaves no copy of the dump on disk.
    tmp = stack.enter_context(tempfile.TemporaryFile(prefix="drtool-dump-", suffix=".dump"))  # noqa: SIM115
    raw = open_artifact(dest, info.id, name)
    stream = plaintext(raw, info, identities, f"{info.id}/{name}")
    while chunk := stream.read(1 << 20):
        tmp.write(chunk)
    if isinstance(stream, DecryptingReader):
        stream.finish()
    tmp.flush()
    if raw.sha256.hexdigest() != sums.get(name):
        raise VerificationFailed(f"snapshot {info.id}: {name} checksum mismatch (corrupted or truncated); nothing "
                                 "was changed", hint="run `drtool snapshots verify`; restore another snapshot")
    listing = subprocess.run([tool, "--list", f"/dev/fd/{tmp.fileno()}"], capture_output=True, check=False,
                             pass_fds=(tmp.fileno(),), preexec_fn=_die_with_parent())
    if listing.returncode != 0:
        lines = listing.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VerificationFailed(f"snapshot {info.id}: {name} is not a dump pg_restore can read "
                                 f"({lines[-1] if lines else 'exit ' + str(listing.returncode)}); nothing was "
                                 "changed", hint="run `drtool snapshots verify --deep`; restore another snapshot")
    return PreparedDump(target=target, state=state, exists=exists, tables=tables, tool=tool, dump=tmp, slot=slot)


def apply_database(prepared: PreparedDump, info: SnapshotInfo, *, no_owner: bool, result: RestoreResult) -> None:
    target, tmp = prepared.target, prepared.dump
    marker = f"drtool: restored from snapshot {info.id}"
    pending = f"{PENDING_PREFIX}{info.id}{PENDING_SUFFIX}"
    if not prepared.exists:  # only now: a refused restore must not leave an empty database behind
        with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))
    with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(target.dbname),
                                                                      sql.Literal(pending)))
    argv = [prepared.tool, "--single-transaction", "--exit-on-error", "--no-password", f"--dbname={target.dbname}"]
    if prepared.tables:
        argv += ["--clean", "--if-exists"]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    argv.append(f"/dev/fd/{tmp.fileno()}")
    tmp.seek(0)
    proc = subprocess.run(argv, capture_output=True, env=pga.subprocess_env(target.pg, database=target.dbname),
                          check=False, pass_fds=(tmp.fileno(),), preexec_fn=_die_with_parent())
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UnavailableError(f"pg_restore into {target.label} failed, nothing was changed (single transaction): "
                               f"{lines[-1] if lines else 'exit ' + str(proc.returncode)}",
                               hint="missing roles: pass --no-owner", system=f"postgres {target.pg.host}")
    with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(target.dbname),
                                                                      sql.Literal(marker)))
    prepared.state["action_done"] = prepared.state["action"]
    setattr(result, prepared.slot, prepared.state)

"""What a snapshot holds besides Dify's main database and files: the plugin daemon's database and storage (issue 13).

Why: Dify 1.x runs a plugin daemon with a database of its own (Dify's DB_PLUGIN_DATABASE, default `dify_plugin`).
Dify's docker-compose gives the daemon the api's DB_HOST, DB_PORT, DB_USERNAME and DB_PASSWORD and only another
database name (`DB_DATABASE: ${DB_PLUGIN_DATABASE:-dify_plugin}`, dify-plugin-daemon bdb5642a
internal/types/app/config.go), so one server, one set of credentials: `postgres.plugin_database` names it and
nothing else is needed. Every model provider, the embedding model's included, is a plugin: a Dify restored without
the daemon's rows (plugins, plugin_installations, ai_model_installations, ...) and its storage (the installed
packages under `plugin/`, plugin key-value state under `persistence/`) cannot embed or answer.

The two databases are separate, so one transaction cannot see both: each gets its own REPEATABLE READ transaction
and pg_export_snapshot(), opened back to back (milliseconds apart), and each its own pg_dump --snapshot. The pin
fence of the object versions is the later of the two fences, so no row of either database can point at an object
version "newer than the fence" (the same rule as for one database); meta.json records both fences.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from drtool.adapters import postgres as pga
from drtool.adapters import s3 as s3a
from drtool.config import PostgresSettings, Settings
from drtool.core import manifest as mf
from drtool.errors import ConfigError, DrtoolError, NotFoundError, UnavailableError, UsageError
from drtool.ops.snapshot.dump_upload import dump_worker  # the main dump's own worker: one upload path for both
from drtool.ops.snapshot.stores import plugin_in_main_manifest, plugin_prefixes

log = logging.getLogger("drtool.snapshot")

PLUGIN_DUMP = "plugin_db.dump"  # the plugin database's dump in a snapshot folder (`.age` when encrypted)
PLUGIN_META = "plugin_database"  # its section of meta.json; absent in snapshots taken before issue 13


# --- settings ------------------------------------------------------------------------------------------------------

def plugin_server(settings: Settings) -> PostgresSettings:
    """The plugin database's server and role: postgres.* unless postgres.plugin_host/port/user say otherwise.

    Dify's compose runs the plugin daemon on the main server with the main credentials; a deployment may point it
    elsewhere. Another user never inherits the main password (it would be sent to the wrong role).
    """
    pg = settings.postgres
    other_user = bool(pg.plugin_user) and pg.plugin_user != pg.user
    return dataclasses.replace(pg, host=pg.plugin_host or pg.host, port=pg.plugin_port or pg.port,
                               user=pg.plugin_user or pg.user,
                               password=pg.plugin_password if other_user or pg.plugin_password else pg.password)


def plugin_postgres(settings: Settings) -> PostgresSettings | None:
    """The plugin database's connection (plugin_server with its database); None when not configured."""
    name = settings.postgres.plugin_database
    if not name:
        return None
    server = plugin_server(settings)
    if name == settings.postgres.database and (server.host, server.port) == (settings.postgres.host,
                                                                             settings.postgres.port):
        raise ConfigError(f"postgres.plugin_database is the main database ({name})",
                          hint="set it to the plugin daemon's database (Dify's DB_PLUGIN_DATABASE, e.g. dify_plugin)")
    return dataclasses.replace(server, database=name)


def plugin_settings(settings: Settings) -> Settings:
    """settings whose postgres.* is the plugin server's: a bare --target-plugin-db name lands on that server."""
    return dataclasses.replace(settings, postgres=plugin_server(settings))


def check_plugin_database(settings: Settings) -> None:
    """Refuse a configured plugin database that cannot be reached, before the snapshot writes anything.

    A configured database that is missing is an error, not a skip: the operator asked for it to be covered, and a
    nightly snapshot that silently leaves it out is the hole this setting exists to close.
    """
    pg = plugin_postgres(settings)
    if pg is None:
        return
    try:
        with pga.connect(pg, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except NotFoundError:
        raise NotFoundError(f"the plugin database {pg.database} (postgres.plugin_database) does not exist on "
                            f"{pg.host}:{pg.port}",
                            hint="check Dify's DB_PLUGIN_DATABASE; unset postgres.plugin_database if this Dify "
                                 "runs no plugin daemon", system=f"postgres {pg.host}:{pg.port}") from None


@dataclass
class StoragePlan:
    """How the plugin daemon's storage is covered: prefixes pinned in the main manifest, or (patterns empty) as the
    extra store `plugin` (ops.snapshot.stores)."""

    patterns: list[str] = field(default_factory=list)  # added to snapshot.include_prefixes
    meta: dict[str, Any] | None = None
    warning: str | None = None


def plugin_storage_plan(settings: Settings) -> StoragePlan:
    """Pin the plugin prefixes in the main manifest when plugin storage is Dify's own bucket on the same endpoint,
    at the bucket root.

    Why only then: the main manifest pins versions of one source bucket and a restore writes only keys under that
    source's key prefix (confinement); the daemon writes at its bucket's root. Anywhere else (another bucket or
    endpoint, or Dify's files under s3.key_prefix) plugin storage is the extra store `plugin`, with its own
    manifest, endpoint and credentials (ops.snapshot.stores); `pinned` in meta.json says whether it was.
    """
    snap, s3 = settings.snapshot, settings.s3
    bucket = snap.plugin_storage_bucket
    if not bucket:
        return StoragePlan()
    prefixes = list(plugin_prefixes(settings))
    meta: dict[str, Any] = {"bucket": bucket, "endpoint": snap.plugin_storage_endpoint or s3.endpoint,
                            "prefixes": prefixes}
    if plugin_in_main_manifest(settings):
        return StoragePlan(patterns=prefixes, meta={**meta, "pinned": True})
    return StoragePlan(meta={**meta, "pinned": False})


# --- the dump --------------------------------------------------------------------------------------------------------

def _row_counts(conn: psycopg.Connection) -> dict[str, int]:
    """count(*) of every ordinary table outside the system schemas, in the connection's (exported) snapshot.

    Recorded at snapshot time and compared by `drill` after the restore: the plugin database is small (one row
    per installed plugin and tenant), so exact counts cost milliseconds and prove every table came back whole.
    """
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY 1, 2").fetchall()
    counts: dict[str, int] = {}
    for schema, table in rows:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()
        counts[table if schema == "public" else f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def row_counts(pg: PostgresSettings) -> dict[str, int]:
    """The same counts, of a database as it is now (a restored one)."""
    with pga.connect(pg, autocommit=True) as conn:
        return _row_counts(conn)


class DatabaseDump:
    """One more database, dumped at its own exported snapshot into its own artifact next to the main dump."""

    def __init__(self, pg: PostgresSettings, *, artifact: str) -> None:
        self.pg = pg
        self.artifact = artifact
        conn, snapshot, fence, version_num, server_version, window_start = pga.open_exported_snapshot(pg)
        self.conn = conn
        self.snapshot = snapshot
        self.fence: datetime = fence
        self.window_start: datetime = window_start
        self.version_num = int(version_num)
        self.server_version = str(server_version)
        self.name = ""
        self.counts: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._sink: s3a.MultipartWriter | None = None
        self._stderr: IO[bytes] | None = None
        self._outcome: dict[str, Any] = {}
        self._tool: tuple[int, str] = (0, "")

    def start(self, dest: Any, folder: str, *, pg_bin_dir: str | None, recipients: list[Any] | None,
              part_size: int) -> None:
        """Start pg_dump on the exported snapshot, streamed (through age when asked) into the snapshot folder."""
        major = pga.server_major_of(self.version_num)
        tool = pga.find_pg_tool("pg_dump", server_major=major, bin_dir=pg_bin_dir)
        dump_major, dump_text = pga.tool_version(tool)
        pga.check_tool_not_older("pg_dump", dump_major, dump_text, major, self.server_version, path=tool)
        self._tool = (dump_major, dump_text)
        self.name = mf.artifact_name(self.artifact, bool(recipients))
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        argv = [tool, "--format=custom", f"--snapshot={self.snapshot}", "--no-password"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._stderr,
                                      env=pga.subprocess_env(self.pg))
        self._sink = dest.artifact_writer(folder + self.name, part_size=part_size)
        self._thread = threading.Thread(target=dump_worker, args=(self._proc, self._sink, recipients, self._outcome),
                                        name=f"pg_dump-{self.pg.database}", daemon=True)
        self._thread.start()
        self.counts = _row_counts(self.conn)  # same transaction as the dump's snapshot, while pg_dump runs

    def finish(self, dest_endpoint: str | None) -> dict[str, Any]:
        """Wait for the dump; its meta.json section (or raise, naming pg_dump's last line or the upload error)."""
        assert self._thread is not None and self._sink is not None and self._stderr is not None
        self._thread.join()
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace").strip()
        if "error" in self._outcome:
            exc = self._outcome["error"]
            exc = s3a.translate_answer(exc, what=f"uploading the dump of {self.pg.database}", endpoint=dest_endpoint)
            raise exc if isinstance(exc, DrtoolError) else UnavailableError(
                f"uploading the dump of {self.pg.database} failed: {exc}", system=f"object store {dest_endpoint}")
        if self._outcome.get("returncode") != 0:
            raise UnavailableError(f"pg_dump of {self.pg.database} failed (exit {self._outcome.get('returncode')}): "
                                   f"{err.splitlines()[-1] if err else 'no message'}",
                                   system=f"postgres {self.pg.host}:{self.pg.port}")
        return {
            "name": self.pg.database, "host": self.pg.host, "port": self.pg.port,
            "server_version": self.server_version, "server_version_num": self.version_num,
            "pg_dump_version": self._tool[1], "pg_dump_major": self._tool[0],
            "fence": self.fence.astimezone(UTC).isoformat(),
            "fence_window_start": self.window_start.astimezone(UTC).isoformat(),
            "artifact": self.name, "bytes": self._sink.size, "row_counts": self.counts,
        }

    @property
    def sha256(self) -> str:
        assert self._sink is not None
        return self._sink.sha256.hexdigest()

    def abort(self) -> None:
        """A failed snapshot: stop pg_dump and abort the upload (the caller removes the folder)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._sink is not None:
            self._sink.abort()

    def close(self) -> None:
        """End the exported snapshot's transaction (only after pg_dump no longer needs it)."""
        if self._stderr is not None:
            self._stderr.close()
        self.conn.close()


def open_plugin_dump(settings: Settings) -> DatabaseDump | None:
    """The plugin database's exported snapshot, opened right after the main one's; None when not configured."""
    pg = plugin_postgres(settings)
    return None if pg is None else DatabaseDump(pg, artifact=PLUGIN_DUMP)


# --- restore -----------------------------------------------------------------------------------------------------

def plugin_target_name(info_meta: dict[str, Any], main_target: str | None, explicit: str | None) -> str | None:
    """Where restore puts the plugin database: --target-plugin-db, else derived from --target-db.

    Derived: the snapshot's own plugin database name when --target-db is the snapshot's own database (an in-place
    restore of `dify` brings `dify_plugin` back), else `<target db>_plugin` on the same server (a restore into
    `dify_restored` goes with `dify_restored_plugin`). Old snapshots have no plugin dump: an explicit
    --target-plugin-db is then refused, a derived one is simply not used.
    """
    section = info_meta.get(PLUGIN_META)
    if not isinstance(section, dict):
        if explicit:
            raise UsageError(f"snapshot {info_meta.get('id')} holds no plugin database dump (taken without "
                             "postgres.plugin_database, or before drtool covered it)",
                             hint="drop --target-plugin-db")
        return None
    if explicit:
        return explicit
    if not main_target:
        return None
    if "=" not in main_target and "://" not in main_target:
        name = main_target
    else:
        name = str(conninfo_to_dict(main_target).get("dbname") or "")
    own = str(info_meta.get("database", {}).get("name") or "")
    in_place = bool(name) and name == own and bool(section.get("name"))
    derived = str(section["name"]) if in_place else f"{name[:56]}_plugin"
    if "=" in main_target or "://" in main_target:  # same server and user as the DSN, only another database
        params = conninfo_to_dict(main_target)
        params["dbname"] = derived
        return " ".join(f"{k}={_quote(str(v))}" for k, v in params.items() if v is not None)
    return derived


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

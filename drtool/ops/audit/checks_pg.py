"""`drtool audit`: the Postgres checks: reachable, point-in-time recovery, pg_dump's version, and whether the role
drtool is configured with may read what `pg_dump` dumps (the main and the plugin daemon's database).

The catalog checks read as the role drtool is configured with, because that role is the one `pg_dump` runs as.
Each function takes the running audit and adds its findings to it; a failure is turned into `audit.check_failed`
by the caller's `guarded`.
"""

from __future__ import annotations

from drtool.adapters import postgres as pga
from drtool.core.audit import Severity, pg_grant_fix
from drtool.errors import DrtoolError
from drtool.ops.audit.context import AuditRun
from drtool.ops.snapshot.databases import check_plugin_database, plugin_postgres

MAX_LISTED = 10  # tables named in the evidence; the count says how many more

# Every relation pg_dump reads data from when it dumps the whole database (what `drtool snapshot create` does
# without --schema/--table): ordinary and partitioned tables (pg_dump LOCKs them, which needs SELECT, then reads
# them) and sequences (it reads last_value), outside the system schemas, minus the members of an extension (the
# extension's CREATE EXTENSION recreates them). `has_*_privilege` without a role asks for current_user: the role
# the connection logged in as, the same as pg_dump's.
_UNREADABLE_SQL = r"""
SELECT n.nspname, c.relname, c.relkind::text,
       has_schema_privilege(n.oid, 'USAGE') AS usable,
       CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT')
            ELSE has_table_privilege(c.oid, 'SELECT') END AS readable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def postgres(audit: AuditRun) -> bool:
    pg = audit.settings.postgres
    where = f"{pg.host}:{pg.port}/{pg.database}"
    try:
        with pga.connect(pg, autocommit=True) as conn:
            wal = str(conn.execute("SHOW wal_level").fetchone()[0])  # type: ignore[index]
            archive = str(conn.execute("SHOW archive_mode").fetchone()[0])  # type: ignore[index]
            num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
            text = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except Exception as exc:
        err = exc if isinstance(exc, DrtoolError) else pga.translate_error(exc, pg)
        audit.add("postgres.unreachable", f"{where}: {err}", err.hint or "check postgres.* settings", where)
        return False
    audit.result.checked.append("postgres: reachable")
    if archive == "off" or wal == "minimal":
        audit.add("postgres.no_pitr", f"wal_level={wal}, archive_mode={archive}: restores go back to the newest "
                                      "snapshot only",
                  "for point-in-time recovery: wal_level=replica, archive_mode=on and an archive_command "
                  "(e.g. WAL-G, pgBackRest); else snapshot more often", where)
    major = pga.server_major_of(num)

    def pg_dump() -> None:
        path = pga.find_pg_tool("pg_dump", server_major=major, bin_dir=audit.settings.snapshot.pg_bin_dir)
        tool_major, tool_text = pga.tool_version(path)
        if tool_major < major:
            audit.add("postgres.pg_dump_older", f"{path} is {tool_text}; the server is {text}",
                      f"apt-get install postgresql-client-{major} (or set snapshot.pg_bin_dir to its bin folder)",
                      where)

    audit.guarded("postgres: pg_dump version", pg_dump)
    return True


def dump_readable(audit: AuditRun) -> None:
    """The configured role may read every table and sequence `pg_dump` dumps.

    Why: pg_dump stops at the first relation it may not read ("permission denied for table ..."), so one table
    created by another role (a migration run as a different user, a plugin) makes every nightly snapshot fail
    until someone reads the cron mail. Reading privileges from the catalog finds it before the next snapshot.
    """
    pg = audit.settings.postgres
    where = f"{pg.host}:{pg.port}/{pg.database}"
    with pga.connect(pg, autocommit=True) as conn:
        role = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
        rows = conn.execute(_UNREADABLE_SQL).fetchall()
    blocked = [(str(s), str(t), str(k)) for s, t, k, usable, readable in rows if not (usable and readable)]
    audit.result.checked.append(f"postgres: role {role} can read the {len(rows)} table(s)/sequence(s) pg_dump dumps")
    if not blocked:
        return
    no_usage = sorted({s for s, t, k, usable, _ in rows if not usable})
    names = [f"{s}.{t}" + (" (sequence)" if k == "S" else "") for s, t, k in blocked]
    more = f" (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    evidence = (f"role {role} cannot read {len(blocked)} of {len(rows)} relation(s) pg_dump dumps: "
                + ", ".join(names[:MAX_LISTED]) + more
                + (f"; no USAGE on schema(s) {', '.join(no_usage)}" if no_usage else ""))
    audit.add("postgres.dump_unreadable", evidence,
              pg_grant_fix(role, sorted({s for s, _, _ in blocked}), no_usage), where)


# Dify's DB_PLUGIN_DATABASE defaults to `dify_plugin` next to the default DB_DATABASE `dify`: the convention is the
# main database's name with `_plugin`, and `dify_plugin` itself for a main database named otherwise.
PLUGIN_DB_DEFAULT = "dify_plugin"


def plugin_db_candidates(main: str) -> list[str]:
    """The names Dify's plugin daemon database has when postgres.plugin_database is unset: Dify's default and the
    main database's name + `_plugin` (`dify` -> `dify_plugin`, `dify_prod` -> `dify_prod_plugin`)."""
    return sorted({PLUGIN_DB_DEFAULT, f"{main}_plugin"} - {main})


def plugin_database(audit: AuditRun) -> None:
    """The plugin daemon's database is in the snapshots: configured and dumpable, or absent from the server.

    Why: Dify 1.x keeps installed plugins (every model provider among them) in a database of its own; snapshots
    dump it only when postgres.plugin_database names it (drtool/ops/snapshot/databases.py). Unset while such a
    database exists, restores bring back a Dify that cannot embed or answer: a warning. Set but missing or not
    readable, `snapshot create` refuses to run or pg_dump fails: every snapshot fails, so critical.
    """
    pg = audit.settings.postgres
    server = f"{pg.host}:{pg.port}"
    name = pg.plugin_database
    if not name:
        candidates = plugin_db_candidates(pg.database)
        with pga.connect(pg, autocommit=True) as conn:
            found = [str(r[0]) for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s) AND NOT datistemplate ORDER BY 1",
                (candidates,)).fetchall()]
        audit.result.checked.append(f"postgres: plugin daemon database ({' or '.join(candidates)}) on {server}")
        for db in found:
            audit.add("postgres.plugin_db_not_covered",
                      f"database {db} exists on {server} (Dify's plugin daemon database, DB_PLUGIN_DATABASE) but "
                      "postgres.plugin_database is unset: snapshots leave it out",
                      f"set postgres.plugin_database={db} (env DRTOOL_POSTGRES_PLUGIN_DATABASE={db}), or run drtool "
                      "with --dify-env pointing at Dify's docker/.env (it maps DB_PLUGIN_DATABASE); if it is a "
                      "leftover of no running plugin daemon, drop it", f"{server}/{db}")
        return
    where = f"{server}/{name}"
    fix = ("create the database or correct postgres.plugin_database (DRTOOL_POSTGRES_PLUGIN_DATABASE, Dify's "
           "DB_PLUGIN_DATABASE via --dify-env); unset it if this Dify runs no plugin daemon")
    try:
        plug = plugin_postgres(audit.settings) or pg  # not None: plugin_database is set
        check_plugin_database(audit.settings)
        with pga.connect(plug, autocommit=True) as conn:
            rows = conn.execute(_UNREADABLE_SQL).fetchall()
    except DrtoolError as exc:
        audit.add("postgres.plugin_db_not_covered", f"postgres.plugin_database={name}: {exc}; every snapshot "
                                                    "fails until it is fixed", fix, where, Severity.CRITICAL)
        return
    audit.result.checked.append(f"postgres: plugin database {name} readable")
    blocked = [f"{s}.{t}" for s, t, _k, usable, readable in rows if not (usable and readable)]
    if blocked:
        role = pg.user
        more = f" (+{len(blocked) - MAX_LISTED} more)" if len(blocked) > MAX_LISTED else ""
        audit.add("postgres.plugin_db_not_covered",
                  f"role {role} cannot read {len(blocked)} relation(s) of the plugin database {name}: "
                  + ", ".join(blocked[:MAX_LISTED]) + more + "; pg_dump of it fails, and every snapshot with it",
                  "in the plugin database, " + pg_grant_fix(role, sorted({b.split('.', 1)[0] for b in blocked}), []),
                  where, Severity.CRITICAL)

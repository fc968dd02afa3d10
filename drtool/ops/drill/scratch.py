"""Scratch environment: the checks before anything is created (preflight), and the removal of every scratch target
afterwards (collections, rebuild ledgers, databases), which never touches a live name."""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

from drtool.adapters import postgres as pga
from drtool.adapters import vector_stores
from drtool.adapters.age import load_identities
from drtool.errors import UsageError
from drtool.ops.drill.options import DrillState
from drtool.ops.snapshot import databases as snapshot_databases
from drtool.ops.snapshot.auth import authenticate
from drtool.ops.snapshot.catalog import SnapshotInfo, resolve
from drtool.ops.snapshot.destination import Destination, open_destination
from drtool.wiring import bucket_store, vector_store

DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# -- checks before anything is created
def preflight(drill: DrillState) -> tuple[Destination, SnapshotInfo]:
    s = drill.settings
    name = drill.scratch.database
    if not DB_NAME.match(name):
        raise UsageError(f"scratch database name {name!r} is not a plain lower-case identifier of up to 63 "
                         "characters", hint="e.g. --scratch-db drtool_drill")
    if name == s.postgres.database:
        raise UsageError(f"--scratch-db {name} is the configured live database (postgres.database)",
                         hint="a drill restores into a scratch database and drops it afterwards: choose "
                              "another name")
    if not s.vector.store:
        raise UsageError("no vector store chosen for the scratch collections",
                         hint=f"set vector.store (DRTOOL_VECTOR_STORE={'|'.join(vector_stores.names())}) and "
                              "its endpoint")
    backend = vector_stores.get(s.vector.store)
    if not backend.configured(s):
        raise UsageError(f"{backend.name} is not configured for the scratch collections", hint=backend.hint)
    s.require_s3()
    drill.scratch.backend = backend.name
    if drill.options.identity:
        drill.identities = load_identities(drill.options.identity)
    dest = open_destination(s)
    info = resolve(dest, drill.options.snapshot)
    # Before any scratch target exists: an unauthenticated snapshot (with trusted keys set) is refused, exit 4.
    authenticate(s, dest, info, expect_digest=drill.options.expect_digest)
    if info.encrypted and not drill.identities:
        raise UsageError(f"snapshot {info.id} is encrypted", hint="pass --identity KEYFILE")
    with pga.connect(s.postgres, database="postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        raise UsageError(f"scratch database {name} already exists on {s.postgres.host}:{s.postgres.port}",
                         hint="a drill never reuses a database it did not create: drop it (a --keep drill "
                              "leaves one) or pass another --scratch-db")
    if isinstance(info.meta.get(snapshot_databases.PLUGIN_META), dict):
        plugin = f"{name[:56]}_plugin"
        with pga.connect(s.postgres, database="postgres", autocommit=True) as admin:
            taken = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (plugin,)).fetchone()
        if taken or plugin in (s.postgres.database, s.postgres.plugin_database):
            raise UsageError(f"scratch plugin database {plugin} already exists on {s.postgres.host}:"
                             f"{s.postgres.port}", hint="drop it (a --keep drill leaves one) or pass another "
                                                        "--scratch-db")
        drill.scratch.plugin_database = plugin
    return dest, info


# -- cleanup
def remove_scratch_targets(drill: DrillState) -> dict[str, Any]:
    done: dict[str, Any] = {}
    errors: list[str] = []
    if drill.scratch.collections:
        try:
            done["collections_dropped"] = drop_collections(drill)
        except Exception as exc:
            errors.append(f"scratch collections {', '.join(drill.scratch.collections)}: {exc}")
    try:
        done["ledger_objects_deleted"] = delete_ledgers(drill)
    except Exception as exc:
        errors.append(f"rebuild ledgers under {drill.scratch.ledger_prefix}: {exc}")
    if drill.scratch.db_created:
        try:
            done["database_dropped"] = drop_database(drill)
        except Exception as exc:
            errors.append(f"scratch database {drill.scratch.database}: {exc}")
    if drill.scratch.plugin_db_created and drill.scratch.plugin_database:
        try:
            done["plugin_database_dropped"] = drop_database(drill, drill.scratch.plugin_database)
        except Exception as exc:
            errors.append(f"scratch plugin database {drill.scratch.plugin_database}: {exc}")
    if errors:
        done["errors"] = errors
        drill.problems += [f"cleanup: {e} (remove it by hand)" for e in errors]
    drill.emit({"event": "drill.cleanup", **done})
    return done


def drop_collections(drill: DrillState) -> list[str]:
    dropped: list[str] = []
    target = vector_store(drill.scratch_settings())
    try:
        for name in drill.scratch.collections:
            assert name.startswith(drill.scratch.prefix)  # never a live name
            dropped += target.purge(name)  # the name and every build, generation or alias drtool made of it
    finally:
        target.close()
    return dropped


def delete_ledgers(drill: DrillState) -> int:
    store = bucket_store(drill.settings.s3)
    keys = [o["Key"] for o in store.list(drill.scratch.ledger_prefix + "/")]
    for key in keys:
        store.delete(key)
    return len(keys)


def drop_database(drill: DrillState, name: str | None = None) -> bool:
    name = name or drill.scratch.database
    assert name not in (drill.settings.postgres.database, drill.settings.postgres.plugin_database)
    with pga.connect(drill.settings.postgres, database="postgres", autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            return False
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    return True

"""Phases 1 and 2: snapshot_check (`snapshots verify --deep`) and restore_database (`restore --target-db`), then
the restored rows pointed at scratch collections and the apps whose annotation collections are rebuilt."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from drtool.adapters import postgres as pga
from drtool.core import naming
from drtool.errors import VerificationFailed
from drtool.ops.drill.options import DrillState
from drtool.ops.rebuild.annotations import collection_for, read_enabled_apps
from drtool.ops.snapshot import databases as snapshot_databases
from drtool.ops.snapshot.catalog import SnapshotInfo
from drtool.ops.snapshot.destination import Destination
from drtool.ops.snapshot.restore import restore
from drtool.ops.snapshot.verify import verify as verify_snapshot
from drtool.wiring import dify_reader


def check_snapshot(drill: DrillState, dest: Destination, info: SnapshotInfo, detail: dict[str, Any]) -> None:
    broken = verify_snapshot(drill.settings, dest, info, deep=True, identities=drill.identities,
                             expect_digest=drill.options.expect_digest)
    counts = info.meta.get("counts", {})
    detail.update(pinned=counts.get("pinned", 0), broken=len(broken), examples=broken[:20])
    if broken:
        raise VerificationFailed(f"snapshot {info.id} is not restorable: {len(broken)} problem(s): "
                                 + "; ".join(broken[:5]),
                                 hint="a lifecycle rule or a manual delete removed pinned data; "
                                      "take a new snapshot and find what deletes versions")


def restore_database(drill: DrillState, dest: Destination, info: SnapshotInfo, detail: dict[str, Any]) -> None:
    drill.scratch.db_created = True  # from here on the database may exist: cleanup drops it if it does
    drill.scratch.plugin_db_created = drill.scratch.plugin_database is not None
    # The scratch plugin database lives on the main server, where the drill made sure it was free and drops
    # it: not on postgres.plugin_host, which a bare --target-plugin-db name would otherwise mean.
    on_main = dataclasses.replace(drill.settings, postgres=dataclasses.replace(
        drill.settings.postgres, plugin_host=None, plugin_port=None, plugin_user=None, plugin_password=None))
    result = restore(on_main, dest, info.id, target_db=drill.scratch.database, objects_to=None,
                     dry_run=False, yes=False, verify_only=False, identities=drill.identities, no_owner=True,
                     skip_objects=True, expect_digest=drill.options.expect_digest,
                     target_plugin_db=drill.scratch.plugin_database, emit=drill.progress_only)
    detail["database"] = result.database
    if drill.scratch.plugin_database:
        detail["plugin_database"] = result.plugin_database
        check_plugin_rows(drill, info, detail)
    detail["collections"] = point_at_scratch_collections(drill)
    detail["annotation_collections"] = annotation_collections(drill, detail)


def check_plugin_rows(drill: DrillState, info: SnapshotInfo, detail: dict[str, Any]) -> None:
    """Every table of the restored plugin database holds the rows it held at the snapshot (issue 13).

    The counts were taken in the dump's own exported snapshot, so any difference is a lost table or row."""
    assert drill.scratch.plugin_database is not None
    expected = (info.meta.get(snapshot_databases.PLUGIN_META) or {}).get("row_counts") or {}
    pg = dataclasses.replace(drill.settings.postgres, database=drill.scratch.plugin_database)
    found = snapshot_databases.row_counts(pg)
    differ = {t: (n, found.get(t)) for t, n in expected.items() if found.get(t) != n}
    detail["plugin_tables"] = len(found)
    detail["plugin_rows"] = sum(found.values())
    if differ:
        raise VerificationFailed(f"the restored plugin database differs from the snapshot in {len(differ)} "
                                 "table(s): " + "; ".join(f"{t}: {want} row(s) at the snapshot, {got} restored"
                                                          for t, (want, got) in list(differ.items())[:5]))


def point_at_scratch_collections(drill: DrillState) -> dict[str, str]:
    """Rewrite `datasets.index_struct` in the scratch copy so every high-quality dataset names a scratch
    collection; rebuild and verify then use it through their normal path, and the live one is never opened."""
    scratch = drill.scratch_settings()
    renamed: dict[str, str] = {}
    with dify_reader(scratch.postgres) as reader:
        datasets = [d for d in reader.datasets() if d.indexing_technique == "high_quality"
                    and d.provider != "external"]
    with pga.connect(scratch.postgres, autocommit=False) as conn:
        for d in datasets:
            kind, class_prefix = naming.from_index_struct(d.index_struct)
            live = class_prefix or naming.dify_collection_name(d.id, drill.settings.vector.index_prefix)
            name = drill.scratch.prefix + live
            struct = {"type": kind or drill.scratch.backend, "vector_store": {"class_prefix": name}}
            conn.execute("UPDATE datasets SET index_struct = %s WHERE id::text = %s", (json.dumps(struct), d.id))
            renamed[d.id] = name
        conn.commit()
    drill.scratch.collections = list(renamed.values())
    return renamed


def annotation_collections(drill: DrillState, detail: dict[str, Any]) -> dict[str, str]:
    """The apps the restored database has annotation reply enabled for, and the scratch collection each gets.

    Read from the restored copy, not the live database: the drill rehearses what the snapshot can bring back.
    An app whose setting names a binding that does not exist has no collection in Dify either (Dify answers
    none of its annotations): it is counted, never built."""
    scratch = drill.scratch_settings()
    with dify_reader(scratch.postgres) as reader:
        apps = read_enabled_apps(reader)
    drill.scratch.annotation_apps = apps
    names = {a.app_id: collection_for(a.app_id, scratch.vector.index_prefix) for a in apps if a.model_name}
    unbound = [a.app_id for a in apps if not a.model_name]
    if unbound:
        detail["annotation_apps_without_binding"] = unbound
    drill.scratch.annotation_collections = names
    drill.scratch.collections += [n for n in names.values() if n not in drill.scratch.collections]
    return names

"""`drtool restore`: a snapshot's pinned object versions made current in a bucket, then its dump restored.

Everything that can refuse the database restore is checked before the first object is copied: the target's
version and emptiness (--yes), the pg_restore binary, and the dump itself (downloaded, decrypted, its checksum and
`pg_restore --list` checked), so a corrupt dump or a missing --yes leaves the bucket untouched too.
Objects then go first: they are additive (a server-side copy makes the pinned version the newest one, older versions
stay), so when the database restore later fails nothing points at a missing file. The database restore runs in a
single transaction, so a failure leaves the target as it was. Both steps skip what is already in place, which
makes a second run change nothing. The steps: restore_objects.py, restore_stores.py (--stores), restore_database.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from typing import Any

from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.core.events import Emit, no_events
from drtool.errors import UsageError, VerificationFailed
from drtool.ops.lock import destination_lock
from drtool.ops.snapshot import databases as snapshot_databases
from drtool.ops.snapshot import restore_stores
from drtool.ops.snapshot.auth import authenticate
from drtool.ops.snapshot.catalog import (
    SnapshotInfo,
    expected_sums,
    resolve,
)
from drtool.ops.snapshot.destination import Destination
from drtool.ops.snapshot.restore_database import apply_database, parse_target, plugin_target, prepare_database
from drtool.ops.snapshot.restore_objects import restore_objects
from drtool.ops.snapshot.restore_result import RestoreResult

log = logging.getLogger("drtool.restore")


def restore(settings: Settings, dest: Destination, ref: str, *, target_db: str | None, objects_to: str | None,
            dry_run: bool, yes: bool, verify_only: bool, identities: list[Any] | None, no_owner: bool,
            skip_objects: bool = False, emit: Emit = no_events, break_stale_lock: bool = False,
            expect_digest: str | None = None, target_plugin_db: str | None = None,
            stores: bool = False) -> RestoreResult:
    info = resolve(dest, ref)
    # Before anything else: a snapshot a trusted key did not sign (or not the pinned digest) is refused, exit 4.
    auth = authenticate(settings, dest, info, expect_digest=expect_digest)
    if info.meta.get("_corrupt"):
        raise VerificationFailed(f"snapshot {info.id}: meta.json is unreadable", hint="restore another snapshot")
    if info.encrypted and not identities:
        raise UsageError(f"snapshot {info.id} is encrypted", hint="pass --identity KEYFILE")
    result = RestoreResult(snapshot_id=info.id, dry_run=dry_run, verify_only=verify_only,
                           authentication=auth.to_dict())
    emit({"event": "restore.started", "snapshot": info.id, "fence": info.meta.get("fence")})
    sums = expected_sums(dest, info)
    meta_bytes = s3a.get_bytes(dest.client, dest.bucket, dest.folder(info.id) + mf.META)
    if hashlib.sha256(meta_bytes).hexdigest() != sums.get(mf.META):
        raise VerificationFailed(f"snapshot {info.id}: meta.json checksum mismatch",
                                 hint="run `drtool snapshots verify`; restore another snapshot")
    # Issue 13: the plugin daemon's database goes with the main one (--target-plugin-db, or derived from
    # --target-db); a snapshot taken without it restores as before.
    plugin_db = None if verify_only else snapshot_databases.plugin_target_name(info.meta, target_db,
                                                                                target_plugin_db)
    if plugin_db and not info.meta.get("artifacts", {}).get("plugin_dump"):  # never fall back to the main dump
        raise VerificationFailed(f"snapshot {info.id}: meta.json records a plugin database but no plugin dump",
                                 hint="run `drtool snapshots verify`; restore another snapshot")
    if plugin_db and target_db and plugin_target(settings, plugin_db).label == parse_target(settings, target_db).label:
        raise UsageError("--target-plugin-db is the same database as --target-db",
                         hint="the plugin daemon's database needs its own, e.g. dify_plugin")
    # Issue 13: --stores brings the extra stores (plugin storage elsewhere, archive storage) back in place.
    store_plans = restore_stores.plan(settings, info, enabled=stores)
    with _target_locks(settings, dest, info, objects_to=objects_to, skip_objects=skip_objects, target_db=target_db,
                       enabled=not (dry_run or verify_only), break_stale=break_stale_lock, emit=emit,
                       plugin_db=plugin_db, store_buckets=restore_stores.lock_targets(store_plans)):
        _restore_locked(settings, dest, info, sums, result, target_db=target_db, objects_to=objects_to,
                        dry_run=dry_run, yes=yes, verify_only=verify_only, identities=identities, no_owner=no_owner,
                        skip_objects=skip_objects, emit=emit, plugin_db=plugin_db, store_plans=store_plans)
    if verify_only and result.problems:
        raise VerificationFailed(
            f"{len(result.problems)} object(s) in the target differ from snapshot {info.id}: "
            + "; ".join(result.problems[:10]), hint="run `drtool restore` without --verify-only to fix them")
    return result


def _lock_name(kind: str, target: str) -> str:
    """A readable, bounded lock object name for a target, unique by hash."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", target)[:60]
    return f"restore-{kind}-{slug}-{hashlib.sha256(target.encode()).hexdigest()[:10]}.lock"


def _target_locks(settings: Settings, dest: Destination, info: SnapshotInfo, *, objects_to: str | None,
                  skip_objects: bool, target_db: str | None, enabled: bool, break_stale: bool,
                  emit: Emit, plugin_db: str | None = None,
                  store_buckets: list[str] | None = None) -> contextlib.ExitStack:
    """One restore per target bucket and per target database: a second one exits 11 instead of copying and
    pg_restoring into the same place at once. The locks live next to the snapshots' own lock."""
    stack = contextlib.ExitStack()
    if not enabled:
        return stack
    names: list[str] = []
    if not skip_objects:
        bucket = objects_to or settings.s3.bucket or info.meta.get("source", {}).get("bucket") or ""
        names.append(_lock_name("bucket", f"{settings.s3.endpoint or 'aws'}/{bucket}"))
    if target_db:
        names.append(_lock_name("db", parse_target(settings, target_db).label))
    if plugin_db:
        names.append(_lock_name("db", plugin_target(settings, plugin_db).label))
    names += [_lock_name("bucket", target) for target in store_buckets or ()]
    try:
        for name in sorted(set(names)):
            stack.enter_context(destination_lock(dest.client, dest.bucket, dest.key("locks", name),
                                                 holder="restore", stale_after_s=settings.snapshot.lock_stale_after,
                                                 break_stale=break_stale, emit=emit))
    except BaseException:
        stack.close()
        raise
    return stack


def _restore_locked(settings: Settings, dest: Destination, info: SnapshotInfo, sums: dict[str, str],
                    result: RestoreResult, *, target_db: str | None, objects_to: str | None, dry_run: bool, yes: bool,
                    verify_only: bool, identities: list[Any] | None, no_owner: bool, skip_objects: bool,
                    emit: Emit, plugin_db: str | None = None,
                    store_plans: list[restore_stores.StorePlan] | None = None) -> None:
    with contextlib.ExitStack() as stack:
        prepared = prepared_plugin = None
        if target_db and not verify_only:
            prepared = prepare_database(settings, dest, info, sums, parse_target(settings, target_db),
                                         dry_run=dry_run, yes=yes, identities=identities, result=result,
                                         stack=stack)
        if plugin_db:  # checked like the main one, before the first object is copied
            prepared_plugin = prepare_database(
                settings, dest, info, sums, plugin_target(settings, plugin_db), dry_run=dry_run, yes=yes,
                identities=identities, result=result, stack=stack,
                db_meta=info.meta.get(snapshot_databases.PLUGIN_META),
                dump_name=info.meta.get("artifacts", {}).get("plugin_dump"), slot="plugin_database")
        # Every store manifest checked (checksum, confinement) before the first object of any bucket is copied.
        restore_stores.prepare(dest, info, sums, store_plans or [], identities, stack)
        if not skip_objects:
            restore_objects(settings, dest, info, sums, objects_to, dry_run=dry_run, verify_only=verify_only,
                             identities=identities, result=result, emit=emit)
            emit({"event": "restore.objects", **result.objects})
        if store_plans:
            result.stores = restore_stores.apply(settings, info, store_plans, dry_run=dry_run,
                                                 verify_only=verify_only, identities=identities,
                                                 problems=result.problems)
        if target_db and not verify_only:
            if prepared is not None:
                apply_database(prepared, info, no_owner=no_owner, result=result)
            emit({"event": "restore.database", **result.database})
        if prepared_plugin is not None:
            apply_database(prepared_plugin, info, no_owner=no_owner, result=result)

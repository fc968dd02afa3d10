"""`snapshots prune` (grandfather-father-son), `snapshots gc` (leftovers of killed runs) and `snapshots unlock`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.core import object_lock as ol
from drtool.core.retention import Policy, decide
from drtool.errors import DrtoolError, NotFoundError, UsageError
from drtool.ops.lock import describe_stale, destination_lock, read_lock
from drtool.ops.snapshot.catalog import folder_ids, list_snapshots
from drtool.ops.snapshot.destination import Destination, destination_store

log = logging.getLogger("drtool.snapshot")


@dataclass
class PruneResult:
    keep: dict[str, list[str]]
    remove: list[str]
    dry_run: bool
    removed: list[str] = field(default_factory=list)
    locked: dict[str, str] = field(default_factory=dict)  # id -> retain-until: the policy drops it, the lock keeps it


def locked_until(dest: Destination, snapshot_id: str, meta: dict[str, Any] | None = None) -> datetime | None:
    """Until when Object Lock protects anything in a snapshot folder (None: nothing is locked, it may go).

    The server's answer for every version (HEAD) decides, with the date meta.json recorded as a floor for a caller
    the server does not show retention to: deleting half a snapshot and then meeting a locked version is what
    this check exists to prevent.
    """
    dates: list[datetime | None] = [ol.recorded_until(meta or {})]
    hold = False
    store = destination_store(dest)
    try:
        # One HEAD per version: a server returns the lock headers only to a caller allowed s3:GetObjectRetention
        # and s3:GetObjectLegalHold; without them every version looks unlocked here, and the server itself still
        # refuses the delete (DeleteRefused, below).
        for v in store.list_versions(dest.folder(snapshot_id)):
            if v.is_delete_marker:
                continue
            head = store.head(v.key, version_id=None if v.version_id == "null" else v.version_id)
            if head is not None:
                dates.append(head.get("ObjectLockRetainUntilDate"))
                hold = hold or head.get("ObjectLockLegalHoldStatus") == "ON"
    except DrtoolError as error:
        error.message = f"retention of snapshot {snapshot_id}: {error.message}"
        raise
    return ol.locked_until(dates, legal_hold=hold, now=datetime.now(UTC))


def _until_text(until: datetime) -> str:
    return "a legal hold is removed" if until.year == datetime.max.year else until.isoformat()


def prune(settings: Settings, dest: Destination, policy: Policy, *, dry_run: bool) -> PruneResult:
    """Delete committed snapshots the policy does not keep; the newest one always stays, and so does every
    snapshot still under Object Lock retention (kept whole, never half-deleted)."""

    def run() -> PruneResult:
        snaps = list_snapshots(dest)
        decision = decide(((s.id, s.fence) for s in snaps), policy)
        metas = {s.id: s.meta for s in snaps}
        locked: dict[str, str] = {}
        for sid in list(decision.remove):
            until = locked_until(dest, sid, metas.get(sid))
            if until is not None:
                locked[sid] = _until_text(until)
                decision.remove.remove(sid)
                decision.keep[sid] = [f"locked until {locked[sid]}"]
        result = PruneResult(keep=decision.keep, remove=decision.remove, dry_run=dry_run, locked=locked)
        if not dry_run:
            for sid in decision.remove:
                _delete_snapshot(dest, sid)
                result.removed.append(sid)
                log.info("removed snapshot %s", sid)
        return result

    if dry_run:
        return run()
    with destination_lock(dest.client, dest.bucket, dest.lock_key, holder="snapshots prune",
                          stale_after_s=settings.snapshot.lock_stale_after):
        return run()


def _delete_snapshot(dest: Destination, snapshot_id: str) -> None:
    """COMMITTED goes first, so an interrupted delete leaves an uncommitted folder that gc finishes later."""
    folder = dest.folder(snapshot_id)
    store = destination_store(dest)
    store.delete(folder + mf.COMMITTED)
    store.delete_prefix(folder)


@dataclass
class GcResult:
    removed: list[str]
    kept_young: list[str]
    aborted_uploads: int
    dry_run: bool
    kept_locked: dict[str, str] = field(default_factory=dict)  # id -> retain-until of locked leftovers


def gc(settings: Settings, dest: Destination, *, grace_s: int, dry_run: bool) -> GcResult:
    """Remove uncommitted snapshot folders older than the grace period, and abandoned multipart uploads."""

    def run() -> GcResult:
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=grace_s)
        removed: list[str] = []
        young: list[str] = []
        locked: dict[str, str] = {}
        store = destination_store(dest)
        for sid in folder_ids(dest):
            folder = dest.folder(sid)
            if store.head(folder + mf.COMMITTED) is not None:
                continue
            if mf.snapshot_time(sid) > cutoff:
                young.append(sid)
                continue
            until = locked_until(dest, sid)  # a killed run's locked artifacts stay until their date
            if until is not None:
                locked[sid] = _until_text(until)
                continue
            if not dry_run:
                try:
                    store.delete_prefix(folder)
                except s3a.DeleteRefused as exc:  # locked, with the retention hidden from this caller
                    locked[sid] = f"unknown (the server refused the delete: {exc.message})"
                    continue
            removed.append(sid)
        aborted = 0 if dry_run else store.abort_uploads(dest.snapshots_prefix, older_than=cutoff)
        return GcResult(removed=removed, kept_young=young, aborted_uploads=aborted, dry_run=dry_run,
                        kept_locked=locked)

    if dry_run:
        return run()
    with destination_lock(dest.client, dest.bucket, dest.lock_key, holder="snapshots gc",
                          stale_after_s=settings.snapshot.lock_stale_after):
        return run()


def unlock(settings: Settings, dest: Destination, *, force: bool) -> dict[str, Any]:
    """Remove the destination's lock: only a stale one, unless forced."""
    store = destination_store(dest)
    lock = read_lock(store, dest.lock_key)
    if lock is None:
        raise NotFoundError(f"no lock at s3://{dest.bucket}/{dest.lock_key}")
    stale = describe_stale(lock, settings.snapshot.lock_stale_after)
    if stale is None and not force:
        raise UsageError(f"the lock is held by {lock.describe()} and does not look stale",
                         hint="if you are sure that run is gone, pass --force")
    store.delete(dest.lock_key)
    return {"removed": True, "holder": lock.describe(), "stale": stale}

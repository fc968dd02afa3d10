"""`drtool restore --stores`: each extra store's pinned versions made current again in its own bucket (issue 13).

Why opt-in and in place: an extra store (plugin storage outside Dify's bucket, archive storage) has its own
endpoint and credentials, and the only bucket drtool may write for it is the one this host configures for that
store, which must be the bucket the snapshot pinned (ops.snapshot.stores.store_for). A restore into a scratch
bucket (`--objects-to`) therefore leaves the production plugin and archive buckets alone unless `--stores` is given.
Like the main objects, the copy is additive (a server-side copy of the pinned version becomes the newest one; older
versions stay), every record is checked for confinement to the store's prefixes before the first copy of anything,
and what is already current is skipped, so a second run changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from drtool import wiring
from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.core.keys import KeyPatterns
from drtool.errors import VerificationFailed
from drtool.ops.snapshot import stores as snapshot_stores
from drtool.ops.snapshot.catalog import HashingReader, SnapshotInfo, bounded_map, spool_verified
from drtool.ops.snapshot.restore_objects import MARKER_META, is_current

log = logging.getLogger("drtool.restore")


@dataclass
class StorePlan:
    section: dict[str, Any]
    store: snapshot_stores.ExtraStore
    local: IO[bytes] | None = None  # the verified manifest copy, once prepared


def plan(settings: Settings, info: SnapshotInfo, *, enabled: bool) -> list[StorePlan]:
    """The stores `--stores` restores: every store the snapshot pinned, matched to this host's configuration
    (a store the snapshot pinned but the configuration does not name, or names elsewhere, is a usage error)."""
    if not enabled:
        return []
    sections = snapshot_stores.sections(info)
    if not sections:
        log.info("snapshot %s pinned no extra store: --stores has nothing to restore", info.id)
    return [StorePlan(section, snapshot_stores.store_for(settings, section)) for section in sections]


def lock_targets(plans: list[StorePlan]) -> list[str]:
    """`<endpoint>/<bucket>` of each store's bucket, for the per-target restore lock."""
    return [f"{p.store.s3.endpoint or 'aws'}/{p.store.bucket}" for p in plans]


def _records(local: IO[bytes], info: SnapshotInfo, identities: list[Any] | None, name: str
             ) -> Iterator[mf.ManifestRecord]:
    local.seek(0)
    yield from snapshot_stores.records(HashingReader(local), info, identities, name)


def prepare(dest: Any, info: SnapshotInfo, sums: dict[str, str], plans: list[StorePlan],
            identities: list[Any] | None, stack: contextlib.ExitStack) -> None:
    """Before anything is copied anywhere: each store manifest downloaded once, its checksum checked, every record
    confined to the store's configured prefixes, and the store's bucket reachable."""
    for p in plans:
        name = p.section["artifact"]
        p.local = stack.enter_context(spool_verified(dest, info, name, sums.get(name)))
        confined = {**p.section, "prefixes": list(p.store.prefixes)}  # this host's prefixes, not the manifest's
        problems = snapshot_stores.confinement_problems(confined, _records(p.local, info, identities, name), limit=5)
        if problems:
            raise VerificationFailed(f"the {p.store.name} storage manifest of snapshot {info.id} has records that "
                                     "could escape the store's prefixes; nothing was copied: " + "; ".join(problems),
                                     hint="the manifest was edited after the snapshot was taken; restore another one")
        client = wiring.s3_client(p.store.s3)
        wiring.bucket_over(client, p.store.bucket).require_bucket(
            f"{p.store.name} storage bucket {p.store.bucket}",
            hint="create it with versioning enabled, then run the restore again")


def apply(settings: Settings, info: SnapshotInfo, plans: list[StorePlan], *, dry_run: bool, verify_only: bool,
          identities: list[Any] | None, problems: list[str]) -> list[dict[str, Any]]:
    """Make every pinned version of every store current again (or check it, or count what would be copied)."""
    out: list[dict[str, Any]] = []
    for p in plans:
        assert p.local is not None
        store, name = p.store, p.section["artifact"]
        client = wiring.s3_client(store.s3)
        patterns = KeyPatterns(store.prefixes)
        counts = {"pinned": 0, "copied": 0, "already_current": 0, "to_copy": 0, "differ": 0, "missing_source": 0,
                  "refused": 0}

        def one(rec: mf.ManifestRecord, client: Any = client, store: Any = store, patterns: Any = patterns
                ) -> tuple[str, str | None]:
            problem = snapshot_stores.record_problem(rec, patterns)  # checked again, as the copy's precondition
            if problem:
                return "refused", problem
            head = s3a.head_or_none(client, store.bucket, rec.key)
            if head is not None and is_current(head, rec, same_bucket=True):
                return "already_current", None
            if verify_only:
                return "differ", f"{store.name} storage object {rec.key}: not at version {rec.version_id}"
            if dry_run:
                return "to_copy", None
            source = {"Bucket": store.bucket, "Key": rec.key, "VersionId": rec.version_id}
            src_head = s3a.head_or_none(client, store.bucket, rec.key, version_id=rec.version_id)
            if src_head is None:
                return "missing_source", (f"{store.name} storage object {rec.key}: pinned version "
                                          f"{rec.version_id} no longer exists")
            metadata = dict(src_head.get("Metadata") or {})
            metadata[MARKER_META] = rec.version_id or ""
            client.copy(source, store.bucket, rec.key, ExtraArgs={
                "Metadata": metadata, "MetadataDirective": "REPLACE",
                "ContentType": src_head.get("ContentType") or "application/octet-stream"})
            return "copied", None

        pinned = (r for r in _records(p.local, info, identities, name) if r.state == mf.STATE_PINNED)
        try:
            with s3a.answers_translated(what=f"restoring {store.name} storage into {store.bucket}",
                                        endpoint=store.s3.endpoint):
                for outcome, problem in bounded_map(one, pinned, settings.snapshot.workers):
                    counts["pinned"] += 1
                    counts[outcome] += 1
                    if problem:
                        problems.append(problem)
        except ValueError as exc:
            raise VerificationFailed(f"snapshot {info.id}: {name} unreadable: {exc}") from None
        out.append({"name": store.name, "bucket": store.bucket, "endpoint": store.s3.endpoint, **counts})
        if counts["refused"]:
            raise VerificationFailed(f"{counts['refused']} key(s) in the {store.name} storage manifest of snapshot "
                                     f"{info.id} could escape the store's prefixes and were not restored",
                                     hint="the manifest was edited after the snapshot was taken")
        if counts["missing_source"]:
            raise VerificationFailed(f"{counts['missing_source']} pinned version(s) no longer exist in "
                                     f"{store.name} storage bucket {store.bucket}: "
                                     + "; ".join(x for x in problems if "no longer exists" in x)[:1000],
                                     hint="a lifecycle rule or a manual delete removed them; restore another snapshot")
    return out

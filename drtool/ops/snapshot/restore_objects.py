"""`drtool restore`, the objects: every pinned version of the main manifest made current again in the target bucket.

Additive and idempotent: a server-side copy makes the pinned version the newest one (older versions stay), and what
is already current is skipped. The manifest is downloaded once, checked (checksum, confinement) before the first copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.core.events import Emit, no_events
from drtool.errors import VerificationFailed
from drtool.ops.snapshot.catalog import (
    SnapshotInfo,
    bounded_map,
    confinement_problems,
    local_records,
    spool_verified,
)
from drtool.ops.snapshot.destination import Destination
from drtool.ops.snapshot.restore_result import RestoreResult

log = logging.getLogger("drtool.restore")
MARKER_META = "drtool-version"  # user metadata on restored copies: the version they restore


def restore_objects(settings: Settings, dest: Destination, info: SnapshotInfo, sums: dict[str, str],
                     objects_to: str | None, *, dry_run: bool, verify_only: bool, identities: list[Any] | None,
                     result: RestoreResult, emit: Emit = no_events) -> None:
    """Copy every pinned version back (or check it, or count what would be copied). `emit` hears a `progress`
    event per object handled, against the snapshot's pinned count, for the progress display
    (drtool/cli/progress.py)."""
    source = info.meta.get("source", {})
    src_bucket = source.get("bucket") or settings.s3.bucket
    target_bucket = objects_to or settings.s3.bucket or src_bucket
    client = wiring.s3_client(settings.s3)
    wiring.bucket_over(client, target_bucket).require_bucket(
        f"target bucket {target_bucket}",
        hint="create it (with versioning enabled) or pass --objects-to an existing bucket")
    counts = {"pinned": 0, "copied": 0, "already_current": 0, "to_copy": 0, "differ": 0, "skipped_dangling": 0,
              "missing_source": 0}

    folder, key_prefix = dest.folder(info.id), str(source.get("key_prefix") or "")

    def one(rec: mf.ManifestRecord) -> tuple[str, str | None]:
        # Every record was checked before the first copy; checked again here as the copy's own precondition.
        problem = mf.confinement_problem(rec, snapshot_folder=folder, key_prefix=key_prefix)
        if problem:
            return "refused", problem
        head = s3a.head_or_none(client, target_bucket, rec.key)
        if head is not None and is_current(head, rec, same_bucket=target_bucket == src_bucket):
            return "already_current", None
        if verify_only:
            return "differ", f"object {rec.key}: not at version {rec.version_id}"
        if dry_run:
            return "to_copy", None
        copy_client, copy_source = client, {"Bucket": src_bucket, "Key": rec.key, "VersionId": rec.version_id}
        if rec.copy_key:
            copy_client = client
            copy_source = {"Bucket": dest.bucket, "Key": rec.copy_key}
        src_head = s3a.head_or_none(copy_client, copy_source["Bucket"], copy_source["Key"],
                                    version_id=copy_source.get("VersionId"))
        if src_head is None:
            return "missing_source", f"object {rec.key}: pinned version {rec.version_id} no longer exists"
        metadata = dict(src_head.get("Metadata") or {})
        metadata[MARKER_META] = rec.version_id or ""
        extra = {"Metadata": metadata, "MetadataDirective": "REPLACE",
                 "ContentType": src_head.get("ContentType") or "application/octet-stream"}
        client.copy(copy_source, target_bucket, rec.key, ExtraArgs=extra)
        return "copied", None

    # A tampered manifest must not change the target at all: it is downloaded once, its checksum checked and every
    # record checked for confinement before the first copy, and the copy pass reads that same verified copy.
    manifest_name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    with spool_verified(dest, info, manifest_name, sums.get(manifest_name)) as local:
        _check_confinement(dest, info, local_records(local, info, identities))

        def pinned() -> Iterator[mf.ManifestRecord]:
            for r in local_records(local, info, identities):
                if r.state == mf.STATE_PINNED:
                    yield r
                elif r.state == mf.STATE_DANGLING:
                    counts["skipped_dangling"] += 1

        try:
            with s3a.answers_translated(what=f"restoring objects into {target_bucket}", endpoint=settings.s3.endpoint):
                total = (info.meta.get("counts") or {}).get("pinned")
                for outcome, problem in bounded_map(one, pinned(), settings.snapshot.workers):
                    counts["pinned"] += 1
                    counts[outcome] = counts.get(outcome, 0) + 1
                    emit({"event": "progress", "task": "restore objects", "unit": "objects", "done": counts["pinned"],
                          "total": total if isinstance(total, int) else None,
                          "also": {"copied": counts["copied"], "already current": counts["already_current"]}})
                    if problem:
                        result.problems.append(problem)
        except ValueError as exc:
            raise VerificationFailed(f"snapshot {info.id}: manifest unreadable: {exc}") from None
    result.objects = {"bucket": target_bucket, **counts}
    if counts.get("refused"):  # snapshot create never pins such a key: the manifest was forged and resealed
        refused = [p for p in result.problems if p.startswith("object ") and "'" in p][:5]
        raise VerificationFailed(f"{counts['refused']} key(s) in the manifest of snapshot {info.id} could escape "
                                 f"their folder and were not restored: " + "; ".join(refused),
                                 hint="the manifest was edited after the snapshot was taken; restore another one")
    if counts.get("missing_source"):
        raise VerificationFailed(f"{counts['missing_source']} pinned version(s) no longer exist in {src_bucket}: "
                                 + "; ".join(result.problems[:5]),
                                 hint="a lifecycle rule or a manual delete removed them; restore another snapshot")


def _check_confinement(dest: Destination, info: SnapshotInfo, records: Iterator[mf.ManifestRecord]) -> None:
    """Every record checked before the first copy: one that would write or copy outside its place (an unsafe key, a
    key outside the source prefix, a copy_key outside this snapshot's objects/) refuses the whole restore."""
    name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    problems = confinement_problems(dest, info, records, name, limit=5)
    if problems:
        raise VerificationFailed(f"the manifest of snapshot {info.id} has records that could escape their folder or "
                                 "this snapshot; nothing was copied: " + "; ".join(problems),
                                 hint="the manifest was edited after the snapshot was taken; restore another one")


def is_current(head: dict[str, Any], rec: mf.ManifestRecord, *, same_bucket: bool) -> bool:
    """The target's current object already is the pinned version (same version, or a copy drtool made of it)."""
    if same_bucket and not rec.copy_key and head.get("VersionId") == rec.version_id:
        return True
    if (head.get("Metadata") or {}).get(MARKER_META) == rec.version_id and head.get("ContentLength") == rec.size:
        return True
    return not same_bucket and bool(rec.etag) and (head.get("ETag") or "").strip('"') == rec.etag \
        and head.get("ContentLength") == rec.size

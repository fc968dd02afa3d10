"""The manifest of a snapshot: the version listing streamed, and the version current at the fence pinned for every
referenced or included key (the rule both the main bucket and every extra store are pinned by)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from drtool.adapters import s3 as s3a
from drtool.core import manifest as mf
from drtool.core.events import Emit, no_events
from drtool.core.keys import KeyPatterns, ReferenceIndex, UnsafeKey, check_key, listing_prefixes
from drtool.errors import DrtoolError
from drtool.ops.snapshot import listing as snapshot_listing
from drtool.ops.snapshot.destination import Destination

log = logging.getLogger("drtool.snapshot")

PROGRESS_EVERY = 100  # versions listed between two progress reports (a report costs a dict)


def write_manifest(writer: mf.ManifestWriter, index: ReferenceIndex, patterns: KeyPatterns, client: Any,
                    bucket: str, key_prefix: str, fence: datetime, versioning: str, copy_dest: Destination | None,
                    folder: str, *, emit: Emit = no_events, workers: int = 1, pace: Any = None) -> int:
    """Stream the listing, pin versions, write records; returns how many listing entries were read. `emit` hears
    the versions listed and the objects pinned so far (a `progress` event every PROGRESS_EVERY versions, and at
    the end), for the progress display (drtool/cli/progress.py). `workers` > 1 lists sub-prefixes in parallel
    and `pace` caps the request rate (ops/snapshot/listing.py); the records and their order do not change."""
    listed = 0

    def progress() -> None:
        emit({"event": "progress", "task": "snapshot objects", "unit": "versions listed", "done": listed,
              "total": None, "also": {"pinned": writer.counts.get(mf.STATE_PINNED, 0)}})

    # Only prefixes that something references or includes are listed: a bucket's traces and crawls are skipped.
    heads = index.first_segments(key_prefix) | set(patterns.literal_heads)
    # A hostile head ('../') is never sent to the server: its keys end up refused through index.missing() below.
    prefixes = listing_prefixes(h for h in heads if h == "" or _is_safe(h))
    log.info("listing %s under %s", bucket, ", ".join(repr(key_prefix + p) for p in prefixes))

    def counted() -> Iterator[mf.ObjectVersion]:
        nonlocal listed
        for v in snapshot_listing.iter_versions(client, bucket, [key_prefix + p for p in prefixes], workers=workers,
                                                pace=pace):
            listed += 1
            if listed % PROGRESS_EVERY == 0:
                progress()
            yield v

    def handle(key: str, version: mf.ObjectVersion | None, later: bool, refs: tuple[str, ...] | None,
               pattern: str | None) -> None:
        by = list(refs or ()) + ([f"prefix:{pattern}"] if pattern else [])
        try:
            check_key(key)
        except UnsafeKey as exc:
            writer.write(mf.ManifestRecord(key=key, state=mf.STATE_REFUSED, referenced_by=by, reason=str(exc)))
            return
        if version is None:
            if refs is not None:
                writer.write(mf.ManifestRecord(key=key, state=mf.STATE_DANGLING, referenced_by=by,
                                               reason="no version existed at the fence (deleted or not yet "
                                                      "written)"))
            return
        record = mf.ManifestRecord.pinned(version, by)
        if copy_dest is not None:
            if later:
                writer.write(mf.ManifestRecord(key=key, state=mf.STATE_CHANGED, referenced_by=by,
                                               reason="changed after the fence in an unversioned bucket"))
                return
            record.copy_key = folder + "objects/" + key
            s3a.locked_call(copy_dest.client, record.copy_key, copy_dest.retention, copy_dest.client.copy_object,
                            Bucket=copy_dest.bucket, Key=record.copy_key, CopySource={"Bucket": bucket, "Key": key})
        writer.write(record)

    def flush(batch: list[tuple[str, mf.ObjectVersion | None, bool]]) -> None:
        refs = index.lookup_many([k for k, _, _ in batch]) if index.count else {}
        if refs:
            index.mark_found(list(refs))
        for key, version, later in batch:
            ref = refs.get(key)
            pattern = patterns.match(key[len(key_prefix):])
            if ref is not None or pattern is not None:
                handle(key, version, later, ref, pattern)

    try:
        batch: list[tuple[str, mf.ObjectVersion | None, bool]] = []
        for item in mf.pick_versions(counted(), fence):
            batch.append(item)
            if len(batch) >= 1000:
                flush(batch)
                batch = []
        flush(batch)
        progress()
    except DrtoolError:
        raise
    except Exception as exc:
        if s3a.is_sdk_error(exc):
            raise s3a.translate_error(exc, what=f"listing bucket {bucket}", endpoint=None) from None
        raise
    for ref in index.missing():
        try:
            check_key(ref.key)
            writer.write(mf.ManifestRecord(key=ref.key, state=mf.STATE_DANGLING, referenced_by=list(ref.referenced_by),
                                           reason="no object with this key"))
        except UnsafeKey as exc:
            writer.write(mf.ManifestRecord(key=ref.key, state=mf.STATE_REFUSED, referenced_by=list(ref.referenced_by),
                                           reason=str(exc)))
    return listed


def _is_safe(key: str) -> bool:
    try:
        check_key(key)
    except UnsafeKey:
        return False
    return True

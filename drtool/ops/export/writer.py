"""The write every export file goes through: skip it when unchanged, replace it atomically, remove stale variants.

Shared by the dataset chunk files (chunks.py) and the annotation files (annotations.py), so both hash, spool,
upload and clean up the same way. The writer's thread hashes the uncompressed lines and compresses them into a
spooled temporary file; the hash is compared with the one stored on the current object (S3 user metadata); the file
is uploaded only when it changed, as one PUT or a multipart upload, both of which S3 shows only when complete.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from drtool.adapters import s3 as s3_adapter
from drtool.core.chunk_writer import WRITER_FORMAT, ChunkFileWriter
from drtool.core.chunks import Compression
from drtool.core.events import Emit

log = logging.getLogger("drtool.export")

META_SHA = "drtool-content-sha256"
META_CHUNKS = "drtool-chunks"
META_FORMAT = "drtool-writer-format"
SPOOL_IN_MEMORY = 8 << 20  # bytes a dataset's file may take in memory before the spool moves to disk


@dataclass
class ExportOptions:
    datasets: tuple[str, ...] = ()
    all_datasets: bool = False
    compression: Compression = "none"
    dry_run: bool = False
    force: bool = False
    part_size_mb: int = 16
    break_stale_lock: bool = False
    # Annotation files of every app with annotation reply enabled (drtool/ops/export/annotations.py). None: with --all.
    annotations: bool | None = None

    @property
    def with_annotations(self) -> bool:
        return self.all_datasets if self.annotations is None else self.annotations


@dataclass
class DatasetExport:
    dataset_id: str
    name: str
    key: str
    url: str
    status: str = "pending"  # written | unchanged | would_write | skipped_external
    chunks: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    sha256: str = ""
    previous_sha256: str | None = None
    doc_forms: dict[str, int] = field(default_factory=dict)
    skipped_blank: int = 0
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kind: str = "dataset"  # "annotation": dataset_id is the app id, the file is annotations/<app_id>/...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_chunk_file(store: s3_adapter.BucketStore, result: DatasetExport, records: Iterable[dict[str, Any]],
                     options: ExportOptions, emit: Emit, *, stale_keys: Iterable[str],
                     blocks: Iterable[tuple[bytes, int]] = (), identity: tuple[str, ...] = (),
                     extra_metadata: dict[str, str] | None = None, spool_prefix: str = "drtool-chunks-") -> None:
    """Write `records` to result.key unless the stored file already holds them, then delete `stale_keys`.

    Shared by dataset and annotation files so both skip unchanged files, upload and clean up the same way.
    `identity`: what besides the lines makes the file (an annotation binding's model and threshold), hashed
    with them so that a change to it re-exports; `extra_metadata` is stored on the object beside the hash.
    """
    started = time.monotonic()
    head = store.head(result.key)
    metadata = (head or {}).get("Metadata") or {}
    if head is not None and metadata.get(META_FORMAT) == WRITER_FORMAT:
        result.previous_sha256 = metadata.get(META_SHA)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix=spool_prefix) as spool:
        writer = ChunkFileWriter(spool, options.compression, background=True)
        try:
            for record in records:
                writer.write(record)
            for block, count in blocks:  # lines already encoded in batches (encode_node_rows), after any records
                writer.write_block(block, count)
            lines_sha = writer.close()
        finally:
            writer.abort()  # stops the writer's thread after an error (or an interrupt) here; no-op after close
        result.sha256 = (hashlib.sha256("\n".join((lines_sha, *identity)).encode()).hexdigest() if identity
                         else lines_sha)
        result.chunks, result.raw_bytes = writer.count, writer.raw_bytes
        size = spool.tell()
        result.stored_bytes = size
        unchanged = result.previous_sha256 == result.sha256 and not options.force
        if options.dry_run:
            result.status = "unchanged" if unchanged else "would_write"
        elif unchanged:
            result.status = "unchanged"
        else:
            upload_spool(store, result, spool, size, options, emit, extra_metadata=extra_metadata)
    if not options.dry_run:
        for other in stale_keys:
            if store.head(other) is not None:
                store.delete(other)  # rebuild-index reads the first name that exists: never a stale one
                result.removed.append(other)
    result.seconds = round(time.monotonic() - started, 3)


def upload_spool(store: s3_adapter.BucketStore, result: DatasetExport, spool: Any, size: int,
                 options: ExportOptions, emit: Emit, *, extra_metadata: dict[str, str] | None = None) -> None:
    """Replace result.key with the spooled file in one atomic PUT or multipart upload (shared by the dataset and
    annotation files, so both get the same atomicity and the same clean-up of a killed run's upload)."""
    owner = result.dataset_id

    def on_part(part: int, parts: int) -> None:
        emit({"event": "export.part_uploaded", "dataset_id": owner, "part": part, "parts": parts})

    # This run holds the bucket's lock: an unfinished multipart upload of this file is a killed run's,
    # invisible but billed until aborted. Abort it here rather than leave it to a lifecycle rule.
    # Best effort: without s3:ListBucketMultipartUploads/AbortMultipartUpload the export still works.
    try:
        aborted = store.abort_uploads(result.key)
    except Exception as exc:
        aborted = 0
        log.info("%s %s: could not look for unfinished uploads of %s: %s", result.kind, owner, result.url, exc)
    if aborted:
        log.warning("%s %s: aborted %d unfinished upload(s) of %s left by a killed run", result.kind, owner,
                    aborted, result.url)
    store.put_file(
        result.key, spool, size,
        metadata={META_SHA: result.sha256, META_CHUNKS: str(result.chunks), META_FORMAT: WRITER_FORMAT,
                  **(extra_metadata or {})},
        content_type=_content_type(options.compression), part_size=options.part_size_mb << 20,
        on_part=on_part)
    result.status = "written"


def _content_type(compression: Compression) -> str:
    return {"none": "application/x-ndjson", "gzip": "application/gzip", "zstd": "application/zstd"}[compression]

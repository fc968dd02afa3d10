"""Writing processed-chunk files (docs/chunk-format.md, schema v1): the inverse of drtool.core.chunks.

Output is deterministic: fields in a fixed order, absent optional fields left out, compact JSON through the same
`dumps_chunk` the parser's tests use. The content hash is taken over the uncompressed lines, so it identifies the
content whatever the compression, and an unchanged dataset can be recognised without uploading anything.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import IO, Any

from drtool.core.chunks import CHUNK_FILE_NAMES, Compression

# The same serialisation as drtool.core.chunks.dumps_chunk, with one encoder for the whole file instead of one per
# line (json.dumps builds a new encoder for non-default options): a third of the export's CPU time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_FLUSH_BYTES = 1 << 20

# Part of the stored hash's identity: a change to what a line contains must re-export unchanged datasets.
WRITER_FORMAT = "1"
SUFFIX: dict[str, str] = {"none": "", "gzip": ".gz", "zstd": ".zst"}


def chunk_key(dataset_id: str, compression: Compression) -> str:
    """Key of a dataset's chunk file, relative to s3.key_prefix (where rebuild-index looks for it)."""
    return f"datasets/{dataset_id}/processed/chunks.jsonl{SUFFIX[compression]}"


def other_chunk_keys(dataset_id: str, compression: Compression) -> list[str]:
    """The other names rebuild-index would also accept; a stale one must not shadow the new file."""
    mine = chunk_key(dataset_id, compression)
    return [k for k in (f"datasets/{dataset_id}/processed/{n}" for n in CHUNK_FILE_NAMES) if k != mine]


def chunk_record(*, id: str, text: str, dataset_id: str, document_id: str, doc_hash: str | None = None,
                 position: int | None = None, doc_type: str | None = None, parent_id: str | None = None,
                 answer: str | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line's object, fields in contract order; None values are omitted so the line stays minimal."""
    record: dict[str, Any] = {"id": id, "text": text, "dataset_id": dataset_id, "document_id": document_id}
    for name, value in (("doc_hash", doc_hash), ("position", position), ("doc_type", doc_type),
                        ("parent_id", parent_id), ("answer", answer)):
        if value is not None:
            record[name] = value
    if metadata:
        record["metadata"] = metadata
    return record


def text_digest(text: str) -> bytes:
    """16 bytes identifying a chunk's text; verify --deep compares these instead of holding whole texts."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class ChunkFileWriter:
    """Serialises records into `sink` (compressed as asked), hashing the uncompressed bytes on the way.

    The sink is a local spool, never the final object: the caller uploads the finished file in one atomic PUT
    (or a multipart upload, which S3 only shows once it is completed).
    """

    def __init__(self, sink: IO[bytes], compression: Compression, *, level: int | None = None) -> None:
        self.compression = compression
        self.sha256 = hashlib.sha256()
        self.sha256.update(f"drtool-chunks-writer-{WRITER_FORMAT}\n".encode())
        self.count = 0
        self.raw_bytes = 0
        self._sink = sink
        self._closer: Any = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._out: Any
        if compression == "gzip":
            # mtime=0: the same content gives the same bytes, which keeps ETags comparable across runs.
            self._out = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level or 6, mtime=0)
            self._closer = self._out
        elif compression == "zstd":
            import zstandard

            self._out = zstandard.ZstdCompressor(level=level or 3).stream_writer(sink, closefd=False)
            self._closer = self._out
        else:
            self._out = sink

    def write(self, record: dict[str, Any]) -> None:
        line = _ENCODER.encode(record).encode("utf-8") + b"\n"
        self.raw_bytes += len(line)
        self.count += 1
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Hash and write lines in blocks: one call per MiB instead of one per line."""
        if self._pending:
            block = b"".join(self._pending)
            self.sha256.update(block)
            self._out.write(block)
            self._pending.clear()
            self._pending_bytes = 0

    def close(self) -> str:
        """Finish the compressed stream (the sink stays open) and return the content hash."""
        self._flush()
        if self._closer is not None:
            self._closer.close()
            self._closer = None
        self._sink.flush()
        return self.sha256.hexdigest()

"""Writing processed-chunk files (docs/chunk-format.md, schema v1): the inverse of drtool.core.chunks.

Output is deterministic: fields in a fixed order, absent optional fields left out, compact JSON through the same
`dumps_chunk` the parser's tests use. The content hash is taken over the uncompressed lines, so it identifies the
content whatever the compression, and an unchanged dataset can be recognised without uploading anything.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import queue
import threading
from typing import IO, Any

import zstandard

from drtool.core.chunks import CHUNK_FILE_NAMES, Compression

# The same serialisation as drtool.core.chunks.dumps_chunk, with one encoder for the whole file instead of one per
# line (json.dumps builds a new encoder for non-default options): a third of the export's CPU time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_FLUSH_BYTES = 1 << 20
# Blocks (about a MiB each) waiting for the background thread: what bounds the writer's memory when it lags.
_QUEUE_BLOCKS = 4

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

    `background=True` hashes, compresses and writes in a thread fed through a bounded queue, while the caller
    reads and encodes the next rows: hashlib, zlib and zstd release the GIL on large buffers, so this overlaps
    with the Python work on another core. Same bytes either way; call `abort()` in a `finally` so an exception
    in the caller stops the thread (a no-op after `close()`).
    """

    def __init__(self, sink: IO[bytes], compression: Compression, *, level: int | None = None,
                 background: bool = False) -> None:
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
            self._out = zstandard.ZstdCompressor(level=level or 3).stream_writer(sink, closefd=False)
            self._closer = self._out
        else:
            self._out = sink
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if background:
            self._queue = queue.Queue(maxsize=_QUEUE_BLOCKS)
            self._thread = threading.Thread(target=self._drain, name="drtool-chunk-writer", daemon=True)
            self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        line = _ENCODER.encode(record).encode("utf-8") + b"\n"
        self.raw_bytes += len(line)
        self.count += 1
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= _FLUSH_BYTES:
            self._flush()

    def write_block(self, block: bytes, count: int) -> None:
        """Append `count` lines already serialised as `write` would (each ending in a newline), in one call:
        export-chunks encodes a whole batch of rows at once instead of building one dict per line."""
        self._flush()
        self.raw_bytes += len(block)
        self.count += count
        self._put(block)

    def _flush(self) -> None:
        """Hash and write lines in blocks: one call per MiB instead of one per line."""
        if self._pending:
            block = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._put(block)

    def _emit(self, block: bytes) -> None:
        self.sha256.update(block)
        self._out.write(block)

    def _put(self, block: bytes) -> None:
        if self._queue is None:
            self._emit(block)
            return
        if self._error is not None:
            raise self._error
        self._queue.put(block)  # blocks while _QUEUE_BLOCKS wait: memory stays bounded

    def _drain(self) -> None:
        """The background thread: emit blocks until None; after an error keep taking them (and drop them), so
        that the caller never waits forever on a full queue and sees the error at its next write or at close."""
        assert self._queue is not None
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._emit(block)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _stop(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def abort(self) -> None:
        """Stop the background thread without finishing the file (after an error in the caller)."""
        self._stop()

    def close(self) -> str:
        """Finish the compressed stream (the sink stays open) and return the content hash."""
        self._flush()
        self._stop()
        if self._error is not None:
            raise self._error
        if self._closer is not None:
            self._closer.close()
            self._closer = None
        self._sink.flush()
        return self.sha256.hexdigest()

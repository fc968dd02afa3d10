"""The processed-chunk file contract (docs/chunk-format.md, schema version 1): streaming parse and validation.

A chunk file is the source of truth for a vector index, so a bad line must never silently become a bad vector.
Every problem is reported as `file:line: reason`; a broken compressed stream stops the file at the line where it
broke rather than guessing. Memory stays bounded: lines are read one at a time and duplicate detection keeps an
8-byte digest per id, not the ids themselves.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal

SCHEMA_VERSION = 1
CHUNK_FILE_NAMES = ("chunks.jsonl", "chunks.jsonl.gz", "chunks.jsonl.zst")
REQUIRED = ("id", "text", "dataset_id", "document_id")
OPTIONAL_STR = ("doc_hash", "doc_type", "parent_id", "answer")
# Keys drtool writes into the vector metadata itself; a chunk's extra metadata may not override them.
RESERVED_METADATA = frozenset({"doc_id", "doc_hash", "document_id", "dataset_id"})
MAX_LINE_BYTES = 16 * 1024 * 1024

Compression = Literal["none", "gzip", "zstd"]


class CorruptStream(Exception):
    """The compressed stream itself is broken; nothing after `line` can be trusted."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    text: str
    dataset_id: str
    document_id: str
    line: int
    doc_hash: str | None = None
    position: int | None = None
    doc_type: str | None = None
    parent_id: str | None = None
    answer: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def vector_metadata(self) -> dict[str, Any]:
        """The metadata object Dify stores next to the vector: its own keys plus the chunk's extras."""
        meta: dict[str, Any] = dict(self.metadata)
        meta.update(doc_id=self.id, doc_hash=self.doc_hash or content_hash(self.text),
                    document_id=self.document_id, dataset_id=self.dataset_id)
        if self.doc_type is not None:
            meta["doc_type"] = self.doc_type
        if self.parent_id is not None:
            meta["parent_id"] = self.parent_id
        if self.position is not None:
            meta.setdefault("position", self.position)
        if self.answer is not None:
            meta["answer"] = self.answer
        return meta


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


def content_hash(text: str) -> str:
    """sha256 of the exact text embedded: the sidecar cache key (with model id and dimension)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def compression_for(key: str) -> Compression:
    if key.endswith(".gz"):
        return "gzip"
    if key.endswith(".zst"):
        return "zstd"
    return "none"


def iter_lines(stream: IO[bytes], compression: Compression, source: str) -> Iterator[bytes]:
    """Yield raw lines (without the newline) from a possibly compressed byte stream, incrementally.

    A decompression error becomes CorruptStream naming the line after the last good one.
    """
    reader: IO[bytes]
    if compression == "gzip":
        reader = gzip.GzipFile(fileobj=stream, mode="rb")
    elif compression == "zstd":
        import zstandard

        reader = io.BufferedReader(_ZstdRaw(stream, zstandard), buffer_size=1 << 20)
    else:
        reader = stream
    number = 0
    while True:
        try:
            raw = reader.readline(MAX_LINE_BYTES + 1)
        except (OSError, EOFError, zlib.error, ValueError) as exc:  # gzip: BadGzipFile/EOFError; zstd: ZstdError
            raise CorruptStream(source, number + 1, f"{compression} stream is corrupt or truncated ({exc})") from None
        except Exception as exc:
            if type(exc).__name__ == "ZstdError":
                raise CorruptStream(source, number + 1,
                                    f"{compression} stream is corrupt or truncated ({exc})") from None
            raise
        if not raw:
            return
        number += 1
        yield raw.rstrip(b"\r\n") if raw.endswith(b"\n") else raw


class _ZstdRaw(io.RawIOBase):
    """Multi-frame zstd decompression that, unlike stream_reader, notices a truncated last frame."""

    def __init__(self, stream: IO[bytes], zstandard: Any) -> None:
        super().__init__()
        self._stream = stream
        self._zstd = zstandard
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False
        self._buffer = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buffer and not self._done:
            data = self._stream.read(1 << 16)
            if not data:
                self._done = True
                if self._fed and not self._obj.eof:
                    raise EOFError("zstd stream ends inside a frame")
                break
            while data:
                if self._obj.eof:
                    self._obj = self._zstd.ZstdDecompressor().decompressobj()
                    self._fed = False
                self._fed = True
                self._buffer += self._obj.decompress(data)
                data = self._obj.unused_data if self._obj.eof else b""
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def parse_lines(lines: Iterable[bytes], source: str, *, dataset_id: str | None = None
                ) -> Iterator[Chunk | Rejection]:
    """Validate each line against schema v1 and yield a Chunk or a Rejection; blank lines are skipped."""
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        result = parse_line(raw, number, source, dataset_id=dataset_id)
        if isinstance(result, Chunk):
            digest = hashlib.blake2b(result.id.encode("utf-8"), digest_size=8).digest()
            first = seen.get(digest)
            if first is not None:
                yield Rejection(source, number, f"duplicate id {result.id!r} (first seen on line {first})")
                continue
            seen[digest] = number
        yield result


def parse_line(raw: bytes, number: int, source: str, *, dataset_id: str | None = None) -> Chunk | Rejection:
    def reject(reason: str) -> Rejection:
        return Rejection(source, number, reason)

    if len(raw) > MAX_LINE_BYTES:
        return reject(f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject(f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return reject(f"malformed JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:  # a line of 100k '[' fits in MAX_LINE_BYTES and would otherwise crash the run
        return reject("malformed JSON: nested too deeply")
    if not isinstance(obj, dict):
        return reject(f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return reject(f"schema version {version!r} is not supported (this drtool reads version {SCHEMA_VERSION})")
    for name in REQUIRED:
        value = obj.get(name)
        if value is None:
            return reject(f"missing required field '{name}'")
        if not isinstance(value, str):
            return reject(f"field '{name}' must be a string, got {type(value).__name__}")
        if not value.strip():
            return reject(f"field '{name}' is empty")
    if dataset_id is not None and obj["dataset_id"] != dataset_id:
        return reject(f"dataset_id {obj['dataset_id']!r} does not match the file's dataset {dataset_id!r}")
    for name in OPTIONAL_STR:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            return reject(f"field '{name}' must be a string, got {type(value).__name__}")
    position = obj.get("position")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int)):
        return reject(f"field 'position' must be an integer, got {type(position).__name__}")
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        return reject(f"field 'metadata' must be an object, got {type(metadata).__name__}")
    clash = sorted(RESERVED_METADATA & metadata.keys())
    if clash:
        return reject(f"metadata may not set {', '.join(clash)} (drtool writes them from the chunk's fields)")
    return Chunk(
        id=obj["id"], text=obj["text"], dataset_id=obj["dataset_id"], document_id=obj["document_id"], line=number,
        doc_hash=obj.get("doc_hash"), position=position, doc_type=obj.get("doc_type"),
        parent_id=obj.get("parent_id"), answer=obj.get("answer"), metadata=metadata,
    )


def dumps_chunk(chunk: dict[str, Any]) -> bytes:
    """One line of a chunk file, as writers (export-chunks, tests, bench) should produce it."""
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"

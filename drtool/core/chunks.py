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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import zstandard

SCHEMA_VERSION = 1
CHUNK_FILE_NAMES = ("chunks.jsonl", "chunks.jsonl.gz", "chunks.jsonl.zst")
REQUIRED = ("id", "text", "dataset_id", "document_id")
OPTIONAL_STR = ("doc_hash", "doc_type", "parent_id", "answer")
# Keys drtool writes into the vector metadata itself; a chunk's extra metadata may not override them.
RESERVED_METADATA = frozenset({"doc_id", "doc_hash", "document_id", "dataset_id"})
MAX_LINE_BYTES = 16 * 1024 * 1024
# Line kinds (docs/chunk-format.md): a dataset chunk (the default when `kind` is absent) or an app annotation
# (`annotations/<app_id>/processed/chunks.jsonl`), whose owner is `app_id` and whose vector metadata is Dify's
# annotation layout. A file holds one kind; a line of the other kind is rejected, never indexed the wrong way.
KIND_CHUNK = "chunk"
KIND_ANNOTATION = "annotation"
ANNOTATION_REQUIRED = ("id", "text", "app_id")

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
    kind: str = KIND_CHUNK  # KIND_ANNOTATION: dataset_id holds the app id, document_id the annotation id

    def vector_metadata(self) -> dict[str, Any]:
        """The metadata object Dify stores next to the vector: its own keys plus the chunk's extras.

        An annotation gets exactly what Dify's enable_annotation_reply_task writes ({annotation_id, app_id,
        doc_id}, no document_id/dataset_id/doc_hash): Dify reads `annotation_id` from the top hit to load the
        reply, and extra keys would make the rebuilt collection differ from Dify's own.
        """
        if self.kind == KIND_ANNOTATION:
            return {"annotation_id": self.id, "app_id": self.dataset_id, "doc_id": self.id}
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

    Memory is bounded whatever the file holds: decompressors produce at most one buffer per read (an 8 KiB
    "zip bomb" must not become 1 GiB in memory), and a line over MAX_LINE_BYTES is yielded cut to
    MAX_LINE_BYTES + 1 bytes (so parse_line rejects it) while the rest of it is read and dropped, so the
    line numbers of the lines after it stay right. A decompression error becomes CorruptStream naming the line
    after the last good one.
    """
    reader: IO[bytes]
    if compression == "gzip":
        # GzipFile inflates at most what its 8 KiB buffer asks for per read (zlib's max_length): bounded already.
        # (A bigger buffer on top would lose the lines before a truncation: the error comes with no partial data.)
        reader = gzip.GzipFile(fileobj=stream, mode="rb")
    elif compression == "zstd":
        reader = io.BufferedReader(_ZstdRaw(stream, zstandard), buffer_size=READ_BUFFER)
    else:
        reader = stream
    number = 0
    while True:
        try:
            raw = reader.readline(MAX_LINE_BYTES + 1)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                _skip_rest_of_line(reader)
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


READ_BUFFER = 1 << 20  # decompressed bytes produced per read: the bound on what a bomb can cost between lines


def _skip_rest_of_line(reader: IO[bytes]) -> None:
    """Read and drop the rest of an over-long line, one buffer at a time."""
    while True:
        piece = reader.readline(READ_BUFFER)
        if not piece or piece.endswith(b"\n"):
            return


class _ZstdRaw(io.RawIOBase):
    """Multi-frame zstd decompression with bounded output per read that notices a truncated last frame.

    python-zstandard's stream_reader fills at most the caller's buffer per read (decompressobj returns a whole
    input's output at once: 64 KiB of a crafted frame is 2 GiB), but it ends quietly when the input stops inside a
    frame; the frame walker on its input tells a complete stream from a cut one.
    """

    def __init__(self, stream: IO[bytes], zstandard: Any) -> None:
        super().__init__()
        self._frames = _ZstdFrameWalker(stream)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self._frames, read_size=1 << 16, read_across_frames=True, closefd=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = int(self._reader.readinto(buffer))
        if n == 0 and len(buffer) and not self._frames.at_boundary():
            raise EOFError("zstd stream ends inside a frame")
        return n


_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50


class _ZstdFrameWalker:
    """Passes a zstd stream through unchanged while walking its frame and block headers (RFC 8878, section 3).

    Only headers are parsed, never data, so the cost is a few operations per block (a block is at most 128 KiB of
    output). `at_boundary()` is true between frames: false at the end of input means the last frame was cut.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._phase = "magic"
        self._want = 4
        self._header = bytearray()
        self._skip = 0
        self._checksum = False
        self._last = False
        self.broken = False  # bytes that are no zstd frame: the decompressor reports it, this only stops walking

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data and not self.broken:
            self._walk(memoryview(data))
        return data

    def at_boundary(self) -> bool:
        return not self.broken and self._phase == "magic" and not self._header and not self._skip

    def _walk(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.broken:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                if not self._skip:
                    self._after_skip()
                continue
            take = min(self._want - len(self._header), end - pos)
            self._header += data[pos:pos + take]
            pos += take
            if len(self._header) == self._want:
                header = bytes(self._header)
                self._header.clear()
                self._on_header(header)

    def _expect(self, phase: str, want: int) -> None:
        self._phase, self._want = phase, want

    def _on_header(self, header: bytes) -> None:
        if self._phase == "magic":
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_MAGIC:
                self._expect("descriptor", 1)
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._expect("skippable", 4)
            else:
                self.broken = True
        elif self._phase == "descriptor":
            fhd = header[0]
            if fhd & 0x08:  # reserved bit
                self.broken = True
                return
            single_segment = bool(fhd & 0x20)
            fcs = (1 if single_segment else 0, 2, 4, 8)[fhd >> 6]
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            self._checksum = bool(fhd & 0x04)
            if rest:
                self._expect("frame header", rest)
            else:
                self._expect("block", 3)
        elif self._phase == "frame header":
            self._expect("block", 3)
        elif self._phase == "block":
            value = int.from_bytes(header, "little")
            self._last, kind, size = bool(value & 1), (value >> 1) & 3, value >> 3
            if kind == 3:
                self.broken = True
                return
            self._phase = "block data"
            self._skip = 1 if kind == 1 else size
            if not self._skip:
                self._after_skip()
        elif self._phase == "skippable":
            self._phase = "skippable data"
            self._skip = int.from_bytes(header, "little")
            if not self._skip:
                self._after_skip()

    def _after_skip(self) -> None:
        if self._phase == "block data" and not self._last:
            self._expect("block", 3)
        elif self._phase == "block data" and self._checksum:
            self._phase, self._skip = "checksum", 4
        else:  # the frame (or skippable frame, or checksum) is complete
            self._expect("magic", 4)


def parse_lines(lines: Iterable[bytes], source: str, *, dataset_id: str | None = None, kind: str = KIND_CHUNK
                ) -> Iterator[Chunk | Rejection]:
    """Validate each line against schema v1 and yield a Chunk or a Rejection; blank lines are skipped.

    `kind` is the file's kind; for an annotation file `dataset_id` is the owning app id."""
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        result = parse_line(raw, number, source, dataset_id=dataset_id, kind=kind)
        if isinstance(result, Chunk):
            digest = hashlib.blake2b(result.id.encode("utf-8"), digest_size=8).digest()
            first = seen.get(digest)
            if first is not None:
                yield Rejection(source, number, f"duplicate id {result.id!r} (first seen on line {first})")
                continue
            seen[digest] = number
        yield result


def parse_line(raw: bytes, number: int, source: str, *, dataset_id: str | None = None, kind: str = KIND_CHUNK
               ) -> Chunk | Rejection:
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
    line_kind = obj.get("kind", KIND_CHUNK)
    if line_kind not in (KIND_CHUNK, KIND_ANNOTATION):
        return reject(f"unknown kind {line_kind!r}")
    if line_kind != kind:
        return reject(f"a line of kind {line_kind!r} in a file of kind {kind!r}")
    if line_kind == KIND_ANNOTATION:
        return _parse_annotation(obj, number, reject, app_id=dataset_id)
    problem = _string_fields_problem(obj, REQUIRED, OPTIONAL_STR, owner_field="dataset_id", owner=dataset_id,
                                     owner_noun="dataset")
    if problem:
        return reject(problem)
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


def _parse_annotation(obj: dict[str, Any], number: int, reject: Callable[[str], Rejection], *,
                      app_id: str | None) -> Chunk | Rejection:
    """An annotation line: id (annotation id), text (what Dify embeds), app_id (owner), optional answer."""
    problem = _string_fields_problem(obj, ANNOTATION_REQUIRED, ("answer",), owner_field="app_id", owner=app_id,
                                     owner_noun="app")
    if problem:
        return reject(problem)
    return Chunk(id=obj["id"], text=obj["text"], dataset_id=obj["app_id"], document_id=obj["id"], line=number,
                 answer=obj.get("answer"), kind=KIND_ANNOTATION)


def _string_fields_problem(obj: dict[str, Any], required: Iterable[str], optional: Iterable[str], *,
                           owner_field: str, owner: str | None, owner_noun: str) -> str | None:
    """The first reason a line's string fields fail (required: present, strings, not blank; the owner: the file's;
    optional: strings), or None. One check for both line kinds, so both reject a fault in the same words."""
    for name in required:
        value = obj.get(name)
        if value is None:
            return f"missing required field '{name}'"
        if not isinstance(value, str):
            return f"field '{name}' must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"field '{name}' is empty"
    if owner is not None and obj[owner_field] != owner:
        return f"{owner_field} {obj[owner_field]!r} does not match the file's {owner_noun} {owner!r}"
    for name in optional:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            return f"field '{name}' must be a string, got {type(value).__name__}"
    return None


def dumps_chunk(chunk: dict[str, Any]) -> bytes:
    """One line of a chunk file, as writers (export-chunks, tests, bench) should produce it."""
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"

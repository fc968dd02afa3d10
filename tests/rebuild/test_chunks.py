"""The chunk-file contract: every fault is a Rejection or CorruptStream naming file:line and the reason."""

from __future__ import annotations

import gzip
import io
import json

import pytest
import zstandard

from drtool.core.chunks import (
    Chunk,
    CorruptStream,
    Rejection,
    compression_for,
    dumps_chunk,
    iter_lines,
    parse_lines,
)

DS = "3f1c2a8e-0000-4000-8000-000000000001"


def good(i: int, **extra: object) -> dict[str, object]:
    return {"id": f"node-{i}", "text": f"chunk number {i} about solar panels", "dataset_id": DS,
            "document_id": "doc-1", **extra}


def parse(data: bytes, compression: str = "none") -> list[Chunk | Rejection]:
    lines = iter_lines(io.BufferedReader(io.BytesIO(data)), compression, "s3://b/chunks.jsonl")  # type: ignore[arg-type]
    return list(parse_lines(lines, "s3://b/chunks.jsonl", dataset_id=DS))


def only_rejections(items: list[Chunk | Rejection]) -> list[Rejection]:
    return [i for i in items if isinstance(i, Rejection)]


def test_valid_lines_become_chunks_with_dify_metadata() -> None:
    data = dumps_chunk(good(1, doc_hash="h1", position=3, metadata={"source": "a.pdf", "page": 2}))
    data += b"\n"  # a blank line is ignored
    data += dumps_chunk(good(2))
    items = parse(data)
    assert all(isinstance(i, Chunk) for i in items) and len(items) == 2
    first = items[0]
    assert isinstance(first, Chunk) and first.line == 1
    meta = first.vector_metadata()
    assert meta["doc_id"] == "node-1" and meta["doc_hash"] == "h1" and meta["document_id"] == "doc-1"
    assert meta["dataset_id"] == DS and meta["source"] == "a.pdf" and meta["page"] == 2
    assert isinstance(items[1], Chunk) and items[1].line == 3


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"id": "x", "text": ', "malformed JSON"),
    (b'[1, 2]', "expected a JSON object"),
    (json.dumps({"text": "t", "dataset_id": DS, "document_id": "d"}).encode(), "missing required field 'id'"),
    (json.dumps({"id": "x", "dataset_id": DS, "document_id": "d"}).encode(), "missing required field 'text'"),
    (json.dumps({"id": "x", "text": "   ", "dataset_id": DS, "document_id": "d"}).encode(), "field 'text' is empty"),
    (json.dumps({"id": "x", "text": 5, "dataset_id": DS, "document_id": "d"}).encode(), "must be a string"),
    (json.dumps({"id": "x", "text": "t", "dataset_id": "other", "document_id": "d"}).encode(),
     "does not match the file's dataset"),
    (json.dumps({"id": "x", "text": "t", "dataset_id": DS, "document_id": "d", "metadata": []}).encode(),
     "'metadata' must be an object"),
    (json.dumps({"id": "x", "text": "t", "dataset_id": DS, "document_id": "d",
                 "metadata": {"doc_id": "evil"}}).encode(), "may not set doc_id"),
    (json.dumps({"id": "x", "text": "t", "dataset_id": DS, "document_id": "d", "position": "3"}).encode(),
     "'position' must be an integer"),
    (json.dumps({"v": 2, "id": "x", "text": "t", "dataset_id": DS, "document_id": "d"}).encode(),
     "schema version 2 is not supported"),
    (b'{"id": "x", "text": "caf\xe9", "dataset_id": "' + DS.encode() + b'", "document_id": "d"}',
     "invalid UTF-8 at byte"),
])
def test_each_bad_line_is_rejected_with_its_line_number(line: bytes, reason: str) -> None:
    data = dumps_chunk(good(1)) + line + b"\n" + dumps_chunk(good(3))
    items = parse(data)
    rejections = only_rejections(items)
    assert len(rejections) == 1, rejections
    assert rejections[0].line == 2
    assert reason in rejections[0].reason
    assert str(rejections[0]).startswith("s3://b/chunks.jsonl:2: ")
    assert [i.id for i in items if isinstance(i, Chunk)] == ["node-1", "node-3"]


def test_duplicate_ids_reject_the_later_line_and_name_the_first() -> None:
    data = dumps_chunk(good(1)) + dumps_chunk(good(2)) + dumps_chunk({**good(1), "text": "another text"})
    rejections = only_rejections(parse(data))
    assert [(r.line, r.reason) for r in rejections] == [(3, "duplicate id 'node-1' (first seen on line 1)")]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_files_stream_and_a_corrupt_stream_names_the_line(compression: str) -> None:
    plain = b"".join(dumps_chunk(good(i)) for i in range(1, 2001))
    packed = gzip.compress(plain) if compression == "gzip" else zstandard.ZstdCompressor().compress(plain)
    assert len([i for i in parse(packed, compression) if isinstance(i, Chunk)]) == 2000
    truncated = packed[: len(packed) // 2]
    with pytest.raises(CorruptStream) as info:
        parse(truncated, compression)
    assert info.value.line > 1 and "corrupt or truncated" in info.value.reason
    garbage = packed[:20] + bytes(b ^ 0xFF for b in packed[20:200]) + packed[200:]
    with pytest.raises(CorruptStream):
        parse(garbage, compression)


def test_compression_from_key() -> None:
    assert compression_for("a/chunks.jsonl.gz") == "gzip"
    assert compression_for("a/chunks.jsonl.zst") == "zstd"
    assert compression_for("a/chunks.jsonl") == "none"

"""The chunk writer is the parser's inverse: whatever it writes, drtool/core/chunks.py reads back unchanged."""

from __future__ import annotations

import io
from typing import Any

import pytest

from drtool.core.chunk_writer import ChunkFileWriter, chunk_key, chunk_record, other_chunk_keys
from drtool.core.chunks import Chunk, iter_lines, parse_lines

RECORDS = [
    chunk_record(id="n1", text="Ünïcode \"quoted\" text\nwith a newline", dataset_id="ds", document_id="d1",
                 doc_hash="h1", position=1, metadata={"source": "a.pdf"}),
    chunk_record(id="n2", text="What is the question?", dataset_id="ds", document_id="d2", position=2,
                 answer="The answer."),
    chunk_record(id="n3", text="A child chunk.", dataset_id="ds", document_id="d1", position=1, parent_id="seg-1"),
]


def write_records(compression: Any) -> tuple[bytes, str]:
    sink = io.BytesIO()
    writer = ChunkFileWriter(sink, compression)
    for record in RECORDS:
        writer.write(record)
    digest = writer.close()  # finishes the compressed stream
    return sink.getvalue(), digest


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_written_files_parse_back_identically(compression: Any) -> None:
    data, _ = write_records(compression)
    parsed = list(parse_lines(iter_lines(io.BytesIO(data), compression, "mem"), "mem", dataset_id="ds"))
    assert all(isinstance(p, Chunk) for p in parsed)
    chunks = [p for p in parsed if isinstance(p, Chunk)]
    assert [(c.id, c.text, c.document_id, c.answer, c.parent_id, c.position) for c in chunks] == [
        ("n1", RECORDS[0]["text"], "d1", None, None, 1), ("n2", "What is the question?", "d2", "The answer.", None, 2),
        ("n3", "A child chunk.", "d1", None, "seg-1", 1)]
    assert chunks[0].metadata == {"source": "a.pdf"} and chunks[0].doc_hash == "h1"


def test_same_content_same_bytes_and_one_hash_whatever_the_compression() -> None:
    plain, digest = write_records("none")
    assert write_records("none") == (plain, digest)
    gz, gz_digest = write_records("gzip")
    assert write_records("gzip")[0] == gz  # gzip header without a timestamp: reproducible bytes
    assert gz_digest == write_records("zstd")[1] == digest
    assert b'"answer"' not in plain.splitlines()[0]  # absent fields are left out, not null


def test_lines_are_what_dumps_chunk_writes() -> None:
    from drtool.core.chunks import dumps_chunk

    assert write_records("none")[0] == b"".join(dumps_chunk(r) for r in RECORDS)


def test_names_match_what_rebuild_looks_for() -> None:
    assert chunk_key("ds", "zstd") == "datasets/ds/processed/chunks.jsonl.zst"
    assert other_chunk_keys("ds", "zstd") == ["datasets/ds/processed/chunks.jsonl",
                                              "datasets/ds/processed/chunks.jsonl.gz"]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_background_writer_writes_the_same_bytes_and_hash(compression: Any) -> None:
    sink = io.BytesIO()
    writer = ChunkFileWriter(sink, compression, background=True)
    for _ in range(50):  # many blocks through the bounded queue, records and pre-encoded blocks mixed
        for record in RECORDS[:2]:
            writer.write(record)
        writer.write_block(json_line(RECORDS[2]) * 2000, 2000)
    digest = writer.close()
    writer.abort()  # a no-op after close
    reference = io.BytesIO()
    plain = ChunkFileWriter(reference, compression)
    for _ in range(50):
        for record in RECORDS[:2]:
            plain.write(record)
        for _ in range(2000):
            plain.write(RECORDS[2])
    plain_digest = plain.close()
    assert (sink.getvalue(), digest) == (reference.getvalue(), plain_digest)
    assert writer.count == plain.count == 50 * 2002


class BrokenSink(io.BytesIO):
    def write(self, data: Any) -> int:
        raise OSError(28, "No space left on device")


def test_background_writer_hands_a_write_error_to_the_caller() -> None:
    writer = ChunkFileWriter(BrokenSink(), "none", background=True)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(100):  # more blocks than the queue holds: the caller must not block forever
            writer.write_block(b"x" * (1 << 20), 1)
        writer.close()
    writer.abort()
    assert writer._thread is None  # stopped


def json_line(record: dict[str, Any]) -> bytes:
    from drtool.core.chunks import dumps_chunk

    return dumps_chunk(record)

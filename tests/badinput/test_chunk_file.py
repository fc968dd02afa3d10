"""Chunk files (`chunks.jsonl[.gz|.zst]`): any bytes, any JSON and any damage to a compressed stream end as a
Rejection or CorruptStream naming the file and line, never as another exception."""

from __future__ import annotations

import gzip
import io
import json
import re
from typing import Any

import zstandard
from hypothesis import given
from hypothesis import strategies as st

from drtool.core.chunks import Chunk, CorruptStream, Rejection, dumps_chunk, iter_lines, parse_line, parse_lines
from tests.badinput.strategies import PROFILE, SMALL, flip, json_values

SOURCE = "s3://b/datasets/d/processed/chunks.jsonl"
FIELDS = st.sampled_from(["id", "text", "dataset_id", "document_id", "doc_hash", "position", "doc_type",
                          "parent_id", "answer", "metadata", "v", "doc_id", "source"])


def _parse_all(data: bytes, compression: str) -> list[Chunk | Rejection]:
    return list(parse_lines(iter_lines(io.BytesIO(data), compression, SOURCE), SOURCE))  # type: ignore[arg-type]


def _check(items: list[Chunk | Rejection]) -> None:
    for item in items:
        if isinstance(item, Rejection):
            assert item.source == SOURCE and item.line >= 1 and item.reason
            assert str(item).startswith(f"{SOURCE}:{item.line}: ")
        else:
            assert isinstance(item, Chunk)
            assert all(isinstance(getattr(item, f), str) and getattr(item, f).strip()
                       for f in ("id", "text", "dataset_id", "document_id"))
            item.vector_metadata()  # what rebuild-index writes: must not fail for an accepted chunk


@PROFILE
@given(st.binary(max_size=400))
def test_any_bytes_uncompressed(data: bytes) -> None:
    _check(_parse_all(data, "none"))


@PROFILE
@given(st.dictionaries(FIELDS, json_values(FIELDS, leaves=12)))
def test_any_json_object_is_a_chunk_or_a_named_rejection(obj: dict[str, Any]) -> None:
    line = json.dumps(obj).encode()
    result = parse_line(line, 7, SOURCE)
    _check([result])
    if isinstance(result, Rejection):
        assert result.line == 7
        named = re.search(r"field '(\w+)'", result.reason)
        if named:  # a field rejection names a field the line really has (or must have)
            assert named.group(1) in obj or "missing" in result.reason


@SMALL
@given(st.lists(st.sampled_from([b"{", b"[", b"]", b"}", b'"a":', b"1", b","]), max_size=60),
       st.integers(min_value=10, max_value=3000))
def test_deeply_nested_or_broken_json(tokens: list[bytes], depth: int) -> None:
    for line in (b"".join(tokens), b"[" * depth + b"]" * depth, b'{"id":' * depth):
        _check([parse_line(line, 1, SOURCE)])


def test_nesting_deeper_than_the_interpreter_is_a_rejection() -> None:
    """Found by the property above: 100k '[' crashed parse_line with RecursionError before the fix."""
    result = parse_line(b"[" * 100_000, 3, SOURCE)
    assert isinstance(result, Rejection) and str(result) == f"{SOURCE}:3: malformed JSON: nested too deeply"


def _valid_file(n: int) -> bytes:
    return b"".join(dumps_chunk({"id": f"c{i}", "text": f"text {i}", "dataset_id": "d", "document_id": "doc"})
                    for i in range(n))


@PROFILE
@given(st.sampled_from(["gzip", "zstd"]), st.integers(min_value=1, max_value=40), st.integers(min_value=0),
       st.integers(min_value=0, max_value=7), st.integers(min_value=0), st.booleans())
def test_damaged_compressed_stream(compression: str, n: int, at: int, bit: int, cut: int, truncate: bool) -> None:
    plain = _valid_file(n)
    packed = gzip.compress(plain) if compression == "gzip" else zstandard.ZstdCompressor().compress(plain)
    damaged = packed[: cut % max(1, len(packed))] if truncate else flip(packed, at, bit)
    try:
        items = _parse_all(damaged, compression)
    except CorruptStream as exc:
        assert exc.source == SOURCE and exc.line >= 1
        assert str(exc).startswith(f"{SOURCE}:{exc.line}: {compression} stream is corrupt or truncated")
        return
    _check(items)
    # Damage the decompressor did not notice (gzip's CRC covers it; a zstd frame may carry no checksum) can only
    # change which lines are valid, never invent a valid chunk that was not in the file.
    originals = {c.id: c.text for c in _parse_all(plain, "none") if isinstance(c, Chunk)}
    for item in items:
        if isinstance(item, Chunk) and item.id in originals and compression == "gzip":
            assert originals[item.id] == item.text


@SMALL
@given(st.binary(max_size=300), st.sampled_from(["gzip", "zstd"]))
def test_garbage_announced_as_compressed(data: bytes, compression: str) -> None:
    try:
        _check(_parse_all(data, compression))
    except CorruptStream as exc:
        assert exc.source == SOURCE and exc.line >= 1

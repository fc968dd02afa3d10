"""Decompression bombs and oversized artifacts: memory stays bounded whatever a chunk file, a manifest or a small
JSON artifact decompresses to or weighs.

The bounds are checked by what could fail without the fix, never by time: tracemalloc's peak for the readers
(the code before the fix held the whole output of every 64 KiB of zstd input, 64 MiB here, at once), the CLI
process's peak resident set (VmHWM) for `drtool rebuild-index` reading a 1 GiB bomb from MinIO, and the bytes a
refused oversized object costs.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from drtool.adapters import s3 as s3a
from drtool.core import manifest as mf
from drtool.core.chunks import MAX_LINE_BYTES, Chunk, CorruptStream, Rejection, dumps_chunk, iter_lines, parse_lines
from tests.badinput.strategies import error_message
from tests.foundation.cli_runner import DRTOOL

MIB = 1 << 20
SOURCE = "s3://b/datasets/d/processed/chunks.jsonl"


def _zstd(pieces: Iterator[bytes]) -> bytes:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as writer:
        for piece in pieces:
            writer.write(piece)
    return out.getvalue()


def _gzip(pieces: Iterator[bytes]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as writer:
        for piece in pieces:
            writer.write(piece)
    return out.getvalue()


PACK: dict[str, Callable[[Iterator[bytes]], bytes]] = {"zstd": _zstd, "gzip": _gzip}


def _zeros(mib: int) -> Iterator[bytes]:
    for _ in range(mib):
        yield b"\0" * MIB


def _short_lines(mib: int) -> Iterator[bytes]:
    block = (b"x" * 1023 + b"\n") * 1024
    for _ in range(mib):
        yield block


def _peak(run: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _read_lines(data: bytes, compression: str) -> Iterator[bytes]:
    return iter_lines(io.BufferedReader(io.BytesIO(data)), compression, SOURCE)  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_bomb_of_short_lines_is_read_with_bounded_memory(compression: str) -> None:
    """64 MiB of 1 KiB lines: each read produces at most one buffer, not the output of the whole input."""
    bomb = PACK[compression](_short_lines(64))
    assert len(bomb) < 2 * MIB  # the point of a bomb: a small object that decompresses to a lot

    def count() -> int:
        return sum(1 for _ in _read_lines(bomb, compression))

    lines, peak = _peak(count)
    assert lines == 64 * 1024
    assert peak < 8 * MIB, f"{compression}: peak {peak / MIB:.1f} MiB while reading a 64 MiB bomb"


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_an_endless_line_is_one_rejection_and_the_next_line_keeps_its_number(compression: str) -> None:
    """64 MiB without a newline, then a valid line: one over-long line rejected (not four 16 MiB pieces), the
    valid line is line 2, and memory holds one line's limit, not the bomb."""
    good = dumps_chunk({"id": "a", "text": "t", "dataset_id": "d", "document_id": "doc"})
    bomb = PACK[compression](iter([*_zeros(64), b"\n", good]))

    def parse() -> list[Chunk | Rejection]:
        return list(parse_lines(_read_lines(bomb, compression), SOURCE, dataset_id="d"))

    items, peak = _peak(parse)
    assert [type(i).__name__ for i in items] == ["Rejection", "Chunk"]
    assert isinstance(items[0], Rejection) and items[0].line == 1
    assert items[0].reason == f"line longer than {MAX_LINE_BYTES} bytes"
    assert isinstance(items[1], Chunk) and items[1].line == 2 and items[1].id == "a"
    assert peak < 2 * MAX_LINE_BYTES + 8 * MIB, f"{compression}: peak {peak / MIB:.1f} MiB"  # readline joins


def test_a_manifest_bomb_is_refused_at_the_line_limit() -> None:
    bomb = _zstd(_zeros(64))

    def read() -> str:
        with pytest.raises(ValueError) as info:
            list(mf.read_manifest(io.BytesIO(bomb)))
        return str(info.value)

    message, peak = _peak(read)
    assert message == f"manifest line 1 is longer than {MAX_LINE_BYTES} bytes"
    assert peak < 2 * MAX_LINE_BYTES + 8 * MIB, f"peak {peak / MIB:.1f} MiB"


def _frames() -> list[bytes]:
    """Valid zstd streams of every shape the frame walker must follow."""
    plain = b"".join(dumps_chunk({"id": f"n{i}", "text": f"chunk {i} " + "abc" * (i % 50), "dataset_id": "d",
                                  "document_id": "doc"}) for i in range(300))
    out = []
    for checksum in (True, False):
        for size in (True, False):
            c = zstandard.ZstdCompressor(level=3, write_checksum=checksum, write_content_size=size)
            out.append(c.compress(plain))
            out.append(c.compress(plain[:5000]) + c.compress(plain[5000:]))  # two frames
    skippable = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    out.append(skippable + zstandard.ZstdCompressor().compress(plain) + skippable)
    out.append(zstandard.ZstdCompressor().compress(bytes(range(256)) * 2000 + b"\n"))  # raw blocks
    out.append(zstandard.ZstdCompressor().compress(b""))
    return out


@pytest.mark.parametrize("index", range(len(_frames())))
def test_the_frame_walker_accepts_whole_streams_and_catches_every_cut(index: int) -> None:
    data = _frames()[index]
    whole = list(_read_lines(data, "zstd"))
    assert b"".join(line + b"\n" for line in whole) == zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(data), read_across_frames=True).read() or not whole
    step = max(1, len(data) // 400)
    for cut in range(1, len(data), step):
        with pytest.raises(CorruptStream):
            list(_read_lines(data[:cut], "zstd"))


# --- oversized small artifacts: refused by get_bytes, against a real MinIO ---------------------------------------

def test_get_bytes_refuses_an_oversized_artifact(minio_pair: Any) -> None:
    client = minio_pair.a.s3_client()
    bucket = f"big-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="meta.json", Body=b" " * (s3a.SMALL_OBJECT_MAX_BYTES + 1))
    client.put_object(Bucket=bucket, Key="ok.json", Body=b"{}")
    with pytest.raises(s3a.ObjectTooLarge, match=f"s3://{bucket}/meta.json is .* bytes, more than"):
        s3a.get_bytes(client, bucket, "meta.json")
    assert s3a.get_bytes(client, bucket, "ok.json") == b"{}"
    with pytest.raises(s3a.ObjectTooLarge, match="larger than 1 bytes"):  # no Content-Length check: read cap
        s3a.read_capped(client.get_object(Bucket=bucket, Key="ok.json")["Body"], 1, "ok.json")
    err = s3a.translate_error(s3a.ObjectTooLarge("x is too large"), what="meta.json", endpoint=None)
    assert err.exit_code == 4


# --- the real CLI: a 1 GiB bomb chunk file in MinIO --------------------------------------------------------------

DATASET = "5b1f4a34-6a0c-4c63-9a55-0d7c7c0e00b0"
KEY = f"datasets/{DATASET}/processed/chunks.jsonl"


def _run_measured(args: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """Run drtool, sampling its peak resident set (VmHWM, KiB) from /proc while it runs."""
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")} | env
    proc = subprocess.Popen([DRTOOL, *args], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")))
        except (OSError, StopIteration):
            pass
        time.sleep(0.02)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, error_message(err) + "\n" + out, peak


@pytest.mark.parametrize("suffix", [".zst", ".gz"])
def test_a_bomb_chunk_file_ends_in_a_rejection_not_in_eaten_memory(minio_pair: Any, tmp_path: Path,
                                                                   suffix: str) -> None:
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"bomb-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    body = (_zstd if suffix == ".zst" else _gzip)(_zeros(1024))
    client.put_object(Bucket=bucket, Key=KEY + suffix, Body=body)
    env = {"DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": site.access_key,
           "DRTOOL_S3_SECRET_KEY": site.secret_key, "DRTOOL_S3_ADDRESS_STYLE": "path",
           "DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": str(tmp_path / "milvus.db"),
           "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1",
           "DRTOOL_EMBEDDING_MODEL": "m", "DRTOOL_EMBEDDING_DIMENSIONS": "8", "DRTOOL_REBUILD_MAX_REJECTS": "0"}
    code, message, peak_kib = _run_measured(["rebuild-index", "--dataset", DATASET, "--dry-run"], env)
    assert code == 2, message
    assert f"{KEY}{suffix}:1: line longer than {MAX_LINE_BYTES} bytes" in message, message
    assert "Traceback" not in message
    # Interpreter + imports are ~150-250 MiB; the 1 GiB output would add 1-2 GiB before the fix.
    assert 0 < peak_kib < 450 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB for a {len(body)}-byte bomb"

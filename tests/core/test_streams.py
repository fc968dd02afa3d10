"""drtool.core.streams.CountingRawStream: a `read(n)` body turned into a raw stream that counts what it pulls."""

from __future__ import annotations

import gzip
import io

from drtool.core.streams import CountingRawStream


class Body:
    """A streaming body like botocore's: `read(n)` returns at most n bytes (here at most `step`), `close()`."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self.data, self.step, self.pos, self.closed, self.reads = data, step, 0, False, 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        size = min(n, self.step) if n >= 0 else self.step
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


def test_readline_through_a_buffered_reader_gives_every_line_and_counts_every_byte() -> None:
    data = b"".join(f'{{"id": "{i}", "text": "line {i}"}}\n'.encode() for i in range(500))
    body = Body(data, step=1000)
    raw = CountingRawStream(body)
    lines = list(io.BufferedReader(raw, buffer_size=4096))
    assert b"".join(lines) == data and len(lines) == 500
    assert raw.bytes == len(data)


def test_short_reads_are_passed_on_and_counted() -> None:
    raw = CountingRawStream(Body(b"abcdefghij", step=3))
    buffer = bytearray(8)
    assert raw.readinto(buffer) == 3 and bytes(buffer[:3]) == b"abc"
    assert raw.bytes == 3
    assert raw.read() == b"defghij"  # RawIOBase.read()/readall loops until an empty read
    assert raw.bytes == 10
    assert raw.readinto(bytearray(4)) == 0  # end of stream


def test_the_count_is_of_compressed_bytes_pulled_not_of_what_they_expand_to() -> None:
    text = b"the same line again\n" * 2000
    packed = gzip.compress(text)
    raw = CountingRawStream(Body(packed, step=512))
    with gzip.GzipFile(fileobj=io.BufferedReader(raw)) as unpacked:
        assert unpacked.read() == text
    assert raw.bytes == len(packed) < len(text)


def test_close_closes_the_body_once_and_the_stream() -> None:
    body = Body(b"x")
    raw = CountingRawStream(body)
    assert raw.readable() and not raw.closed
    raw.close()
    assert body.closed and raw.closed


def test_close_marks_the_stream_closed_even_when_the_body_fails_to_close() -> None:
    class Failing(Body):
        def close(self) -> None:
            raise ConnectionError("reset")

    raw = CountingRawStream(Failing(b"x"))
    try:
        raw.close()
    except ConnectionError:
        pass
    else:
        raise AssertionError("the body's error must reach the caller")
    assert raw.closed

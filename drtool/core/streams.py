"""Stream helpers shared by the commands that read large objects (chunk files) incrementally."""

from __future__ import annotations

import io
from typing import Any


class CountingRawStream(io.RawIOBase):
    """Any `read(n)`/`close()` body (an S3 streaming body) as a raw stream that counts the bytes pulled.

    Wrapped in io.BufferedReader it gives fast readline over a network stream, and the count drives a progress
    bar over a compressed file, whose decompressed size is unknown.
    """

    def __init__(self, body: Any) -> None:
        super().__init__()
        self.body = body
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        self.bytes += len(data)
        return len(data)

    def close(self) -> None:
        try:
            self.body.close()
        finally:
            super().close()

"""Streaming object bodies: read errors arrive as drtool errors, and a cut transfer is read on where it stopped.

`BucketStore.open` returns a ResumingBody: a rebuild reads one chunk file for hours, longer than servers' idle
timeouts and proxies allow a connection to live.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import Any

from drtool.adapters.s3.client import RETRY_BASE_DELAY_S, RETRY_MAX_DELAY_S
from drtool.adapters.s3.errors import CUT_ERRORS
from drtool.errors import DrtoolError

log = logging.getLogger("drtool.s3")


class TranslatedBody:
    """A streaming body whose read errors (a connection cut mid-body) arrive as drtool errors, not botocore's."""

    def __init__(self, body: Any, translate: Any) -> None:
        self._body = body
        self._translate = translate

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    def readline(self, size: int | None = -1) -> bytes:
        try:
            return bytes(self._body.readline() if size is None or size < 0 else self._body.readline(size))
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    def close(self) -> None:
        self._body.close()


class ResumingBody(TranslatedBody):
    """A streaming body that picks a cut transfer up where it stopped: a rebuild reads its chunk file as fast as
    it embeds (hours, on a large dataset), so the connection outlives servers' idle timeouts and proxies' resets.

    The next request asks for the rest (Range) of the very object first read (If-Match its ETag, and its version
    when one was named), so a file replaced meanwhile is never stitched onto the old one: that answer is an error.
    `s3.max_attempts` reopens per body, with the SDK's backoff; then the cut is reported as before.
    """

    def __init__(self, response: dict[str, Any], reopen: Any, translate: Any, attempts: int) -> None:
        super().__init__(response["Body"], translate)
        self._reopen = reopen  # (offset, etag) -> a new response for bytes offset-
        self._etag = str(response.get("ETag") or "")
        self._offset = 0
        self._left = max(0, attempts - 1)
        self.resumed = 0  # how many times the transfer was picked up again

    def _resume(self, exc: Exception) -> None:
        if self._left <= 0 or not self._etag:
            raise self._translate(exc) from None
        self._left -= 1
        self.resumed += 1
        wait = min(RETRY_BASE_DELAY_S * 2 ** (self.resumed - 1), RETRY_MAX_DELAY_S) * random.uniform(0.5, 1.0)
        log.warning("object body cut mid-transfer (%s) at byte %d; reading on from there in %.1f s",
                    type(exc).__name__, self._offset, wait)
        time.sleep(wait)
        with contextlib.suppress(Exception):  # the old connection is already broken
            self._body.close()
        self._body = self._reopen(self._offset, self._etag)["Body"]

    def _reading(self, call: Any) -> bytes:
        while True:
            try:
                data = bytes(call())
            except DrtoolError:
                raise
            except CUT_ERRORS as exc:
                self._resume(exc)
                continue
            except Exception as exc:
                raise self._translate(exc) from None
            self._offset += len(data)
            return data

    def read(self, size: int | None = -1) -> bytes:
        return self._reading(lambda: self._body.read(None if size is None or size < 0 else size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._reading(lambda: self._body.readline() if size is None or size < 0 else self._body.readline(size))

"""pg_dump's output streamed into a multipart upload of the snapshot folder.

One upload path for both dumps a snapshot holds: the main database's (create) and the plugin daemon's (databases).
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from typing import Any

from drtool.adapters import age as agea
from drtool.adapters import s3 as s3a


class _Decoupled:
    """A write-only file object that hands bytes to `sink.write` on its own thread, at most `limit` bytes ahead.

    Why: a multipart part upload blocks its caller for a while; if that caller is the one draining pg_dump's pipe,
    pg_dump stalls on a full 64 KiB pipe for every part. With the upload on another thread the pipe keeps draining
    and the dump runs at pg_dump's own pace. Memory is bounded by `limit`.
    """

    def __init__(self, sink: Any, limit: int = 48 << 20) -> None:
        self._sink = sink
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._pending = 0
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="dump-upload", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)
        with self._cond:
            while self._pending >= self._limit and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._chunks.append(chunk)
            self._pending += len(chunk)
            self._cond.notify_all()
        return len(chunk)

    def flush(self) -> None:
        pass

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._done:
                    self._cond.wait()
                if not self._chunks:
                    return
                chunk = self._chunks.popleft()
            try:
                self._sink.write(chunk)
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._chunks.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._pending -= len(chunk)
                self._cond.notify_all()

    def finish(self) -> None:
        """Wait until every byte reached the sink; raise what the upload thread raised."""
        with self._cond:
            self._done = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Drop what is queued and wait for the part upload in progress (the caller aborts the upload)."""
        with self._cond:
            self._chunks.clear()
            self._done = True
            self._cond.notify_all()
        self._thread.join()


def dump_worker(proc: subprocess.Popen[bytes], sink: s3a.MultipartWriter, recipients: list[Any] | None,
                 outcome: dict[str, Any]) -> None:
    """Stream pg_dump's stdout (through age when asked) into a multipart upload; complete it only on success."""
    ahead = _Decoupled(sink)
    try:
        assert proc.stdout is not None
        if recipients:
            agea.encrypt_stream(proc.stdout, ahead, recipients)
        else:
            while chunk := proc.stdout.read(1 << 20):
                ahead.write(chunk)
        outcome["returncode"] = proc.wait()
        if outcome["returncode"] == 0:
            ahead.finish()
            sink.close()
        else:
            ahead.cancel()
            sink.abort()
    except BaseException as exc:
        outcome["error"] = exc
        ahead.cancel()
        sink.abort()
    finally:
        if proc.stdout is not None:
            proc.stdout.close()  # on an upload failure this also stops pg_dump (EPIPE)

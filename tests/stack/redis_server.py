"""A private Redis for the tests (Debian's redis-server).

drtool deletes Dify's ``vector_indexing_<collection>`` keys after a rebuild (while they exist Dify skips
re-creating a collection), so rebuild tests need a real Redis with real TTL semantics. Persistence is off
(``--save '' --appendonly no``): nothing is kept between sessions.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.stack.ports import free_port
from tests.stack.process import ManagedProcess, StackStartError

__all__ = ["REDIS_SERVER", "local_redis", "ping"]

REDIS_SERVER = "/usr/bin/redis-server"
READY_TIMEOUT_S = 30.0


def ping(host: str, port: int) -> bool:
    """True when a Redis at host:port answers PING with PONG (raw RESP, no client library needed)."""
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


@contextmanager
def local_redis(workdir: Path, *, ready_timeout: float = READY_TIMEOUT_S) -> Iterator[str]:
    """Run redis-server on a free loopback port for the duration of the block; yields its redis:// URL."""
    binary = REDIS_SERVER if Path(REDIS_SERVER).is_file() else shutil.which("redis-server")
    if binary is None:
        raise StackStartError(
            "redis-server not found: apt-get install -y redis-server (or set DRTOOL_TEST_REDIS_URL)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    extra = ["--dir", str(workdir), "--daemonize", "no", "--protected-mode", "yes"]
    proc = ManagedProcess(
        name=f"redis-server on 127.0.0.1:{port}",
        argv=[binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra],
        log_path=workdir / "redis.log",
        cwd=workdir,
        stop_timeout=10.0,
    )
    try:
        proc.start()
        proc.wait_ready(lambda: ping("127.0.0.1", port), ready_timeout, what="answering PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()

"""Fixtures of the rebuild tests: a bucket on SeaweedFS cluster A with chunk files, drtool's settings in the
environment, and a helper that runs the real CLI in-process and returns its exit code and JSON events."""

from __future__ import annotations

import contextlib
import gzip
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import zstandard

from drtool.core.chunks import dumps_chunk
from tests.foundation.cli_runner import RunCli  # noqa: F401  (re-exported for tests/rebuild)
from tests.helpers.events import summary  # noqa: F401  (re-exported for tests/rebuild)
from tests.helpers.weaviate import connect
from tests.rebuild.prose import texts
from tests.stack.milvus_store import MilvusTestTarget

# Tests where Lite and a server differ (Dify's filter, read consistency, rename/load, a second process) run on both.
BOTH_MILVUS = pytest.mark.parametrize("milvus_target", ["lite", "server"], indirect=True)


@dataclass
class ChunkBucket:
    client: Any
    name: str
    endpoint: str
    access_key: str
    secret_key: str

    def put_chunks(self, dataset_id: str, chunks: list[dict[str, Any]] | bytes, compression: str = "none") -> str:
        data = chunks if isinstance(chunks, bytes) else b"".join(dumps_chunk(c) for c in chunks)
        suffix = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
        if compression == "gzip":
            data = gzip.compress(data)
        elif compression == "zstd":
            data = zstandard.ZstdCompressor().compress(data)
        key = f"datasets/{dataset_id}/processed/chunks.jsonl{suffix}"
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return key

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out


@pytest.fixture
def chunk_bucket(seaweed_pair: Any) -> Iterator[ChunkBucket]:
    site = seaweed_pair.a
    client = site.s3_client()
    name = f"rebuild-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    yield ChunkBucket(client, name, site.endpoint, site.access_key, site.secret_key)


def new_dataset() -> str:
    """A dataset id no other test uses (its chunk files and collection are then this test's alone)."""
    return str(uuid.uuid4())


def make_chunks(dataset_id: str, n: int, *, documents: int = 3, offset: int = 0) -> list[dict[str, Any]]:
    prose = texts(n + offset)[offset:]
    docs = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dataset_id}/doc/{d}")) for d in range(documents)]
    return [{"id": f"{dataset_id[:8]}-node-{i}", "text": t, "dataset_id": dataset_id,
             "document_id": docs[i % documents], "doc_hash": f"hash-{i}", "position": i,
             "metadata": {"source": f"file-{i % documents}.txt"}}
            for i, t in enumerate(prose)]


@pytest.fixture
def rebuild_env(monkeypatch: pytest.MonkeyPatch, chunk_bucket: ChunkBucket, milvus_target: MilvusTestTarget,
                embedding_server: Any) -> dict[str, str]:
    """drtool settings for a Milvus target (Lite unless the test parametrizes `milvus_target`) and the
    OpenAI-compatible test endpoint."""
    env = {
        "DRTOOL_S3_ENDPOINT": chunk_bucket.endpoint, "DRTOOL_S3_BUCKET": chunk_bucket.name,
        "DRTOOL_S3_ACCESS_KEY": chunk_bucket.access_key, "DRTOOL_S3_SECRET_KEY": chunk_bucket.secret_key,
        "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_VECTOR_STORE": "milvus", **milvus_target.env(),
        "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url,
        "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key, "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
        "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions),
        "DRTOOL_EMBEDDING_BATCH_SIZE": "32", "DRTOOL_REBUILD_SAMPLE": "20",
    }
    for key in list(__import__("os").environ):
        if key.startswith("DRTOOL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def use_local_model(monkeypatch: pytest.MonkeyPatch, model_path: Any) -> None:
    """Switch rebuild_env from the test endpoint to the offline local model."""
    for key in ("DRTOOL_EMBEDDING_BASE_URL", "DRTOOL_EMBEDDING_API_KEY", "DRTOOL_EMBEDDING_DIMENSIONS"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("DRTOOL_EMBEDDING_PROVIDER", "local")
    monkeypatch.setenv("DRTOOL_EMBEDDING_MODEL", str(model_path))


class TcpRelay:
    """A TCP forwarder on loopback between drtool and a real server, so a test can make the server "go away"
    from drtool's point of view (listening socket and live connections closed) and come back on the same port,
    without disturbing the session's server. The server behind it is real; only the network path is cut."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        import socket
        import threading

        self.target = (target_host, target_port)
        self._socket_mod = socket
        self._threading = threading
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self.port = listen_port
        self.start()

    def start(self) -> None:
        socket = self._socket_mod
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        self._threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: Any) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = self._socket_mod.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def stop(self) -> None:
        import socket

        if self._server is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept() (close alone does not)
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


@pytest.fixture
def weaviate_env(rebuild_env: dict[str, str], weaviate_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """rebuild-index aimed at the session's Weaviate; yields a client of it (closed after the test)."""
    monkeypatch.setenv("DRTOOL_VECTOR_STORE", "weaviate")
    monkeypatch.setenv("DRTOOL_WEAVIATE_ENDPOINT", weaviate_server.http_url)
    monkeypatch.setenv("DRTOOL_WEAVIATE_GRPC_ENDPOINT", f"{weaviate_server.host}:{weaviate_server.grpc_port}")
    client = connect(weaviate_server)
    yield client
    client.close()

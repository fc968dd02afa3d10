"""A single-node Weaviate built from source, for drtool's Weaviate adapter and rebuild tests.

Weaviate is configured through environment variables (names checked against usecases/config/environment.go of
the pinned version). Every port it opens is chosen free, because Weaviate's defaults (8080, 50051, 7946/7947,
8300/8301, pprof on 6060) collide with anything else on the machine, including a second session:
- HTTP on ``--host 127.0.0.1``; gossip and Raft bound to 127.0.0.1 with CLUSTER_BIND_ADDR. The gRPC and
  cluster-data servers of this version listen on all interfaces (they take only a port); no setting narrows
  them. CLUSTER_IN_LOCALHOST is NOT set: it makes Weaviate look for the Raft RPC server at RAFT_PORT + 1
  instead of RAFT_INTERNAL_RPC_PORT, and the node then never bootstraps ("no known peers").
- pprof disabled, Prometheus off, telemetry off: nothing may call out of the machine.
- one node, Raft bootstrapped alone: CLUSTER_HOSTNAME=node1, RAFT_BOOTSTRAP_EXPECT=1, RAFT_JOIN=node1.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from tests.stack.build import ensure_go_binary
from tests.stack.ports import free_ports
from tests.stack.process import ManagedProcess, StackStartError
from tests.stack.versions import WEAVIATE, WEAVIATE_VERSION

__all__ = ["WeaviateServer", "external_weaviate", "local_weaviate", "remove_new", "schema_names", "weaviate_meta"]

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class WeaviateServer:
    """Where a Weaviate answers: REST at http_url (host:http_port) and gRPC at host:grpc_port."""

    http_url: str
    host: str
    http_port: int
    grpc_port: int
    version: str


def _http_status(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback http URL we built
        return int(response.status)


def weaviate_meta(http_url: str) -> dict[str, object]:
    """GET /v1/meta (version, modules, hostname)."""
    with urllib.request.urlopen(f"{http_url}/v1/meta", timeout=10) as response:
        return dict(json.load(response))


def _request(method: str, url: str) -> object:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback (or the configured external) URL
        body = response.read()
    return json.loads(body) if body else None


def schema_names(http_url: str) -> tuple[frozenset[str], frozenset[str]]:
    """(collections, aliases) that exist now: GET /v1/schema and GET /v1/aliases."""
    schema = _request("GET", f"{http_url}/v1/schema")
    aliases = _request("GET", f"{http_url}/v1/aliases")
    classes = (schema.get("classes") or []) if isinstance(schema, dict) else []
    listed = (aliases.get("aliases") or []) if isinstance(aliases, dict) else []
    return frozenset(c["class"] for c in classes), frozenset(a["alias"] for a in listed)


def remove_new(http_url: str, before: tuple[frozenset[str], frozenset[str]]) -> list[str]:
    """Delete every alias, then every collection, not in `before` (Weaviate refuses to delete a collection an
    alias points at); return what was deleted. The isolation between tests of a shared server."""
    collections, aliases = schema_names(http_url)
    gone: list[str] = []
    for alias in sorted(aliases - before[1]):
        _request("DELETE", f"{http_url}/v1/aliases/{quote(alias, safe='')}")
        gone.append(f"alias {alias}")
    for name in sorted(collections - before[0]):
        _request("DELETE", f"{http_url}/v1/schema/{quote(name, safe='')}")
        gone.append(name)
    return gone


@contextmanager
def local_weaviate(workdir: Path, *, ready_timeout: float = READY_TIMEOUT_S) -> Iterator[WeaviateServer]:
    """Run Weaviate with its data in `workdir` for the duration of the block."""
    binary = ensure_go_binary(WEAVIATE)
    http_port, grpc_port, gossip, data, raft, raft_rpc, pprof = free_ports(7)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "PERSISTENCE_DATA_PATH": str(data_dir),
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
        "DEFAULT_VECTORIZER_MODULE": "none",
        "ENABLE_MODULES": "",
        "QUERY_DEFAULTS_LIMIT": "25",
        "GRPC_PORT": str(grpc_port),
        "CLUSTER_HOSTNAME": "node1",
        "CLUSTER_BIND_ADDR": "127.0.0.1",
        "CLUSTER_GOSSIP_BIND_PORT": str(gossip),
        "CLUSTER_DATA_BIND_PORT": str(data),
        "RAFT_PORT": str(raft),
        "RAFT_INTERNAL_RPC_PORT": str(raft_rpc),
        "RAFT_BOOTSTRAP_EXPECT": "1",
        "RAFT_JOIN": "node1",
        "DISABLE_TELEMETRY": "true",
        "PROMETHEUS_MONITORING_ENABLED": "false",
        "GO_PROFILING_DISABLE": "true",
        "GO_PROFILING_PORT": str(pprof),  # in case a version ignores the switch: at least no clash on 6060
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "text",
    }
    proc = ManagedProcess(
        name=f"weaviate {WEAVIATE_VERSION} on 127.0.0.1:{http_port}",
        argv=[str(binary), "--host", "127.0.0.1", "--port", str(http_port), "--scheme", "http"],
        log_path=workdir / "weaviate.log",
        env=env,
        cwd=workdir,
        stop_timeout=30.0,
    )
    server = WeaviateServer(
        http_url=f"http://127.0.0.1:{http_port}",
        host="127.0.0.1",
        http_port=http_port,
        grpc_port=grpc_port,
        version=WEAVIATE_VERSION,
    )
    try:
        proc.start()
        proc.wait_ready(
            lambda: _http_status(f"{server.http_url}/v1/.well-known/ready") == 200,
            ready_timeout,
            what="ready (GET /v1/.well-known/ready = 200)",
        )
        yield server
    finally:
        proc.stop()


def external_weaviate(http_url: str, grpc_port: int) -> WeaviateServer:
    """Describe an existing Weaviate (DRTOOL_TEST_WEAVIATE_URL, DRTOOL_TEST_WEAVIATE_GRPC_PORT)."""
    http_url = http_url.rstrip("/")
    parts = urlsplit(http_url)
    try:
        version = str(weaviate_meta(http_url)["version"])
    except Exception as exc:  # reported with the URL that failed
        raise StackStartError(
            f"DRTOOL_TEST_WEAVIATE_URL={http_url} does not answer GET /v1/meta: {exc}"
        ) from exc
    return WeaviateServer(
        http_url=http_url,
        host=parts.hostname or "127.0.0.1",
        http_port=parts.port or (443 if parts.scheme == "https" else 80),
        grpc_port=grpc_port,
        version=version,
    )

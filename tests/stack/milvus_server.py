"""A real Milvus server (standalone 2.3.5, embedded etcd, local storage, rocksmq) from PyPI's ``milvus`` package.

Milvus Lite differs from a server exactly where a rebuild can go wrong: it rejects Dify's filter
``metadata["document_id"] in [...]`` and answers every read at once, while a server reads with bounded/session
consistency and checks credentials. So the tests that matter also run here.

The package's launcher (``milvus-server``) is not used: it picks ports by probing from fixed defaults, leaves the
embedded etcd on 127.0.0.1:2379/2380 whatever ``--etcd-port`` says, and puts a Python process between us and the
server. Instead its own config code (``milvus.MilvusServerConfig``, the template it ships) writes milvus.yaml,
and we run ``bin/milvus run standalone`` ourselves:
- the binaries (lzma in the wheel, ~250 MB unpacked, ~14 s) are unpacked once into
  ``$DRTOOL_CACHE_DIR/milvus-<version>/bin`` under a file lock, then reused;
- every port is chosen free: the nine component gRPC ports, the proxy (the URI), the metrics/health port
  (``METRICS_PORT``), and etcd's client and peer ports through an embed-etcd config file
  (``ETCD_CONFIG_PATH``; without it etcd takes 2379/2380 and a second server on the machine dies);
- etcd and the advertised component addresses are 127.0.0.1; the component gRPC servers of this version listen on
  all interfaces (they take only a port; no setting narrows them);
- ``authorization_enabled`` (``common.security.authorizationEnabled``) is a variable of the package's template:
  the ``auth`` variant turns it on and replaces root's default password, as an operator would.
"""

from __future__ import annotations

import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from tests.stack.build import _locked, cache_dir
from tests.stack.ports import free_port, free_ports
from tests.stack.process import ManagedProcess, StackStartError

__all__ = ["MILVUS_SERVER_VERSION", "MilvusServer", "external_milvus_server", "local_milvus_server"]

MILVUS_SERVER_VERSION = "2.3.5"  # the newest `milvus` wheel on PyPI; pinned in pyproject's dev extra
READY_TIMEOUT_S = 180.0
DEFAULT_ROOT_PASSWORD = "Milvus"  # Milvus's documented initial root password
# The template's port variables; all must be set, or the package probes upwards from Milvus's fixed defaults.
_PORT_KEYS = ("root_coord_port", "proxy_port", "proxy_internal_port", "query_coord_port", "query_node_port",
              "index_coord_port", "index_node_port", "data_coord_port", "data_node_port", "etcd_port")
_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


@dataclass(frozen=True)
class MilvusServer:
    """Where a Milvus server answers, and with which credentials (``token`` is None when auth is off)."""

    uri: str
    version: str
    user: str | None = None
    password: str | None = None
    # A user that exists but holds no privilege (auth variant only): reads and writes are refused.
    unprivileged_user: str | None = None
    unprivileged_password: str | None = None

    @property
    def token(self) -> str | None:
        """``user:password`` as pymilvus and DRTOOL_MILVUS_TOKEN take it."""
        return f"{self.user}:{self.password}" if self.user else None

    def client(self) -> object:
        """A pymilvus MilvusClient logged in as the admin user (or anonymous)."""
        from pymilvus import MilvusClient

        return MilvusClient(self.uri, token=self.token) if self.token else MilvusClient(self.uri)


def external_milvus_server(uri: str, token: str | None = None, *, unprivileged: bool = False) -> MilvusServer:
    """An existing server (DRTOOL_TEST_MILVUS_URI [+ _TOKEN], or the _AUTH_ pair), checked once.

    `unprivileged` (re)creates the user without privileges that the auth tests log in as.
    """
    user, _, password = (token or "").partition(":")
    server = MilvusServer(uri=uri, version="external", user=user or None, password=password or None)
    try:
        server = replace(server, version=_ping(server))
    except Exception as exc:
        raise StackStartError(f"the Milvus server at {uri} does not answer: {exc}") from exc
    if unprivileged:
        from pymilvus import MilvusClient

        reader, reader_password = "drtool_noaccess", "noaccess-" + secrets.token_hex(6)
        client = MilvusClient(uri, token=server.token or "")
        try:
            if reader in client.list_users():
                client.drop_user(reader)
            client.create_user(reader, reader_password)
        finally:
            client.close()
        server = replace(server, unprivileged_user=reader, unprivileged_password=reader_password)
    return server


def _ping(server: MilvusServer) -> str:
    """List collections (proves the proxy, root coord and auth answer) and return the server's version."""
    from pymilvus import MilvusClient

    client = MilvusClient(server.uri, token=server.token or "", timeout=5)
    try:
        client.list_collections()
        return str(client.get_server_version())
    finally:
        client.close()


def _unpacked_binaries() -> Path:
    """bin/ with milvus and its libraries, unpacked once per machine (the package's own unpacker, locked)."""
    try:
        import milvus
    except ImportError as exc:
        raise StackStartError(
            f"the PyPI package milvus=={MILVUS_SERVER_VERSION} is missing: pip install -e '.[dev]' "
            "(or set DRTOOL_TEST_MILVUS_URI to an existing server)"
        ) from exc
    if milvus.__version__ != MILVUS_SERVER_VERSION:
        raise StackStartError(f"milvus {milvus.__version__} is installed, the stack pins {MILVUS_SERVER_VERSION}")
    base = cache_dir() / f"milvus-{MILVUS_SERVER_VERSION}"
    with _locked(base / ".lock"):
        milvus._initialize_data_files(str(base))  # skips files whose .lzma checksum is unchanged
    return base / "bin"


def _write_config(workdir: Path, ports: dict[str, int], etcd_peer_port: int, *, auth: bool) -> Path:
    """milvus.yaml from the package's template, plus the embedded etcd's own config; returns the configs dir."""
    import milvus

    config = milvus.MilvusServerConfig(data_dir=str(workdir), **ports)
    config.set("authorization_enabled", auth)
    for component in _COMPONENTS:
        config.set(f"{component}.ip", "127.0.0.1")
    config.resolve()  # binds each given port once to prove it is free, then writes configs/milvus.yaml
    configs = workdir / "configs"
    etcd = f"http://127.0.0.1:{ports['etcd_port']}"
    peer = f"http://127.0.0.1:{etcd_peer_port}"
    (configs / "embedEtcd.yaml").write_text(
        f"name: drtool-test\nlisten-client-urls: {etcd}\nadvertise-client-urls: {etcd}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\ninitial-cluster: drtool-test={peer}\n"
    )
    return configs


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
        return b"OK" in response.read()


@contextmanager
def local_milvus_server(workdir: Path, *, auth: bool = False,
                        ready_timeout: float = READY_TIMEOUT_S) -> Iterator[MilvusServer]:
    """Run a standalone Milvus on free loopback ports for the duration of the block."""
    bin_dir = _unpacked_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    names = list(_PORT_KEYS)
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    etcd_peer_port, metrics_port = free_port(), free_port()
    configs = _write_config(workdir, ports, etcd_peer_port, auth=auth)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "LD_LIBRARY_PATH": str(bin_dir),
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(metrics_port),
        "MILVUS_RUN_DIR": str(workdir / "run"),
        "MILVUSCONF": f"{configs}/",
        "ETCD_CONFIG_PATH": str(configs / "embedEtcd.yaml"),
    }
    uri = f"http://127.0.0.1:{ports['proxy_port']}"
    proc = ManagedProcess(
        name=f"milvus {MILVUS_SERVER_VERSION} standalone on {uri}" + (" (auth)" if auth else ""),
        argv=[str(bin_dir / "milvus"), "run", "standalone"],
        log_path=workdir / "milvus.log",
        env=env,
        cwd=workdir,
        stop_timeout=20.0,
    )
    admin = MilvusServer(uri=uri, version=MILVUS_SERVER_VERSION,
                         user="root" if auth else None, password=DEFAULT_ROOT_PASSWORD if auth else None)
    try:
        proc.start()
        proc.wait_ready(lambda: _healthy(metrics_port), ready_timeout, what="healthy (/healthz)")
        proc.wait_ready(lambda: bool(_ping(admin)), ready_timeout, what="answering list_collections")
        try:
            server = _secure(admin) if auth else admin
            server = replace(server, version=_ping(server))
        except Exception as exc:
            raise StackStartError(f"{proc.name}: {type(exc).__name__}: {exc}\n"
                                  f"--- last lines of {proc.log_path} ---\n{proc.tail()}") from exc
        yield server
    finally:
        proc.stop()


def _secure(admin: MilvusServer) -> MilvusServer:
    """Replace root's well-known password and add a user without privileges, as an operator would."""
    from pymilvus import MilvusClient

    password = "drtool-" + secrets.token_hex(8)
    reader, reader_password = "drtool_noaccess", "noaccess-" + secrets.token_hex(6)
    client = MilvusClient(admin.uri, token=admin.token or "")
    try:
        client.create_user(reader, reader_password)
        client.update_password("root", DEFAULT_ROOT_PASSWORD, password)  # last: this client's token dies with it
    finally:
        client.close()
    return MilvusServer(uri=admin.uri, version=admin.version, user="root", password=password,
                        unprivileged_user=reader, unprivileged_password=reader_password)

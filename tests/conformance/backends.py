"""The one list of vector-store backends the conformance suite runs against (restic's internal/backend/test).

Every case in tests/conformance/ runs once per entry of BACKENDS, through the `vector_backend` fixture
(conftest.py), against a real server of the test stack (tests/stack/README.md); nothing is mocked.

An entry says how to reach a server as drtool settings (`--flag`-style keys such as "milvus.uri"), taken from the
stack's fixtures through `request.getfixturevalue`. The store is then built exactly as drtool builds it: by
name, through the registry (drtool.adapters.vector_stores), so a backend that passes here works in rebuild-index,
verify, drill and config check.

Adding a backend is ONE entry in BACKENDS, once its adapter is registered (docs/architecture.md, "Adding a
vector store"), e.g. for a backend "foo" whose stack fixture `foo_server` has a `url`:

    BackendSpec("foo", "foo", lambda r: {"foo.url": r.getfixturevalue("foo_server").url}),

pgvector's entry below takes a fresh database per test from its fixture (cheap on Postgres); a shared server works
too, since collection names are unique per test.
Optionally pass `credentials=` (a function returning Credentials) when the stack has an authenticated variant of
the server: the auth cases then check that refused credentials and missing privileges exit 12.

Keep entries cheap: servers are session fixtures, data is a few rows of dimension 8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

Flags = dict[str, Any]


@dataclass(frozen=True)
class Credentials:
    """Settings for an authenticated server: an admin's, wrong ones, and a user without any privilege."""

    good: Flags
    wrong: Flags
    unprivileged: Flags | None = None
    secrets: tuple[str, ...] = ()  # values that must never appear in describe() or an error message


@dataclass(frozen=True)
class BackendSpec:
    id: str  # pytest id
    store: str  # the registry name (vector.store)
    flags: Callable[[pytest.FixtureRequest], Flags]  # settings that reach the server
    credentials: Callable[[pytest.FixtureRequest], Credentials] | None = None
    # Cases this backend is known to fail, run as strict xfail (an XPASS fails the run: then delete the gap).
    # Names: "missing-<operation>" of test_a_missing_collection_is_not_found.
    known_gaps: tuple[str, ...] = ()


def _milvus_server_credentials(request: pytest.FixtureRequest) -> Credentials:
    server = request.getfixturevalue("milvus_server_auth")
    return Credentials(
        good={"milvus.uri": server.uri, "milvus.token": server.token},
        wrong={"milvus.uri": server.uri, "milvus.token": f"{server.user}:not-{server.password}"},
        unprivileged={"milvus.uri": server.uri,
                      "milvus.token": f"{server.unprivileged_user}:{server.unprivileged_password}"},
        secrets=tuple(s for s in (server.password, server.unprivileged_password) if s))


def _milvus_server(request: pytest.FixtureRequest) -> Flags:
    server = request.getfixturevalue("milvus_server")
    return {"milvus.uri": server.uri, **({"milvus.token": server.token} if server.token else {})}


def _weaviate(request: pytest.FixtureRequest) -> Flags:
    server = request.getfixturevalue("weaviate_server")
    return {"weaviate.endpoint": server.http_url, "weaviate.grpc_endpoint": f"{server.host}:{server.grpc_port}"}


def _pgvector(request: pytest.FixtureRequest) -> Flags:
    """A fresh database with the vector extension in the stack's pgvector server (pgserver's Postgres 16)."""
    return _pgvector_flags(request.getfixturevalue("pgvector_db").settings())


def _pgvector_flags(settings: Any, **overrides: Any) -> Flags:
    values = {"host": settings.host, "port": settings.port, "user": settings.user, "password": settings.password,
              "database": settings.database, "sslmode": settings.sslmode, **overrides}
    return {f"pgvector.{k}": v for k, v in values.items()}


def _pgvector_credentials(request: pytest.FixtureRequest) -> Credentials:
    """The superuser, a wrong password for it, and a login role without CREATE on the schema."""
    database = request.getfixturevalue("pgvector_db")
    settings = database.settings()
    role = "drtool_noaccess_" + database.dbname[-8:]
    password = database.create_role(role)
    return Credentials(
        good=_pgvector_flags(settings),
        wrong=_pgvector_flags(settings, password="not-" + settings.password),
        unprivileged=_pgvector_flags(settings, user=role, password=password),
        secrets=(settings.password, password))


BACKENDS: list[BackendSpec] = [
    BackendSpec("milvus-lite", "milvus", lambda r: {"milvus.uri": r.getfixturevalue("milvus_uri")}),
    BackendSpec("milvus-server", "milvus", _milvus_server, credentials=_milvus_server_credentials),
    BackendSpec("weaviate", "weaviate", _weaviate),
    BackendSpec("pgvector", "pgvector", _pgvector, credentials=_pgvector_credentials),
]

"""The vector-store registry: every place that picks a vector database goes through here.

Modelled on restic's internal/backend/location/registry.go: a backend registers its name and a factory, and
commands ask the registry instead of testing names. One entry per name in drtool.core.ports.VECTOR_STORES.

Start-up time matters (`drtool --help`, cron): this module imports no SDK. An entry's factory and check import
their adapter, and with it pymilvus or weaviate-client, only when called.

Adding a backend (docs/architecture.md, "Adding a vector store"): an adapter implementing
drtool.core.ports.VectorStore, its settings section in config.py, its name in core.ports.VECTOR_STORES, one
`register(VectorBackend(...))` below, and one entry in tests/conformance/backends.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drtool.core.ports import VECTOR_STORES, VectorStore
from drtool.errors import ConfigError

if TYPE_CHECKING:
    from drtool.config import Settings


@dataclass(frozen=True)
class VectorBackend:
    """One vector database drtool can read and write."""

    name: str  # vector.store value, Dify's VECTOR_STORE, datasets.index_struct `type`
    section: str  # the settings section holding its connection (Settings.<section>)
    factory: Callable[[Settings], VectorStore]  # an open store; raises drtool errors
    check: Callable[[Settings], dict[str, Any]]  # `drtool config check`: reachable, credentials accepted
    configured: Callable[[Settings], bool]  # the connection setting is given (not only defaults)
    location: Callable[[Settings], str | None]  # where it is, for reports and `config check` (no secret)
    hint: str  # how to configure it, for "not configured" errors

    def open(self, settings: Settings) -> VectorStore:
        """The store, or ConfigError (exit 2) naming the setting to give when it is not configured."""
        if not self.configured(settings):
            raise ConfigError(f"vector store {self.name} is not configured ({self.section} settings missing)",
                              hint=self.hint)
        return self.factory(settings)


_REGISTRY: dict[str, VectorBackend] = {}


def register(backend: VectorBackend) -> None:
    """Add a backend; its name must be listed in core.ports.VECTOR_STORES (config's choices come from there)."""
    if backend.name not in VECTOR_STORES:
        raise ValueError(f"vector store {backend.name!r} is not in drtool.core.ports.VECTOR_STORES")
    if backend.name in _REGISTRY:
        raise ValueError(f"vector store {backend.name!r} is registered twice")
    _REGISTRY[backend.name] = backend


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str | None) -> VectorBackend:
    """The backend called `name`; ConfigError (exit 2) for none or an unknown one."""
    if not name:
        raise ConfigError("no vector store chosen",
                          hint=f"set vector.store ({'|'.join(_REGISTRY)}), e.g. --target or DRTOOL_VECTOR_STORE")
    backend = _REGISTRY.get(name)
    if backend is None:
        raise ConfigError(f"vector store {name!r} is not supported",
                          hint=f"drtool reads and writes {', '.join(_REGISTRY)}")
    return backend


def selected(settings: Settings) -> VectorBackend:
    """The backend `vector.store` names."""
    return get(settings.vector.store)


def open_store(settings: Settings, name: str | None = None) -> VectorStore:
    """An open store of backend `name` (default: vector.store), configured from `settings`."""
    return get(name or settings.vector.store).open(settings)


def to_check(settings: Settings) -> list[VectorBackend]:
    """The backends `drtool config check` probes: the chosen one, or with none chosen every configured one."""
    if settings.vector.store:
        return [get(settings.vector.store)]
    return [b for b in _REGISTRY.values() if b.configured(settings)]


# --- the entries --------------------------------------------------------------------------------------------------

def _milvus(settings: Settings) -> VectorStore:
    # the adapter and pymilvus load only when this store is used (module docstring)
    from drtool.adapters.milvus import MilvusTarget

    return MilvusTarget(settings.milvus)


def _milvus_check(settings: Settings) -> dict[str, Any]:
    # as in _milvus
    from drtool.adapters.milvus import check

    return check(settings.milvus)


def _weaviate(settings: Settings) -> VectorStore:
    # the adapter and weaviate-client load only when this store is used (module docstring)
    from drtool.adapters.weaviate import WeaviateTarget

    return WeaviateTarget(settings.weaviate, uuid_scheme=settings.weaviate.uuid_scheme)


def _weaviate_check(settings: Settings) -> dict[str, Any]:
    # as in _weaviate
    from drtool.adapters.weaviate import check

    return check(settings.weaviate)


def _pgvector(settings: Settings) -> VectorStore:
    # the adapter and psycopg load only when this store is used (module docstring)
    from drtool.adapters.pgvector import PgvectorTarget

    return PgvectorTarget(settings.pgvector)


def _pgvector_check(settings: Settings) -> dict[str, Any]:
    # as in _pgvector
    from drtool.adapters.pgvector import check

    return check(settings.pgvector)


register(VectorBackend(
    name="milvus", section="milvus", factory=_milvus, check=_milvus_check,
    configured=lambda s: bool(s.milvus.uri), location=lambda s: s.milvus.uri,
    hint="pass --milvus-uri (http://host:19530 or a Milvus Lite file) or set DRTOOL_MILVUS_URI (or --dify-env)"))
register(VectorBackend(
    name="weaviate", section="weaviate", factory=_weaviate, check=_weaviate_check,
    configured=lambda s: bool(s.weaviate.endpoint), location=lambda s: s.weaviate.endpoint,
    hint="pass --weaviate-endpoint http://host:8080 or set DRTOOL_WEAVIATE_ENDPOINT (or --dify-env)"))
register(VectorBackend(
    name="pgvector", section="pgvector", factory=_pgvector, check=_pgvector_check,
    configured=lambda s: bool(s.pgvector.host),
    location=lambda s: f"{s.pgvector.host}:{s.pgvector.port}/{s.pgvector.database}" if s.pgvector.host else None,
    hint="set DRTOOL_PGVECTOR_HOST (and _PORT, _USER, _PASSWORD, _DATABASE), or --dify-env with PGVECTOR_*"))

"""Where settings become the adapters a command works with: the composition point.

Commands (cli/) and the drill, which runs a rebuild inside a scratch environment, assemble a rebuild's parts here
and nowhere else, so a new vector store or embedding provider is wired once (the registry in
adapters/vector_stores.py knows how to open a store; this module decides which parts a rebuild needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drtool.config import Settings


@dataclass
class RebuildParts:
    """What a rebuild or an annotation rebuild reads from and writes to; close() releases all of it."""

    store: Any  # drtool.adapters.s3.BucketStore: the chunk files, the ledger and the sidecar cache
    target: Any  # a VectorStore (drtool.core.ports), None for a run that writes no vectors
    embedder: Any  # drtool.core.ports.Embedder
    meta: Any  # drtool.adapters.dify_embedding_cache.DifyMetadata, None without Postgres

    def close(self) -> None:
        for part in (self.target, self.embedder, self.meta):
            if part is not None:
                part.close()


def rebuild_parts(settings: Settings, *, need_target: bool = True, probe: bool = True,
                  metadata: bool | None = None) -> RebuildParts:
    """Open a rebuild's parts from settings.

    `probe` reaches the bucket before a model is loaded (seconds of imports and weights), so bad credentials fail
    at once. `metadata` None: Dify's Postgres is read when any postgres.* setting is set (it says which datasets
    are economy and which model Dify used); the drill always has its scratch database.
    """
    # Heavy, optional imports (torch through the embedder, the vector clients) stay out of `drtool --help`.
    from drtool.adapters import vector_stores
    from drtool.adapters.embedders import make_embedder
    from drtool.adapters.s3 import BucketStore

    store = BucketStore(settings.s3)
    if probe:
        store.probe()
    target = vector_stores.open_store(settings) if need_target else None
    embedder = make_embedder(settings.embedding)
    if metadata is None:
        metadata = any(k.startswith("postgres.") and settings.is_set(k) for k in settings.sources)
    meta = None
    if metadata:
        from drtool.adapters.dify_embedding_cache import DifyMetadata

        meta = DifyMetadata(settings.postgres)
    return RebuildParts(store=store, target=target, embedder=embedder, meta=meta)

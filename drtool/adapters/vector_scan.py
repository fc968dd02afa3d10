"""Reading every vector's identity (doc_id, document_id, dataset_id) out of a Dify-layout collection, streamed.

`drtool verify` needs both directions of the mapping between Postgres and the index, so it must see every vector,
not a sample. Milvus is read with a query iterator over the `metadata` JSON field (no vectors transferred),
Weaviate with its cursor API over the `doc_id`/`document_id`/`dataset_id` properties. The connections are the
rebuild targets' own (drtool.adapters.milvus / weaviate), so both commands reach a store the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from drtool.config import MilvusSettings, WeaviateSettings

BATCH = 1000
_IDENTITY = ("doc_id", "document_id", "dataset_id")


@dataclass(frozen=True, slots=True)
class VectorIdentity:
    key: str  # the store's own id of the object (Milvus primary key, Weaviate UUID)
    doc_id: str | None
    document_id: str | None
    dataset_id: str | None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class MilvusScanner:
    backend = "milvus"

    def __init__(self, settings: MilvusSettings) -> None:
        from drtool.adapters.milvus import MilvusTarget

        self.target = MilvusTarget(settings)

    def describe(self) -> str:
        return self.target.describe()

    def exists(self, name: str) -> bool:
        return self.target.exists(name)

    def iter_identities(self, name: str) -> Iterator[VectorIdentity]:
        for key, meta in self.target.iter_metadata(name, batch_size=BATCH):
            yield VectorIdentity(key, _text(meta.get("doc_id")), _text(meta.get("document_id")),
                                 _text(meta.get("dataset_id")))

    def close(self) -> None:
        self.target.close()


class WeaviateScanner:
    backend = "weaviate"

    def __init__(self, settings: WeaviateSettings) -> None:
        from drtool.adapters.weaviate import WeaviateTarget

        self.target = WeaviateTarget(settings)

    def describe(self) -> str:
        return self.target.describe()

    def exists(self, name: str) -> bool:
        """A collection, or a drtool alias (Weaviate blue/green switch) that points at one."""
        return self.target.exists(name) or self.target.alias_target(name) is not None

    def iter_identities(self, name: str) -> Iterator[VectorIdentity]:
        for key, props in self.target.iter_properties(name, _IDENTITY, batch_size=BATCH):
            yield VectorIdentity(key, _text(props.get("doc_id")), _text(props.get("document_id")),
                                 _text(props.get("dataset_id")))

    def close(self) -> None:
        self.target.close()

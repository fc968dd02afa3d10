"""Reading every vector's identity (doc_id, document_id, dataset_id) out of a Dify-layout collection, streamed.

`drtool verify` needs both directions of the mapping between Postgres and the index, so it must see every vector,
not a sample. Milvus is read with a query iterator over the `metadata` JSON field (no vectors transferred),
Weaviate with its cursor API over the `doc_id`/`document_id`/`dataset_id` properties. The connections are the
rebuild targets' own (drtool.adapters.milvus / weaviate), so both commands reach a store the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from drtool.config import MilvusSettings, WeaviateSettings
from drtool.errors import DrtoolError

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
        client = self.target.client
        self.target.load(name)  # a collection of a reopened Milvus Lite file, or a renamed one, is released
        quiet = logging.getLogger("pymilvus")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # Milvus Lite warns on every iterator that it uses a client-side timestamp
        try:
            iterator = self.target._call(f"iterate {name}", client.query_iterator, name, batch_size=BATCH,
                                         filter="", output_fields=["id", "metadata"])
            try:
                while True:
                    batch = self.target._call(f"iterate {name}", iterator.next)
                    if not batch:
                        return
                    for row in batch:
                        meta = row.get("metadata") or {}
                        if not isinstance(meta, dict):
                            meta = {}
                        yield VectorIdentity(str(row.get("id")), _text(meta.get("doc_id")),
                                             _text(meta.get("document_id")), _text(meta.get("dataset_id")))
            finally:
                iterator.close()
        finally:
            quiet.setLevel(level)

    def close(self) -> None:
        self.target.close()


class WeaviateScanner:
    backend = "weaviate"

    def __init__(self, settings: WeaviateSettings) -> None:
        from drtool.adapters.weaviate import WeaviateTarget

        self.target = WeaviateTarget(settings)

    def describe(self) -> str:
        return self.target.describe()

    def _resolve(self, name: str) -> str | None:
        """The collection behind `name`: itself, or the target of a drtool alias (blue/green switch)."""
        if self.target.exists(name):
            return name
        return self.target._alias_target(name)

    def exists(self, name: str) -> bool:
        return self._resolve(name) is not None

    def iter_identities(self, name: str) -> Iterator[VectorIdentity]:
        real = self._resolve(name)
        if real is None:
            return
        collection = self.target.client.collections.get(real)
        try:
            present = {p.name for p in collection.config.get().properties}
        except DrtoolError:
            raise
        except Exception as exc:
            raise self.target._error(f"read the schema of {real}", exc) from None
        wanted = [p for p in _IDENTITY if p in present]  # auto-schema creates a property only once it is seen
        try:
            for obj in collection.iterator(return_properties=wanted or None, cache_size=BATCH):
                props = obj.properties or {}
                yield VectorIdentity(str(obj.uuid), _text(props.get("doc_id")), _text(props.get("document_id")),
                                     _text(props.get("dataset_id")))
        except DrtoolError:
            raise
        except Exception as exc:
            raise self.target._error(f"iterate {real}", exc) from None

    def close(self) -> None:
        self.target.close()

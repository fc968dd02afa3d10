"""After rebuild-index switched Dify's collection, Dify's own lifecycle calls behave as on a collection Dify made.

A rebuild is only half done if the name it leaves behind cannot be managed by Dify afterwards: deleting a
dataset (or re-indexing it) calls `delete()`, which on Weaviate is `collections.exists(name)` then
`collections.delete(name)` and on Milvus `has_collection` then `drop_collection`; re-indexing then creates the
collection again; newer Dify adds missing properties through the name (`_ensure_properties`); documents are
removed by a metadata filter and searched with Dify's document filter.

Each case runs once per backend of tests/conformance/backends.py (the `vector_backend` fixture). `DifyWeaviate`
`DifyMilvus` and `DifyPgvector` issue the exact client calls (SQL) of Dify's weaviate_vector.py, milvus_vector.py and
pgvector.py (Dify 1.13 to 1.17, one collection per dataset) against the real server; nothing is mocked.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from drtool.core.ports import Row, VectorStore
from tests.conformance.backends import BACKENDS
from tests.conformance.conftest import DATASET, DIM, DOC_A, DOC_B, VectorBackendUnderTest, fill, make_rows, unit

DIFY_PROPERTIES = ("document_id", "doc_id", "doc_type", "chunk_index", "is_summary", "original_chunk_id")


class DifyWeaviate:
    """The calls of Dify's WeaviateVector (api/.../weaviate/weaviate_vector.py, client v4) on one collection."""

    def __init__(self, settings: Any, name: str) -> None:
        import weaviate

        from drtool.adapters.weaviate import split_endpoint

        host, port, _ = split_endpoint(settings.weaviate.endpoint, 8080)
        grpc_host, grpc_port, _ = split_endpoint(settings.weaviate.grpc_endpoint, 50051)
        self.client = weaviate.connect_to_custom(http_host=host, http_port=port, http_secure=False,
                                                 grpc_host=grpc_host, grpc_port=grpc_port, grpc_secure=False,
                                                 skip_init_checks=True)
        self.name = name

    def exists(self) -> bool:
        return bool(self.client.collections.exists(self.name))

    def delete(self) -> None:
        if self.client.collections.exists(self.name):
            self.client.collections.delete(self.name)

    def create(self) -> None:
        """_create_collection (its Redis lock and cache key aside) then _ensure_properties."""
        import weaviate.classes.config as wc

        if not self.client.collections.exists(self.name):
            self.client.collections.create(
                name=self.name,
                properties=[
                    wc.Property(name="text", data_type=wc.DataType.TEXT, tokenization=wc.Tokenization.WORD),
                    wc.Property(name="document_id", data_type=wc.DataType.TEXT),
                    wc.Property(name="doc_id", data_type=wc.DataType.TEXT),
                    wc.Property(name="doc_type", data_type=wc.DataType.TEXT),
                    wc.Property(name="chunk_index", data_type=wc.DataType.INT),
                    wc.Property(name="is_summary", data_type=wc.DataType.BOOL),
                    wc.Property(name="original_chunk_id", data_type=wc.DataType.TEXT),
                ],
                vector_config=wc.Configure.Vectors.self_provided(
                    vector_index_config=wc.Configure.VectorIndex.hnsw(distance_metric=wc.VectorDistances.COSINE)),
            )
        assert self.ensure_properties() == []

    def ensure_properties(self) -> list[tuple[str, str]]:
        """Dify's _ensure_properties; Dify logs a refused add_property as a warning, this returns them."""
        import weaviate.classes.config as wc

        if not self.client.collections.exists(self.name):
            return []
        col = self.client.collections.use(self.name)
        existing = {p.name for p in (col.config.get().properties or [])}
        types = {"chunk_index": wc.DataType.INT, "is_summary": wc.DataType.BOOL}
        refused = []
        for prop in DIFY_PROPERTIES:
            if prop not in existing:
                try:
                    col.config.add_property(wc.Property(name=prop, data_type=types.get(prop, wc.DataType.TEXT)))
                except Exception as exc:  # what Dify swallows is the finding
                    refused.append((prop, str(exc)[:200]))
        return refused

    def add_property(self, name: str) -> None:
        import weaviate.classes.config as wc

        self.client.collections.use(self.name).config.add_property(wc.Property(name=name, data_type=wc.DataType.TEXT))

    def add_texts(self, rows: list[Row]) -> None:
        col = self.client.collections.use(self.name)
        with col.batch.dynamic() as batch:
            for text, meta, vector in rows:
                batch.add_object(properties={"text": text, **meta},
                                 uuid=uuid.uuid5(uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), text),
                                 vector={"default": vector})
        assert not col.batch.failed_objects, col.batch.failed_objects[:1]

    def delete_by_metadata_field(self, key: str, value: str) -> None:
        from weaviate.classes.query import Filter

        if self.client.collections.exists(self.name):
            self.client.collections.use(self.name).data.delete_many(where=Filter.by_property(key).equal(value))

    def text_exists(self, doc_id: str) -> bool:
        from weaviate.classes.query import Filter

        if not self.client.collections.exists(self.name):
            return False
        res = self.client.collections.use(self.name).query.fetch_objects(
            filters=Filter.by_property("doc_id").equal(doc_id), limit=1, return_properties=["doc_id"])
        return len(res.objects) > 0

    def search(self, vector: list[float], document_ids: list[str], k: int = 4) -> list[tuple[str, dict[str, Any]]]:
        from weaviate.classes.query import Filter, MetadataQuery

        if not self.client.collections.exists(self.name):
            return []
        res = self.client.collections.use(self.name).query.near_vector(
            near_vector=vector, limit=k, return_properties=["doc_id", "document_id", "text"],
            return_metadata=MetadataQuery(distance=True), include_vector=False, target_vector="default",
            filters=Filter.by_property("document_id").contains_any(document_ids) if document_ids else None)
        return [(str(o.properties.pop("text", "")), dict(o.properties)) for o in res.objects]

    def is_alias(self) -> bool:
        return self.client.alias.get(alias_name=self.name) is not None

    def close(self) -> None:
        self.client.close()


class DifyMilvus:
    """The calls of Dify's MilvusVector (api/.../milvus/milvus_vector.py, MilvusClient) on one collection."""

    def __init__(self, settings: Any, name: str) -> None:
        from pymilvus import MilvusClient

        self.client = MilvusClient(uri=settings.milvus.uri, token=settings.milvus.token or "")
        self.name = name

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.name))

    def delete(self) -> None:
        if self.client.has_collection(self.name):
            self.client.drop_collection(self.name)

    def create(self) -> None:
        from pymilvus import CollectionSchema, DataType, FieldSchema

        if self.client.has_collection(self.name):
            return
        fields = [FieldSchema("id", DataType.INT64, is_primary=True, auto_id=True),
                  FieldSchema("page_content", DataType.VARCHAR, max_length=65535),
                  FieldSchema("metadata", DataType.JSON),
                  FieldSchema("vector", DataType.FLOAT_VECTOR, dim=DIM)]
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 8, "efConstruction": 64})
        self.client.create_collection(self.name, schema=CollectionSchema(fields), index_params=index,
                                      consistency_level="Session")

    def ensure_properties(self) -> list[tuple[str, str]]:
        return []  # Dify's Milvus adapter never alters a collection's schema

    def add_texts(self, rows: list[Row]) -> None:
        self.client.insert(self.name, [{"page_content": t, "metadata": m, "vector": v} for t, m, v in rows])

    def delete_by_metadata_field(self, key: str, value: str) -> None:
        if self.client.has_collection(self.name):
            hits = self.client.query(self.name, filter=f'metadata["{key}"] == "{value}"', output_fields=["id"],
                                     consistency_level="Strong")
            if hits:
                self.client.delete(self.name, ids=[h["id"] for h in hits])

    def text_exists(self, doc_id: str) -> bool:
        if not self.client.has_collection(self.name):
            return False
        return bool(self.client.query(self.name, filter=f'metadata["doc_id"] == "{doc_id}"', output_fields=["id"],
                                      consistency_level="Strong"))

    def search(self, vector: list[float], document_ids: list[str], k: int = 4) -> list[tuple[str, dict[str, Any]]]:
        if not self.client.has_collection(self.name):
            return []
        ids = ", ".join(f'"{d}"' for d in document_ids)
        kwargs: dict[str, Any] = {"filter": f'metadata["document_id"] in [{ids}]'} if document_ids else {}
        try:
            res = self.client.search(self.name, data=[vector], anns_field="vector", limit=k,
                                     output_fields=["page_content", "metadata"], consistency_level="Strong", **kwargs)
        except Exception:  # Milvus Lite cannot evaluate `in` on a JSON path (docs/rebuild-index.md)
            kwargs = {"filter": " or ".join(f'metadata["document_id"] == "{d}"' for d in document_ids)}
            res = self.client.search(self.name, data=[vector], anns_field="vector", limit=k,
                                     output_fields=["page_content", "metadata"], consistency_level="Strong", **kwargs)
        return [(h["entity"]["page_content"], dict(h["entity"]["metadata"])) for h in res[0]]

    def is_alias(self) -> bool:
        try:
            self.client.describe_alias(self.name)
        except Exception:  # "alias not found" is the answer
            return False
        return True

    def close(self) -> None:
        self.client.close()


class DifyPgvector:
    """The SQL of Dify's PGVector (api/.../pgvector/pgvector.py): unquoted `embedding_<collection>`, so Postgres
    folds and clips the name exactly as it does for Dify."""

    def __init__(self, settings: Any, name: str) -> None:
        import psycopg

        from drtool.adapters.pgvector import dify_index_names

        pg = settings.pgvector
        self.conn = psycopg.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                                    dbname=pg.database, autocommit=True)
        self.name = name
        self.table = f"embedding_{name}"
        self.index = dify_index_names(name)["emb"]

    def _one(self, sql: str, *args: Any) -> Any:
        return self.conn.execute(sql, args).fetchone()

    def exists(self) -> bool:
        return self._one("SELECT to_regclass(%s)", self.table.lower())[0] is not None

    def delete(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")

    def create(self) -> None:
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (id UUID PRIMARY KEY, text TEXT NOT NULL, "
                          f"meta JSONB NOT NULL, embedding vector({DIM}) NOT NULL) using heap")
        self.conn.execute(f"CREATE INDEX IF NOT EXISTS {self.index} ON {self.table} USING hnsw "
                          "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")

    def ensure_properties(self) -> list[tuple[str, str]]:
        return []  # Dify's pgvector adapter never alters a table

    def add_texts(self, rows: list[Row]) -> None:
        import json

        from drtool.adapters.pgvector import row_id

        with self.conn.cursor() as cur:
            for text, meta, vector in rows:
                cur.execute(f"INSERT INTO {self.table} (id, text, meta, embedding) VALUES (%s, %s, %s, %s)",
                            (row_id(meta["doc_id"]), text, json.dumps(meta), str(vector)))

    def delete_by_metadata_field(self, key: str, value: str) -> None:
        self.conn.execute(f"DELETE FROM {self.table} WHERE meta->>%s = %s", (key, value))

    def text_exists(self, doc_id: str) -> bool:
        from drtool.adapters.pgvector import row_id

        if not self.exists():
            return False
        return self._one(f"SELECT id FROM {self.table} WHERE id = %s", row_id(doc_id)) is not None

    def search(self, vector: list[float], document_ids: list[str], k: int = 4) -> list[tuple[str, dict[str, Any]]]:
        if not self.exists():
            return []
        where = ""
        if document_ids:
            where = "WHERE meta->>'document_id' in ({})".format(", ".join(f"'{d}'" for d in document_ids))
        rows = self.conn.execute(f"SELECT meta, text, embedding <=> %s AS distance FROM {self.table} {where} "
                                 f"ORDER BY distance LIMIT {k}", (str(vector),)).fetchall()
        return [(text, dict(meta)) for meta, text, _ in rows]

    def is_alias(self) -> bool:
        return False  # Postgres has no aliases: a view would be the analogue, and the adapter renames tables

    def close(self) -> None:
        self.conn.close()


DifyClient = DifyWeaviate | DifyMilvus | DifyPgvector
DIFY_CLIENTS: dict[str, type[DifyClient]] = {"weaviate": DifyWeaviate, "milvus": DifyMilvus,
                                             "pgvector": DifyPgvector}


def dify_for(backend: VectorBackendUnderTest, name: str) -> DifyClient:
    """Dify's client for this backend: a new backend must bring the emulation of Dify's adapter (add it above)."""
    cls = DIFY_CLIENTS.get(backend.spec.store)
    if cls is None:
        pytest.fail(f"no emulation of Dify's {backend.spec.store} adapter in test_dify_lifecycle.py: add one")
    return cls(backend.settings, name)


@pytest.fixture
def dify_and_switched(vector_backend: VectorBackendUnderTest) -> Any:
    """A collection Dify made and filled ("old" rows), then replaced by a drtool build ("new" rows) through the
    store's switch, exactly as rebuild-index does after the gate."""
    store: VectorStore = vector_backend.store
    name = vector_backend.new_name()
    dify = dify_for(vector_backend, name)
    dify.create()
    dify.add_texts(make_rows(4, tag="old"))
    build = store.build_name(name)
    fill(store, build, make_rows(6, tag="new"))
    store.switch(name, build, drop_old=False)
    try:
        yield store, name, dify
    finally:
        dify.close()


def meta_doc_ids(hits: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [str(meta.get("doc_id")) for _, meta in hits]


def test_the_switched_name_is_a_real_collection_answering_difys_search(dify_and_switched: Any) -> None:
    store, name, dify = dify_and_switched
    assert dify.exists() and not dify.is_alias()
    assert store.count(name) == 6
    assert meta_doc_ids(dify.search(unit(1), [DOC_B], 1)) == ["chunk-new1"]
    assert set(meta_doc_ids(dify.search(unit(0), [DOC_B], 10))) == {"chunk-new1", "chunk-new3", "chunk-new5"}
    assert dify.text_exists("chunk-new2") and not dify.text_exists("chunk-old2")


def test_difys_delete_removes_everything_under_the_name(dify_and_switched: Any) -> None:
    """Dataset deletion, and the first step of a re-index: nothing may keep answering under the name."""
    store, name, dify = dify_and_switched
    dify.delete()
    assert not dify.exists()
    assert not store.serves(name)
    assert dify.search(unit(1), [DOC_A, DOC_B]) == []


def test_difys_reindex_after_a_switch_creates_fills_and_finds(dify_and_switched: Any) -> None:
    store, name, dify = dify_and_switched
    dify.delete()
    dify.create()  # asserts its own _ensure_properties finds nothing to refuse
    rows = make_rows(3, tag="again")
    dify.add_texts(rows)
    assert store.count(name) == 3
    assert meta_doc_ids(dify.search(unit(2), [DOC_A], 1)) == ["chunk-again2"]


# Only Dify's Weaviate adapter alters a collection's schema after creating it; Milvus and pgvector never do.
@pytest.mark.parametrize("vector_backend", [pytest.param(s, id=s.id) for s in BACKENDS if s.store == "weaviate"],
                         indirect=True)
def test_difys_schema_calls_succeed_on_the_switched_name(dify_and_switched: Any,
                                                         vector_backend: VectorBackendUnderTest) -> None:
    """Newer Dify adds the properties it declares through the name (Weaviate refused that on an alias: 422)."""
    _store, _name, dify = dify_and_switched
    assert dify.ensure_properties() == []
    props = {p.name for p in dify.client.collections.use(dify.name).config.get().properties}
    assert set(DIFY_PROPERTIES) <= props  # drtool declares what every Dify declares: nothing left to add
    dify.add_property("added_by_a_future_dify")
    props = {p.name for p in dify.client.collections.use(dify.name).config.get().properties}
    assert "added_by_a_future_dify" in props


def test_difys_document_delete_and_add_act_on_the_switched_name(dify_and_switched: Any) -> None:
    """Removing a document (delete_by_metadata_field) and indexing a new one reach the objects drtool copied."""
    store, name, dify = dify_and_switched
    dify.delete_by_metadata_field("document_id", DOC_A)
    assert store.count(name) == 3
    assert dify.search(unit(0), [DOC_A]) == []
    dify.add_texts([(f"added {i}", {"doc_id": f"chunk-added{i}", "doc_hash": "h", "document_id": DOC_A,
                                    "dataset_id": DATASET}, unit(i)) for i in range(2)])
    assert store.count(name) == 5
    assert meta_doc_ids(dify.search(unit(1), [DOC_A], 1)) == ["chunk-added1"]


def test_rollback_then_difys_delete_still_removes_everything(dify_and_switched: Any) -> None:
    """--rollback puts Dify's own collection back under the name, again as a real one Dify can delete."""
    store, name, dify = dify_and_switched
    store.rollback(name)
    assert store.count(name) == 4 and not dify.is_alias()
    assert meta_doc_ids(dify.search(unit(1), [DOC_B], 1)) == ["chunk-old1"]
    dify.delete()
    assert not dify.exists() and not store.serves(name)

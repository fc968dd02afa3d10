"""`milvus_uri` serves Milvus's real API: Dify's collection layout, HNSW/IP index, JSON metadata filters."""

from __future__ import annotations

from typing import Any

from pymilvus import DataType, MilvusClient

from drtool.config import MilvusSettings
from tests.stack.milvus_store import unique_collection_name


def test_round_trip_with_hnsw_ip_and_json_metadata(milvus_uri: str) -> None:
    client = MilvusClient(uri=milvus_uri)
    name = unique_collection_name("Vector_index_smoke")
    try:
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("page_content", DataType.VARCHAR, max_length=65535)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
        index = client.prepare_index_params()
        index.add_index(
            field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 8, "efConstruction": 64}
        )
        client.create_collection(name, schema=schema, index_params=index)
        rows = [
            {
                "page_content": "Error code E21 means an insulation fault.",
                "metadata": {"doc_id": "node-1", "document_id": "doc-1", "dataset_id": "ds-1"},
                "vector": [1.0, 0.0, 0.0, 0.0],
            },
            {
                "page_content": "Feed the starter with equal weights.",
                "metadata": {"doc_id": "node-2", "document_id": "doc-2", "dataset_id": "ds-1"},
                "vector": [0.0, 1.0, 0.0, 0.0],
            },
        ]
        assert client.insert(name, rows)["insert_count"] == 2
        client.load_collection(name)
        hits = client.search(
            name,
            data=[[0.9, 0.1, 0.0, 0.0]],
            anns_field="vector",
            limit=1,
            output_fields=["page_content", "metadata"],
            # Milvus Lite 3.2 rejects Dify's `metadata["document_id"] in [...]` ("left side of 'in' must be a
            # field reference"); an or-chain of == is the portable form.
            filter='metadata["document_id"] == "doc-1" or metadata["document_id"] == "doc-2"',
        )[0]
        assert len(hits) == 1
        assert hits[0]["entity"]["metadata"]["doc_id"] == "node-1"
        assert hits[0]["entity"]["page_content"].startswith("Error code E21")
        assert hits[0]["distance"] > 0.8
        filtered = client.search(
            name,
            data=[[0.9, 0.1, 0.0, 0.0]],
            anns_field="vector",
            limit=5,
            filter='metadata["document_id"] == "doc-2"',
        )[0]
        assert len(filtered) == 1
    finally:
        if client.has_collection(name):
            client.drop_collection(name)
        client.close()


def test_milvus_server_is_a_real_server_where_lite_differs(milvus_server: Any) -> None:
    """The facts the Milvus server in the stack exists for: it reports a server version, evaluates Dify's
    `metadata["document_id"] in [...]`, and a Strong read sees a write at once."""
    from drtool.adapters.milvus import MilvusTarget

    assert not str(milvus_server.version).startswith("lite")
    target = MilvusTarget(MilvusSettings(uri=milvus_server.uri, token=milvus_server.token))
    name = unique_collection_name("Vector_index_smoke_server")
    try:
        target.create(name, 4)
        target.load(name)
        target.insert(name, [("E21: insulation fault", {"doc_id": "n1", "document_id": "doc-1"}, [1.0, 0, 0, 0]),
                             ("starter: equal weights", {"doc_id": "n2", "document_id": "doc-2"}, [0, 1.0, 0, 0])])
        assert target.count(name) == 2
        hits, used = target.dify_search(name, [0.9, 0.1, 0.0, 0.0], 5, ["doc-2"])
        assert used == 'metadata["document_id"] in ["doc-2"]'  # the exact filter, no Lite fallback
        assert [h["metadata"]["doc_id"] for h in hits] == ["n2"]
    finally:
        if target.exists(name):
            target.drop(name)
        target.close()

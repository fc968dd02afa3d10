"""`weaviate_server` is the pinned Weaviate, usable by the v4 client the way Dify uses it."""

from __future__ import annotations

import os
import uuid

import weaviate
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.query import MetadataQuery

from tests.stack.versions import WEAVIATE_VERSION
from tests.stack.weaviate_server import WeaviateServer, weaviate_meta


def test_meta_reports_the_pinned_version(weaviate_server: WeaviateServer) -> None:
    meta = weaviate_meta(weaviate_server.http_url)
    assert meta["version"] == weaviate_server.version
    if not os.environ.get("DRTOOL_TEST_WEAVIATE_URL"):
        assert meta["version"] == WEAVIATE_VERSION


def test_v4_client_round_trip_with_a_named_vector(weaviate_server: WeaviateServer) -> None:
    name = f"Vector_index_{uuid.uuid4().hex}_Node"
    client = weaviate.connect_to_local(
        host=weaviate_server.host, port=weaviate_server.http_port, grpc_port=weaviate_server.grpc_port
    )
    try:
        assert client.is_ready()
        collection = client.collections.create(
            name,
            properties=[
                Property(name="text", data_type=DataType.TEXT),
                Property(name="document_id", data_type=DataType.TEXT),
                Property(name="doc_id", data_type=DataType.TEXT),
            ],
            vector_config=Configure.Vectors.self_provided(name="default"),
        )
        near, far = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]
        wanted = collection.data.insert(
            properties={"text": "inverter manual", "document_id": "doc-1", "doc_id": "node-1"},
            vector={"default": near},
        )
        collection.data.insert(
            properties={"text": "sourdough notes", "document_id": "doc-2", "doc_id": "node-2"},
            vector={"default": far},
        )
        result = collection.query.near_vector(
            near_vector=[0.9, 0.1, 0.0, 0.0],
            target_vector="default",
            limit=1,
            return_metadata=MetadataQuery(distance=True),
        )
        assert [o.uuid for o in result.objects] == [wanted]
        assert result.objects[0].properties["doc_id"] == "node-1"
        assert result.objects[0].metadata.distance is not None and result.objects[0].metadata.distance < 0.05
        assert len(collection) == 2
    finally:
        client.collections.delete(name)
        client.close()

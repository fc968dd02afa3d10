"""Dify's Milvus hybrid search (MILVUS_ENABLE_HYBRID_SEARCH): with it on, Dify declares a `sparse_vector` field that
Milvus fills from the text with a BM25 function, and answers full-text searches from it. A rebuilt collection
must carry the same field and function, or Dify's keyword half of hybrid retrieval finds nothing afterwards.

Milvus Lite 3.x has BM25 functions (as a >= 2.5 server does); the test stack's Milvus server is 2.3.5, which has
none, so there drtool builds what Dify would build on it: no full-text fields, and a warning.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest

from drtool.adapters.milvus import FIELD_SPARSE, FIELD_TEXT, FIELD_VECTOR, MilvusTarget, full_text_supported
from drtool.core.dify_env import map_dify_env
from tests.stack.milvus_store import MilvusTestTarget, unique_collection_name

ROWS = [
    ("The snapshot bucket keeps every pinned object version", {"doc_id": "c1", "document_id": "d1"}, [1.0, 0, 0, 0]),
    ("Replication lag is measured per site", {"doc_id": "c2", "document_id": "d1"}, [0, 1.0, 0, 0]),
    ("Rebuild the index from processed chunks", {"doc_id": "c3", "document_id": "d2"}, [0, 0, 1.0, 0]),
]


def dify_full_text_search(client, name: str, query: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Dify's MilvusVector.search_by_full_text: the query text against the sparse field, top 4."""
    hits = client.search(collection_name=name, data=[query], anns_field=FIELD_SPARSE, limit=4,
                         output_fields=[FIELD_TEXT, "metadata"])
    return [h["entity"]["metadata"]["doc_id"] for h in hits[0]]


@pytest.mark.parametrize("milvus_target", ["lite"], indirect=True)
def test_hybrid_fields_survive_a_rebuild_and_switch(milvus_target: MilvusTestTarget) -> None:
    settings = dataclasses.replace(milvus_target.settings(), enable_hybrid_search=True,
                                   analyzer_params='{"tokenizer": "standard", "filter": ["lowercase"]}')
    target = MilvusTarget(settings)
    name = unique_collection_name("Hybrid")
    build = target.build_name(name)
    milvus_target.track(name, build)
    try:
        target.create(build, 4)
        target.insert(build, ROWS)
        target.finish(build)
        target.switch(name, build, drop_old=True)
        fields = {f["name"]: f for f in target.layout(name)["fields"]}
        assert FIELD_SPARSE in fields and FIELD_VECTOR in fields
        assert fields[FIELD_TEXT]["params"].get("enable_analyzer") in (True, "true")
        assert "lowercase" in str(fields[FIELD_TEXT]["params"].get("analyzer_params"))
        client = milvus_target.client()
        try:
            functions = client.describe_collection(name).get("functions", [])
            assert [(f["input_field_names"], f["output_field_names"]) for f in functions] == \
                [([FIELD_TEXT], [FIELD_SPARSE])]
            assert dify_full_text_search(client, name, "replication lag")[0] == "c2"
            assert dify_full_text_search(client, name, "PINNED Object version")[0] == "c1"  # the lowercase filter
        finally:
            client.close()
    finally:
        target.close()


@pytest.mark.parametrize("milvus_target", ["server"], indirect=True)
def test_a_server_without_bm25_gets_what_dify_builds_there(milvus_target: MilvusTestTarget,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    settings = dataclasses.replace(milvus_target.settings(), enable_hybrid_search=True)
    target = MilvusTarget(settings)
    name = unique_collection_name("Hybrid")
    milvus_target.track(name)
    try:
        with caplog.at_level(logging.WARNING, logger="drtool.milvus"):
            target.create(name, 4)
        assert FIELD_SPARSE not in {f["name"] for f in target.layout(name)["fields"]}
        assert any("without BM25 functions" in r.getMessage() for r in caplog.records)
    finally:
        target.close()


def test_version_rule_and_env_mapping() -> None:
    assert full_text_supported("v2.5.0") and full_text_supported("2.6.1") and full_text_supported("milvus_lite-3.2.2")
    assert not full_text_supported("v2.3.5") and not full_text_supported("2.4.15") and not full_text_supported("?")
    mapping = map_dify_env({"VECTOR_STORE": "milvus", "MILVUS_URI": "http://milvus:19530",
                            "MILVUS_ENABLE_HYBRID_SEARCH": "true"}, {})
    assert mapping.values["milvus.enable_hybrid_search"][0] == "true"

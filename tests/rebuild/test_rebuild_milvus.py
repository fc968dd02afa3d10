"""rebuild-index end to end: chunks in SeaweedFS, the OpenAI-compatible test endpoint, Milvus Lite."""

from __future__ import annotations

import uuid
from typing import Any

from pymilvus import MilvusClient

from drtool.core.naming import dify_collection_name
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary


def new_dataset() -> str:
    return str(uuid.uuid4())


def test_fresh_rebuild_writes_difys_exact_layout_and_verifies(
        rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli, embedding_server: Any) -> None:
    ds = new_dataset()
    chunks = make_chunks(ds, 120)
    chunk_bucket.put_chunks(ds, chunks, "gzip")
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)["datasets"][0]
    assert code == 0, result
    name = dify_collection_name(ds)
    assert result["collection"] == name and result["mode"] == "in-place"
    assert result["inserted"] == 120 and result["embedded"] == 120
    assert result["verification"]["passed"] and result["verification"]["count"] == 120
    assert result["verification"]["recall_at_5"] >= 0.9

    client = MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"])
    info = client.describe_collection(name)
    fields = {f["name"]: f for f in info["fields"]}
    assert set(fields) == {"id", "page_content", "metadata", "vector"}
    assert fields["id"]["is_primary"] and info["auto_id"]
    assert fields["page_content"]["params"]["max_length"] == 65535
    assert fields["vector"]["params"]["dim"] == 384
    index = client.describe_index(name, "vector")
    assert (index["index_type"], index["metric_type"]) == ("HNSW", "IP")
    if "M" in index:  # a Milvus server echoes the build parameters; Milvus Lite does not
        assert int(index["M"]) == 8 and int(index["efConstruction"]) == 64
    assert str(client.get_load_state(name)["state"]).endswith("Loaded")
    rows = client.query(name, filter='metadata["doc_id"] == "' + chunks[7]["id"] + '"',
                        output_fields=["page_content", "metadata"])
    assert len(rows) == 1 and rows[0]["page_content"] == chunks[7]["text"]
    meta = rows[0]["metadata"]
    assert meta["doc_id"] == chunks[7]["id"] and meta["doc_hash"] == "hash-7" and meta["dataset_id"] == ds
    assert meta["document_id"] == chunks[7]["document_id"] and meta["source"] == chunks[7]["metadata"]["source"]
    client.close()

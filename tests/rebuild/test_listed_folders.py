"""`rebuild-index --all` without Postgres takes its datasets from the bucket's folder names: data, not trusted.

Whoever can write to the bucket can plant a folder beside the real ones; only a Dify id (a canonical UUID) is
taken for a dataset, the rest is reported (exit 3) and gets no collection.
"""

from __future__ import annotations

import os
import uuid

from pymilvus import MilvusClient

from drtool.core.naming import dify_collection_name, is_dify_id
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary

PLANTED = ["not-a-dataset", "Vector_index_x", "x\x1b[2Jy", str(uuid.uuid4()).upper()]


def test_planted_folders_are_refused_and_build_nothing(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                       run_cli: RunCli) -> None:
    ds = str(uuid.uuid4())
    chunk_bucket.put_chunks(ds, make_chunks(ds, 12))
    for name in PLANTED:
        chunk_bucket.put_chunks(name, make_chunks(ds, 3))

    code, events = run_cli("rebuild-index", "--all")
    result = summary(events)
    by_id = {d["dataset_id"]: d for d in result["datasets"]}
    assert code == 3, result
    assert by_id[ds]["status"] == "rebuilt" and by_id[ds]["inserted"] == 12
    for name in PLANTED:
        assert by_id[name]["status"] == "refused" and by_id[name]["exit_code"] == 3, by_id[name]
        assert "is not a Dify id" in by_id[name]["error"]
    assert sorted(e["dataset"] for e in events if e.get("event") == "rebuild.dataset_refused") == sorted(PLANTED)

    token = os.environ.get("DRTOOL_MILVUS_TOKEN")
    uri = rebuild_env["DRTOOL_MILVUS_URI"]
    client = MilvusClient(uri, token=token) if token else MilvusClient(uri)
    try:
        assert client.list_collections() == [dify_collection_name(ds)]
    finally:
        client.close()


def test_dify_ids_are_lowercase_canonical_uuids() -> None:
    assert is_dify_id("3f1c2a8e-0000-4000-8000-000000000001")
    for text in ("", "..", "3F1C2A8E-0000-4000-8000-000000000001", "3f1c2a8e00004000800000000000000a",
                 "3f1c2a8e-0000-4000-8000-000000000001\n", "{3f1c2a8e-0000-4000-8000-000000000001}"):
        assert not is_dify_id(text), text

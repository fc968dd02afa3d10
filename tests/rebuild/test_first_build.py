"""The disaster case: no collection under the name Dify queries. The first build still goes beside the name and
is renamed in only after the gate (Milvus, pgvector), so Dify never sees a half-built or ungated collection."""

from __future__ import annotations

import json
import uuid
from typing import Any

from drtool.core.naming import dify_collection_name
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary
from tests.stack.milvus_store import MilvusTestTarget


def test_a_failed_first_build_leaves_difys_name_absent(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                       run_cli: RunCli, embedding_server: Any,
                                                       milvus_target: MilvusTestTarget) -> None:
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    build = name + "_drtool_build"
    milvus_target.track(name)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 30))
    embedding_server.fail_next(401, count=1)  # stops at the first batch: a half-built collection
    assert run_cli("rebuild-index", "--dataset", ds)[0] == 12
    client = milvus_target.client()
    try:
        assert client.has_collection(build) and not client.has_collection(name)
        client.insert(build, [{"page_content": "stray", "metadata": {"doc_id": "stray"}, "vector": [0.05] * 384}])
        code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
        result = summary(events)["datasets"][0]
        assert code == 4 and "nothing was switched" in result["error"], result
        assert result["mode"] == "new"
        assert not client.has_collection(name), "a failed gate must leave Dify's name as empty as it was"

        code, events = run_cli("rebuild-index", "--dataset", ds, "--force")
        result = summary(events)["datasets"][0]
        assert code == 0 and result["switch"] == f"{build} -> {name}", result
        assert client.has_collection(name) and not client.has_collection(build)
    finally:
        client.close()


def test_a_kill_after_the_rename_is_finished_not_undone(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                        run_cli: RunCli, embedding_server: Any,
                                                        milvus_target: MilvusTestTarget) -> None:
    """Killed between the rename and the checkpoint's deletion: --resume must not rename the new collection
    aside (which would leave Dify's name empty), only finish."""
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    build = name + "_drtool_build"
    milvus_target.track(name)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 20))
    embedding_server.fail_next(401, count=1)
    assert run_cli("rebuild-index", "--dataset", ds)[0] == 12  # leaves a real checkpoint and the build
    key = f"drtool/rebuild/milvus/{name}.json"
    ledger = json.loads(chunk_bucket.client.get_object(Bucket=chunk_bucket.name, Key=key)["Body"].read())
    assert ledger["build"] == build
    chunk_bucket.client.put_object(Bucket=chunk_bucket.name, Key=key,
                                   Body=json.dumps({**ledger, "phase": "switching"}).encode())
    client = milvus_target.client()
    try:
        client.rename_collection(build, name)  # the rename the killed run had done
        code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
        result = summary(events)["datasets"][0]
        assert code == 0, result
        assert "done before the interruption" in result["switch"]
        assert client.has_collection(name) and not client.has_collection(name + "_drtool_prev")
    finally:
        client.close()
    assert chunk_bucket.keys(key) == [], "the checkpoint is deleted"

"""Blue/green switch, rollback, warm cache, dry-run, force, Redis keys and the faults of the issue."""

from __future__ import annotations

import gzip
import os
from typing import Any

import redis
from pymilvus import MilvusClient

from drtool.core.naming import dify_collection_name, previous_name
from tests.rebuild.conftest import BOTH_MILVUS, ChunkBucket, RunCli, make_chunks, new_dataset, summary
from tests.stack.milvus_store import MilvusTestTarget


def stored_doc_ids(uri: str, name: str) -> list[str]:
    token = os.environ.get("DRTOOL_MILVUS_TOKEN")  # rebuild_env's, when the server checks credentials
    client = MilvusClient(uri, token=token) if token else MilvusClient(uri)
    try:
        client.load_collection(name)
        rows = client.query(name, filter="id >= 0", output_fields=["metadata"], limit=16384)
        return [r["metadata"]["doc_id"] for r in rows]
    finally:
        client.close()


@BOTH_MILVUS
def test_second_rebuild_is_blue_green_calls_no_model_and_rolls_back(
        rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli, embedding_server: Any,
        redis_url: str, milvus_target: MilvusTestTarget) -> None:
    ds = new_dataset()
    name = dify_collection_name(ds)
    milvus_target.track(name)
    uri = rebuild_env["DRTOOL_MILVUS_URI"]
    chunk_bucket.put_chunks(ds, make_chunks(ds, 80), "zstd")
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 0, summary(events)
    cold_requests = embedding_server.requests
    assert cold_requests > 0
    assert chunk_bucket.keys(f"datasets/{ds}/processed/vectors/"), "the sidecar cache was written"

    # Dify's lock key would make it skip the collection: the rebuild deletes it and says so.
    r = redis.Redis.from_url(redis_url)
    r.set(f"vector_indexing_{name}", 1, ex=3600)
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert embedding_server.requests == cold_requests, "a warm rebuild must not call the model"
    assert result["cache_hits_sidecar"] == 80 and result["embedded"] == 0
    assert result["mode"] == "blue-green" and previous_name(name) in result["switch"]
    assert result["redis_keys_deleted"] == []  # redis.url not configured in this run
    assert sorted(stored_doc_ids(uri, name)) == sorted(stored_doc_ids(uri, previous_name(name)))

    # Change the chunks, rebuild with Redis configured, then roll back to the previous generation.
    chunk_bucket.put_chunks(ds, make_chunks(ds, 50), "zstd")
    code, events = run_cli("rebuild-index", "--dataset", ds, "--dify-host", "unused=1")  # global option after cmd
    assert code == 0
    assert len(stored_doc_ids(uri, name)) == 50 and len(stored_doc_ids(uri, previous_name(name))) == 80
    import os
    os.environ["DRTOOL_REDIS_URL"] = redis_url
    try:
        code, events = run_cli("rebuild-index", "--dataset", ds, "--rollback")
    finally:
        del os.environ["DRTOOL_REDIS_URL"]
    result = summary(events)["datasets"][0]
    assert code == 0 and result["status"] == "rolled back", result
    assert result["redis_keys_deleted"] == [f"vector_indexing_{name}"]
    assert r.get(f"vector_indexing_{name}") is None
    assert len(stored_doc_ids(uri, name)) == 80 and len(stored_doc_ids(uri, previous_name(name))) == 50

    code, events = run_cli("rebuild-index", "--dataset", ds, "--drop-old")
    assert code == 2  # --drop-old without --yes
    code, events = run_cli("rebuild-index", "--dataset", ds, "--drop-old", "--yes")
    assert code == 0
    client = milvus_target.client()
    assert not client.has_collection(previous_name(name)) and client.has_collection(name)
    client.close()
    code, events = run_cli("rebuild-index", "--dataset", ds, "--rollback")
    assert code == 10


def test_dry_run_reports_and_changes_nothing(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                             run_cli: RunCli, embedding_server: Any) -> None:
    ds = new_dataset()
    chunk_bucket.put_chunks(ds, make_chunks(ds, 40))
    before = embedding_server.requests
    code, events = run_cli("rebuild-index", "--dataset", ds, "--dry-run")
    result = summary(events)["datasets"][0]
    assert code == 0 and result["status"] == "planned"
    assert result["valid"] == 40 and result["plan"]["to_embed"] == 40
    assert result["plan"]["model_calls"] == 2  # batch size 32
    assert embedding_server.requests == before
    client = MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"])
    assert not client.has_collection(dify_collection_name(ds))
    client.close()
    assert chunk_bucket.keys("drtool/") == []
    other = new_dataset()
    chunk_bucket.put_chunks(other, make_chunks(other, 5), "zstd")
    code, events = run_cli("rebuild-index", "--all", "--dry-run")
    assert code == 0
    assert sorted(d["dataset_id"] for d in summary(events)["datasets"]) == sorted([ds, other])


def test_bad_lines_are_reported_and_max_rejects_decides(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                        run_cli: RunCli) -> None:
    ds = new_dataset()
    chunks = make_chunks(ds, 30)
    data = b"".join(__import__("drtool.core.chunks", fromlist=["x"]).dumps_chunk(c) for c in chunks[:10])
    data += b'{"id": "broken", "text": \n'  # line 11
    data += b'{"id": "e", "text": "", "dataset_id": "' + ds.encode() + b'", "document_id": "d"}\n'  # line 12
    data += __import__("drtool.core.chunks", fromlist=["x"]).dumps_chunk(chunks[3])  # line 13: duplicate
    data += b"".join(__import__("drtool.core.chunks", fromlist=["x"]).dumps_chunk(c) for c in chunks[10:])
    chunk_bucket.put_chunks(ds, data)
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 2
    failed = next(e for e in events if e["event"] == "rebuild.dataset_failed")
    assert "processed/chunks.jsonl:11: malformed JSON" in failed["error"] and "--max-rejects" in failed["error"]
    # Nothing is left behind (no collection yet: the disaster case): no empty collection under Dify's name, no
    # checkpoint, so the next run needs neither --resume nor --force.
    client = MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"])
    try:
        assert not client.has_collection(dify_collection_name(ds))
    finally:
        client.close()
    assert not chunk_bucket.keys("drtool/rebuild/")
    code, events = run_cli("rebuild-index", "--dataset", ds, "--max-rejects", "3")
    result = summary(events)["datasets"][0]
    assert code == 3, result  # done, with lines skipped: worth a look (docs/exit-codes.md)
    assert result["rejected"] == 3 and result["valid"] == 30 and result["inserted"] == 30
    reasons = [e["line"] for e in events if e["event"] == "rebuild.chunk_rejected"]
    assert reasons[-3:] == [11, 12, 13]
    assert any("duplicate id" in r and ":13:" in r for r in result["rejections"])


def test_missing_and_corrupt_chunk_files(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                         run_cli: RunCli) -> None:
    code, events = run_cli("rebuild-index", "--dataset", new_dataset())
    assert code == 10
    assert "no chunk file" in next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
    ds = new_dataset()
    packed = gzip.compress(b"".join(__import__("drtool.core.chunks", fromlist=["x"]).dumps_chunk(c)
                                    for c in make_chunks(ds, 150)))
    chunk_bucket.client.put_object(Bucket=chunk_bucket.name, Key=f"datasets/{ds}/processed/chunks.jsonl.gz",
                                   Body=packed[: len(packed) * 2 // 3])
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 2
    error = next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
    assert "chunks.jsonl.gz:" in error and "corrupt or truncated" in error and "restore it" in error


def test_embedding_endpoint_faults(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli,
                                   embedding_server: Any, monkeypatch: Any) -> None:
    ds = new_dataset()
    chunk_bucket.put_chunks(ds, make_chunks(ds, 40))
    # 401: refused at once, never retried, exit 12, nothing half-built left without a checkpoint.
    embedding_server.fail_next(401, count=50)
    before = embedding_server.requests
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 12
    assert embedding_server.requests - before == 1
    assert "embedding.api_key" in next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
    embedding_server.reset()
    # 429 with Retry-After for a while: waits, then finishes (resuming the checkpoint of the failed run).
    embedding_server.fail_next(429, count=3, retry_after=0.2)
    code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["inserted"] == 40 and result["verification"]["count"] == 40
    # Endpoint down: a clear error naming the endpoint, exit 1.
    ds2 = new_dataset()
    chunk_bucket.put_chunks(ds2, make_chunks(ds2, 10))
    monkeypatch.setenv("DRTOOL_EMBEDDING_BASE_URL", "http://127.0.0.1:9/v1")
    code, events = run_cli("rebuild-index", "--dataset", ds2)
    assert code == 1
    assert "cannot reach" in next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]


def test_leftover_build_without_checkpoint_needs_force(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                       run_cli: RunCli) -> None:
    ds = new_dataset()
    chunk_bucket.put_chunks(ds, make_chunks(ds, 20))
    assert run_cli("rebuild-index", "--dataset", ds)[0] == 0
    uri = rebuild_env["DRTOOL_MILVUS_URI"]
    client = MilvusClient(uri)
    build = dify_collection_name(ds) + "_drtool_build"
    client.create_collection(build, dimension=384)
    client.insert(build, [{"id": 1, "vector": [0.1] * 384}])
    client.close()
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 2
    assert "--force" in next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
    code, events = run_cli("rebuild-index", "--dataset", ds, "--force")
    assert code == 0, summary(events)


@BOTH_MILVUS
def test_failed_gate_switches_nothing_and_exits_4(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                  run_cli: RunCli, embedding_server: Any,
                                                  milvus_target: MilvusTestTarget) -> None:
    """On a server the stray row is written by another client just before the gate: its count must still see it."""
    ds = new_dataset()
    name = dify_collection_name(ds)
    milvus_target.track(name)
    uri = rebuild_env["DRTOOL_MILVUS_URI"]
    chunk_bucket.put_chunks(ds, make_chunks(ds, 30))
    assert run_cli("rebuild-index", "--dataset", ds)[0] == 0
    live = sorted(stored_doc_ids(uri, name))

    chunk_bucket.put_chunks(ds, make_chunks(ds, 45))
    embedding_server.fail_next(401, count=1)  # the blue/green build starts, then stops at its first batch
    assert run_cli("rebuild-index", "--dataset", ds)[0] == 12
    build = name + "_drtool_build"
    client = milvus_target.client()
    assert client.has_collection(build)
    # A stray writer puts a row into the half-built collection: the count check must catch it.
    client.insert(build, [{"page_content": "stray", "metadata": {"doc_id": "stray"}, "vector": [0.05] * 384}])
    client.close()
    code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
    result = summary(events)["datasets"][0]
    assert code == 4, result
    assert "count 46 != 45 valid chunks" in result["error"] and "nothing was switched" in result["error"]
    assert sorted(stored_doc_ids(uri, name)) == live, "the live collection is untouched"
    assert len(stored_doc_ids(uri, build)) == 46, "the build is kept for inspection"
    code, events = run_cli("rebuild-index", "--dataset", ds, "--force")
    assert code == 0 and len(stored_doc_ids(uri, name)) == 45


def test_damaged_checkpoint_ledger_is_refused_with_a_hint(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                          run_cli: RunCli) -> None:
    ds = new_dataset()
    chunk_bucket.put_chunks(ds, make_chunks(ds, 5))
    key = f"drtool/rebuild/milvus/{dify_collection_name(ds)}.json"
    for damaged in (b"[]", b"[" * 100_000, b"{not json"):
        chunk_bucket.client.put_object(Bucket=chunk_bucket.name, Key=key, Body=damaged)
        code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
        assert code == 2, summary(events)
        error = next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
        assert "not a JSON object" in error and "--force" in error
    code, events = run_cli("rebuild-index", "--dataset", ds, "--force")
    assert code == 0, [e for e in events if e["event"] == "rebuild.dataset_failed"]

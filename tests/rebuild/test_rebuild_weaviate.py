"""rebuild-index into a real Weaviate: Dify's properties, the named vector `default`, both UUID schemes, the
alias switch, rollback, and resume without duplicates (deterministic UUIDs)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import weaviate
from weaviate.classes.config import Configure, DataType, Property

from drtool.core.naming import dify_collection_name
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary


@pytest.fixture
def weaviate_env(rebuild_env: dict[str, str], weaviate_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DRTOOL_VECTOR_STORE", "weaviate")
    monkeypatch.setenv("DRTOOL_WEAVIATE_ENDPOINT", weaviate_server.http_url)
    monkeypatch.setenv("DRTOOL_WEAVIATE_GRPC_ENDPOINT", f"{weaviate_server.host}:{weaviate_server.grpc_port}")
    client = weaviate.connect_to_custom(http_host=weaviate_server.host, http_port=weaviate_server.http_port,
                                        http_secure=False, grpc_host=weaviate_server.host,
                                        grpc_port=weaviate_server.grpc_port, grpc_secure=False)
    yield client
    client.close()


def test_weaviate_layout_alias_switch_and_rollback(weaviate_env: Any, chunk_bucket: ChunkBucket,
                                                   run_cli: RunCli) -> None:
    client = weaviate_env
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    chunks = make_chunks(ds, 60)
    chunk_bucket.put_chunks(ds, chunks)

    # Dify created the class itself: switching must delete it, which needs --yes.
    client.collections.create(name, properties=[Property(name="text", data_type=DataType.TEXT)],
                              vector_config=[Configure.Vectors.self_provided(name="default")])
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 2 and "--yes" in next(e for e in events if e["event"] == "dataset_failed")["error"]
    code, events = run_cli("rebuild-index", "--dataset", ds, "--yes")
    result = summary(events)["datasets"][0]
    assert code == 0, (result["error"], result["verification"]["problems"])
    first = client.alias.get(alias_name=name).collection
    assert first.startswith(name + "_drtool_") and result["verification"]["passed"]

    col = client.collections.get(name)  # what Dify opens: the alias
    config = col.config.get()
    props = {p.name: p for p in config.properties}
    assert {"text", "document_id", "doc_id", "doc_type", "chunk_index"} <= set(props)
    assert str(props["text"].tokenization).lower().endswith("word")
    assert list(config.vector_config) == ["default"]
    assert col.aggregate.over_all(total_count=True).total_count == 60
    target = chunks[11]
    obj = col.query.fetch_object_by_id(uuid.uuid5(uuid.NAMESPACE_URL, target["text"]))
    assert obj is not None and obj.properties["doc_id"] == target["id"]
    assert str(obj.properties["dataset_id"]) == ds and obj.properties["doc_hash"] == "hash-11"
    assert obj.properties["source"] == target["metadata"]["source"] and obj.properties["chunk_index"] == 11

    # Second generation with the doc-id UUID scheme; the alias moves, the first generation stays for rollback.
    chunk_bucket.put_chunks(ds, [{**c, "id": str(uuid.uuid4())} for c in chunks[:40]])
    code, events = run_cli("rebuild-index", "--dataset", ds, "--weaviate-uuid", "doc-id")
    result = summary(events)["datasets"][0]
    assert code == 0, result
    second = client.alias.get(alias_name=name).collection
    assert second != first and client.collections.exists(first)
    assert client.collections.get(name).aggregate.over_all(total_count=True).total_count == 40
    some = client.collections.get(name).query.fetch_objects(limit=1).objects[0]
    assert str(some.uuid) == some.properties["doc_id"]

    code, events = run_cli("rebuild-index", "--dataset", ds, "--rollback")
    assert code == 0, summary(events)
    assert client.alias.get(alias_name=name).collection == first
    assert client.collections.get(name).aggregate.over_all(total_count=True).total_count == 60


def test_weaviate_content_uuid_collisions_are_counted(weaviate_env: Any, chunk_bucket: ChunkBucket,
                                                      run_cli: RunCli) -> None:
    ds = str(uuid.uuid4())
    chunks = make_chunks(ds, 20)
    chunks.append({**chunks[3], "id": "same-text-other-id"})  # Dify's uuid5(text) makes these one object
    chunk_bucket.put_chunks(ds, chunks)
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["key_collisions"] == 1 and result["verification"]["count"] == 20


def test_vector_store_goes_away_mid_run_then_resume(weaviate_env: Any, weaviate_server: Any,
                                                    chunk_bucket: ChunkBucket, run_cli: RunCli,
                                                    embedding_server: Any, rebuild_env: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os
    import subprocess
    import sys
    import time

    from tests.rebuild.conftest import TcpRelay

    http = TcpRelay(weaviate_server.host, weaviate_server.http_port)
    grpc = TcpRelay(weaviate_server.host, weaviate_server.grpc_port)
    monkeypatch.setenv("DRTOOL_WEAVIATE_ENDPOINT", f"http://127.0.0.1:{http.port}")
    monkeypatch.setenv("DRTOOL_WEAVIATE_GRPC_ENDPOINT", f"127.0.0.1:{grpc.port}")
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    chunks = make_chunks(ds, 160)
    chunk_bucket.put_chunks(ds, chunks)
    ledger_key = f"drtool/rebuild/weaviate/{name}.json"
    embedding_server.slow_next(0.15, count=1000)
    env = {**os.environ, "DRTOOL_REBUILD_BATCH_SIZE": "16", "DRTOOL_EMBEDDING_BATCH_SIZE": "16"}
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "--json", "rebuild-index", "--dataset", ds],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = chunk_bucket.client.get_object(Bucket=chunk_bucket.name, Key=ledger_key)["Body"].read()
                if json.loads(body).get("lines_done", 0) >= 48:
                    break
            except chunk_bucket.client.exceptions.NoSuchKey:
                pass
            time.sleep(0.05)
        http.stop()
        grpc.stop()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err[-2000:]
    failed = next(json.loads(x) for x in out.splitlines() if '"dataset_failed"' in x)
    assert "weaviate" in failed["error"] and failed["exit_code"] == 1
    ledger = json.loads(chunk_bucket.client.get_object(Bucket=chunk_bucket.name, Key=ledger_key)["Body"].read())
    assert 48 <= ledger["lines_done"] < 160

    http.start()  # the store is back on the same address
    grpc.start()
    embedding_server.reset()
    code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
    result = summary(events)["datasets"][0]
    http.stop()
    grpc.stop()
    assert code == 0, (result["error"], result["verification"])
    assert result["resumed_from_line"] == ledger["lines_done"]
    collection = weaviate_env.collections.get(name)
    assert collection.aggregate.over_all(total_count=True).total_count == 160
    ids = {o.properties["doc_id"] for o in collection.iterator()}
    assert ids == {c["id"] for c in chunks}

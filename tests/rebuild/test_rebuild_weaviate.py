"""rebuild-index into a real Weaviate: Dify's properties, the named vector `default`, both UUID schemes, the
alias switch, rollback, and resume without duplicates (deterministic UUIDs)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.data import DataObject

from drtool.core.naming import dify_collection_name
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary


def _count(client: Any, name: str) -> int:
    return client.collections.get(name).aggregate.over_all(total_count=True).total_count


def test_weaviate_layout_copy_switch_and_rollback(weaviate_env: Any, chunk_bucket: ChunkBucket,
                                                  run_cli: RunCli) -> None:
    client = weaviate_env
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    prev = name + "_drtool_prev"
    chunks = make_chunks(ds, 60)
    chunk_bucket.put_chunks(ds, chunks)

    # Dify created the class itself and holds 2 objects: the copy switch keeps it as _prev, no --yes needed.
    dim = int(os.environ["DRTOOL_EMBEDDING_DIMENSIONS"])
    client.collections.create(name, properties=[Property(name="text", data_type=DataType.TEXT)],
                              vector_config=[Configure.Vectors.self_provided(name="default")])
    client.collections.get(name).data.insert_many([DataObject(properties={"text": f"dify {i}"},
                                                              vector={"default": [1.0] + [0.0] * (dim - 1)})
                                                   for i in range(2)])
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)["datasets"][0]
    assert code == 0, (result["error"], result["verification"]["problems"])
    assert result["verification"]["passed"] and result["mode"] == "blue-green"
    assert f"kept {name} as {prev} (2 objects)" in result["switch"] and "missing or partial for" in result["switch"]
    assert client.alias.get(alias_name=name) is None  # a real collection, not an alias
    assert [c for c in client.collections.list_all(simple=True) if c.startswith(name + "_drtool_2")] == []
    assert _count(client, prev) == 2

    col = client.collections.get(name)  # what Dify opens
    config = col.config.get()
    props = {p.name: p for p in config.properties}
    assert {"text", "document_id", "doc_id", "doc_type", "chunk_index", "is_summary", "original_chunk_id"} <= set(props)
    assert str(props["is_summary"].data_type).lower().endswith("bool")
    assert str(props["text"].tokenization).lower().endswith("word")
    assert list(config.vector_config) == ["default"]
    assert _count(client, name) == 60
    target = chunks[11]
    obj = col.query.fetch_object_by_id(uuid.uuid5(uuid.NAMESPACE_URL, target["text"]), include_vector=True)
    assert obj is not None and obj.properties["doc_id"] == target["id"]
    assert str(obj.properties["dataset_id"]) == ds and obj.properties["doc_hash"] == "hash-11"
    assert obj.properties["source"] == target["metadata"]["source"] and obj.properties["chunk_index"] == 11
    assert len(obj.vector["default"]) == dim  # copied with its vector, not re-embedded

    # A second rebuild with the doc-id UUID scheme: _prev now holds the first rebuild.
    chunk_bucket.put_chunks(ds, [{**c, "id": str(uuid.uuid4())} for c in chunks[:40]])
    code, events = run_cli("rebuild-index", "--dataset", ds, "--weaviate-uuid", "doc-id")
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert _count(client, name) == 40 and _count(client, prev) == 60
    some = client.collections.get(name).query.fetch_objects(limit=1).objects[0]
    assert str(some.uuid) == some.properties["doc_id"]

    code, events = run_cli("rebuild-index", "--dataset", ds, "--rollback")
    assert code == 0, summary(events)
    assert _count(client, name) == 60 and _count(client, prev) == 40 and client.alias.get(alias_name=name) is None
    code, events = run_cli("rebuild-index", "--dataset", ds, "--rollback")  # again: swaps back
    assert code == 0, summary(events)
    assert _count(client, name) == 40 and _count(client, prev) == 60

    code, events = run_cli("rebuild-index", "--dataset", ds, "--drop-old", "--yes")
    assert code == 0, summary(events)
    assert not client.collections.exists(prev)
    code, events = run_cli("rebuild-index", "--dataset", ds, "--rollback")
    assert code == 10, summary(events)


def test_weaviate_schema_follows_difys_env(weaviate_env: Any, chunk_bucket: ChunkBucket, run_cli: RunCli,
                                           tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """WEAVIATE_TOKENIZATION, _INDEX_TYPE, _DISTANCE_METRIC and _COMPRESSION from Dify's .env shape the collection
    as Dify's weaviate_vector.py would; a combination Dify refuses is refused before anything is written."""
    client = weaviate_env
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 12))
    env_file = tmp_path / ".env"
    env_file.write_text("WEAVIATE_TOKENIZATION=trigram\nWEAVIATE_INDEX_TYPE=flat\nWEAVIATE_DISTANCE_METRIC=dot\n"
                        "WEAVIATE_COMPRESSION=bq\n")
    code, events = run_cli("--dify-env", str(env_file), "rebuild-index", "--dataset", ds)
    result = summary(events)["datasets"][0]
    assert code == 0, (result["error"], result["verification"])
    config = client.collections.get(name).config.get()
    text = next(p for p in config.properties if p.name == "text")
    assert str(text.tokenization).lower().endswith("trigram")
    index = config.vector_config["default"].vector_index_config
    assert "flat" in type(index).__name__.lower() and str(index.distance_metric).lower().endswith("dot")
    assert index.quantizer is not None and "bq" in type(index.quantizer).__name__.lower()

    other = str(uuid.uuid4())
    chunk_bucket.put_chunks(other, make_chunks(other, 4))
    env_file.write_text("WEAVIATE_INDEX_TYPE=flat\nWEAVIATE_COMPRESSION=pq\n")
    code, events = run_cli("--dify-env", str(env_file), "rebuild-index", "--dataset", other)
    assert code == 2, summary(events)
    assert "flat Weaviate index takes only bq" in summary(events)["datasets"][0]["error"]
    assert not client.collections.exists(dify_collection_name(other))


def test_alias_switch_is_opt_in_and_difys_delete_misses_it(weaviate_env: Any, chunk_bucket: ChunkBucket,
                                                          run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    """weaviate.switch=alias keeps the instant alias switch; the limitation docs/rebuild-index.md states holds:
    Dify's delete (exists + collections.delete on the name) leaves every object in place."""
    client = weaviate_env
    monkeypatch.setenv("DRTOOL_WEAVIATE_SWITCH", "alias")
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 10))
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 0, summary(events)
    generation = client.alias.get(alias_name=name).collection
    assert client.collections.exists(name)
    client.collections.delete(name)  # what Dify's delete() does
    assert client.alias.get(alias_name=name) is not None and _count(client, generation) == 10
    client.alias.delete(alias_name=name)
    client.collections.delete(generation)


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
    # A short timeout and two tries: the retry budget has tests of its own (tests/network), here it only delays.
    env = {**os.environ, "DRTOOL_REBUILD_BATCH_SIZE": "16", "DRTOOL_EMBEDDING_BATCH_SIZE": "16",
           "DRTOOL_WEAVIATE_TIMEOUT": "10", "DRTOOL_WEAVIATE_MAX_ATTEMPTS": "2"}
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
    failed = next(json.loads(x) for x in out.splitlines() if '"rebuild.dataset_failed"' in x)
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


def test_kill_during_the_copy_switch_then_resume_converges(weaviate_env: Any, chunk_bucket: ChunkBucket,
                                                           run_cli: RunCli) -> None:
    """SIGKILL while the verified build is being copied under Dify's name: the build and the complete _prev are
    still there (the name is never left partial without them), and --resume finishes the copy exactly."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    client = weaviate_env
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    prev = name + "_drtool_prev"
    chunks = make_chunks(ds, 600)
    chunk_bucket.put_chunks(ds, chunks)
    code, events = run_cli("rebuild-index", "--dataset", ds)  # in place; also fills the vector sidecar
    assert code == 0, summary(events)
    chunk_bucket.put_chunks(ds, chunks[:500])  # the second rebuild is told apart by its count

    def marker() -> str | None:
        try:
            return client.collections.export_config(name).description
        except Exception:  # missing for the milliseconds between drop and create
            return None

    def copied() -> int:
        try:
            return _count(client, name)
        except Exception:  # a collection created a moment ago may not have its shard index yet
            return -1

    env = {**os.environ, "DRTOOL_WEAVIATE_COPY_BATCH_SIZE": "5"}
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "--json", "rebuild-index", "--dataset", ds],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (marker() or "").startswith("drtool: copying") and 0 < copied() < 400:
                proc.send_signal(signal.SIGKILL)
                killed_at = copied()
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.communicate(timeout=60)
    assert killed_at is not None, "the copy finished before the test could kill it; lower the batch size"

    builds = [c for c in client.collections.list_all(simple=True) if c.startswith(name + "_drtool_2")]
    assert len(builds) == 1 and _count(client, builds[0]) == 500  # the verified build survives
    assert client.collections.export_config(prev).description.endswith(", complete")
    assert _count(client, prev) == 600
    ledger = json.loads(chunk_bucket.client.get_object(Bucket=chunk_bucket.name,
                                                       Key=f"drtool/rebuild/weaviate/{name}.json")["Body"].read())
    assert ledger["phase"] == "switching" and ledger["build"] == builds[0]

    code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
    assert code == 0, summary(events)
    assert _count(client, name) == 500 and (marker() or "").endswith(", complete")
    assert client.alias.get(alias_name=name) is None and not client.collections.exists(builds[0])
    assert _count(client, prev) == 600  # the rollback point is the collection before the killed switch
    ids = {o.properties["doc_id"] for o in client.collections.get(name).iterator()}
    assert ids == {c["id"] for c in chunks[:500]}


def test_a_multi_tenant_dataset_is_refused_before_anything_is_written(weaviate_env: Any, chunk_bucket: ChunkBucket,
                                                                      run_cli: RunCli, dify_db_factory: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """WEAVIATE_MULTI_TENANCY_ENABLED datasets are tenants of a shared collection: refused (exit 2), named."""
    import json

    from tests.rebuild.test_rebuild_dify import _pg_env

    db = dify_db_factory(datasets=1, documents_per_dataset=1, segments_per_document=2)
    seeded = db.seed.datasets[0]
    shared = "Vector_index_shared_0123456789abcdef_Node"
    with db.connect() as conn:
        conn.execute("UPDATE datasets SET index_struct = %s WHERE id::text = %s", (json.dumps(
            {"type": "weaviate", "vector_store": {"class_prefix": shared, "multi_tenant": True,
                                                  "tenant": seeded.id}}), seeded.id))
        conn.commit()
    chunk_bucket.put_chunks(seeded.id, make_chunks(seeded.id, 2))
    _pg_env(monkeypatch, db.dsn)
    code, events = run_cli("rebuild-index", "--dataset", seeded.id)
    result = summary(events)["datasets"][0]
    assert code == 2, result
    assert f"tenant '{seeded.id}'" in result["error"] and shared in result["error"]
    assert not weaviate_env.collections.exists(shared)
    assert not weaviate_env.collections.exists(dify_collection_name(seeded.id))

"""rebuild-index and verify end to end on pgvector: a seeded Dify database whose datasets say `"type": "pgvector"`,
its files in MinIO, chunk files from export-chunks, the OpenAI-compatible test endpoint, and the stack's real
PostgreSQL 16 + pgvector 0.6 holding Dify's embedding_* tables. Dify's own search statement is the judge of what
a rebuilt table serves."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from drtool.adapters.pgvector import PgvectorTarget, dify_index_names, dify_table_name
from drtool.core.chunks import dumps_chunk
from drtool.core.naming import dify_collection_name, previous_name
from tests.export.helpers import Bucket, RunCli, apply_env, drtool_env, new_bucket_on
from tests.helpers.embedding import embed_via as _embed_via
from tests.helpers.events import summary as _summary
from tests.helpers.events import summary as verify_summary
from tests.rebuild.conftest import make_chunks
from tests.stack.pgvector_server import PgvectorDatabase


def _dify_search(database: PgvectorDatabase, collection: str, vector: list[float], document_id: str,
                 top_k: int = 4) -> list[tuple[dict[str, Any], str]]:
    """Dify's search_by_vector statement, formatted as Dify formats it (unquoted table, pasted ids)."""
    table = f"embedding_{collection}"
    where_clause = f" WHERE meta->>'document_id' in ('{document_id}') "
    with database.connect() as conn:
        rows = conn.execute(f"SELECT meta, text, embedding <=> %s AS distance FROM {table} {where_clause}"  # type: ignore
                            f" ORDER BY distance LIMIT {top_k}", (json.dumps(vector),)).fetchall()
    return [(meta, text) for meta, text, _ in rows]


def test_export_rebuild_verify_switch_and_rollback_on_pgvector(
        pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, pgvector_db: PgvectorDatabase,
        embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> None:
    embed = _embed_via(embedding_server)
    db = dify_db_factory(vector_type="pgvector", embed=embed)
    bucket = new_bucket_on(minio_pair.a)
    for key, data in db.seed.files.items():
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=data)
    apply_env(monkeypatch, drtool_env(
        pg, db.dbname, bucket, DRTOOL_VECTOR_STORE="pgvector", **pgvector_db.env(),
        DRTOOL_EMBEDDING_PROVIDER="openai", DRTOOL_EMBEDDING_BASE_URL=embedding_server.base_url,
        DRTOOL_EMBEDDING_API_KEY=embedding_server.api_key, DRTOOL_EMBEDDING_MODEL=embedding_server.model_name,
        DRTOOL_EMBEDDING_DIMENSIONS=str(embedding_server.dimensions), DRTOOL_REBUILD_SAMPLE="10"))

    code, events = run_cli("verify")
    assert code == 4 and set(verify_summary(events)["counts"]) == {"missing_collection"}  # the index is lost

    assert run_cli("export-chunks", "--all")[0] == 0
    code, events = run_cli("rebuild-index", "--all")
    assert code == 0, [e for e in events if e.get("event") == "result"]
    results = {r["dataset_id"]: r for r in _summary(events)["datasets"]}
    store = PgvectorTarget(pgvector_db.settings())
    try:
        for dataset in db.seed.datasets:
            result = results[dataset.id]
            assert result["collection"] == dataset.collection_name and result["mode"] == "new"
            assert result["verification"]["passed"], result["verification"]
            assert result["verification"]["dify_filter"].startswith("meta->>'document_id' in ('")
            assert store.count(dataset.collection_name) == len(dataset.index_nodes)
            layout = store.layout(dataset.collection_name)
            assert layout["table"] == dify_table_name(dataset.collection_name)
            assert set(layout["indexes"]) == {dify_index_names(dataset.collection_name)["emb"],
                                              dify_index_names(dataset.collection_name)["pkey"]}
            assert layout["columns"][3] == ("embedding", f"vector({embedding_server.dimensions})", True)
            # Dify's own query finds a segment by its own text's embedding, with Dify's metadata
            node, text = next(iter(dataset.index_nodes.items()))
            meta = next(m for _, m in store.iter_metadata(dataset.collection_name) if m["doc_id"] == node)
            hits = _dify_search(pgvector_db, dataset.collection_name, embed([text])[0], meta["document_id"])
            assert hits[0][1] == text and hits[0][0]["doc_id"] == node and hits[0][0]["dataset_id"] == dataset.id

        code, events = run_cli("verify", "--deep")
        assert code == 0, verify_summary(events)
        rows = {d["dataset_id"]: d for d in verify_summary(events)["datasets"]}
        for dataset in db.seed.datasets:
            assert rows[dataset.id]["backend"] == "pgvector"
            assert rows[dataset.id]["vectors"] == len(dataset.index_nodes)

        # A second rebuild goes blue/green: the old table is kept under drtool's name, every vector from a cache.
        first = db.seed.datasets[0]
        before = embedding_server.requests
        code, events = run_cli("rebuild-index", "--dataset", first.id)
        result = _summary(events)["datasets"][0]
        assert code == 0, result
        assert result["mode"] == "blue-green" and "(one transaction)" in result["switch"]
        assert result["embedded"] == 0 and embedding_server.requests == before
        assert store.count(previous_name(first.collection_name)) == len(first.index_nodes)

        # A vector Dify lost is found by verify, then --rollback brings back the previous table.
        lost = next(iter(first.index_nodes))
        assert store.delete_doc_ids(first.collection_name, [lost]) == 1
        code, events = run_cli("verify", "--dataset", first.id)
        assert code == 4 and verify_summary(events)["counts"] == {"missing_vector": 1}
        assert verify_summary(events)["examples"]["missing_vector"][0]["doc_id"] == lost
        code, events = run_cli("rebuild-index", "--dataset", first.id, "--rollback")
        assert code == 0, events
        assert store.count(first.collection_name) == len(first.index_nodes)
        code, events = run_cli("verify", "--dataset", first.id)
        assert code == 0, verify_summary(events)
    finally:
        store.close()


def test_wrong_pgvector_password_exits_12_without_printing_it(
        pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, pgvector_db: PgvectorDatabase,
        monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> None:
    db = dify_db_factory(vector_type="pgvector")
    bucket = new_bucket_on(minio_pair.a)
    wrong = "not-the-password-0f3a"
    apply_env(monkeypatch, drtool_env(pg, db.dbname, bucket, DRTOOL_VECTOR_STORE="pgvector",
                                      **{**pgvector_db.env(), "DRTOOL_PGVECTOR_PASSWORD": wrong}))
    for args in (("verify", "--skip-files"), ("config", "check")):
        code, events = run_cli(*args)
        assert code == 12, (args, events)
        assert wrong not in json.dumps(events)


@pytest.fixture
def chunk_store(minio_pair: Any, pgvector_db: PgvectorDatabase, embedding_server: Any,
                monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """rebuild-index without Postgres metadata (Dify's naming rule): a bucket on the session's MinIO site A for
    the chunk files, pgvector, and the OpenAI-compatible test endpoint, as DRTOOL_* variables."""
    bucket = new_bucket_on(minio_pair.a)
    apply_env(monkeypatch, {
        "DRTOOL_S3_ENDPOINT": bucket.endpoint, "DRTOOL_S3_BUCKET": bucket.name,
        "DRTOOL_S3_ACCESS_KEY": bucket.access_key, "DRTOOL_S3_SECRET_KEY": bucket.secret_key,
        "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_VECTOR_STORE": "pgvector", **pgvector_db.env(),
        "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url,
        "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key, "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
        "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions),
        "DRTOOL_EMBEDDING_BATCH_SIZE": "16", "DRTOOL_REBUILD_SAMPLE": "10"})
    return bucket


def put_chunks(bucket: Bucket, dataset_id: str, chunks: list[dict[str, Any]]) -> None:
    body = b"".join(dumps_chunk(c) for c in chunks)
    bucket.client.put_object(Bucket=bucket.name, Key=f"datasets/{dataset_id}/processed/chunks.jsonl", Body=body)


def test_interrupted_build_resumes_without_duplicates_and_a_stray_row_fails_the_gate(
        chunk_store: Bucket, pgvector_db: PgvectorDatabase, embedding_server: Any, run_cli: RunCli) -> None:
    """Run 1 builds in place; run 2 (blue/green) stops at its first model call (401, exit 12) with a checkpoint.
    Rows a killed run stored but did not checkpoint are re-sent by --resume: still one row per chunk. A row nobody
    can explain fails the count check: exit 4, Dify's table untouched, the build kept; --force starts over."""
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    put_chunks(chunk_store, ds, make_chunks(ds, 12))
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 0, _summary(events)
    store = PgvectorTarget(pgvector_db.settings())
    try:
        live = sorted(i.doc_id or "" for i in store.iter_identities(name))
        chunks = make_chunks(ds, 20)
        chunks = [{**c, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, c["id"]))} for c in chunks]  # Dify-like uuids
        put_chunks(chunk_store, ds, chunks)
        embedding_server.fail_next(401, count=1)
        assert run_cli("rebuild-index", "--dataset", ds)[0] == 12
        build = store.build_name(name)
        assert store.exists(build) and store.count(build) == 0
        # what a run killed between its insert and its checkpoint leaves: rows of the first batch
        first = chunks[:5]
        store.insert(build, [(c["text"], {"doc_id": c["id"], "document_id": c["document_id"], "dataset_id": ds},
                              [1.0] + [0.0] * (embedding_server.dimensions - 1)) for c in first])
        code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
        result = _summary(events)["datasets"][0]
        assert code == 0, result
        assert result["verification"]["count"] == 20 and store.count(name) == 20
        assert store.count(previous_name(name)) == 12
        assert sorted(i.doc_id or "" for i in store.iter_identities(previous_name(name))) == live

        # a stray row in the next build (new texts, so the model is asked and refuses): nothing switched, exit 4
        put_chunks(chunk_store, ds, make_chunks(ds, 20, offset=100))
        embedding_server.fail_next(401, count=1)
        assert run_cli("rebuild-index", "--dataset", ds)[0] == 12
        store.insert(build, [("stray", {"doc_id": str(uuid.uuid4()), "document_id": "x", "dataset_id": ds},
                              [1.0] + [0.0] * (embedding_server.dimensions - 1))])
        code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
        result = _summary(events)["datasets"][0]
        assert code == 4 and "count 21 != 20 valid chunks" in result["error"], result
        assert store.count(name) == 20 and store.count(build) == 21
        code, events = run_cli("rebuild-index", "--dataset", ds, "--force")
        assert code == 0, _summary(events)
        assert store.count(name) == 20 and not store.exists(build)
    finally:
        store.close()

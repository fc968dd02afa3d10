"""With Dify's Postgres configured: collection name from datasets.index_struct, Dify's embedding cache used,
a model mismatch refused before writing, and a hostile pickle in the cache refused without running."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymilvus import MilvusClient

from tests.helpers.embedding import embed_via as _embed_via
from tests.helpers.pickles import Exploit
from tests.rebuild.conftest import ChunkBucket, RunCli, summary


def _pg_env(monkeypatch: pytest.MonkeyPatch, dsn: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    monkeypatch.setenv("DRTOOL_POSTGRES_HOST", str(params.get("host", "127.0.0.1")))
    monkeypatch.setenv("DRTOOL_POSTGRES_PORT", str(params.get("port", 5432)))
    monkeypatch.setenv("DRTOOL_POSTGRES_USER", str(params.get("user", "postgres")))
    if params.get("password"):
        monkeypatch.setenv("DRTOOL_POSTGRES_PASSWORD", str(params["password"]))
    monkeypatch.setenv("DRTOOL_POSTGRES_DATABASE", str(params["dbname"]))
    monkeypatch.setenv("DRTOOL_POSTGRES_SSLMODE", "disable")


def test_dify_names_and_cache(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli,
                              embedding_server: Any, dify_db_factory: Any, monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    db = dify_db_factory(datasets=1, documents_per_dataset=3, segments_per_document=6,
                         embed=_embed_via(embedding_server))
    seeded = db.seed.datasets[0]
    with db.connect() as conn:
        owners = dict(conn.execute("SELECT index_node_id, document_id::text FROM document_segments "
                                   "UNION ALL SELECT index_node_id, document_id::text FROM child_chunks").fetchall())
        marker = tmp_path / "pwned"
        hostile_text = next(iter(seeded.index_nodes.values()))
        import hashlib
        hostile_hash = hashlib.sha256((hostile_text + "None").encode()).hexdigest()
        conn.execute("DELETE FROM embeddings WHERE hash = %s", (hostile_hash,))
        conn.execute("INSERT INTO embeddings (id, model_name, hash, embedding, provider_name, created_at) "
                     "VALUES (%s, %s, %s, %s, %s, now())",
                     (str(uuid.uuid4()), db.seed.embedding_model, hostile_hash, pickle.dumps(Exploit(marker)),
                      db.seed.embedding_provider))
        conn.commit()
        cached = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    chunks = [{"id": node, "text": text, "dataset_id": seeded.id, "document_id": owners[node]}
              for node, text in seeded.index_nodes.items()]
    chunk_bucket.put_chunks(seeded.id, chunks)
    _pg_env(monkeypatch, db.dsn)
    monkeypatch.setenv("DRTOOL_VECTOR_INDEX_PREFIX", "Not_used")  # index_struct wins over the naming rule

    before = embedding_server.requests
    code, events = run_cli("rebuild-index", "--dataset", seeded.id)
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["collection"] == seeded.collection_name
    assert result["collection_source"] == "datasets.index_struct"
    assert result["dify_cache_refused"] == 1 and not marker.exists()
    assert result["cache_hits_dify"] == cached - 1 > 0
    assert result["embedded"] == len(chunks) - result["cache_hits_dify"]
    assert embedding_server.requests > before
    client = MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"])
    assert client.has_collection(seeded.collection_name)
    client.close()

    # A model that is not the dataset's is refused before anything is written.
    monkeypatch.setenv("DRTOOL_EMBEDDING_MODEL", "text-embedding-3-large")
    code, events = run_cli("rebuild-index", "--dataset", seeded.id, "--force")
    assert code == 2
    error = next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
    assert "text-embedding-3-large" in error and db.seed.embedding_model in error


def test_economy_datasets_have_no_index_to_rebuild(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                    run_cli: RunCli, dify_db_factory: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    db = dify_db_factory(datasets=1, documents_per_dataset=1, segments_per_document=3)
    seeded = db.seed.datasets[0]
    with db.connect() as conn:
        conn.execute("UPDATE datasets SET indexing_technique = 'economy' WHERE id = %s", (seeded.id,))
        conn.commit()
    chunk_bucket.put_chunks(seeded.id, [{"id": node, "text": text, "dataset_id": seeded.id, "document_id": "d"}
                                        for node, text in seeded.index_nodes.items()])
    _pg_env(monkeypatch, db.dsn)

    code, events = run_cli("rebuild-index", "--dataset", seeded.id)
    failed = next(e for e in events if e.get("event") == "rebuild.dataset_failed")
    assert code == 2 and "economy" in failed["error"]

    code, events = run_cli("rebuild-index", "--all")
    skipped = [e["dataset"] for e in events if e.get("event") == "rebuild.dataset_skipped"]
    assert seeded.id in skipped
    assert all(d["dataset"] != seeded.id for d in summary(events)["datasets"])
    assert not MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"]).has_collection(seeded.collection_name)

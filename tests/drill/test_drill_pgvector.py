"""The drill against pgvector: scratch tables beside Dify's live embedding_* tables in the same Postgres (the
stack's PostgreSQL 16 + pgvector 0.6), rebuilt, gated and verified, then all dropped; the live tables are left
exactly as they were."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drtool.adapters.pgvector import PgvectorTarget
from tests.drill.conftest import embed_via, summary
from tests.export.helpers import Bucket, RunCli, apply_env, drtool_env
from tests.snapshot.conftest import new_bucket
from tests.stack.pgvector_server import PgvectorDatabase
from tests.verify.conftest import DIM, unit_vector


def _tables(database: PgvectorDatabase) -> dict[str, tuple[int, list[str]]]:
    """Every table in the database with its row count and sorted doc_ids."""
    out: dict[str, tuple[int, list[str]]] = {}
    with database.connect() as conn:
        names = [r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND "
                                            "relnamespace = 'public'::regnamespace ORDER BY 1")]
        for name in names:
            ids = sorted(r[0] for r in conn.execute(
                psycopg.sql.SQL("SELECT meta->>'doc_id' FROM {}").format(psycopg.sql.Identifier(name))))
            out[name] = (len(ids), ids)
    return out


def test_a_pgvector_drill_passes_and_leaves_the_live_tables_as_they_were(
        pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, pgvector_db: PgvectorDatabase,
        embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, tmp_path: Path) -> None:
    db = dify_db_factory(vector_type="pgvector", documents_per_dataset=2, segments_per_document=4,
                         embed=embed_via(embedding_server))
    site = minio_pair.a
    client = site.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    bucket = Bucket(client, source, site.endpoint, site.access_key, site.secret_key)
    for key, data in db.seed.files.items():
        client.put_object(Bucket=source, Key=key, Body=data)
    apply_env(monkeypatch, drtool_env(
        pg, db.dbname, bucket, DRTOOL_SNAPSHOT_BUCKET=dest, DRTOOL_SNAPSHOT_PG_BIN_DIR=str(pg.bin_dir),
        DRTOOL_VECTOR_STORE="pgvector", **pgvector_db.env(), DRTOOL_EMBEDDING_PROVIDER="openai",
        DRTOOL_EMBEDDING_BASE_URL=embedding_server.base_url, DRTOOL_EMBEDDING_API_KEY=embedding_server.api_key,
        DRTOOL_EMBEDDING_MODEL=embedding_server.model_name,
        DRTOOL_EMBEDDING_DIMENSIONS=str(embedding_server.dimensions), DRTOOL_REBUILD_SAMPLE="10"))
    code, events = run_cli("export-chunks", "--all")
    assert code == 0, events
    live = PgvectorTarget(pgvector_db.settings())  # Dify's live index, as Dify laid it out
    try:
        rng = random.Random(7)
        for dataset in db.seed.datasets:
            chunks = bucket.chunks(f"datasets/{dataset.id}/processed/chunks.jsonl")
            live.create(dataset.collection_name, DIM)
            live.insert(dataset.collection_name, [(c.text, c.vector_metadata(), unit_vector(rng)) for c in chunks])
            live.finish(dataset.collection_name)
    finally:
        live.close()
    code, events = run_cli("snapshot", "create")
    assert code == 0, events
    before = _tables(pgvector_db)
    assert len(before) == len(db.seed.datasets) and all(count for count, _ in before.values())
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        databases = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}

    try:
        code, events = run_cli("drill", "--rto-slo", "1h", "--report-dir", str(tmp_path))
        result = summary(events)
        assert code == 0, result.get("problems")
        assert [(p["name"], p["status"]) for p in result["phases"]] == [
            ("snapshot_check", "ok"), ("restore_database", "ok"), ("rebuild_index", "ok"), ("verify", "ok")]
        rebuild = result["phases"][2]["detail"]
        assert rebuild["datasets"] == len(db.seed.datasets)
        assert all(d["gate"]["passed"] for d in rebuild["per_dataset"])
        assert result["phases"][3]["detail"]["breaks"] == 0
        scratch = set(result["phases"][1]["detail"]["collections"].values())
        assert scratch and all(n.startswith("Drill_") for n in scratch)
        assert set(result["cleanup"]["collections_dropped"]) >= scratch
        assert _tables(pgvector_db) == before  # no scratch table left, the live ones untouched
    finally:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
            after = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for name in after - databases:
            if name.startswith("drtool_drill_"):
                pg.drop_database(name)

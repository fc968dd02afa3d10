"""Issue 13's "done when": one full disaster-recovery cycle of a Dify 1.x deployment on the real test stack.

A seeded Dify main database with apps that have annotation reply on, the plugin daemon's database and its storage
objects in Dify's bucket (PLUGIN_STORAGE_TYPE=aws_s3, same bucket), a versioned MinIO bucket, a snapshot bucket
beside it, the live index in Milvus Lite and the offline model behind an OpenAI-compatible endpoint. Then:

    snapshot create -> export-chunks -> lose everything -> restore -> rebuild-index --all --annotations
    -> verify --deep

"Everything" is both databases' contents, the current version of every object in Dify's bucket (files, chunk and
annotation files, plugin objects: the versions stay behind delete markers, as after a `rm -r` or a ransomware
pass on a versioned bucket) and every vector collection; the snapshot bucket stays. What must come back: every
row of both databases, every plugin storage object, and annotation collections that Dify's own reply path (the
query tests/rebuild/test_annotations.py emulates) answers from.

The order is the one the shipped schedules use: export-chunks, then snapshot create, so the snapshot pins the
chunk and annotation files it describes (a snapshot taken first would pin the previous export)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from pymilvus import MilvusClient

from tests.drill.conftest import embed_via
from tests.export.helpers import Bucket, apply_env, drtool_env
from tests.foundation.cli_runner import RunCli
from tests.helpers.events import summary
from tests.rebuild.test_annotations import THRESHOLD, _dify_annotation_reply, _embed
from tests.snapshot.conftest import new_bucket
from tests.snapshot.test_plugin_database import seed_plugin_database, table_rows
from tests.stack.dify_seed import seed_annotations


@pytest.fixture
def plugin_database(pg: Any) -> Iterator[str]:
    name = f"dify_plugin_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    yield name
    pg.drop_database(name)


def _current_objects(bucket: Bucket) -> dict[str, bytes]:
    return {key: bucket.get(key) for key in bucket.keys(prefix="")}


def _lose_contents(dsn: str) -> None:
    """Every table, sequence, function and type of the database gone; the empty database stays."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        assert conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = 'public'").fetchone() == (0,)


def test_snapshot_lose_everything_restore_rebuild_verify(
        pg: Any, dify_db_factory: Callable[..., Any], plugin_database: str, minio_pair: Any, milvus_uri: str,
        embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> None:
    started = time.monotonic()
    # --- a small Dify 1.x deployment ---------------------------------------------------------------------------
    db = dify_db_factory(datasets=1, documents_per_dataset=1, segments_per_document=2,
                         embed=embed_via(embedding_server))
    with db.connect() as conn:
        seeded = seed_annotations(conn, db.seed, score_threshold=THRESHOLD)
    enabled = {a.id: a for a in seeded.enabled}
    plugin_objects = seed_plugin_database(pg.dsn(plugin_database), str(db.seed.tenant_id))
    site = minio_pair.a
    client = site.s3_client()
    source, dest = new_bucket(client), new_bucket(client)  # both versioned
    bucket = Bucket(client, source, site.endpoint, site.access_key, site.secret_key)
    for key, body in {**db.seed.files, **plugin_objects}.items():
        client.put_object(Bucket=source, Key=key, Body=body)
    env = drtool_env(pg, db.dbname, bucket, DRTOOL_SNAPSHOT_BUCKET=dest, DRTOOL_SNAPSHOT_PG_BIN_DIR=str(pg.bin_dir),
                     DRTOOL_POSTGRES_PLUGIN_DATABASE=plugin_database, DRTOOL_SNAPSHOT_PLUGIN_STORAGE_BUCKET=source,
                     DRTOOL_VECTOR_STORE="milvus", DRTOOL_MILVUS_URI=milvus_uri,
                     **embedding_server.settings_env(), DRTOOL_REBUILD_SAMPLE="10")
    apply_env(monkeypatch, env)

    # --- export-chunks, the live index, then the snapshot ---------------------------------------------------------
    code, events = run_cli("export-chunks", "--all")
    exported = summary(events)
    assert code == 0 and exported["datasets"] == 1 and exported["annotation_apps"] == 2, exported
    code, events = run_cli("rebuild-index", "--all", "--annotations")
    assert code == 0, summary(events)["datasets"]
    live = MilvusClient(milvus_uri)
    try:
        collections = set(live.list_collections())
    finally:
        live.close()
    assert {a.collection_name for a in enabled.values()} | {db.seed.datasets[0].collection_name} <= collections
    main_before, plugin_before = table_rows(db.dsn), table_rows(pg.dsn(plugin_database))
    assert main_before["message_annotations"] and main_before["app_annotation_settings"]
    assert plugin_before["plugins"] and plugin_before["ai_model_installations"]
    code, events = run_cli("snapshot", "create")
    snapshot = summary(events)
    assert code == 0, snapshot
    sid = snapshot["snapshot"]
    objects_before = _current_objects(bucket)
    pinned = [k for k in objects_before if k.startswith(("annotations/", "datasets/", "upload_files/", "plugin/",
                                                         "plugin_packages/", "persistence/", "assets/"))]
    assert any(k.startswith("annotations/") for k in pinned) and all(k in objects_before for k in plugin_objects)

    # --- the disaster ------------------------------------------------------------------------------------------
    _lose_contents(db.dsn)
    _lose_contents(pg.dsn(plugin_database))
    for key in objects_before:
        client.delete_object(Bucket=source, Key=key)  # current versions only: delete markers on top
    assert bucket.keys() == []
    lost = MilvusClient(milvus_uri)
    try:
        for name in lost.list_collections():
            lost.drop_collection(name)
        assert lost.list_collections() == []
    finally:
        lost.close()

    # --- restore -> rebuild-index --all --annotations -> verify --deep --------------------------------------------
    code, events = run_cli("restore", sid, "--target-db", db.dbname)
    restored = summary(events)
    assert code == 0, restored
    assert restored["database"]["action"] == "restore" and restored["plugin_database"]["action"] == "restore"
    assert table_rows(db.dsn) == main_before
    assert table_rows(pg.dsn(plugin_database)) == plugin_before
    for key, body in plugin_objects.items():
        assert bucket.get(key) == body, key
    for key in pinned:
        assert bucket.get(key) == objects_before[key], key

    code, events = run_cli("rebuild-index", "--all", "--annotations")
    reports = {r["dataset_id"]: r for r in summary(events)["datasets"]}
    assert code == 0, reports
    assert set(reports) == {db.seed.datasets[0].id, *enabled}
    for app in enabled.values():
        gate = reports[app.id]["verification"]
        assert gate["passed"] and gate["dify_query_ok"] == gate["sample"] == len(app.annotations), gate

    code, events = run_cli("verify", "--deep")
    verified = summary(events)
    assert code == 0 and verified["breaks"] == 0, verified["counts"]
    assert verified["files"]["checked"] == len(db.seed.files) and verified["files"]["missing"] == 0
    assert {d["dataset_id"]: d["ok"] for d in verified["datasets"] if d["indexing_technique"] == "high_quality"} \
        == {db.seed.datasets[0].id: True}
    assert {a["app_id"]: (a["ok"], a["vectors"]) for a in verified["annotations"]} == {
        a.id: (True, len(a.annotations)) for a in enabled.values()}

    # --- Dify's own annotation reply path answers every stored question with its annotation again ---------------
    client_v = MilvusClient(milvus_uri)
    try:
        with psycopg.connect(db.dsn) as conn:
            for app in enabled.values():
                client_v.load_collection(app.collection_name)
                texts = app.embedded_texts()
                vectors = _embed(embedding_server, list(texts.values()))
                for (annotation_id, _text), vector in zip(texts.items(), vectors, strict=True):
                    assert _dify_annotation_reply(client_v, conn, app.id, vector, THRESHOLD) == \
                        app.annotations[annotation_id][1], (app.name, annotation_id)
    finally:
        client_v.close()
    assert table_rows(db.dsn) == main_before  # rebuild and verify wrote nothing to Postgres
    print(f"full cycle: {time.monotonic() - started:.1f}s")

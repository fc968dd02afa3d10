"""Annotation replies (issue #13) end to end on real servers: Dify's annotation tables in Postgres, export to a
SeaweedFS bucket, rebuild into Milvus Lite with the OpenAI-compatible endpoint (all-MiniLM-L6-v2), then Dify's
own annotation query (top 1, score above the app's threshold, reply loaded by the hit's annotation_id)."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import httpx
import pytest
from pymilvus import MilvusClient

from drtool.core.chunks import KIND_ANNOTATION, Chunk, Rejection, iter_lines, parse_lines
from tests.rebuild.conftest import ChunkBucket, RunCli, summary
from tests.rebuild.test_rebuild_dify import _embed_via, _pg_env
from tests.stack.dify_seed import AnnotationSeed, collection_name_for, seed_annotations

THRESHOLD = 0.8  # the seeded app_annotation_settings.score_threshold


def _embed(server: Any, texts: list[str]) -> list[list[float]]:
    response = httpx.post(server.base_url + "/embeddings", json={"model": server.model_name, "input": texts},
                          headers={"Authorization": f"Bearer {server.api_key}"}, timeout=120)
    response.raise_for_status()
    return [d["embedding"] for d in sorted(response.json()["data"], key=lambda d: d["index"])]


def _dify_annotation_reply(client: MilvusClient, conn: Any, app_id: str, vector: list[float],
                           threshold: float) -> str | None:
    """What Dify's AnnotationReplyFeature does on Milvus: search_by_vector(top_k=1) on the app's collection, keep
    the hit only above the threshold (`setting or 1`), load message_annotations by the hit's annotation_id."""
    hits = client.search(collection_name_for(app_id), data=[vector], anns_field="vector", limit=1,
                         output_fields=["page_content", "metadata"], search_params={"metric_type": "IP"})[0]
    if not hits or hits[0]["distance"] <= (threshold or 1):
        return None
    annotation_id = hits[0]["entity"]["metadata"]["annotation_id"]
    row = conn.execute("SELECT content FROM message_annotations WHERE id = %s AND app_id = %s",
                       (annotation_id, app_id)).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def annotated(rebuild_env: dict[str, str], dify_db_factory: Any, embedding_server: Any,
              monkeypatch: pytest.MonkeyPatch) -> tuple[Any, AnnotationSeed]:
    db = dify_db_factory(datasets=1, documents_per_dataset=1, segments_per_document=2,
                         embed=_embed_via(embedding_server))
    with db.connect() as conn:
        seeded = seed_annotations(conn, db.seed, score_threshold=THRESHOLD)
    _pg_env(monkeypatch, db.dsn)
    return db, seeded


def _parse_chunks(bucket: ChunkBucket, key: str, owner: str, kind: str = KIND_ANNOTATION) -> list[Chunk | Rejection]:
    body = io.BytesIO(bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read())
    return list(parse_lines(iter_lines(body, "none", key), key, dataset_id=owner, kind=kind))


def test_export_rebuild_and_dify_query(annotated: tuple[Any, AnnotationSeed], chunk_bucket: ChunkBucket,
                                       rebuild_env: dict[str, str], run_cli: RunCli, embedding_server: Any) -> None:
    db, seeded = annotated
    enabled = {a.id: a for a in seeded.enabled}
    disabled = [a for a in seeded.apps if a.id not in enabled]
    assert len(enabled) == 2 and len(disabled) == 1

    # 1. export: one file per enabled app, the text Dify embeds, Dify's ids, the binding's model on the object.
    code, events = run_cli("export-chunks", "--annotations")
    assert code == 0, events
    result = summary(events)
    assert result["datasets"] == 0 and result["annotation_apps"] == 2
    assert result["annotation_statuses"] == {"written": 2}
    assert result["annotations"] == sum(len(a.annotations) for a in enabled.values())
    assert not chunk_bucket.keys("datasets/")  # --annotations alone writes no dataset file
    assert {k.split("/")[1] for k in chunk_bucket.keys("annotations/")} == set(enabled)
    for app in enabled.values():
        key = f"annotations/{app.id}/processed/chunks.jsonl"
        parsed = _parse_chunks(chunk_bucket, key, app.id)
        assert all(isinstance(p, Chunk) for p in parsed), parsed
        chunks = [p for p in parsed if isinstance(p, Chunk)]
        assert {c.id: c.text for c in chunks} == app.embedded_texts()
        assert {c.id: c.answer for c in chunks} == {a: content for a, (_, content) in app.annotations.items()}
        assert all(c.vector_metadata() == {"annotation_id": c.id, "app_id": app.id, "doc_id": c.id} for c in chunks)
        # A dataset reader (kind chunk) refuses these lines instead of indexing them as dataset chunks.
        assert all(isinstance(p, Rejection) and "kind 'annotation'" in p.reason
                   for p in _parse_chunks(chunk_bucket, key, app.id, kind="chunk"))
        meta = chunk_bucket.client.head_object(Bucket=chunk_bucket.name, Key=key)["Metadata"]
        assert meta["drtool-embedding-model"] == db.seed.embedding_model
        assert meta["drtool-embedding-provider"] == db.seed.embedding_provider
        assert float(meta["drtool-score-threshold"]) == THRESHOLD
    # The old row without a question travels with its answer as the embedded text, as Dify embeds it.
    support = next(a for a in enabled.values() if a.name == "Support bot")
    assert any(q is None for q, _ in support.annotations.values())

    code, events = run_cli("export-chunks", "--annotations")
    assert code == 0 and summary(events)["annotation_statuses"] == {"unchanged": 2}

    # 2. rebuild: Dify's per-app collection name, the gate runs Dify's annotation query on every annotation.
    code, events = run_cli("rebuild-index", "--annotations", "--sample", "50")
    reports = {r["dataset_id"]: r for r in summary(events)["datasets"]}
    assert code == 0, reports
    assert set(reports) == set(enabled)
    for app in enabled.values():
        report = reports[app.id]
        assert report["status"] == "rebuilt" and report["collection"] == app.collection_name
        verification = report["verification"]
        assert verification["passed"] and verification["sample"] == len(app.annotations)
        assert verification["dify_query_ok"] == len(app.annotations)
        assert verification["count"] == len(app.annotations)
    # Sidecar vectors sit beside the annotation file: nothing appears under datasets/ for --all to pick up.
    assert not chunk_bucket.keys("datasets/")
    assert any("/processed/vectors/" in k for k in chunk_bucket.keys("annotations/"))

    # 3. the stored layout is Dify's: page_content = embedded text, metadata exactly {annotation_id, app_id, doc_id}.
    client = MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"])
    try:
        assert not client.has_collection(collection_name_for(disabled[0].id))
        for app in enabled.values():
            client.load_collection(app.collection_name)
            rows = client.query(app.collection_name, filter="id >= 0", output_fields=["page_content", "metadata"])
            assert sorted(r["metadata"]["doc_id"] for r in rows) == sorted(app.annotations)  # each exactly once
            for r in rows:
                assert r["metadata"] == {"annotation_id": r["metadata"]["doc_id"], "app_id": app.id,
                                         "doc_id": r["metadata"]["doc_id"]}
                assert r["page_content"] == app.embedded_texts()[r["metadata"]["doc_id"]]

        # 4. Dify's reply path: a user's paraphrase gets the annotated answer; an unrelated question gets none.
        paraphrase = "What does it mean when the X200 inverter shows a red status light?"
        unrelated = "Which month has the most rainfall in Lisbon?"
        v_para, v_unrel = _embed(embedding_server, [paraphrase, unrelated])
        with db.connect() as conn:
            for app in enabled.values():  # every stored question finds its own answer
                questions = list(app.embedded_texts().items())
                for (annotation_id, _text), vector in zip(questions, _embed(embedding_server,
                                                                           [t for _, t in questions]), strict=True):
                    assert _dify_annotation_reply(client, conn, app.id, vector, THRESHOLD) == \
                        app.annotations[annotation_id][1]
            assert _dify_annotation_reply(client, conn, support.id, v_para, THRESHOLD) == \
                "A ground fault: switch the inverter off and call an installer."
            assert _dify_annotation_reply(client, conn, support.id, v_unrel, THRESHOLD) is None
    finally:
        client.close()

    # 5. a second rebuild is blue/green from the sidecar: no model call, the live name switched.
    before = embedding_server.requests
    code, events = run_cli("rebuild-index", "--app", support.id)
    report = summary(events)["datasets"][0]
    assert code == 0 and report["embedded"] == 0 and report["mode"] == "blue-green", report
    assert embedding_server.requests == before

    # 6. verify: every enabled app's annotations present exactly once, with Dify's metadata; then break it.
    annotation_kinds = ("missing_annotation_collection", "missing_annotation_vector", "orphan_annotation_vector",
                        "duplicate_annotation_vector", "wrong_annotation_metadata", "annotation_file_missing",
                        "annotation_file_stale")
    code, events = run_cli("verify", "--skip-files", "--deep")
    result = summary(events)
    assert not {k: n for k, n in result["counts"].items() if k in annotation_kinds}, result["counts"]
    assert {a["app_id"]: (a["ok"], a["vectors"]) for a in result["annotations"]} == {
        a.id: (True, len(a.annotations)) for a in enabled.values()}

    victim = next(iter(support.annotations))
    client = MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"])
    try:
        client.load_collection(support.collection_name)
        client.delete(support.collection_name, filter=f'metadata["doc_id"] == "{victim}"')
    finally:
        client.close()
    with db.connect() as conn:  # the question changed in Dify after the export: the file is stale
        conn.execute("UPDATE message_annotations SET question = 'Who approves remote work requests?' "
                     "WHERE app_id = %s AND question LIKE 'Who approves%%'", (next(
                         a.id for a in enabled.values() if a.name == "HR bot"),))
        conn.commit()
    code, events = run_cli("verify", "--skip-files", "--deep")
    counts = summary(events)["counts"]
    assert code == 4
    assert counts.get("missing_annotation_vector") == 1 and counts.get("annotation_file_stale") == 1, counts
    missing = summary(events)["examples"]["missing_annotation_vector"][0]
    assert missing["annotation_id"] == victim and missing["app_id"] == support.id


def test_all_exports_annotations_and_rebuild_needs_only_the_bucket(
        annotated: tuple[Any, AnnotationSeed], chunk_bucket: ChunkBucket, rebuild_env: dict[str, str],
        run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    db, seeded = annotated
    enabled = {a.id for a in seeded.enabled}
    code, events = run_cli("export-chunks", "--all", "--compression", "zstd")
    result = summary(events)
    assert code == 0 and result["datasets"] == 1 and result["annotation_apps"] == 2, result
    assert {k.split("/")[1] for k in chunk_bucket.keys("annotations/")} == enabled
    assert all(k.endswith(".jsonl.zst") for k in chunk_bucket.keys("annotations/"))

    # --all rebuilds datasets only, and says that annotation files were left alone.
    code, events = run_cli("rebuild-index", "--all", "--dry-run")
    assert code == 0 and any(e["event"] == "rebuild.annotations_not_selected" for e in events)
    assert [d["dataset_id"] for d in summary(events)["datasets"]] == [db.seed.datasets[0].id]

    # Without Postgres the files are the only source: the apps come from the listing, the model from the object.
    for key in [k for k in os.environ if k.startswith("DRTOOL_POSTGRES_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DRTOOL_EMBEDDING_MODEL", "text-embedding-3-large")
    code, events = run_cli("rebuild-index", "--annotations")
    errors = [e["error"] for e in events if e.get("event") == "rebuild.dataset_failed"]
    assert code == 2 and len(errors) == 2 and all(db.seed.embedding_model in e for e in errors), errors
    monkeypatch.setenv("DRTOOL_EMBEDDING_MODEL", rebuild_env["DRTOOL_EMBEDDING_MODEL"])
    code, events = run_cli("rebuild-index", "--annotations")
    reports = summary(events)["datasets"]
    assert code == 0 and {r["dataset_id"] for r in reports} == enabled
    assert all(r["verification"]["passed"] and r["verification"]["score_threshold"] == THRESHOLD for r in reports)
    assert all(r["collection"] == collection_name_for(r["dataset_id"]) for r in reports)


def test_weaviate_annotation_collections(annotated: tuple[Any, AnnotationSeed], weaviate_env: Any,
                                         run_cli: RunCli, embedding_server: Any) -> None:
    """Dify's default store: the same layout through the Weaviate adapter, and Dify's annotation query there
    (near_vector on the named vector `default`, limit 1, score = 1 - distance above the threshold)."""
    from weaviate.classes.query import MetadataQuery

    _db, seeded = annotated
    support = next(a for a in seeded.enabled if a.name == "Support bot")
    assert run_cli("export-chunks", "--annotations")[0] == 0
    code, events = run_cli("rebuild-index", "--app", support.id)
    report = summary(events)["datasets"][0]
    assert code == 0 and report["verification"]["dify_query_ok"] == len(support.annotations), report
    collection = weaviate_env.collections.get(support.collection_name)  # the name Dify opens (alias or class)
    texts = support.embedded_texts()
    vectors = _embed(embedding_server, list(texts.values()))
    for (annotation_id, text), vector in zip(texts.items(), vectors, strict=True):
        hit = collection.query.near_vector(vector, target_vector="default", limit=1,
                                           return_metadata=MetadataQuery(distance=True)).objects[0]
        assert str(hit.properties["annotation_id"]) == annotation_id and hit.properties["text"] == text
        assert str(hit.properties["app_id"]) == support.id and str(hit.properties["doc_id"]) == annotation_id
        assert 1 - (hit.metadata.distance or 0) > THRESHOLD
    code, events = run_cli("verify", "--skip-files", "--annotations")
    verdicts = {a["app_id"]: a for a in summary(events)["annotations"]}
    assert verdicts[support.id]["ok"] and verdicts[support.id]["vectors"] == len(support.annotations)
    # The HR app was not rebuilt into this Weaviate: verify says so instead of passing.
    hr = next(a for a in seeded.enabled if a.name == "HR bot")
    assert verdicts[hr.id]["breaks"] == {"missing_annotation_collection": 1}


def test_identical_questions_tie_as_in_dify(annotated: tuple[Any, AnnotationSeed], chunk_bucket: ChunkBucket,
                                            run_cli: RunCli) -> None:
    """Two annotations with one question: Dify stores both and answers with whichever is the top hit. The gate
    accepts the tie (else every such app would fail its rebuild), and still counts both vectors."""
    db, seeded = annotated
    hr = next(a for a in seeded.enabled if a.name == "HR bot")
    question = next(q for q, _ in hr.annotations.values() if q)
    with db.connect() as conn:
        conn.execute("INSERT INTO message_annotations (id, app_id, content, account_id, question) "
                     "VALUES (gen_random_uuid(), %s, 'Ask HR.', %s, %s)", (hr.id, db.seed.account_id, question))
        conn.commit()
    assert run_cli("export-chunks", "--annotations")[0] == 0
    code, events = run_cli("rebuild-index", "--app", hr.id, "--sample", "50")
    report = summary(events)["datasets"][0]
    assert code == 0, report["verification"]
    assert report["verification"]["count"] == len(hr.annotations) + 1
    assert report["verification"]["dify_query_ok"] == len(hr.annotations) + 1


def _line(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(("fields", "reason"), [
    ({"kind": "annotation", "id": "a1", "text": "Q?", "app_id": "app-2"}, "does not match the file's app"),
    ({"kind": "annotation", "id": "a1", "text": "Q?"}, "missing required field 'app_id'"),
    ({"kind": "annotation", "id": "a1", "text": " ", "app_id": "app-1"}, "field 'text' is empty"),
    ({"kind": "annotation", "id": "a1", "text": "Q?", "app_id": "app-1", "answer": 3}, "field 'answer' must be"),
    ({"kind": "summary", "id": "a1", "text": "Q?", "app_id": "app-1"}, "unknown kind 'summary'"),
    ({"id": "a1", "text": "Q?", "dataset_id": "app-1", "document_id": "d"}, "a line of kind 'chunk'"),
])
def test_annotation_lines_are_validated(fields: dict[str, Any], reason: str) -> None:
    (result,) = parse_lines([_line(**fields)], "mem", dataset_id="app-1", kind=KIND_ANNOTATION)
    assert isinstance(result, Rejection) and reason in result.reason, result


def test_annotation_line_gives_difys_metadata() -> None:
    (chunk,) = parse_lines([_line(kind="annotation", id="a1", text="Q?", app_id="app-1", answer="A.")], "mem",
                           dataset_id="app-1", kind=KIND_ANNOTATION)
    assert isinstance(chunk, Chunk) and chunk.answer == "A." and chunk.text == "Q?"
    assert chunk.vector_metadata() == {"annotation_id": "a1", "app_id": "app-1", "doc_id": "a1"}


def test_interrupted_rebuild_resumes_and_the_gate_protects_the_live_collection(
        annotated: tuple[Any, AnnotationSeed], chunk_bucket: ChunkBucket, rebuild_env: dict[str, str],
        run_cli: RunCli, embedding_server: Any) -> None:
    """The dataset pipeline's guarantees hold for annotation collections: a stopped build keeps its ledger,
    --resume finishes it, a build that fails the gate switches nothing, --force starts over."""
    db, seeded = annotated
    support = next(a for a in seeded.enabled if a.name == "Support bot")
    name = support.collection_name
    uri = rebuild_env["DRTOOL_MILVUS_URI"]
    assert run_cli("export-chunks", "--annotations")[0] == 0
    assert run_cli("rebuild-index", "--app", support.id)[0] == 0

    def live_texts(collection: str) -> list[str]:
        client = MilvusClient(uri)
        try:
            client.load_collection(collection)
            return sorted(r["page_content"] for r in client.query(collection, filter="id >= 0",
                                                                  output_fields=["page_content"]))
        finally:
            client.close()

    before = live_texts(name)
    changed = "Is the X200 inverter's red light a ground fault warning?"
    with db.connect() as conn:  # an edited question: the only text the next build must embed
        conn.execute("UPDATE message_annotations SET question = %s WHERE app_id = %s AND question LIKE "
                     "'What does the red%%'", (changed, support.id))
        conn.commit()
    assert run_cli("export-chunks", "--annotations")[0] == 0
    embedding_server.fail_next(401, count=1)
    code, events = run_cli("rebuild-index", "--app", support.id, "--batch-size", "1")
    assert code == 12, summary(events)
    build = name + "_drtool_build"
    assert chunk_bucket.keys(f"drtool/rebuild/milvus/{name}.json")  # the checkpoint is kept
    client = MilvusClient(uri)
    client.insert(build, [{"page_content": "stray", "metadata": {"doc_id": "stray"}, "vector": [0.05] * 384}])
    client.close()
    code, events = run_cli("rebuild-index", "--app", support.id, "--resume")
    result = summary(events)["datasets"][0]
    assert code == 4 and "nothing was switched" in result["error"], result
    assert live_texts(name) == before  # the live collection Dify answers from is untouched
    code, events = run_cli("rebuild-index", "--app", support.id, "--force")
    assert code == 0, summary(events)
    assert changed in live_texts(name) and len(live_texts(name)) == len(support.annotations)


def test_pgvector_annotation_tables(annotated: tuple[Any, AnnotationSeed], pgvector_db: Any, run_cli: RunCli,
                                    embedding_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """pgvector: Dify's `embedding_<collection>` table per app, and Dify's unfiltered top-1 statement finds each
    question's own annotation above the threshold (score = 1 - cosine distance)."""
    from drtool.adapters.pgvector import dify_table_name

    _db, seeded = annotated
    for key, value in {"DRTOOL_VECTOR_STORE": "pgvector", **pgvector_db.env()}.items():
        monkeypatch.setenv(key, value)
    assert run_cli("export-chunks", "--annotations")[0] == 0
    code, events = run_cli("rebuild-index", "--annotations")
    reports = summary(events)["datasets"]
    assert code == 0 and all(r["verification"]["passed"] for r in reports), reports
    for app in seeded.enabled:
        table = dify_table_name(app.collection_name)
        texts = app.embedded_texts()
        with pgvector_db.connect() as conn:
            for (annotation_id, text), vector in zip(texts.items(), _embed(embedding_server, list(texts.values())),
                                                     strict=True):
                meta, stored, distance = conn.execute(
                    f"SELECT meta, text, embedding <=> %s AS distance FROM {table} ORDER BY distance LIMIT 1",
                    (json.dumps(vector),)).fetchone()
                assert meta == {"annotation_id": annotation_id, "app_id": app.id, "doc_id": annotation_id}
                assert stored == text and 1 - distance > THRESHOLD
    code, events = run_cli("verify", "--skip-files", "--annotations")
    assert all(a["ok"] for a in summary(events)["annotations"]), summary(events)["annotations"]


def test_a_damaged_annotation_file_leaves_nothing_behind(annotated: tuple[Any, AnnotationSeed],
                                                         chunk_bucket: ChunkBucket, rebuild_env: dict[str, str],
                                                         run_cli: RunCli) -> None:
    """As for a dataset's chunk file: a damaged annotation file is exit 2 naming the file, and leaves neither a
    collection under Dify's name nor a checkpoint, so the run after the fix needs no --resume or --force."""
    _, seeded = annotated
    app = next(a for a in seeded.enabled if a.name == "Support bot")
    assert run_cli("export-chunks", "--annotations", "--compression", "gzip")[0] == 0
    key = f"annotations/{app.id}/processed/chunks.jsonl.gz"
    good = chunk_bucket.client.get_object(Bucket=chunk_bucket.name, Key=key)["Body"].read()
    chunk_bucket.client.put_object(Bucket=chunk_bucket.name, Key=key, Body=good[: len(good) // 2])  # truncated
    code, events = run_cli("rebuild-index", "--app", app.id)
    failed = [e["error"] for e in events if e.get("event") == "rebuild.dataset_failed"]
    assert code == 2 and failed and "annotation file" in failed[0], summary(events)
    client = MilvusClient(rebuild_env["DRTOOL_MILVUS_URI"])
    try:
        assert not client.has_collection(app.collection_name)
    finally:
        client.close()
    assert not chunk_bucket.keys("drtool/rebuild/")
    chunk_bucket.client.put_object(Bucket=chunk_bucket.name, Key=key, Body=good)
    code, events = run_cli("rebuild-index", "--app", app.id)
    assert code == 0, summary(events)

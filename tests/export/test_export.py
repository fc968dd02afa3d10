"""drtool export-chunks against a real Postgres (seeded Dify tables) and a real MinIO bucket."""

from __future__ import annotations

import gzip
import json
from typing import Any

import psycopg

from tests.export.helpers import Bucket, RunCli, events_of


def key_of(dataset_id: str, suffix: str = "") -> str:
    return f"datasets/{dataset_id}/processed/chunks.jsonl{suffix}"


def test_export_writes_exactly_what_dify_indexes(env: dict[str, str], dify_db: Any, bucket: Bucket,
                                                 run_cli: RunCli) -> None:
    code, events = run_cli("export-chunks", "--all")
    assert code == 0, events
    seed = dify_db.seed
    assert {e["dataset_id"]: e["status"] for e in events_of(events, "export.dataset_exported")} == {
        d.id: "written" for d in seed.datasets}
    for dataset in seed.datasets:
        chunks = bucket.chunks(key_of(dataset.id))
        assert {c.id: c.text for c in chunks} == dict(dataset.index_nodes)
        assert not set(dataset.skipped_node_ids) & {c.id for c in chunks}  # disabled, archived, parents
        assert {c.dataset_id for c in chunks} == {dataset.id}
        assert {c.document_id for c in chunks} <= set(dataset.document_ids) - set(seed.archived_document_ids)
        if dataset.doc_form == "hierarchical_model":
            assert all(c.parent_id for c in chunks)  # child chunks carry their parent segment
        qa = [c for c in chunks if c.document_id in seed.qa_document_ids]
        assert all(c.answer for c in qa) and all(c.answer is None for c in chunks if c not in qa)
        assert all(c.metadata.get("source") for c in chunks)
    assert any(d.document_ids[-1] in seed.qa_document_ids for d in seed.datasets)
    summary = events_of(events, "result")[0]
    assert summary["chunks"] == seed.expected_vectors and summary["statuses"] == {"written": 2}


def test_output_is_deterministic_and_stored_hash_matches(env: dict[str, str], dify_db: Any, bucket: Bucket,
                                                         run_cli: RunCli) -> None:
    dataset_id = dify_db.dataset_ids[0]
    assert run_cli("export-chunks", "--dataset", dataset_id)[0] == 0
    first = bucket.get(key_of(dataset_id))
    head = bucket.client.head_object(Bucket=bucket.name, Key=key_of(dataset_id))
    code, events = run_cli("export-chunks", "--dataset", dataset_id, "--force")
    assert code == 0 and events_of(events, "export.dataset_exported")[0]["status"] == "written"
    assert bucket.get(key_of(dataset_id)) == first  # same rows, same bytes
    assert head["Metadata"]["drtool-content-sha256"] == events_of(events, "export.dataset_exported")[0]["sha256"]
    assert head["Metadata"]["drtool-chunks"] == str(len(dify_db.seed.datasets[0].index_nodes))


def test_second_run_skips_unchanged_and_a_changed_segment_reexports_only_its_dataset(
        env: dict[str, str], dify_db: Any, bucket: Bucket, run_cli: RunCli) -> None:
    first, second = dify_db.seed.datasets
    assert run_cli("export-chunks", "--all")[0] == 0
    untouched = bucket.client.head_object(Bucket=bucket.name, Key=key_of(second.id))

    code, events = run_cli("export-chunks", "--all")
    assert code == 0
    assert [e["status"] for e in events_of(events, "export.dataset_exported")] == ["unchanged", "unchanged"]

    node_id = next(iter(first.index_nodes))
    with psycopg.connect(dify_db.dsn) as conn:
        conn.execute("UPDATE document_segments SET content = 'Edited: ' || content WHERE index_node_id = %s",
                     (node_id,))
    code, events = run_cli("export-chunks", "--all")
    assert code == 0
    assert {e["dataset_id"]: e["status"] for e in events_of(events, "export.dataset_exported")} == {
        first.id: "written", second.id: "unchanged"}
    texts = {c.id: c.text for c in bucket.chunks(key_of(first.id))}
    assert texts[node_id] == "Edited: " + first.index_nodes[node_id]
    after = bucket.client.head_object(Bucket=bucket.name, Key=key_of(second.id))
    assert after["ETag"] == untouched["ETag"] and after["LastModified"] == untouched["LastModified"]


def test_disabling_a_segment_drops_its_chunk(env: dict[str, str], dify_db: Any, bucket: Bucket,
                                             run_cli: RunCli) -> None:
    dataset = dify_db.seed.datasets[0]
    assert run_cli("export-chunks", "--dataset", dataset.id)[0] == 0
    node_id = list(dataset.index_nodes)[2]
    with psycopg.connect(dify_db.dsn) as conn:
        conn.execute("UPDATE document_segments SET enabled = false WHERE index_node_id = %s", (node_id,))
    code, events = run_cli("export-chunks", "--dataset", dataset.id)
    assert code == 0 and events_of(events, "export.dataset_exported")[0]["status"] == "written"
    ids = {c.id for c in bucket.chunks(key_of(dataset.id))}
    assert ids == set(dataset.index_nodes) - {node_id}


def test_compressed_output_replaces_the_other_variants(env: dict[str, str], dify_db: Any, bucket: Bucket,
                                                       run_cli: RunCli) -> None:
    dataset = dify_db.seed.datasets[1]
    assert run_cli("export-chunks", "--dataset", dataset.id)[0] == 0
    code, events = run_cli("export-chunks", "--dataset", dataset.id, "--compression", "zstd")
    assert code == 0
    assert events_of(events, "export.dataset_exported")[0]["removed"] == [key_of(dataset.id)]
    assert bucket.keys(f"datasets/{dataset.id}/") == [key_of(dataset.id, ".zst")]
    assert {c.id: c.text for c in bucket.chunks(key_of(dataset.id, ".zst"))} == dict(dataset.index_nodes)

    assert run_cli("export-chunks", "--dataset", dataset.id, "--compression", "gzip")[0] == 0
    assert bucket.keys(f"datasets/{dataset.id}/") == [key_of(dataset.id, ".gz")]
    lines = gzip.decompress(bucket.get(key_of(dataset.id, ".gz"))).splitlines()
    assert {json.loads(line)["id"] for line in lines} == set(dataset.index_nodes)


def test_dry_run_writes_nothing(env: dict[str, str], dify_db: Any, bucket: Bucket, run_cli: RunCli) -> None:
    code, events = run_cli("export-chunks", "--all", "--dry-run")
    assert code == 0
    assert [e["status"] for e in events_of(events, "export.dataset_exported")] == ["would_write", "would_write"]
    assert bucket.keys() == []


def test_wrong_postgres_password_exits_12(env: dict[str, str], bucket: Bucket, run_cli: RunCli,
                                          monkeypatch: Any) -> None:
    monkeypatch.setenv("DRTOOL_POSTGRES_PASSWORD", "not-the-password")
    code, events = run_cli("export-chunks", "--all")
    assert code == 12
    error = events_of(events, "result")[0]
    assert "authentication failed" in error["message"] and "postgres.password" in error["hint"]
    assert "not-the-password" not in json.dumps(events)
    assert bucket.keys() == []


def test_missing_bucket_exits_10(env: dict[str, str], run_cli: RunCli, monkeypatch: Any) -> None:
    monkeypatch.setenv("DRTOOL_S3_BUCKET", "no-such-bucket-drtool")
    code, events = run_cli("export-chunks", "--all")
    assert code == 10
    assert "no-such-bucket-drtool" in events_of(events, "result")[0]["message"]


def test_unknown_dataset_exits_10_and_missing_selection_exits_2(env: dict[str, str], bucket: Bucket,
                                                                run_cli: RunCli) -> None:
    code, events = run_cli("export-chunks", "--dataset", "00000000-0000-0000-0000-000000000000")
    assert code == 10 and "not in Dify's datasets table" in events_of(events, "result")[0]["message"]
    code, events = run_cli("export-chunks")
    assert code == 2 and "--all" in events_of(events, "result")[0]["hint"]
    assert bucket.keys() == []

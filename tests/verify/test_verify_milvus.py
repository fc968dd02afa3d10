"""drtool verify against real Postgres, MinIO and Milvus Lite: a clean state, then one break of each kind; the
clean state and the breaks made by deleting or rewriting a vector also run on a real Milvus server."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.export.helpers import RunCli
from tests.verify.conftest import BOTH_MILVUS, VerifyWorld, summary


def _milvus_delete(world: VerifyWorld, collection: str, doc_id: str) -> dict[str, Any]:
    """Remove one vector by its doc_id and return the row it had (as Dify's delete_by_ids does)."""
    client = world.target.client
    world.target.load(collection)
    rows = client.query(collection, filter=f'metadata["doc_id"] == "{doc_id}"',
                        output_fields=["id", "page_content", "metadata"])
    assert len(rows) == 1
    client.delete(collection, ids=[rows[0]["id"]])
    return rows[0]


@BOTH_MILVUS
def test_clean_state_exits_0(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    code, events = run_cli("verify", "--deep")
    assert code == 0, events
    result = summary(events)
    assert result["ok"] and result["breaks"] == 0 and result["counts"] == {}
    assert result["files"]["checked"] == len(milvus_world.seed.files) and result["files"]["missing"] == 0
    rows = {d["dataset_id"]: d for d in result["datasets"]}
    for dataset in milvus_world.seed.datasets:
        row = rows[dataset.id]
        assert row["ok"] and row["backend"] == "milvus" and row["collection"] == dataset.collection_name
        assert row["indexed_chunks"] == row["vectors"] == len(dataset.index_nodes)
        assert row["chunk_file_lines"] == len(dataset.index_nodes)


def test_deleted_object_exits_4_naming_the_key(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    key = next(k for k in milvus_world.seed.files if k.startswith("tools/"))
    milvus_world.bucket.client.delete_object(Bucket=milvus_world.bucket.name, Key=key)
    code, events = run_cli("verify")
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"missing_object": 1}
    assert result["examples"]["missing_object"][0]["key"] == key
    assert result["examples"]["missing_object"][0]["table"] == "tool_files"


@BOTH_MILVUS
def test_missing_vector_exits_4_naming_the_chunk(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    dataset = milvus_world.seed.datasets[1]  # parent-child: the vectors are child chunks
    doc_id = list(dataset.index_nodes)[3]
    _milvus_delete(milvus_world, dataset.collection_name, doc_id)
    code, events = run_cli("verify")
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"missing_vector": 1}
    example = result["examples"]["missing_vector"][0]
    assert example["doc_id"] == doc_id and example["dataset_id"] == dataset.id
    rows = {d["dataset_id"]: d for d in result["datasets"]}
    assert rows[dataset.id]["breaks"] == {"missing_vector": 1} and rows[milvus_world.seed.datasets[0].id]["ok"]


def test_orphan_vector_exits_4(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    dataset = milvus_world.seed.datasets[0]
    document_id = dataset.document_ids[0]
    milvus_world.insert(dataset.collection_name, "A segment Dify deleted long ago.",
                        {"doc_id": "ffffffff-0000-4000-8000-000000000001", "doc_hash": "x",
                         "document_id": document_id, "dataset_id": dataset.id})
    code, events = run_cli("verify")
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"orphan_vector": 1}
    assert result["examples"]["orphan_vector"][0]["doc_id"] == "ffffffff-0000-4000-8000-000000000001"


def test_vector_of_a_disabled_segment_is_an_orphan(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    dataset = milvus_world.seed.datasets[0]
    doc_id = list(dataset.index_nodes)[5]
    with psycopg.connect(milvus_world.db.dsn) as conn:
        conn.execute("UPDATE document_segments SET enabled = false WHERE index_node_id = %s", (doc_id,))
    code, events = run_cli("verify", "--deep")
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"orphan_vector": 1, "chunk_file_stale": 1}
    assert result["examples"]["orphan_vector"][0]["doc_id"] == doc_id
    stale = result["examples"]["chunk_file_stale"][0]
    assert stale["chunk_id"] == doc_id and stale["problem"] == "chunk is not an indexed segment in Postgres"


@BOTH_MILVUS
def test_wrong_document_id_exits_4(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    dataset = milvus_world.seed.datasets[0]
    doc_id = next(iter(dataset.index_nodes))
    row = _milvus_delete(milvus_world, dataset.collection_name, doc_id)
    wrong = dataset.document_ids[-1]
    assert row["metadata"]["document_id"] != wrong
    milvus_world.insert(dataset.collection_name, row["page_content"], {**row["metadata"], "document_id": wrong})
    code, events = run_cli("verify")
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"wrong_document_id": 1}
    example = result["examples"]["wrong_document_id"][0]
    assert example["doc_id"] == doc_id and example["found"] == wrong
    assert example["expected"] == row["metadata"]["document_id"]


def test_chunk_file_out_of_date_exits_4_with_deep_only(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    dataset = milvus_world.seed.datasets[0]
    doc_id = list(dataset.index_nodes)[1]
    with psycopg.connect(milvus_world.db.dsn) as conn:
        conn.execute("UPDATE document_segments SET content = content || ' (revised)' WHERE index_node_id = %s",
                     (doc_id,))
    assert run_cli("verify")[0] == 0  # the index still has a vector for that segment
    code, events = run_cli("verify", "--deep")
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"chunk_file_stale": 1}
    example = result["examples"]["chunk_file_stale"][0]
    assert example["chunk_id"] == doc_id and example["problem"] == "text differs from Postgres"
    assert example["url"].endswith(f"datasets/{dataset.id}/processed/chunks.jsonl")

    assert run_cli("export-chunks", "--all")[0] == 0  # the fix the hint names
    assert run_cli("verify", "--deep")[0] == 0


def test_missing_chunk_file_and_missing_collection_exit_4(milvus_world: VerifyWorld, run_cli: RunCli) -> None:
    dataset = milvus_world.seed.datasets[1]
    milvus_world.bucket.client.delete_object(Bucket=milvus_world.bucket.name,
                                             Key=f"datasets/{dataset.id}/processed/chunks.jsonl")
    milvus_world.target.drop(dataset.collection_name)
    code, events = run_cli("verify", "--deep", "--dataset", dataset.id)
    assert code == 4
    result = summary(events)
    assert result["counts"] == {"missing_collection": 1, "chunk_file_missing": 1}
    assert result["examples"]["missing_collection"][0]["collection"] == dataset.collection_name
    assert [d["dataset_id"] for d in result["datasets"]] == [dataset.id]


def test_human_output_names_each_break(milvus_world: VerifyWorld, capsys: Any) -> None:
    from drtool.cli.main import run

    dataset = milvus_world.seed.datasets[0]
    doc_id = list(dataset.index_nodes)[4]
    _milvus_delete(milvus_world, dataset.collection_name, doc_id)
    capsys.readouterr()
    assert run(["verify"]) == 4
    out = capsys.readouterr().out
    assert f"{dataset.id}" in out and "missing 1" in out
    assert "missing_vector (1): an indexed segment or child chunk has no vector" in out
    assert f"doc_id={doc_id}" in out


def test_wrong_password_exits_12_and_missing_bucket_exits_10(milvus_world: VerifyWorld, run_cli: RunCli,
                                                             monkeypatch: Any) -> None:
    monkeypatch.setenv("DRTOOL_POSTGRES_PASSWORD", "wrong-password")
    code, events = run_cli("verify")
    assert code == 12 and "wrong-password" not in str(events)
    monkeypatch.setenv("DRTOOL_POSTGRES_PASSWORD", milvus_world.env["DRTOOL_POSTGRES_PASSWORD"])
    monkeypatch.setenv("DRTOOL_S3_BUCKET", "no-such-bucket-drtool")
    assert run_cli("verify")[0] == 10

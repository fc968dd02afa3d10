"""The loop this issue closes: export-chunks from Dify's Postgres, rebuild-index from those files into a lost
Milvus index, and verify --deep finds every segment's vector, with the right owners, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.export.helpers import RunCli, apply_env, drtool_env, new_bucket_on
from tests.verify.conftest import summary


def test_export_then_rebuild_then_verify_is_clean(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any,
                                                  milvus_uri: str, embedding_server: Any, monkeypatch: Any,
                                                  run_cli: RunCli) -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        response = httpx.post(embedding_server.base_url + "/embeddings",
                              json={"model": embedding_server.model_name, "input": texts},
                              headers={"Authorization": f"Bearer {embedding_server.api_key}"}, timeout=120)
        response.raise_for_status()
        return [d["embedding"] for d in sorted(response.json()["data"], key=lambda d: d["index"])]

    db = dify_db_factory(embed=embed)
    bucket = new_bucket_on(minio_pair.a)
    for key, data in db.seed.files.items():
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=data)
    apply_env(monkeypatch, drtool_env(
        pg, db.dbname, bucket, DRTOOL_VECTOR_STORE="milvus", DRTOOL_MILVUS_URI=milvus_uri,
        DRTOOL_EMBEDDING_PROVIDER="openai", DRTOOL_EMBEDDING_BASE_URL=embedding_server.base_url,
        DRTOOL_EMBEDDING_API_KEY=embedding_server.api_key, DRTOOL_EMBEDDING_MODEL=embedding_server.model_name,
        DRTOOL_EMBEDDING_DIMENSIONS=str(embedding_server.dimensions), DRTOOL_REBUILD_SAMPLE="10"))

    code, events = run_cli("verify")
    assert code == 4 and set(summary(events)["counts"]) == {"missing_collection"}  # the index is lost

    assert run_cli("export-chunks", "--all")[0] == 0
    code, events = run_cli("rebuild-index", "--all")
    assert code == 0, [e for e in events if e.get("event") == "result"]

    code, events = run_cli("verify", "--deep")
    assert code == 0, summary(events)
    rows = {d["dataset_id"]: d for d in summary(events)["datasets"]}
    for dataset in db.seed.datasets:
        assert rows[dataset.id]["vectors"] == len(dataset.index_nodes)

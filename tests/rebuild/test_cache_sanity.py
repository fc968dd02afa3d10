"""Vectors read from a cache are checked before they are indexed: Dify's `embeddings` rows and drtool's own
sidecar segments holding NaN, inf, a wrong dimension, a zero or a huge norm are ignored, re-embedded and counted
(`cache_vectors_ignored`). Real Postgres (Dify's schema), SeaweedFS, the embedding server and Milvus Lite."""

from __future__ import annotations

import hashlib
import math
import pickle
import time
from typing import Any

import httpx
import numpy as np
import pytest
from pymilvus import MilvusClient

from drtool.core.chunks import content_hash
from drtool.core.vectors import cached_vector_problem
from drtool.ops.rebuild.sidecar import encode_segment
from tests.rebuild.conftest import ChunkBucket, RunCli, summary
from tests.rebuild.test_rebuild_dify import _embed_via, _pg_env


def test_the_check_refuses_each_kind_of_insane_vector() -> None:
    unit = [0.6, 0.8, 0.0]
    assert cached_vector_problem(unit, 3) is None
    assert cached_vector_problem(np.float32(unit).tolist(), 3) is None  # float32 rounding is fine
    for bad, why in (([math.nan, 0.8, 0.0], "NaN"), ([math.inf, 0.0, 0.0], "NaN or infinite"),
                     ([0.6, 0.8], "2 dimensions"), ([0.0, 0.0, 0.0], "norm 0"), ([6e5, 8e5, 0.0], "norm 1e+06"),
                     ([1e300, 1e300, 1e300], "norm"), ([0.06, 0.08, 0.0], "norm 0.1")):
        problem = cached_vector_problem(bad, 3)
        assert problem is not None and why in problem, (bad, problem)


def _stored_vectors(uri: str, collection: str, doc_ids: list[str]) -> dict[str, list[float]]:
    client = MilvusClient(uri)
    try:
        out = {}
        for doc_id in doc_ids:
            rows = client.query(collection, filter=f'metadata["doc_id"] == "{doc_id}"',
                                output_fields=["vector", "metadata"])
            assert len(rows) == 1, (doc_id, rows)
            out[doc_id] = [float(x) for x in rows[0]["vector"]]
        return out
    finally:
        client.close()


def test_insane_cached_vectors_are_re_embedded_and_counted(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                            run_cli: RunCli, embedding_server: Any,
                                                            dify_db_factory: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    embed = _embed_via(embedding_server)
    db = dify_db_factory(datasets=1, documents_per_dataset=3, segments_per_document=6, embed=embed)
    seeded = db.seed.datasets[0]
    dim = embedding_server.dimensions
    with db.connect() as conn:
        owners = dict(conn.execute("SELECT index_node_id, document_id::text FROM document_segments "
                                   "UNION ALL SELECT index_node_id, document_id::text FROM child_chunks").fetchall())
        cached = {h for (h,) in conn.execute("SELECT hash FROM embeddings").fetchall()}
    by_hash = {hashlib.sha256((t + "None").encode()).hexdigest(): n
               for n, t in seeded.index_nodes.items()}
    in_cache = [by_hash[h] for h in sorted(cached) if h in by_hash]
    assert len(in_cache) >= 5
    fresh = dict(zip(seeded.index_nodes, embed(list(seeded.index_nodes.values())), strict=True))
    poison: dict[str, list[float]] = {
        in_cache[0]: [math.nan] * dim,
        in_cache[1]: [math.inf] + [0.0] * (dim - 1),
        in_cache[2]: fresh[in_cache[2]][:-1],  # one dimension short
        in_cache[3]: [x * 1e6 for x in fresh[in_cache[3]]],  # would top every inner-product search
        in_cache[4]: [0.0] * dim,
    }
    with db.connect() as conn:
        for node, vector in poison.items():
            conn.execute("UPDATE embeddings SET embedding = %s WHERE hash = %s",
                         (pickle.dumps(vector, protocol=pickle.HIGHEST_PROTOCOL),
                          hashlib.sha256((seeded.index_nodes[node] + "None").encode()).hexdigest()))
        conn.commit()
    chunks = [{"id": node, "text": text, "dataset_id": seeded.id, "document_id": owners[node]}
              for node, text in seeded.index_nodes.items()]
    chunk_bucket.put_chunks(seeded.id, chunks)
    _pg_env(monkeypatch, db.dsn)

    code, events = run_cli("rebuild-index", "--dataset", seeded.id)
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["cache_vectors_ignored"] == len(poison)
    assert result["cache_hits_dify"] == len(in_cache) - len(poison)
    assert result["embedded"] == len(chunks) - result["cache_hits_dify"]
    uri = rebuild_env["DRTOOL_MILVUS_URI"]
    stored = _stored_vectors(uri, seeded.collection_name, list(poison))
    for node, vector in stored.items():
        assert all(math.isfinite(x) for x in vector) and len(vector) == dim
        assert np.allclose(vector, fresh[node], atol=1e-5), node

    # drtool's own sidecar: plant a newer segment whose vectors for two texts are NaN and huge.
    keys = chunk_bucket.keys(f"datasets/{seeded.id}/processed/vectors/")
    assert keys, "the first run wrote the sidecar"
    folder = keys[0].rsplit("/", 1)[0] + "/"
    not_in_dify = [n for n in seeded.index_nodes if n not in in_cache][:2]
    planted = [(bytes.fromhex(content_hash(seeded.index_nodes[not_in_dify[0]])), [math.nan] * dim),
               (bytes.fromhex(content_hash(seeded.index_nodes[not_in_dify[1]])), [1e3] * dim)]
    time.sleep(1.1)  # segment names start with their UTC second: the planted one sorts after run 1's ...
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-000000000000.vec"  # ... and before run 2's
    chunk_bucket.client.put_object(Bucket=chunk_bucket.name, Key=folder + name, Body=encode_segment(dim, planted))
    requests = embedding_server.requests
    code, events = run_cli("rebuild-index", "--dataset", seeded.id, "--force")
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["cache_vectors_ignored"] == len(poison) + len(planted)  # Dify's rows again, then the sidecar's
    assert result["embedded"] == len(planted) and embedding_server.requests > requests
    stored = _stored_vectors(uri, seeded.collection_name, [*poison, *not_in_dify])
    for node, vector in stored.items():
        assert np.allclose(vector, fresh[node], atol=1e-5), node

    # The fresh vectors were stored in a newer segment, which wins from now on: nothing left to re-embed.
    code, events = run_cli("rebuild-index", "--dataset", seeded.id, "--force")
    result = summary(events)["datasets"][0]
    assert code == 0 and result["embedded"] == 0, result
    assert result["cache_vectors_ignored"] == len(poison)  # Dify's table is not drtool's to repair


def test_fresh_vectors_are_what_the_endpoint_returns(embedding_server: Any) -> None:
    """The comparison above relies on the endpoint returning unit vectors (drtool normalises them anyway)."""
    response = httpx.post(embedding_server.base_url + "/embeddings",
                          json={"model": embedding_server.model_name, "input": ["solar panels"]},
                          headers={"Authorization": f"Bearer {embedding_server.api_key}"}, timeout=60)
    vector = response.json()["data"][0]["embedding"]
    assert abs(math.hypot(*vector) - 1.0) < 1e-3

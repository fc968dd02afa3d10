"""rebuild-index end to end: chunks in SeaweedFS, the OpenAI-compatible test endpoint, Milvus Lite and a real
Milvus server."""

from __future__ import annotations

from typing import Any

from drtool.adapters.milvus import MilvusTarget
from drtool.config import MilvusSettings
from drtool.core.chunks import Chunk
from drtool.core.naming import dify_collection_name
from drtool.ops.rebuild.gate import check_chunks
from tests.rebuild.conftest import BOTH_MILVUS, ChunkBucket, RunCli, make_chunks, new_dataset, summary
from tests.stack.milvus_store import MilvusTestTarget


@BOTH_MILVUS
def test_fresh_rebuild_writes_difys_exact_layout_and_verifies(
        rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli, embedding_server: Any,
        milvus_target: MilvusTestTarget) -> None:
    ds = new_dataset()
    milvus_target.track(dify_collection_name(ds))
    chunks = make_chunks(ds, 120)
    chunk_bucket.put_chunks(ds, chunks, "gzip")
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)["datasets"][0]
    assert code == 0, result
    name = dify_collection_name(ds)
    assert result["collection"] == name and result["mode"] == "new"
    assert result["inserted"] == 120 and result["embedded"] == 120
    assert result["verification"]["passed"] and result["verification"]["count"] == 120
    assert result["verification"]["recall_at_5"] >= 0.9
    assert result["verification"]["dify_query_ok"] == result["verification"]["sample"] > 0
    dify_filter = result["verification"]["dify_filter"]
    if milvus_target.kind == "server":  # a server evaluates Dify's exact filter: the gate must not fall back
        assert dify_filter.startswith('metadata["document_id"] in ["'), dify_filter
    else:  # Milvus Lite rejects `in` on a JSON path; the gate uses the equivalent == form
        assert dify_filter.startswith('metadata["document_id"] == "'), dify_filter

    client = milvus_target.client()
    info = client.describe_collection(name)
    fields = {f["name"]: f for f in info["fields"]}
    assert set(fields) == {"id", "page_content", "metadata", "vector"}
    assert fields["id"]["is_primary"] and info["auto_id"]
    assert fields["page_content"]["params"]["max_length"] == 65535
    assert fields["vector"]["params"]["dim"] == 384
    index = client.describe_index(name, "vector")
    assert (index["index_type"], index["metric_type"]) == ("HNSW", "IP")
    if "M" in index:  # a Milvus server echoes the build parameters; Milvus Lite does not
        assert int(index["M"]) == 8 and int(index["efConstruction"]) == 64
    assert str(client.get_load_state(name)["state"]).endswith("Loaded")
    rows = client.query(name, filter='metadata["doc_id"] == "' + chunks[7]["id"] + '"',
                        output_fields=["page_content", "metadata"])
    assert len(rows) == 1 and rows[0]["page_content"] == chunks[7]["text"]
    meta = rows[0]["metadata"]
    assert meta["doc_id"] == chunks[7]["id"] and meta["doc_hash"] == "hash-7" and meta["dataset_id"] == ds
    assert meta["document_id"] == chunks[7]["document_id"] and meta["source"] == chunks[7]["metadata"]["source"]
    client.close()


def test_auth_server_rebuilds_with_user_and_password_and_refusals_exit_12(
        rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli, embedding_server: Any,
        milvus_server_auth: Any, monkeypatch: Any) -> None:
    """authorizationEnabled on: pymilvus reports bad credentials as "Fail connecting ... server unavailable" (the
    UNAUTHENTICATED status only in its cause) and a missing privilege as a bare PERMISSION_DENIED; both are exit 12,
    never the exit 1 of an unreachable server, and no password reaches the output."""
    server = milvus_server_auth
    ds = new_dataset()
    name = dify_collection_name(ds)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 30))
    monkeypatch.setenv("DRTOOL_MILVUS_URI", server.uri)
    monkeypatch.delenv("DRTOOL_MILVUS_TOKEN", raising=False)
    try:
        for user, password in ((None, None), (server.user, "not-the-password"),
                               (server.unprivileged_user, server.unprivileged_password)):
            for key, value in (("DRTOOL_MILVUS_USER", user), ("DRTOOL_MILVUS_PASSWORD", password)):
                if value is None:
                    monkeypatch.delenv(key, raising=False)
                else:
                    monkeypatch.setenv(key, value)
            code, events = run_cli("rebuild-index", "--dataset", ds)
            assert code == 12, (user, events)
            assert all(secret not in str(events) for secret in (server.password, server.unprivileged_password))

        monkeypatch.setenv("DRTOOL_MILVUS_USER", str(server.user))
        monkeypatch.setenv("DRTOOL_MILVUS_PASSWORD", str(server.password))
        # The refused create left its checkpoint (as any interrupted run): finishing it needs --resume.
        code, events = run_cli("rebuild-index", "--dataset", ds)
        assert code == 2 and "--resume" in next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
        code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
        result = summary(events)["datasets"][0]
        assert code == 0, result
        assert result["verification"]["passed"] and result["verification"]["count"] == 30
        assert result["verification"]["dify_filter"].startswith('metadata["document_id"] in [')
        assert server.password not in str(events)
    finally:
        client = server.client()
        for leftover in (name, name + "_drtool_build"):
            if client.has_collection(leftover):
                client.drop_collection(leftover)
        client.close()


def test_the_lite_gate_asks_the_sample_together_and_a_crowded_out_chunk_again_alone(milvus_uri: str) -> None:
    """Milvus Lite answers the gate's Dify queries in one call whose filter ORs the sampled documents. A chunk whose
    own document's hits are pushed out of that shared top-k (here: another sampled document's rows score higher
    under inner product) comes back short, and the gate asks it again alone: it still passes."""
    def axis(i: int, length: float = 1.0) -> list[float]:
        return [length if j == i else 0.0 for j in range(8)]

    store, name = MilvusTarget(MilvusSettings(uri=milvus_uri)), "gate_crowded"
    doc_a, doc_b, doc_c = "0b6c6a8e-3f0e-4c53-9d0a-1b2f3c4d5e6f", "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", \
        "9e2f3a4b-5c6d-4e7f-8091-a2b3c4d5e6f7"
    chunks = [Chunk(id="c0", text="c zero", dataset_id="ds", document_id=doc_c, line=1),
              Chunk(id="a0", text="a zero", dataset_id="ds", document_id=doc_a, line=2),
              *(Chunk(id=f"b{i}", text=f"b {i}", dataset_id="ds", document_id=doc_b, line=3 + i) for i in range(3))]
    vectors = [axis(5), axis(0), axis(7), axis(0, 2.0), axis(0, 2.0)]  # b1 and b2 outscore a0 on a0's own vector
    store.create(name, 8)
    store.insert(name, [(c.text, c.vector_metadata(), v) for c, v in zip(chunks, vectors, strict=True)])
    store.finish(name)
    sample = list(zip(chunks[:3], vectors[:3], strict=True))
    try:
        answers = store.dify_search_batch(name, vectors[:3], 2, [c.document_id for c in chunks[:3]])
        assert answers[1][0] == [], answers[1]  # a0 was crowded out of the shared call by b1 and b2
        verdict = check_chunks(store, name, sample, 2, 0, 5, 5, [])  # recall aside: b1, b2 outscore a0 there too
        assert verdict["passed"] and verdict["dify_query_ok"] == 3, verdict["problems"]
        assert verdict["dify_filter"] == f'metadata["document_id"] == "{doc_c}"'
    finally:
        store.drop(name)
        store.close()

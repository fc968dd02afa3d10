"""A forged shard plan (issue #16): the plan of a sharded rebuild lies in the bucket, so whoever can write there can
name the live collection as the build. A worker that did not write the plan, and --finalize, refuse it (exit 2,
event `rebuild.shard_plan_refused`) before storing anything: on a real Milvus server (rename switch, and an alias
an operator made), on Weaviate with the alias switch, and on pgvector (a longer name that Postgres cuts to the live
table's). The live collection keeps exactly its rows (with the check off, the Milvus plan adds rows to it). With
rebuild.shard_plan_key every plan is authenticated: what the name checks cannot tell on Weaviate's copy switch is
refused too."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from drtool.adapters.pgvector import table_name
from drtool.core.naming import build_name, dify_collection_name, previous_name
from drtool.core.shards import live_build, plan_authentication_problem, plan_mac
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary
from tests.stack.milvus_store import MilvusTestTarget

# --- the rule --------------------------------------------------------------------------------------------------------


def test_the_rule_refuses_live_names_and_passes_drtools_own_plans() -> None:
    c = "Vector_index_0b0e5b0e_5a1e_4c5e_9a51_000000000016_Node"
    renamed = build_name(c)
    # What drtool itself plans passes: a rename store's build name, a new Weaviate generation beside the one the
    # alias points to, and a first build in place on Weaviate's copy switch (nothing to replace).
    assert live_build(c, renamed, by_alias=False, rename_build=renamed, live_target=None) is None
    assert live_build(c, c + "_drtool_20261207190000000001", by_alias=True, rename_build=None,
                      live_target=c + "_drtool_20250101000000000000") is None
    assert live_build(c, c, by_alias=False, rename_build=None, live_target=None) is None

    why = live_build(c, c, by_alias=True, rename_build=None, live_target=None)
    assert why is not None and "live collection itself" in why and "alias" in why
    why = live_build(c, c, by_alias=False, rename_build=renamed, live_target=None)
    assert why is not None and "live collection itself" in why and "rename" in why
    gen = c + "_drtool_20250101000000000000"
    why = live_build(c, gen, by_alias=True, rename_build=None, live_target=gen)
    assert why is not None and f"what {c} is an alias of" in why
    # A rename store builds under one name only: the kept previous generation, or a longer name that pgvector
    # would cut to Dify's own 63-byte table, is refused.
    for other in (previous_name(c), c + "_drtool_x"):
        why = live_build(c, other, by_alias=False, rename_build=renamed, live_target=None)
        assert why is not None and f"is not {renamed}" in why


def test_the_plan_key_authenticates_exactly_the_plan_it_made() -> None:
    key, other = "k" * 32, "o" * 32
    plan = {"version": 1, "collection": "C", "build": "C", "mode": "in-place", "shards": 2, "created_at": 1.5}
    signed = {**plan, "mac": plan_mac(key, plan)}
    assert signed["mac"].startswith("hmac-sha256:") and len(signed["mac"]) == len("hmac-sha256:") + 64
    assert plan_authentication_problem(key, json.loads(json.dumps(signed))) is None  # survives the bucket
    assert plan_authentication_problem(None, plan) is None  # no key: the structural checks decide
    for changed in ({**signed, "build": "C_drtool_20250101000000000000"}, {**signed, "shards": 3},
                    {**signed, "extra": 1}):
        why = plan_authentication_problem(key, changed)
        assert why is not None and "does not verify" in why
    assert "does not verify" in (plan_authentication_problem(other, signed) or "")
    assert "has no MAC" in (plan_authentication_problem(key, plan) or "")
    assert "has no MAC" in (plan_authentication_problem(key, {**plan, "mac": 7}) or "")
    assert "no rebuild.shard_plan_key" in (plan_authentication_problem(None, signed) or "")


# --- helpers ---------------------------------------------------------------------------------------------------------


def _forge(bucket: ChunkBucket, backend: str, dataset: str, build: str, embedding_server: Any,
           mac_key: str | None = None) -> str:
    """A plan as drtool writes it (right chunk file ETag, model and dimension), naming `build`: only the build
    name gives it away (and its MAC, made with `mac_key`, when given)."""
    collection = dify_collection_name(dataset)
    chunk_key = f"datasets/{dataset}/processed/chunks.jsonl"
    etag = bucket.client.head_object(Bucket=bucket.name, Key=chunk_key)["ETag"].strip('"')
    plan = {"version": 1, "dataset_id": dataset, "collection": collection, "build": build, "mode": "in-place",
            "shards": 2, "chunk_key": chunk_key, "chunk_etag": etag,
            "model_id": f"openai:{embedding_server.model_name}", "dimension": embedding_server.dimensions,
            "created_at": time.time()}
    if mac_key is not None:
        plan["mac"] = plan_mac(mac_key, plan)
    key = f"drtool/rebuild/{backend}/{collection}.shards/plan.json"
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=json.dumps(plan).encode())
    return key


def _refused(run_cli: RunCli, bucket: ChunkBucket, dataset: str, build: str, reason: str, plan_key: str,
             lead: str | None = None) -> None:
    """A shard worker and --finalize both exit 2 naming the plan and what to do; nothing of the worker's is left.
    `lead`: what the message says after the plan's URL (default: the build collection)."""
    for args in (("--shard", "0/2", "--resume"), ("--finalize",)):
        code, events = run_cli("rebuild-index", "--dataset", dataset, *args)
        error = summary(events)["datasets"][0]["error"]
        assert code == 2, (args, error)
        lead_text = f"its build collection {build} " if lead is None else lead
        assert f"refusing the shard plan s3://{bucket.name}/{plan_key}: {lead_text}" in error
        assert reason in error and "remove the objects under" in error, error
        refused = [e for e in events if e["event"] == "rebuild.shard_plan_refused"]
        assert len(refused) == 1 and refused[0]["build"] == build and reason in refused[0]["reason"], refused
    assert bucket.keys("drtool/rebuild/") == [plan_key], "no checkpoint, lock or new plan"


# --- Milvus server ---------------------------------------------------------------------------------------------------


def _milvus_rows(target: MilvusTestTarget, name: str) -> list[str]:
    client = target.client()
    try:
        client.load_collection(name)
        rows = client.query(name, filter="id >= 0", output_fields=["metadata"], limit=16384,
                            consistency_level="Strong")
    finally:
        client.close()
    return sorted(str(r["metadata"]["doc_id"]) for r in rows)


def _milvus_names(target: MilvusTestTarget) -> list[str]:
    client = target.client()
    try:
        return sorted(client.list_collections())
    finally:
        client.close()


@pytest.mark.parametrize("milvus_target", ["server"], indirect=True)
def test_forged_plan_is_refused_on_a_milvus_server(milvus_target: MilvusTestTarget, rebuild_env: dict[str, str],
                                                  chunk_bucket: ChunkBucket, run_cli: RunCli,
                                                  embedding_server: Any) -> None:
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    milvus_target.track(name)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 12))
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 0, summary(events)
    live = _milvus_rows(milvus_target, name)
    assert len(live) == 12
    names = _milvus_names(milvus_target)

    # The live name itself (a rename store never builds in place), and the kept previous generation's name.
    for build, reason in ((name, "is the live collection itself, and this store switches by a rename"),
                          (previous_name(name), f"is not {build_name(name)}, the only name")):
        plan_key = _forge(chunk_bucket, "milvus", ds, build, embedding_server)
        _refused(run_cli, chunk_bucket, ds, build, reason, plan_key)
        chunk_bucket.client.delete_object(Bucket=chunk_bucket.name, Key=plan_key)
        assert _milvus_rows(milvus_target, name) == live and _milvus_names(milvus_target) == names

    # An operator made the live name an alias: the collection it points to is live too.
    hidden = f"{name}_drtool_live"
    client = milvus_target.client()
    try:
        client.release_collection(name)
        client.rename_collection(name, hidden)
        client.create_alias(hidden, name)
        plan_key = _forge(chunk_bucket, "milvus", ds, hidden, embedding_server)
        _refused(run_cli, chunk_bucket, ds, hidden, f"is what {name} is an alias of", plan_key)
        assert _milvus_rows(milvus_target, hidden) == live
        assert _milvus_names(milvus_target) == sorted(hidden if n == name else n for n in names)
    finally:
        client.drop_alias(name)
        client.drop_collection(hidden)
        client.close()


# --- Weaviate (alias switch) -----------------------------------------------------------------------------------------


def test_forged_plan_is_refused_on_weaviate(weaviate_env: Any, chunk_bucket: ChunkBucket, run_cli: RunCli,
                                           embedding_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_WEAVIATE_SWITCH", "alias")
    client = weaviate_env
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 12))
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 0, summary(events)
    generation = client.alias.get(alias_name=name).collection

    def rows() -> list[str]:
        return sorted(str(o.properties["doc_id"]) for o in client.collections.get(generation).iterator())

    live, names = rows(), sorted(client.collections.list_all(simple=True))
    assert len(live) == 12 and generation != name

    for build, reason in ((name, "is the live collection itself, and this store switches by an alias"),
                          (generation, f"is what {name} is an alias of")):
        plan_key = _forge(chunk_bucket, "weaviate", ds, build, embedding_server)
        _refused(run_cli, chunk_bucket, ds, build, reason, plan_key)
        chunk_bucket.client.delete_object(Bucket=chunk_bucket.name, Key=plan_key)
        assert rows() == live and sorted(client.collections.list_all(simple=True)) == names
        assert client.alias.get(alias_name=name).collection == generation


# --- Weaviate (copy switch) with rebuild.shard_plan_key ------------------------------------------------------------


def test_the_plan_key_refuses_what_the_name_checks_cannot_on_weaviates_copy_switch(
        weaviate_env: Any, chunk_bucket: ChunkBucket, run_cli: RunCli, embedding_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the copy switch a first build is made in place, so a plan naming the live collection passes the name
    checks; with a plan key every worker shares, a genuine sharded rebuild passes and a forged plan does not."""
    key = "drtool-test-plan-key-" + uuid.uuid4().hex
    monkeypatch.setenv("DRTOOL_WEAVIATE_SWITCH", "copy")
    monkeypatch.setenv("DRTOOL_REBUILD_SHARD_PLAN_KEY", key)
    client = weaviate_env
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    plan_key = f"drtool/rebuild/weaviate/{name}.shards/plan.json"
    chunk_bucket.put_chunks(ds, make_chunks(ds, 12))
    try:
        code, events = run_cli("rebuild-index", "--dataset", ds, "--shard", "0/2")
        assert code == 0, summary(events)
        written = json.loads(chunk_bucket.client.get_object(Bucket=chunk_bucket.name, Key=plan_key)["Body"].read())
        assert written["build"] == name and written["mode"] == "in-place" and written["mac"].startswith("hmac-")
        assert key not in json.dumps(events)
        for args in (("--shard", "1/2"), ("--finalize",)):  # they did not write the plan: it verifies
            code, events = run_cli("rebuild-index", "--dataset", ds, *args)
            assert code == 0, (args, summary(events))

        def rows() -> list[str]:
            return sorted(str(o.properties["doc_id"]) for o in client.collections.get(name).iterator())

        live, names = rows(), sorted(client.collections.list_all(simple=True))
        assert len(live) == 12

        # The same forgery three ways: no MAC, another key's MAC, and a worker without the key facing a MAC.
        for mac_key, reason in ((None, "is not authenticated: it has no MAC"),
                                ("another-key-" + "x" * 32, "has a MAC that rebuild.shard_plan_key does not verify"),
                                (key, "carries a MAC, but this worker has no rebuild.shard_plan_key")):
            if mac_key == key:
                monkeypatch.delenv("DRTOOL_REBUILD_SHARD_PLAN_KEY")
            forged = _forge(chunk_bucket, "weaviate", ds, name, embedding_server, mac_key=mac_key)
            _refused(run_cli, chunk_bucket, ds, name, reason, forged, lead=f"it {reason}")
            chunk_bucket.client.delete_object(Bucket=chunk_bucket.name, Key=forged)
            assert rows() == live and sorted(client.collections.list_all(simple=True)) == names
    finally:
        client.collections.delete(name)


def test_a_short_plan_key_is_a_configuration_error(weaviate_env: Any, chunk_bucket: ChunkBucket, run_cli: RunCli,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_REBUILD_SHARD_PLAN_KEY", "short-key-1234")
    ds = str(uuid.uuid4())
    chunk_bucket.put_chunks(ds, make_chunks(ds, 4))
    code, events = run_cli("rebuild-index", "--dataset", ds, "--shard", "0/2")
    error = summary(events)["datasets"][0]["error"]
    assert code == 2 and "rebuild.shard_plan_key is 14 characters; at least 32" in error, error
    assert "short-key-1234" not in json.dumps(events)
    assert chunk_bucket.keys("drtool/rebuild/") == [] and not weaviate_env.collections.exists(dify_collection_name(ds))


# --- pgvector (rename switch; Postgres cuts names to 63 bytes) -------------------------------------------------------


def test_forged_plan_is_refused_on_pgvector(pgvector_db: Any, rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                           run_cli: RunCli, embedding_server: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`<live>_drtool_x` passes the plan's name check, but Postgres cuts it to the live table's own name."""
    monkeypatch.setenv("DRTOOL_VECTOR_STORE", "pgvector")
    for key, value in pgvector_db.env().items():
        monkeypatch.setenv(key, value)
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    chunk_bucket.put_chunks(ds, make_chunks(ds, 12))
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 0, summary(events)

    def rows() -> list[str]:
        with pgvector_db.connect() as conn:
            return sorted(r[0] for r in conn.execute(f'SELECT meta->>\'doc_id\' FROM "{table_name(name)}"'))

    def tables() -> list[str]:
        with pgvector_db.connect() as conn:
            return sorted(r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))

    live, names = rows(), tables()
    assert len(live) == 12
    for build, reason in ((name + "_drtool_x", f"is not {build_name(name)}, the only name"),
                          (name, "is the live collection itself, and this store switches by a rename")):
        plan_key = _forge(chunk_bucket, "pgvector", ds, build, embedding_server)
        _refused(run_cli, chunk_bucket, ds, build, reason, plan_key)
        chunk_bucket.client.delete_object(Bucket=chunk_bucket.name, Key=plan_key)
        assert rows() == live and tables() == names
    assert table_name(name + "_drtool_x") == table_name(name)  # why the first one matters

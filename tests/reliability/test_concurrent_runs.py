"""Two runs of the same command started at the same moment (two real processes): one does the work, the other
exits 11 naming the lock and its holder before writing anything; never do both write at once.

If the scheduler happens to start the second run only after the first has finished, both may succeed: then
their working intervals (first event to exit) must not overlap, which is checked instead.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymilvus import MilvusClient

from drtool.core.chunks import dumps_chunk
from drtool.core.naming import dify_collection_name
from tests.rebuild.conftest import make_chunks
from tests.reliability.conftest import InProcess
from tests.reliability.harness import RaceRun, race, record_extra
from tests.snapshot.conftest import fill_source, make_env, new_bucket


def _one_wins(runs: list[RaceRun], command: str, writes: Callable[[RaceRun], bool],
              says: str = "holds the lock", locked: set[str] | None = None) -> RaceRun:
    """The run that did the work; asserts the other exited 11 without writing, or ran strictly after it.

    `locked` names the events a run emits only while it holds the lock: with them, "after" means the second run's
    first such event came after the first run's last one. Without them the first run's exit is the bound, which a
    loaded machine can cross legitimately (the lock is released before the interpreter has finished exiting).
    """
    codes = sorted(r.code for r in runs)
    record_extra("concurrency", command=command, codes=codes)
    if codes == [0, 0]:
        a, b = sorted(runs, key=lambda r: r.first_event)
        if locked and a.times_of(locked) and b.times_of(locked):
            a_end, b_start = max(a.times_of(locked)), min(b.times_of(locked))
        else:
            a_end, b_start = a.ended, b.first_event
        assert a_end <= b_start, f"{command}: both runs succeeded while overlapping"
        return b
    assert codes == [0, 11], f"{command}: exit codes {codes}: " + " | ".join(r.stderr[-300:] for r in runs)
    winner = next(r for r in runs if r.code == 0)
    loser = next(r for r in runs if r.code == 11)
    told = loser.stderr + json.dumps(loser.events)
    assert says in told, told[-600:]
    assert not writes(loser), f"{command}: the run that exited 11 wrote something: {loser.events}"
    return winner


_SNAPSHOT_LOCKED = {"snapshot.started", "snapshot.dumped", "snapshot.committed"}


def _snapshot_env(minio_pair: Any, dify_db: Any, pg: Any) -> tuple[Any, str, str, dict[str, str]]:
    client = minio_pair.a.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    fill_source(client, source, dify_db)
    site = minio_pair.a
    env = make_env(endpoint=site.endpoint, access_key=site.access_key, secret_key=site.secret_key,
                   source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg)
    return client, source, dest, {k: v for k, v in env.items() if k.startswith("DRTOOL_")}


def test_two_snapshot_creates_and_two_restores_at_once(minio_pair: Any, dify_db: Any, pg: Any,
                                                       cli: InProcess) -> None:
    client, _, dest, env = _snapshot_env(minio_pair, dify_db, pg)
    runs = race(["snapshot", "create"], env)
    _one_wins(runs, "snapshot create", lambda r: any(e.get("event") == "snapshot.committed" for e in r.events),
              locked=_SNAPSHOT_LOCKED)
    listed = cli(["snapshots", "list"], env).result()["snapshots"]
    assert len(listed) == sum(r.code == 0 for r in runs)
    assert not client.list_objects_v2(Bucket=dest, Prefix="drtool/locks/").get("KeyCount")

    target, dbname = new_bucket(client), f"rel_{uuid.uuid4().hex[:10]}"
    try:
        runs = race(["restore", listed[0]["id"], "--target-db", dbname, "--objects-to", target], env)
        winner = _one_wins(runs, "restore", lambda r: any(e.get("event") in ("restore.objects", "restore.database")
                                                          for e in r.events),
                           locked={"restore.objects", "restore.database"})
        assert winner.events[-1]["database"]["action_done"] == "create and restore"
        again = cli(["restore", listed[0]["id"], "--target-db", dbname, "--objects-to", target], env)
        assert again.code == 0 and again.result()["objects"]["copied"] == 0
        assert again.result()["database"]["action"] == "already restored"
    finally:
        pg.drop_database(dbname)
    assert not client.list_objects_v2(Bucket=dest, Prefix="drtool/locks/").get("KeyCount")


_EXPORT_LOCKED = {"export.started", "progress", "export.part_uploaded", "export.dataset_exported"}


def test_two_export_chunks_at_once(minio_pair: Any, pg: Any, dify_db_factory: Callable[..., Any]) -> None:
    db = dify_db_factory(datasets=2, documents_per_dataset=3, segments_per_document=1500, seed=5)
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"rel-race-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    env = {
        "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": site.access_key,
        "DRTOOL_S3_SECRET_KEY": site.secret_key, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
        "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": db.dbname,
        "DRTOOL_POSTGRES_SSLMODE": "disable",
    }
    runs = race(["export-chunks", "--all", "--force"], env)
    winner = _one_wins(runs, "export-chunks",
                       lambda r: any(e.get("event") in ("export.started", "export.dataset_exported") for e in r.events),
                       locked=_EXPORT_LOCKED)
    assert [e["status"] for e in winner.events if e.get("event") == "export.dataset_exported"] == ["written", "written"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert sorted(keys) == sorted(f"datasets/{d.id}/processed/chunks.jsonl" for d in db.seed.datasets)


@pytest.mark.parametrize("store", ["weaviate", "milvus-lite"])
def test_two_rebuilds_of_one_collection_at_once(store: str, minio_pair: Any, embedding_server: Any,
                                                tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Weaviate (a server): the collection's run lock stops the second run. Milvus Lite (a file): the file admits
    one process, and drtool says so with exit 11 as well."""
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"rel-race-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    ds = str(uuid.uuid4())
    chunks = make_chunks(ds, 96)
    client.put_object(Bucket=bucket, Key=f"datasets/{ds}/processed/chunks.jsonl",
                      Body=b"".join(dumps_chunk(c) for c in chunks))
    env = {
        "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": site.access_key,
        "DRTOOL_S3_SECRET_KEY": site.secret_key, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_EMBEDDING_PROVIDER": "openai",
        "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url, "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key,
        "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
        "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions), "DRTOOL_EMBEDDING_BATCH_SIZE": "16",
        "DRTOOL_REBUILD_BATCH_SIZE": "16", "DRTOOL_REBUILD_SAMPLE": "10",
    }
    name = dify_collection_name(ds)
    if store == "weaviate":
        server = request.getfixturevalue("weaviate_server")
        env.update({"DRTOOL_VECTOR_STORE": "weaviate", "DRTOOL_WEAVIATE_ENDPOINT": server.http_url,
                    "DRTOOL_WEAVIATE_GRPC_ENDPOINT": f"{server.host}:{server.grpc_port}"})
        says = "holds the lock"
    else:
        uri = str(tmp_path / "milvus.db")
        env.update({"DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": uri})
        says = "is open in another process"
    embedding_server.slow_next(0.1, count=1000)  # each run takes a few seconds: the two certainly overlap
    runs = race(["rebuild-index", "--dataset", ds], env)
    embedding_server.reset()
    _one_wins(runs, f"rebuild-index ({store})",
              lambda r: any(e.get("event") == "rebuild.dataset_started" for e in r.events),
              says=says)
    if store == "weaviate":
        import weaviate

        wv = weaviate.connect_to_custom(http_host=server.host, http_port=server.http_port, http_secure=False,
                                        grpc_host=server.host, grpc_port=server.grpc_port, grpc_secure=False)
        try:
            ids = [str(o.properties["doc_id"]) for o in wv.collections.get(name).iterator()]
        finally:
            wv.close()
    else:
        milvus = MilvusClient(uri)
        try:
            milvus.load_collection(name)
            rows = milvus.query(name, filter="id >= 0", output_fields=["metadata"], limit=16384)
        finally:
            milvus.close()
        ids = [r["metadata"]["doc_id"] for r in rows]
    assert sorted(ids) == sorted(c["id"] for c in chunks), "exactly one vector per chunk"
    assert not client.list_objects_v2(Bucket=bucket, Prefix="drtool/").get("KeyCount"), "ledger or lock left"


def test_a_dead_runs_lock_is_taken_over_by_exactly_one_of_two(minio_pair: Any, dify_db: Any, pg: Any) -> None:
    """Both runs find the same dead lock; the If-Match takeover lets exactly one of them have it."""
    import json
    import socket
    import subprocess
    from datetime import UTC, datetime

    from drtool.ops.lock import here

    client, _, dest, env = _snapshot_env(minio_pair, dify_db, pg)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs on this host
    place = here()  # same host, boot and PID namespace: the only place where a gone pid proves a dead holder
    dead = {"holder": "snapshot create", "host": socket.gethostname(), "pid": gone.pid,
            "started_at": datetime.now(UTC).isoformat(), "token": "dead", "boot_id": place.boot_id,
            "pid_ns": place.pid_ns}
    client.put_object(Bucket=dest, Key="drtool/locks/snapshots.lock", Body=json.dumps(dead).encode())
    runs = race(["snapshot", "create"], env)
    takeovers = [e for r in runs for e in r.events if e.get("event") == "lock.taken_over"]
    assert len(takeovers) == 1, [r.stderr[-300:] for r in runs]
    assert takeovers[0]["previous_holder"]["pid"] == gone.pid and takeovers[0]["automatic"] is True
    _one_wins(runs, "snapshot create (dead lock)",
              lambda r: any(e.get("event") == "snapshot.committed" for e in r.events),
              locked=_SNAPSHOT_LOCKED)
    assert not client.list_objects_v2(Bucket=dest, Prefix="drtool/locks/").get("KeyCount")

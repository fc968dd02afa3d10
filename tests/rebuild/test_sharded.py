"""A sharded rebuild (issue #16): N worker processes with a Kubernetes Indexed Job's environment, one killed with
SIGKILL and resumed, finalize refused while a shard is unfinished, a second worker of one index refused by its lock,
then finalize, `verify --deep`, and the same ids and vectors as a single-worker rebuild of the same data; on a Milvus
server, Weaviate and pgvector. Milvus Lite refuses --shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drtool.core import shards
from drtool.core.naming import previous_name
from drtool.errors import UsageError
from tests.export.helpers import RunCli, apply_env, drtool_env, new_bucket_on
from tests.rebuild.conftest import ChunkBucket, make_chunks, summary
from tests.rebuild.test_rebuild_pgvector import _embed_via
from tests.stack.milvus_store import MilvusTestTarget

# --- the assignment ------------------------------------------------------------------------------------------------

def test_assignment_is_a_stable_partition() -> None:
    ids = [f"node-{i}" for i in range(3000)]
    for n in (1, 2, 3, 7):
        owners = [[s for s in range(n) if shards.Shard(s, n).owns(i)] for i in ids]
        assert all(len(o) == 1 for o in owners), "every chunk in exactly one shard"
        sizes = Counter(o[0] for o in owners)
        assert min(sizes.values()) > len(ids) / n * 0.8, sizes  # spread evenly enough
    # sha256, not Python's salted hash(): the same in every process, host and release (pinned values).
    assert [shards.shard_of(f"node-{i}", 3) for i in range(8)] == [
        int.from_bytes(__import__("hashlib").sha256(f"node-{i}".encode()).digest()[:8], "big") % 3 for i in range(8)]
    assert shards.shard_of("node-0", 1000) == 290


def test_shard_from_flag_or_indexed_job_env() -> None:
    assert shards.resolve(None, {}) is None
    assert shards.resolve("1/3", {"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": "2"}) == shards.Shard(1, 3)
    assert shards.resolve(None, {"JOB_COMPLETION_INDEX": "2", "JOB_COMPLETIONS": "3"}) == shards.Shard(2, 3)
    for flag, env in (("3/3", {}), ("x", {}), ("0/0", {}), (None, {"JOB_COMPLETION_INDEX": "0"}),
                      (None, {"JOB_COMPLETION_INDEX": "a", "JOB_COMPLETIONS": "2"})):
        with pytest.raises(UsageError):
            shards.resolve(flag, env)


# --- the stores ------------------------------------------------------------------------------------------------------

class Store:
    """One backend under test: its drtool settings, and the stored vectors by doc_id read with its own client."""

    def __init__(self, backend: str, env: dict[str, str], vectors: Callable[[str], dict[str, list[float]]],
                 cleanup: Callable[[str], None], prepare: Callable[[str, int], None] | None = None) -> None:
        self.backend, self.env, self.vectors, self.cleanup = backend, env, vectors, cleanup
        self.prepare = prepare or (lambda name, dim: None)


@pytest.fixture
def milvus_store(milvus_target: MilvusTestTarget) -> Iterator[Store]:
    target = milvus_target

    def vectors(name: str) -> dict[str, list[float]]:
        client = target.client()
        try:
            client.load_collection(name)
            rows = client.query(name, filter="id >= 0", output_fields=["metadata", "vector"], limit=16384)
        finally:
            client.close()
        out: dict[str, list[float]] = {}
        for r in rows:
            assert r["metadata"]["doc_id"] not in out, f"duplicate {r['metadata']['doc_id']}"
            out[r["metadata"]["doc_id"]] = [float(x) for x in r["vector"]]
        return out

    yield Store("milvus", target.env(), vectors, lambda name: target.track(name, previous_name(name)))


@pytest.fixture
def weaviate_store(weaviate_server: Any) -> Iterator[Store]:
    import weaviate

    client = weaviate.connect_to_custom(http_host=weaviate_server.host, http_port=weaviate_server.http_port,
                                        http_secure=False, grpc_host=weaviate_server.host,
                                        grpc_port=weaviate_server.grpc_port, grpc_secure=False)
    names: list[str] = []

    def vectors(name: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for obj in client.collections.get(name).iterator(include_vector=True):
            doc_id = str(obj.properties["doc_id"])
            assert doc_id not in out, f"duplicate {doc_id}"
            out[doc_id] = [float(x) for x in obj.vector["default"]]
        return out

    env = {"DRTOOL_WEAVIATE_ENDPOINT": weaviate_server.http_url,
           "DRTOOL_WEAVIATE_GRPC_ENDPOINT": f"{weaviate_server.host}:{weaviate_server.grpc_port}"}
    def prepare(name: str, dim: int) -> None:
        """A live (empty) collection under the name: the build goes beside it under a timestamped name, which
        only the shared shard plan makes the same in every worker."""
        from drtool.adapters.weaviate import WeaviateTarget
        from drtool.config import WeaviateSettings

        target = WeaviateTarget(WeaviateSettings(endpoint=env["DRTOOL_WEAVIATE_ENDPOINT"],
                                                 grpc_endpoint=env["DRTOOL_WEAVIATE_GRPC_ENDPOINT"]))
        try:
            target.create(name, dim)
        finally:
            target.close()

    yield Store("weaviate", env, vectors, names.append, prepare)
    for name in names:
        for c in client.collections.list_all(simple=True):
            if c == name or c.startswith(name + "_drtool_"):
                client.collections.delete(c)
    client.close()


@pytest.fixture
def pgvector_store(pgvector_db: Any) -> Iterator[Store]:
    from drtool.adapters.pgvector import table_name

    def vectors(name: str) -> dict[str, list[float]]:
        with pgvector_db.connect() as conn:
            rows = conn.execute(f'SELECT meta->>\'doc_id\', embedding::text FROM "{table_name(name)}"').fetchall()
        out: dict[str, list[float]] = {}
        for doc_id, text in rows:
            assert doc_id not in out, f"duplicate {doc_id}"
            out[doc_id] = [float(x) for x in json.loads(text)]
        return out

    yield Store("pgvector", pgvector_db.env(), vectors, lambda name: None)


# --- helpers ---------------------------------------------------------------------------------------------------------

def _ledger(bucket: Any, backend: str, name: str, index: int) -> dict[str, Any] | None:
    key = f"drtool/rebuild/{backend}/{name}.shards/shard-{index}.json"
    try:
        return json.loads(bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read())
    except bucket.client.exceptions.NoSuchKey:
        return None


def _lock_pid(bucket: Any, backend: str, name: str, index: int) -> int | None:
    key = f"drtool/rebuild/{backend}/{name}.shards/shard-{index}.lock"
    try:
        return int(json.loads(bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read())["pid"])
    except bucket.client.exceptions.NoSuchKey:
        return None


def _worker(index: int, count: int, dataset: str, tmp: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`drtool rebuild-index` as an Indexed Job pod runs it: the shard comes from the environment, not a flag."""
    env = {**os.environ, "JOB_COMPLETION_INDEX": str(index), "JOB_COMPLETIONS": str(count)}
    log = (tmp / f"shard-{index}-{time.monotonic_ns()}.log").open("wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "drtool", "--json", "rebuild-index", "--dataset", dataset,
                                 "--resume", *extra], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        log.close()


def _logs(tmp: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(tmp.glob("shard-*.log")))


def _wait(procs: list[subprocess.Popen[bytes]], tmp: Path, timeout: float = 120) -> None:
    for p in procs:
        p.wait(timeout=timeout)
    assert [p.returncode for p in procs] == [0] * len(procs), _logs(tmp)


def _sharded_roundtrip(store: Store, *, shard_count: int, kill: bool, pg: Any, dify_db_factory: Any,
                       minio_pair: Any, embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli,
                       tmp_path: Path) -> None:
    embed = _embed_via(embedding_server)
    db = dify_db_factory(vector_type=store.backend, embed=embed, datasets=1, documents_per_dataset=4,
                         segments_per_document=20)
    bucket = new_bucket_on(minio_pair.a)
    for key, data in db.seed.files.items():
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=data)
    apply_env(monkeypatch, drtool_env(
        pg, db.dbname, bucket, DRTOOL_VECTOR_STORE=store.backend, **store.env, **embedding_server.settings_env(),
        DRTOOL_REBUILD_SAMPLE="10", DRTOOL_REBUILD_BATCH_SIZE="4", DRTOOL_EMBEDDING_BATCH_SIZE="4",
        DRTOOL_EMBEDDING_CONCURRENCY="1"))
    assert run_cli("export-chunks", "--all")[0] == 0
    dataset = db.seed.datasets[0]
    name, want = dataset.collection_name, set(dataset.index_nodes)
    store.cleanup(name)
    store.prepare(name, embedding_server.dimensions)
    assert len(want) >= 50

    embedding_server.reset()
    embedding_server.slow_next(0.25, count=100_000)  # each worker a few seconds: the victim is caught mid-run
    try:
        procs = [_worker(i, shard_count, dataset.id, tmp_path) for i in range(shard_count)]
        if kill:
            victim = procs[1]
            deadline = time.monotonic() + 90
            state = None
            while time.monotonic() < deadline and victim.poll() is None:
                state = _ledger(bucket, store.backend, name, 1)
                if state and state.get("lines_done", 0) > 0:
                    break
                time.sleep(0.05)
            assert victim.poll() is None, _logs(tmp_path)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            assert victim.returncode == -signal.SIGKILL
            assert state is not None and state["phase"] == "building" and state["lines_done"] > 0
            _wait([p for p in procs if p is not victim], tmp_path)

            # Finalize refuses while shard 1 is unfinished, naming it; nothing is switched.
            code, events = run_cli("rebuild-index", "--dataset", dataset.id, "--finalize")
            error = summary(events)["datasets"][0]["error"]
            assert code == 2 and "1 of 3 shard(s) not finished: 1 (at line" in error, error

            # The killed shard is resumed by its own index; meanwhile a second worker of that index is refused.
            resumed = _worker(1, shard_count, dataset.id, tmp_path)
            deadline = time.monotonic() + 60
            while _lock_pid(bucket, store.backend, name, 1) != resumed.pid and time.monotonic() < deadline:
                assert resumed.poll() is None, _logs(tmp_path)
                time.sleep(0.05)
            monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
            monkeypatch.setenv("JOB_COMPLETIONS", str(shard_count))
            code, events = run_cli("rebuild-index", "--dataset", dataset.id, "--resume")
            monkeypatch.delenv("JOB_COMPLETION_INDEX")
            monkeypatch.delenv("JOB_COMPLETIONS")
            assert code == 11, summary(events)
            _wait([resumed], tmp_path)
            assert "rebuild.resumed" in _logs(tmp_path)
        else:
            _wait(procs, tmp_path)
    finally:
        embedding_server.reset()

    code, events = run_cli("rebuild-index", "--dataset", dataset.id, "--finalize")
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["verification"]["passed"] and result["verification"]["count"] == len(want), result
    assert result["mode"] == {"weaviate": "blue-green"}.get(store.backend, "new"), result
    assert bucket.keys("drtool/rebuild/") == [], "plan, shard ledgers and locks are gone after the switch"
    code, events = run_cli("verify", "--deep")
    assert code == 0, summary(events)
    sharded = store.vectors(name)
    assert set(sharded) == want  # every chunk exactly once (the reader asserts no duplicate)

    # A single-worker rebuild of the same data: the sharded collection is kept as the previous generation.
    code, events = run_cli("rebuild-index", "--dataset", dataset.id)
    assert code == 0, summary(events)
    single = store.vectors(name)
    assert store.vectors(previous_name(name)) == sharded
    assert set(single) == set(sharded)
    for doc_id, vector in single.items():
        assert sharded[doc_id] == pytest.approx(vector, abs=1e-6), doc_id


@pytest.mark.parametrize("milvus_target", ["server"], indirect=True)
def test_three_shards_kill_resume_finalize_milvus_server(milvus_target: MilvusTestTarget, milvus_store: Store,
                                                          pg: Any, dify_db_factory: Any,
                                                          minio_pair: Any, embedding_server: Any,
                                                          monkeypatch: pytest.MonkeyPatch, run_cli: RunCli,
                                                          tmp_path: Path) -> None:
    _sharded_roundtrip(milvus_store, shard_count=3, kill=True, pg=pg, dify_db_factory=dify_db_factory,
                       minio_pair=minio_pair, embedding_server=embedding_server, monkeypatch=monkeypatch,
                       run_cli=run_cli, tmp_path=tmp_path)


def test_three_shards_kill_resume_finalize_weaviate(weaviate_store: Store, pg: Any, dify_db_factory: Any,
                                                     minio_pair: Any, embedding_server: Any,
                                                     monkeypatch: pytest.MonkeyPatch, run_cli: RunCli,
                                                     tmp_path: Path) -> None:
    _sharded_roundtrip(weaviate_store, shard_count=3, kill=True, pg=pg, dify_db_factory=dify_db_factory,
                       minio_pair=minio_pair, embedding_server=embedding_server, monkeypatch=monkeypatch,
                       run_cli=run_cli, tmp_path=tmp_path)


def test_two_shards_finalize_pgvector(pgvector_store: Store, pg: Any, dify_db_factory: Any, minio_pair: Any,
                                      embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli,
                                      tmp_path: Path) -> None:
    _sharded_roundtrip(pgvector_store, shard_count=2, kill=False, pg=pg, dify_db_factory=dify_db_factory,
                       minio_pair=minio_pair, embedding_server=embedding_server, monkeypatch=monkeypatch,
                       run_cli=run_cli, tmp_path=tmp_path)


def test_milvus_lite_refuses_shards(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli,
                                    milvus_target: MilvusTestTarget) -> None:
    assert milvus_target.kind == "lite"
    ds = "0b0e5b0e-5a1e-4c5e-9a51-000000000016"
    chunk_bucket.put_chunks(ds, make_chunks(ds, 10))
    code, events = run_cli("rebuild-index", "--dataset", ds, "--shard", "0/2")
    result = summary(events)
    assert code == 2 and "Milvus Lite" in result["message"], result
    assert chunk_bucket.keys("drtool/") == [], "nothing planned, locked or written"


def test_finalize_without_shards_is_not_found(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                              run_cli: RunCli) -> None:
    ds = "0b0e5b0e-5a1e-4c5e-9a51-000000000017"
    chunk_bucket.put_chunks(ds, make_chunks(ds, 10))
    code, events = run_cli("rebuild-index", "--dataset", ds, "--finalize")
    assert code == 10 and "no sharded rebuild" in summary(events)["datasets"][0]["error"]

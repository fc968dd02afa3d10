"""Verify tests: a seeded Dify database, its files in a MinIO bucket, its chunk files written by export-chunks,
and its vectors in a real Milvus Lite file or Weaviate server, laid out as Dify lays them out (built with the
rebuild-index targets, so the layout is the one drtool's own rebuild produces)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from drtool.config import WeaviateSettings
from tests.export.helpers import Bucket, RunCli, apply_env, drtool_env, new_bucket_on
from tests.helpers.events import summary  # noqa: F401  (re-exported for tests/verify)
from tests.stack.milvus_store import MilvusTestTarget

# Verify reads every vector from another process than the one that wrote them: on a server that is a matter of
# read consistency, so these tests run on Milvus Lite and on the session's Milvus server.
BOTH_MILVUS = pytest.mark.parametrize("milvus_target", ["lite", "server"], indirect=True)

DIM = 8


def unit_vector(rng: random.Random) -> list[float]:
    v = [rng.uniform(-1, 1) for _ in range(DIM)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


@dataclass
class VerifyWorld:
    db: Any
    bucket: Bucket
    env: dict[str, str]
    target: Any  # MilvusTarget or WeaviateTarget

    @property
    def seed(self) -> Any:
        return self.db.seed

    def insert(self, collection: str, text: str, meta: dict[str, Any]) -> None:
        self.target.insert(collection, [(text, meta, unit_vector(random.Random(text)))])
        self.target.finish(collection)


def _verify_world(backend: str, pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any,
                  monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, target: Any, extra: dict[str, str]) -> VerifyWorld:
    db = dify_db_factory(vector_type=backend)
    bucket = new_bucket_on(minio_pair.a)
    for key, data in db.seed.files.items():
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=data)
    env = drtool_env(pg, db.dbname, bucket, **extra)
    apply_env(monkeypatch, env)
    code, events = run_cli("export-chunks", "--all")
    assert code == 0, events
    rng = random.Random(1)
    for dataset in db.seed.datasets:
        chunks = bucket.chunks(f"datasets/{dataset.id}/processed/chunks.jsonl")
        target.create(dataset.collection_name, DIM)
        target.insert(dataset.collection_name, [(c.text, c.vector_metadata(), unit_vector(rng)) for c in chunks])
        target.finish(dataset.collection_name)
    return VerifyWorld(db, bucket, env, target)


@pytest.fixture
def milvus_world(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, milvus_target: MilvusTestTarget,
                 monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> Iterator[VerifyWorld]:
    """Lite unless the test parametrizes `milvus_target` (BOTH_MILVUS); on a server the collections are dropped."""
    from drtool.adapters.milvus import MilvusTarget

    target = MilvusTarget(milvus_target.settings())
    try:
        world = _verify_world("milvus", pg, dify_db_factory, minio_pair, monkeypatch, run_cli, target,
                              milvus_target.env())
        milvus_target.track(*(dataset.collection_name for dataset in world.seed.datasets))
        yield world
    finally:
        target.close()


@pytest.fixture
def weaviate_world(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, weaviate_server: Any,
                   monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> Iterator[VerifyWorld]:
    from drtool.adapters.weaviate import WeaviateTarget

    grpc = f"{weaviate_server.host}:{weaviate_server.grpc_port}"
    target = WeaviateTarget(WeaviateSettings(endpoint=weaviate_server.http_url, grpc_endpoint=grpc))
    world = None
    try:
        world = _verify_world("weaviate", pg, dify_db_factory, minio_pair, monkeypatch, run_cli, target,
                              {"DRTOOL_WEAVIATE_ENDPOINT": weaviate_server.http_url,
                               "DRTOOL_WEAVIATE_GRPC_ENDPOINT": grpc})
        yield world
    finally:
        if world is not None:
            for dataset in world.seed.datasets:
                if target.exists(dataset.collection_name):
                    target.drop(dataset.collection_name)
        target.close()

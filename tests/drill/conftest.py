"""Drill tests: a seeded Dify database, its files and export-chunks' chunk files in a versioned MinIO bucket, a
committed snapshot of both in a second bucket, and a live index in a real Milvus Lite file, laid out the way the
verify tests lay it out. The embedder is the OpenAI-compatible test server running the offline model."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from drtool.config import MilvusSettings, WeaviateSettings
from tests.export.helpers import Bucket, RunCli, apply_env, drtool_env
from tests.helpers.buckets import new_bucket
from tests.helpers.embedding import embed_via
from tests.helpers.events import summary  # noqa: F401  (re-exported for tests/drill)
from tests.stack.milvus_store import MilvusTestTarget
from tests.verify.conftest import DIM, unit_vector


@dataclass
class DrillWorld:
    db: Any
    pg: Any
    bucket: Bucket
    dest_bucket: str
    env: dict[str, str]
    milvus_uri: str
    backend: str = "milvus"
    weaviate: WeaviateSettings | None = None
    milvus_token: str | None = None
    annotations: Any = None  # tests.stack.dify_seed.AnnotationSeed when the world was built with annotations

    @property
    def client(self) -> Any:
        return self.bucket.client

    def milvus(self) -> Any:
        from drtool.adapters.milvus import MilvusTarget

        return MilvusTarget(MilvusSettings(uri=self.milvus_uri, token=self.milvus_token))

    def target(self) -> Any:
        if self.backend == "weaviate":
            from drtool.adapters.weaviate import WeaviateTarget

            assert self.weaviate is not None
            return WeaviateTarget(self.weaviate)
        return self.milvus()

    def live_index(self) -> dict[str, Any]:
        """Every collection (and Weaviate alias) in the vector store, with its row count and sorted doc_ids."""
        target = self.target()
        try:
            out: dict[str, Any] = {}
            if self.backend == "weaviate":
                aliases = target.client.alias.list_all()
                out.update({f"alias {a}": v.collection for a, v in aliases.items() if a.startswith(("Vector_",
                                                                                                     "Drill_"))})
                for name in sorted(target.client.collections.list_all(simple=True)):
                    if name.startswith(("Vector_", "Drill_")):
                        ids = sorted(str(p.get("doc_id")) for _u, p in target.iter_properties(name, ("doc_id",)))
                        out[name] = (target.count(name), ids)
                return out
            # Only this world's collections and the drills' scratch copies of them: a shared server holds others.
            ours = tuple(d.collection_name for d in self.db.seed.datasets)
            for name in sorted(n for n in target.client.list_collections() if n.endswith(ours)):
                target.load(name)
                ids = sorted(str(meta.get("doc_id")) for _key, meta in target.iter_metadata(name))
                out[name] = (target.count(name), ids)
            return out
        finally:
            target.close()

    def release_milvus_lite(self) -> None:
        """Stop this process's Milvus Lite server for the file, so that a drtool process can open it."""
        if "://" not in self.milvus_uri:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.milvus_uri)

    def databases(self) -> set[str]:
        import psycopg

        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}

    def index_structs(self) -> dict[str, str]:
        with self.db.connect() as conn:
            return {r[0]: r[1] for r in conn.execute("SELECT id::text, index_struct FROM datasets")}

    def history_keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.dest_bucket, Prefix="drtool/drills/")
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _drill_world(backend: str, pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, milvus_uri: str,
                 embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli,
                 weaviate: WeaviateSettings | None = None, milvus_token: str | None = None,
                 annotations: bool = False, **seed_options: Any) -> DrillWorld:
    seed_options = {"documents_per_dataset": 2, "segments_per_document": 4, **seed_options}
    db = dify_db_factory(vector_type=backend, embed=embed_via(embedding_server), **seed_options)
    seeded = None
    if annotations:  # issue 13: apps with annotation reply, exported by export-chunks --all, pinned by the snapshot
        from tests.stack.dify_seed import seed_annotations

        with db.connect() as conn:
            seeded = seed_annotations(conn, db.seed, score_threshold=0.8)
    site = minio_pair.a
    client = site.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    bucket = Bucket(client, source, site.endpoint, site.access_key, site.secret_key)
    for key, data in db.seed.files.items():
        client.put_object(Bucket=source, Key=key, Body=data)
    milvus_env = {"DRTOOL_MILVUS_URI": milvus_uri, **({"DRTOOL_MILVUS_TOKEN": milvus_token} if milvus_token else {})}
    store = milvus_env if weaviate is None else {
        "DRTOOL_WEAVIATE_ENDPOINT": str(weaviate.endpoint),
        "DRTOOL_WEAVIATE_GRPC_ENDPOINT": str(weaviate.grpc_endpoint)}
    env = drtool_env(pg, db.dbname, bucket, DRTOOL_SNAPSHOT_BUCKET=dest, DRTOOL_SNAPSHOT_PG_BIN_DIR=str(pg.bin_dir),
                     DRTOOL_VECTOR_STORE=backend, **store,
                     **embedding_server.settings_env(), DRTOOL_REBUILD_SAMPLE="10")
    apply_env(monkeypatch, env)
    code, events = run_cli("export-chunks", "--all")
    assert code == 0, events
    world = DrillWorld(db=db, pg=pg, bucket=bucket, dest_bucket=dest, env=env, milvus_uri=milvus_uri,
                       backend=backend, weaviate=weaviate, milvus_token=milvus_token, annotations=seeded)
    # The live index: what Dify queries (the drill must never open it for writing).
    target = world.target()
    try:
        rng = random.Random(7)
        for dataset in db.seed.datasets:
            key = f"datasets/{dataset.id}/processed/chunks.jsonl"
            if not bucket.keys(key):
                continue
            target.create(dataset.collection_name, DIM)
            target.insert(dataset.collection_name, [(c.text, c.vector_metadata(), unit_vector(rng))
                                                    for c in bucket.chunks(key)])
            target.finish(dataset.collection_name)
    finally:
        target.close()
    code, events = run_cli("snapshot", "create")
    assert code == 0, events
    return world


@pytest.fixture
def drill_world(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, milvus_target: MilvusTestTarget,
                embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> Iterator[DrillWorld]:
    """Lite unless the test parametrizes `milvus_target`; on a server the world's collections are dropped after."""
    world = _drill_world("milvus", pg, dify_db_factory, minio_pair, milvus_target.uri, embedding_server, monkeypatch,
                         run_cli, milvus_token=milvus_target.token)
    milvus_target.track(*(d.collection_name for d in world.db.seed.datasets))
    before = world.databases()
    yield world
    for name in world.databases() - before:  # a failed assertion must not leave scratch databases behind
        if name.startswith("drtool_drill_"):
            pg.drop_database(name)


@pytest.fixture
def annotated_drill_world(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, milvus_uri: str,
                          embedding_server: Any, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
                          ) -> Iterator[DrillWorld]:
    """A small world (one dataset) whose database also has apps with annotation reply (tests.stack.dify_seed)."""
    world = _drill_world("milvus", pg, dify_db_factory, minio_pair, milvus_uri, embedding_server, monkeypatch, run_cli,
                         annotations=True, datasets=1, documents_per_dataset=1, segments_per_document=2)
    before = world.databases()
    yield world
    for name in world.databases() - before:
        if name.startswith("drtool_drill_"):
            pg.drop_database(name)


@pytest.fixture
def weaviate_drill_world(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, milvus_uri: str,
                         weaviate_server: Any, embedding_server: Any, monkeypatch: pytest.MonkeyPatch,
                         run_cli: RunCli) -> Iterator[DrillWorld]:
    settings = WeaviateSettings(endpoint=weaviate_server.http_url,
                                grpc_endpoint=f"{weaviate_server.host}:{weaviate_server.grpc_port}")
    world = _drill_world("weaviate", pg, dify_db_factory, minio_pair, milvus_uri, embedding_server, monkeypatch,
                         run_cli, weaviate=settings)
    before = world.databases()
    try:
        yield world
    finally:
        target = world.target()
        try:
            for dataset in world.db.seed.datasets:  # the live collections: Weaviate is shared by the session
                if target.exists(dataset.collection_name):
                    target.drop(dataset.collection_name)
        finally:
            target.close()
        for name in world.databases() - before:
            if name.startswith("drtool_drill_"):
                pg.drop_database(name)

"""Where settings become the adapters a command works with: the composition point.

Commands (cli/) and operations (ops/, the drill included) get every adapter they talk to from a function here,
and construct none themselves (tests/foundation/test_composition_point.py checks it), so "where is X built?" has
one answer and a new adapter, vector store or embedding provider is wired once (the registry in
adapters/vector_stores.py knows how to open a store; this module decides which parts a command needs).

Each factory is a thin call of the adapter's own constructor: the behaviour (retries, timeouts, TLS, errors)
stays in the adapter. Adapters are imported inside the functions: importing this module costs no SDK (boto3,
psycopg, httpx, redis, torch), so a command pays only for the systems it reaches.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drtool.config import EmbeddingSettings, PostgresSettings, S3Settings, Settings

if TYPE_CHECKING:
    import redis

    from drtool.adapters.dify_embedding_cache import DifyMetadata
    from drtool.adapters.dify_metadata import DifyReader
    from drtool.adapters.minio_admin import MinioAdmin
    from drtool.adapters.s3 import BucketStore
    from drtool.core.ports import Embedder, VectorStore


# --- object storage -----------------------------------------------------------------------------------------------

def s3_client(s3: S3Settings, *, max_attempts: int | None = None, connect_timeout: float | None = None,
              read_timeout: float | None = None) -> Any:
    """A boto3 S3 client for `s3` (tries and timeouts default to the s3 section's). For the callers that still
    speak to a client (snapshot copies, site checks); a new operation takes a store from `bucket_over`."""
    from drtool.adapters import s3 as s3a  # why: boto3 only for commands that reach S3

    return s3a.make_client(s3, max_attempts=max_attempts, connect_timeout=connect_timeout, read_timeout=read_timeout)


def anonymous_s3_client(s3: S3Settings) -> Any:
    """A client sending unsigned requests (one try), as anyone on the network could: `audit`'s public-bucket probe."""
    from drtool.adapters import s3 as s3a  # why: boto3 only for commands that reach S3

    return s3a.make_anonymous_client(s3)


def bucket_store(s3: S3Settings, *, client: Any | None = None) -> BucketStore:
    """The ObjectStore port on `s3.bucket` below `s3.key_prefix`; on `client` when one is already open."""
    from drtool.adapters import s3 as s3a  # why: boto3 only for commands that reach S3

    return s3a.BucketStore(s3, client=client)


def dify_bucket(settings: Settings) -> BucketStore:
    """Dify's bucket (s3.bucket below s3.key_prefix): the files, chunk files, ledgers and sidecar cache."""
    return bucket_store(settings.s3)


def bucket_over(client: Any, bucket: str, *, prefix: str = "") -> BucketStore:
    """The ObjectStore port on a client made elsewhere (a snapshot destination's, a replication site's), keys
    whole below `prefix`."""
    from drtool.adapters import s3 as s3a  # why: boto3 only for commands that reach S3

    return s3a.BucketStore.over(client, bucket, prefix=prefix)


def minio_admin(alias: str, endpoint: str, access_key: str | None, secret_key: str | None, *,
                region: str = "us-east-1", verify: bool | str = True, timeout: float = 15,
                clock_offset: dt.timedelta = dt.timedelta(0)) -> MinioAdmin:
    """One site's MinIO admin API (replication info and status, health); `alias` names the site in messages."""
    from drtool.adapters.minio_admin import MinioAdmin  # why: botocore's signer only for MinIO admin calls

    return MinioAdmin(alias, endpoint, access_key, secret_key, region=region, verify=verify, timeout=timeout,
                      clock_offset=clock_offset)


# --- Dify's database ----------------------------------------------------------------------------------------------

def dify_reader(pg: PostgresSettings) -> DifyReader:
    """One consistent read-only snapshot of Dify's knowledge-base tables for a whole run (export, verify, audit)."""
    from drtool.adapters.dify_metadata import DifyReader  # why: psycopg only for commands that read Dify's database

    return DifyReader(pg)


def dify_metadata(pg: PostgresSettings) -> DifyMetadata:
    """Dify's `datasets` rows and `embeddings` cache on one autocommit connection, as a rebuild reads them."""
    from drtool.adapters.dify_embedding_cache import DifyMetadata  # why: psycopg only when Postgres is configured

    return DifyMetadata(pg)


# --- vectors, embeddings, cache -----------------------------------------------------------------------------------

def vector_store(settings: Settings, name: str | None = None) -> VectorStore:
    """An open store of backend `name` (default vector.store), through the registry; ConfigError (2) when that
    backend is not configured."""
    from drtool.adapters import vector_stores  # why: its entries import pymilvus / weaviate / psycopg when opened

    return vector_stores.open_store(settings, name)


def embedder(embedding: EmbeddingSettings) -> Embedder:
    """The embedding provider embedding.provider names: an OpenAI-compatible endpoint or a local model."""
    from drtool.adapters.embedders import make_embedder  # why: httpx (and torch for a local model) stay out of --help

    return make_embedder(embedding)


def redis_client(url: str) -> redis.Redis:
    """A client of Dify's Redis. Operations pass the URL to `redis_cache.delete_indexing_keys`, which opens its
    own; this is for a new use that needs the client itself."""
    from drtool.adapters import redis_cache  # why: the redis SDK only when Redis is configured

    return redis_cache.connect(url)


# --- a rebuild's parts --------------------------------------------------------------------------------------------

@dataclass
class RebuildParts:
    """What a rebuild or an annotation rebuild reads from and writes to; close() releases all of it."""

    store: Any  # drtool.adapters.s3.BucketStore: the chunk files, the ledger and the sidecar cache
    target: Any  # a VectorStore (drtool.core.ports), None for a run that writes no vectors
    embedder: Any  # drtool.core.ports.Embedder
    meta: Any  # drtool.adapters.dify_embedding_cache.DifyMetadata, None without Postgres

    def close(self) -> None:
        for part in (self.target, self.embedder, self.meta):
            if part is not None:
                part.close()


def rebuild_parts(settings: Settings, *, need_target: bool = True, probe: bool = True,
                  metadata: bool | None = None) -> RebuildParts:
    """Open a rebuild's parts from settings.

    `probe` reaches the bucket before a model is loaded (seconds of imports and weights), so bad credentials fail
    at once. `metadata` None: Dify's Postgres is read when any postgres.* setting is set (it says which datasets
    are economy and which model Dify used); the drill always has its scratch database.
    """
    store = dify_bucket(settings)
    if probe:
        store.probe()
    target = vector_store(settings) if need_target else None
    model = embedder(settings.embedding)
    if metadata is None:
        metadata = any(k.startswith("postgres.") and settings.is_set(k) for k in settings.sources)
    meta = dify_metadata(settings.postgres) if metadata else None
    return RebuildParts(store=store, target=target, embedder=model, meta=meta)

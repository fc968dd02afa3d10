"""The rule table behind drtool/core/dify_keys.py: which family a Dify `docker/.env` key belongs to, and why drtool
does not use it (or, for a selector, what it decides).

Each rule is (key pattern, family, reason), first match wins; a reason is a fixed text or a function of the
selectors read from the .env (`KeyContext`). Values are never copied into a reason (they may be secrets), only the
selector values (storage type, scheme, store, DB type).

Key names and layouts read from Dify 1.13.3 (langgenius/dify commit 0055b983dc32deacc31351c13a555055ffc9b844,
docker/.env.example).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from drtool.core.ports import VECTOR_STORES

# Object storage Dify can be configured with whose objects drtool cannot read (not an S3 API).
UNREADABLE_STORAGE: frozenset[str] = frozenset({
    "local", "azure-blob", "google-storage", "aliyun-oss", "tencent-cos", "huawei-obs", "baidu-obs",
    "oci-storage", "volcengine-tos", "supabase", "clickzetta-volume",
})

# Vector stores whose collections drtool can rebuild and verify: the registry's names (one list, core.ports).
REBUILDABLE_STORES: frozenset[str] = frozenset(VECTOR_STORES)

NOT_COVERED = "not covered yet (issue #13)"


@dataclass(frozen=True)
class KeyContext:
    """The selectors of the .env a reason depends on (built by dify_keys.account_keys)."""

    storage: str
    scheme: str
    store: str
    db_type: str
    archive_enabled: bool
    plugin_storage: str = "local"  # PLUGIN_STORAGE_TYPE
    plugin_in_dify_bucket: bool = False  # plugin storage is s3.bucket on s3.endpoint, at the bucket root


Reason = str | Callable[[KeyContext, str], str]

# --- who owns a prefix ---------------------------------------------------------------------------------------------

# STORAGE_TYPE value -> key pattern of its settings (Dify's api/configs/middleware/storage/*).
_STORAGE_PROVIDERS: dict[str, str] = {
    "azure-blob": r"AZURE_BLOB_.*",
    "google-storage": r"GOOGLE_STORAGE_.*",
    "aliyun-oss": r"ALIYUN_OSS_.*|ALIYUN_CLOUDBOX_ID",
    "tencent-cos": r"TENCENT_COS_.*",
    "oci-storage": r"OCI_.*",
    "huawei-obs": r"HUAWEI_OBS_.*",
    "volcengine-tos": r"VOLCENGINE_TOS_.*",
    "baidu-obs": r"BAIDU_OBS_.*",
    "supabase": r"SUPABASE_.*",
    "clickzetta-volume": r"CLICKZETTA_VOLUME_.*",
}

# VECTOR_STORE value(s) -> key pattern of its client settings (Dify's api/configs/middleware/vdb/*).
_OTHER_STORES: dict[tuple[str, ...], str] = {
    ("oceanbase", "seekdb"): r"OCEANBASE_.*|SEEKDB_.*",
    ("qdrant",): r"QDRANT_.*",
    ("myscale",): r"MYSCALE_.*",
    ("couchbase",): r"COUCHBASE_.*",
    ("hologres",): r"HOLOGRES_.*",
    ("vastbase",): r"VASTBASE_.*",
    ("pgvecto-rs",): r"PGVECTO_RS_.*",
    ("analyticdb",): r"ANALYTICDB_.*",
    ("tidb_vector",): r"TIDB_VECTOR_.*",
    ("matrixone",): r"MATRIXONE_.*",
    ("tidb_on_qdrant",): r"TIDB_ON_QDRANT_.*|TIDB_.*|CREATE_TIDB_SERVICE_JOB_ENABLED|ENABLE_(CREATE|UPDATE)_TIDB_.*",
    ("chroma",): r"CHROMA_.*",
    ("oracle",): r"ORACLE_.*",
    ("alibabacloud_mysql",): r"ALIBABACLOUD_MYSQL_.*",
    ("relyt",): r"RELYT_.*",
    ("opensearch",): r"OPENSEARCH_.*",
    ("tencent",): r"TENCENT_VECTOR_DB_.*",
    ("elasticsearch", "elasticsearch-ja"): r"ELASTICSEARCH_.*|KIBANA_PORT",
    ("baidu",): r"BAIDU_VECTOR_DB_.*",
    ("vikingdb",): r"VIKINGDB_.*",
    ("lindorm",): r"LINDORM_.*",
    ("opengauss",): r"OPENGAUSS_.*",
    ("huawei_cloud",): r"HUAWEI_CLOUD_.*",
    ("upstash",): r"UPSTASH_VECTOR_.*",
    ("tablestore",): r"TABLESTORE_.*",
    ("clickzetta",): r"CLICKZETTA_.*",
    ("iris",): r"IRIS_.*",
}

# Keys that configure a container of Dify's docker-compose file (server side), not how Dify connects to it.
_CONTAINER_ONLY = {
    "weaviate": r"WEAVIATE_(PERSISTENCE_DATA_PATH|QUERY_DEFAULTS_LIMIT|AUTHENTICATION_.*|AUTHORIZATION_.*|"
                r"DEFAULT_VECTORIZER_MODULE|CLUSTER_HOSTNAME|DISABLE_TELEMETRY|ENABLE_TOKENIZER_.*)",
    "milvus": r"ETCD_.*|MILVUS_AUTHORIZATION_ENABLED",
    "pgvector": r"PGVECTOR_(PGUSER|POSTGRES_PASSWORD|POSTGRES_DB|PGDATA)",
    "chroma": r"CHROMA_(SERVER_AUTHN_CREDENTIALS|SERVER_AUTHN_PROVIDER|IS_PERSISTENT)",
    "oracle": r"ORACLE_(PWD|CHARACTERSET)",
    "opensearch": r"OPENSEARCH_(DISCOVERY_TYPE|BOOTSTRAP_MEMORY_LOCK|JAVA_OPTS_.*|INITIAL_ADMIN_PASSWORD|MEMLOCK_.*|"
                  r"NOFILE_.*)",
    "oceanbase": r"OCEANBASE_(CLUSTER_NAME|MEMORY_LIMIT)|SEEKDB_MEMORY_LIMIT",
}

# --- reasons -------------------------------------------------------------------------------------------------------


def _storage_selector(ctx: KeyContext, key: str) -> str:
    if ctx.storage == "s3":
        return "STORAGE_TYPE=s3: Dify's files are mapped from S3_*"
    if ctx.storage == "opendal":
        return f"STORAGE_TYPE=opendal: the OpenDAL scheme decides (OPENDAL_SCHEME={ctx.scheme})"
    if ctx.storage in UNREADABLE_STORAGE:
        return f"STORAGE_TYPE={ctx.storage}: drtool cannot read this storage: Dify's files are NOT PROTECTED"
    return f"STORAGE_TYPE={ctx.storage}: unknown to drtool: Dify's files are NOT PROTECTED unless s3.* is set"


def _opendal_scheme(ctx: KeyContext, key: str) -> str:
    if ctx.storage != "opendal":
        return f"read by Dify only when STORAGE_TYPE=opendal (STORAGE_TYPE={ctx.storage} here)"
    if ctx.scheme == "s3":
        return "OPENDAL_SCHEME=s3: Dify's files are mapped from OPENDAL_S3_*"
    return (f"OPENDAL_SCHEME={ctx.scheme}: drtool reads S3-compatible storage only: Dify's files are NOT "
            "PROTECTED")


def _opendal_option(ctx: KeyContext, key: str) -> str:
    scheme = key.removeprefix("OPENDAL_").split("_", 1)[0].lower()
    if ctx.storage != "opendal" or ctx.scheme != scheme:
        return (f"read by Dify only when STORAGE_TYPE=opendal and OPENDAL_SCHEME={scheme} "
                f"(STORAGE_TYPE={ctx.storage}, OPENDAL_SCHEME={ctx.scheme} here)")
    if scheme == "s3":
        return "an OpenDAL S3 option drtool has no setting for; check that s3.* still reads Dify's objects"
    if scheme == "fs":
        return "Dify's files are on the api container's local disk, which drtool cannot read: NOT PROTECTED"
    return f"OpenDAL scheme {scheme} is not S3: drtool cannot read it: NOT PROTECTED"


def _opendal_root(ctx: KeyContext, key: str) -> str:
    """Only reached when not mapped: OPENDAL_S3_ROOT is s3.key_prefix whenever it has a value."""
    if ctx.storage != "opendal" or ctx.scheme != "s3":
        return _opendal_option(ctx, key)
    return "empty here: s3.key_prefix stays empty (Dify's objects are at the bucket root)"


def _s3_option(ctx: KeyContext, key: str) -> str:
    if ctx.storage != "s3":
        return f"read by Dify only when STORAGE_TYPE=s3 (STORAGE_TYPE={ctx.storage} here)"
    return "an option of Dify's S3 client drtool has no setting for"


def _provider(storage: str) -> Reason:
    def reason(ctx: KeyContext, key: str) -> str:
        if ctx.storage == storage:
            return f"Dify stores its files in {storage}, which drtool cannot read: NOT PROTECTED"
        return f"read by Dify only when STORAGE_TYPE={storage} (STORAGE_TYPE={ctx.storage} here)"
    return reason


def _archive(ctx: KeyContext, key: str) -> str:
    """Archive storage (api/libs/archive_storage.py): workflow runs Dify moved out of Postgres, in their own bucket
    with their own endpoint and credentials. Mapped (snapshot.archive_storage_*) only when enabled."""
    if not ctx.archive_enabled:
        return ("archive storage is disabled here (ARCHIVE_STORAGE_ENABLED is not true): Dify keeps workflow runs "
                "in the main database, which snapshots cover")
    if key == "ARCHIVE_STORAGE_ENABLED":
        return "true: snapshots pin the archive bucket (snapshot.archive_storage_*) as the extra store `archive`"
    if key == "ARCHIVE_STORAGE_EXPORT_BUCKET":
        return ("the export bucket holds download copies Dify makes on request from archived runs: not pinned "
                "(the archive bucket they are made from is)")
    return "empty here: the snapshot.archive_storage_* default applies"


def _db_selector(ctx: KeyContext, key: str) -> str:
    if ctx.db_type in ("postgresql", "postgres"):
        return "DB_TYPE=postgresql: the main database is mapped from DB_*"
    return f"DB_TYPE={ctx.db_type}: drtool supports PostgreSQL metadata only: the main database is NOT PROTECTED"


def _db_connection(ctx: KeyContext, key: str) -> str:
    if ctx.db_type not in ("postgresql", "postgres"):
        return f"DB_TYPE={ctx.db_type}: drtool supports PostgreSQL metadata only: NOT PROTECTED"
    return "empty here: the postgres.* default or another source applies"


def _vector_selector(ctx: KeyContext, key: str) -> str:
    if not ctx.store:
        return "empty: no vector store selected; vector.store must be set for rebuild-index and verify"
    if ctx.store in REBUILDABLE_STORES:
        return f"VECTOR_STORE={ctx.store}: not mapped by this drtool build; set vector.store explicitly"
    return (f"VECTOR_STORE={ctx.store}: drtool rebuilds and verifies "
            f"{', '.join(sorted(REBUILDABLE_STORES))} only: this index is NOT PROTECTED (Dify's own "
            "`flask vdb-migrate` cannot rebuild it on the same backend either)")


def _supported_store(store: str, what: str) -> Reason:
    def reason(ctx: KeyContext, key: str) -> str:
        if ctx.store and ctx.store != store:
            return f"read by Dify only when VECTOR_STORE={store} (VECTOR_STORE={ctx.store} here)"
        return what
    return reason


def _other_store(stores: tuple[str, ...]) -> Reason:
    def reason(ctx: KeyContext, key: str) -> str:
        if ctx.store in stores:
            return f"VECTOR_STORE={ctx.store}: drtool cannot rebuild or verify {ctx.store} indexes: NOT PROTECTED"
        return (f"read by Dify only when VECTOR_STORE={'|'.join(stores)} "
                f"(VECTOR_STORE={ctx.store or 'unset'} here)")
    return reason


def _container(service: str) -> str:
    return (f"configures the {service} container of Dify's docker-compose, not how Dify connects to it: nothing "
            "to map (the index is derived data: drtool rebuilds it, it does not back up the volume)")


def _plugin_storage(ctx: KeyContext, key: str) -> str:
    """Plugin storage holds installed packages (plugin/), uploads (plugin_packages/), plugin key-value state
    (persistence/) and icons (assets/): a restored Dify without them has no model provider, so cannot embed."""
    if ctx.plugin_storage != "aws_s3":
        return (f"PLUGIN_STORAGE_TYPE={ctx.plugin_storage}: the plugin daemon keeps installed plugins and their "
                "key-value storage where drtool cannot read them (local: the plugin_daemon volume, "
                "docker/volumes/plugin_daemon): NOT PROTECTED by snapshots; back that volume up, or use "
                "PLUGIN_STORAGE_TYPE=aws_s3 (Dify's bucket or any other S3 bucket: snapshots pin it)")
    if key == "PLUGIN_STORAGE_OSS_BUCKET":
        return "empty here: the plugin storage bucket is not known, so snapshots do not pin it"
    if key in ("PLUGIN_S3_ENDPOINT", "PLUGIN_AWS_REGION", "PLUGIN_AWS_ACCESS_KEY", "PLUGIN_AWS_SECRET_KEY"):
        return "empty here: the snapshot.plugin_storage_* default (s3.*) applies"
    where = "in Dify's bucket" if ctx.plugin_in_dify_bucket else "as the extra store `plugin` (its own manifest)"
    return ("an option of the plugin daemon's own S3 client drtool has no setting for: snapshots pin its prefixes "
            f"(snapshot.plugin_storage_prefixes) {where}, path-style on a custom endpoint")


_PLUGIN_STORAGE = _plugin_storage

# --- the table -----------------------------------------------------------------------------------------------------
# (key pattern, family, reason), first match wins: specific rules before a family's catch-all.

_RULES: list[tuple[str, str, Reason]] = [
    # storage
    ("STORAGE_TYPE", "storage", _storage_selector),
    ("OPENDAL_SCHEME", "storage", _opendal_scheme),
    ("OPENDAL_S3_ROOT", "storage", _opendal_root),
    (r"OPENDAL_.*", "storage", _opendal_option),
    (r"S3_.*", "storage", _s3_option),
    (r"ARCHIVE_STORAGE_.*", "storage", _archive),
    *((pattern, "storage", _provider(storage)) for storage, pattern in _STORAGE_PROVIDERS.items()),
    (r"PLUGIN_STORAGE_.*|PLUGIN_S3_.*|PLUGIN_AWS_.*|PLUGIN_AZURE_BLOB_.*|PLUGIN_TENCENT_COS_.*|PLUGIN_ALIYUN_OSS_.*|"
     r"PLUGIN_VOLCENGINE_TOS_.*|PLUGIN_(WORKING|INSTALLED)_PATH|PLUGIN_(PACKAGE|MEDIA)_CACHE_PATH",
     "storage", _PLUGIN_STORAGE),
    ("WORKFLOW_NODE_EXECUTION_STORAGE", "storage",
     "rdbms (default) keeps workflow node executions in the main database, which snapshots cover; hybrid is not "
     "an implemented backend in Dify's source (api/repositories/repository_registry.py raises NotImplementedError "
     "for it); node inputs and outputs too large for a row are offloaded as upload_files rows in Dify's bucket "
     "(api/models/workflow.py, WorkflowNodeExecutionOffload.file_id), which snapshots pin by reference"),
    # database
    ("DB_TYPE", "database", _db_selector),
    ("DB_PLUGIN_DATABASE", "database",
     "plugin database (the plugin daemon's installations, model providers, endpoints) not mapped (DB_TYPE is not "
     "postgresql): snapshots do not dump it: NOT PROTECTED"),
    (r"DB_(HOST|PORT|USERNAME|PASSWORD|DATABASE)", "database", _db_connection),
    (r"SQLALCHEMY_.*", "database", "connection-pool tuning of Dify's own client: drtool opens its own connections"),
    (r"POSTGRES_.*|PGDATA", "database",
     "tuning or data directory of the db_postgres container: not how anyone connects; nothing to map"),
    (r"MYSQL_.*", "database", "the MySQL container (DB_TYPE=mysql): drtool supports PostgreSQL metadata only"),
    (r"ALIYUN_SLS_.*|LOGSTORE_.*", "database",
     f"Aliyun SLS Logstore for workflow run logs (used only with the Logstore repositories): {NOT_COVERED}"),
    (r"(CORE|API)_WORKFLOW_(NODE_)?(EXECUTION|RUN)_REPOSITORY", "database",
     "where workflow runs are kept: the default SQLAlchemy repositories keep them in the main database, which "
     f"snapshots cover; the Logstore repositories keep them in Aliyun SLS: {NOT_COVERED}"),
    # redis
    (r"REDIS_(PORT|USERNAME|PASSWORD|DB|USE_SSL)", "redis",
     "feeds redis.url only when REDIS_HOST is set, and it is not set here"),
    ("REDIS_HOST", "redis", "empty here: redis.url stays unset"),
    (r"REDIS_SSL_.*", "redis",
     "TLS files of Dify's Redis client; drtool's redis.url has no such option (rediss:// uses the system CAs)"),
    (r"REDIS_(USE_SENTINEL|SENTINEL.*|USE_CLUSTERS|CLUSTERS.*)", "redis",
     "Sentinel or Cluster mode: drtool connects to REDIS_HOST only; otherwise set redis.url to the master"),
    ("REDIS_MAX_CONNECTIONS", "redis", "connection-pool size of Dify's client"),
    (r"CELERY_BROKER_URL|CELERY_BACKEND|BROKER_USE_SSL|CELERY_USE_SENTINEL|CELERY_SENTINEL_.*|EVENT_BUS_REDIS_.*",
     "redis", "Celery task queue and event bus: transient, nothing to restore (tasks queued at the moment of the "
              "disaster are lost; re-run indexing for documents stuck in 'indexing')"),
    # vector stores
    ("VECTOR_STORE", "vector store", _vector_selector),
    ("VECTOR_INDEX_NAME_PREFIX", "vector store", "empty here: vector.index_prefix keeps its default"),
    ("COMPOSE_PROFILES", "vector store",
     "docker-compose profiles, derived from VECTOR_STORE and DB_TYPE: which containers start, nothing to map"),
    (r"MINIO_ACCESS_KEY|MINIO_SECRET_KEY|MINIO_ADDRESS", "vector store",
     "the MinIO inside Dify's milvus compose profile, where Milvus keeps its segments: not Dify's file storage, "
     "nothing to map (the index is derived data: drtool rebuilds it)"),
    *((pattern, "vector store", _container(service)) for service, pattern in _CONTAINER_ONLY.items()),
    (r"WEAVIATE_.*", "vector store", _supported_store(
        "weaviate", "an option of Dify's Weaviate client drtool has no setting for (or empty here)")),
    (r"MILVUS_.*", "vector store", _supported_store(
        "milvus", "an option of Dify's Milvus client drtool has no setting for (or empty here)")),
    (r"PGVECTOR_(MIN|MAX)_CONNECTION", "vector store", _supported_store(
        "pgvector", "connection-pool size of Dify's pgvector client: drtool opens its own connections")),
    ("PGVECTOR_INDEX_TYPE", "vector store", _supported_store(
        "pgvector", "index type of Dify's pgvector tables: drtool builds Dify's HNSW index (a note says so when "
                    "this differs)")),
    ("PGVECTOR_PG_BIGM_VERSION", "vector store", _supported_store(
        "pgvector", "version of pg_bigm installed in Dify's pgvector image: a container build detail")),
    (r"PGVECTOR_.*", "vector store", _supported_store(
        "pgvector", "not mapped from the Dify .env by this drtool build: set pgvector.* explicitly (or empty here)")),
    *((pattern, "vector store", _other_store(stores)) for stores, pattern in _OTHER_STORES.items()),
    ("ENABLE_CLEAN_UNUSED_DATASETS_TASK", "vector store",
     "Dify's job that disables knowledge bases unused for a while and removes their vector index; Dify re-indexes "
     "them when they are used again, so drtool's verify then finds nothing to expect for their documents"),
    # embedding models
    ("ENABLE_CLEAN_EMBEDDING_CACHE_TASK", "embedding model",
     "Dify's job that prunes its embedding cache: the cache is derived data; vectors it no longer holds are "
     "re-embedded by drtool's rebuild (model cost, not loss)"),
    ("OPENAI_API_BASE", "embedding model",
     "legacy base URL of Dify's built-in OpenAI provider; embedding models are configured per workspace and their "
     "credentials live in the main database (decrypted with privkeys/<tenant>/private.pem): set embedding.* for "
     "drtool's rebuild"),
    # catch-alls: a family's key this table does not know yet is still listed
    (r"DB_.*", "database", ""),
    (r"REDIS_.*", "redis", ""),
    (r".*_VECTOR_.*|.*VECTOR_STORE.*", "vector store", ""),
    (r".*STORAGE.*|.*_BUCKET.*", "storage", ""),
    (r".*EMBEDDING.*", "embedding model", ""),
]

COMPILED_RULES = [(re.compile(pattern), family, reason) for pattern, family, reason in _RULES]

"""Map the variables of a Dify `docker/.env` onto drtool settings.

The mapping follows Dify's own configuration (shared reference: dify.md). Values keep the name of the Dify
variable they came from, so `drtool config show` can say `dify-env:S3_ENDPOINT` and an invalid value names
the line the operator has to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from drtool.core.dify_keys import KeyAccount, account_keys
from drtool.core.ports import VECTOR_STORES

# STORAGE_TYPE values that are not an S3 API drtool can read.
_UNREADABLE_STORAGE = {
    "local", "azure-blob", "google-storage", "aliyun-oss", "tencent-cos", "huawei-obs", "baidu-obs",
    "oci-storage", "volcengine-tos", "supabase", "clickzetta-volume",
}


@dataclass
class DifyMapping:
    values: dict[str, tuple[str, str]] = field(default_factory=dict)  # setting -> (value, dify variable)
    storage_problem: str | None = None
    notes: list[str] = field(default_factory=list)
    # Every database/storage/vector/embedding key of the file: mapped, read, or not used and why (dify_keys).
    keys: list[KeyAccount] = field(default_factory=list)
    # Dify variable -> the setting it would feed: an empty one is reported as such, not as unknown.
    consulted: dict[str, str] = field(default_factory=dict)

    def put(self, setting: str, env: Mapping[str, str], var: str, value: str | None = None) -> None:
        self.consulted.setdefault(var, setting)
        raw = env.get(var) if value is None else value
        if raw is not None and raw != "":
            self.values[setting] = (raw, var)


def map_dify_env(env: Mapping[str, str], host_map: Mapping[str, str] | None = None) -> DifyMapping:
    """Translate Dify's variables; `host_map` replaces docker-compose service names (db_postgres → 10.0.0.5)."""
    hosts = dict(host_map or {})
    env = {k: _rehost(v, hosts) if k in _HOST_VARS else v for k, v in env.items()}
    out = DifyMapping()
    _map_storage(env, out)
    _map_postgres(env, out)
    _map_plugin_storage(env, out)
    _map_archive_storage(env, out)
    _map_vector(env, out)
    _map_redis(env, out)
    out.keys = account_keys(env, out.values, out.consulted)
    return out


_HOST_VARS = {
    "S3_ENDPOINT", "OPENDAL_S3_ENDPOINT", "DB_HOST", "WEAVIATE_ENDPOINT", "WEAVIATE_GRPC_ENDPOINT",
    "MILVUS_URI", "REDIS_HOST", "PGVECTOR_HOST", "PLUGIN_S3_ENDPOINT", "ARCHIVE_STORAGE_ENDPOINT",
}


def _rehost(value: str, hosts: Mapping[str, str]) -> str:
    """Replace the host of a bare host, `host:port` or URL; user info, port, path and query stay as they are.

    Only the host part is touched: a text replace would also hit a user name equal to the host
    (`http://milvus:pw@milvus:19530`). Host names compare case-insensitively, like DNS; an IPv6 replacement
    gets the brackets a URL needs.
    """
    if not hosts or not value:
        return value
    if value in hosts:
        return hosts[value]
    bare = "://" not in value
    try:
        parts = urlsplit(f"//{value}" if bare else value)
        hostname = parts.hostname
    except ValueError:  # not a URL (e.g. an unbalanced IPv6 bracket): leave it for validation to report
        return value
    lowered = {name.lower(): host for name, host in hosts.items()}
    if not hostname or hostname.lower() not in lowered:
        return value
    new_host = lowered[hostname.lower()]
    if ":" in new_host and not new_host.startswith("["):
        new_host = f"[{new_host}]"
    userinfo, at, hostport = parts.netloc.rpartition("@")  # the split urlsplit itself uses for .hostname
    if hostport.startswith("["):
        port_part = hostport[hostport.find("]") + 1:]
    else:
        port_part = hostport[hostport.find(":"):] if ":" in hostport else ""
    netloc = f"{userinfo}{at}{new_host}{port_part}"
    start = 0 if bare else value.index("://") + 3
    if value[start:start + len(parts.netloc)] == parts.netloc:  # splice, so nothing else is re-encoded
        return value[:start] + netloc + value[start + len(parts.netloc):]
    rebuilt = urlunsplit(parts._replace(netloc=netloc))  # urlsplit dropped characters (tabs, newlines)
    return rebuilt.removeprefix("//") if bare else rebuilt


def _map_storage(env: Mapping[str, str], out: DifyMapping) -> None:
    storage = (env.get("STORAGE_TYPE") or "opendal").strip().lower()
    if storage == "s3":
        for setting, var in (
            ("s3.endpoint", "S3_ENDPOINT"), ("s3.region", "S3_REGION"), ("s3.bucket", "S3_BUCKET_NAME"),
            ("s3.access_key", "S3_ACCESS_KEY"), ("s3.secret_key", "S3_SECRET_KEY"),
            ("s3.address_style", "S3_ADDRESS_STYLE"),
            ("s3.use_instance_credentials", "S3_USE_AWS_MANAGED_IAM"),
        ):
            out.put(setting, env, var)
        return
    if storage == "opendal":
        scheme = (env.get("OPENDAL_SCHEME") or "fs").strip().lower()
        if scheme != "s3":
            out.storage_problem = (
                f"Dify stores files with OpenDAL scheme '{scheme}' (STORAGE_TYPE=opendal, OPENDAL_SCHEME={scheme}); "
                "drtool reads S3-compatible storage only: switch Dify to OPENDAL_SCHEME=s3 or STORAGE_TYPE=s3, "
                "or set s3.* explicitly"
            )
            return
        for setting, var in (
            ("s3.endpoint", "OPENDAL_S3_ENDPOINT"), ("s3.region", "OPENDAL_S3_REGION"),
            ("s3.bucket", "OPENDAL_S3_BUCKET"), ("s3.access_key", "OPENDAL_S3_ACCESS_KEY_ID"),
            ("s3.secret_key", "OPENDAL_S3_SECRET_ACCESS_KEY"),
        ):
            out.put(setting, env, var)
        root = (env.get("OPENDAL_S3_ROOT") or "").strip().strip("/")
        if root:
            out.put("s3.key_prefix", env, "OPENDAL_S3_ROOT", root + "/")
        # OpenDAL talks path-style to custom endpoints, which is what MinIO needs.
        out.values.setdefault("s3.address_style", ("path", "OPENDAL_SCHEME"))
        return
    if storage in _UNREADABLE_STORAGE:
        out.storage_problem = (
            f"Dify stores files in STORAGE_TYPE={storage}, which is not S3-compatible; drtool reads S3-compatible "
            "object storage only (MinIO, SeaweedFS, AWS S3, ...)"
        )
        return
    out.storage_problem = f"unknown Dify STORAGE_TYPE '{storage}'; set s3.* explicitly"


def _map_postgres(env: Mapping[str, str], out: DifyMapping) -> None:
    db_type = (env.get("DB_TYPE") or "postgresql").strip().lower()
    if db_type not in ("postgresql", "postgres"):
        out.notes.append(f"DB_TYPE={db_type}: drtool supports PostgreSQL metadata only")
        return
    for setting, var in (
        ("postgres.host", "DB_HOST"), ("postgres.port", "DB_PORT"), ("postgres.user", "DB_USERNAME"),
        ("postgres.password", "DB_PASSWORD"), ("postgres.database", "DB_DATABASE"),
        # The plugin daemon's database: same server and credentials, only the name differs (Dify's compose sets
        # the daemon's DB_DATABASE to ${DB_PLUGIN_DATABASE:-dify_plugin}; dify-plugin-daemon has no other keys).
        ("postgres.plugin_database", "DB_PLUGIN_DATABASE"),
    ):
        out.put(setting, env, var)


def _map_plugin_storage(env: Mapping[str, str], out: DifyMapping) -> None:
    """The plugin daemon's S3 storage (PLUGIN_STORAGE_TYPE=aws_s3): snapshots pin its prefixes, in Dify's own
    bucket or, anywhere else, as the extra store `plugin` with the daemon's own endpoint and credentials. Any other
    type (local, the default, on the plugin_daemon volume) is not mapped: drtool cannot read it, and `config show`
    says so (dify_keys)."""
    if (env.get("PLUGIN_STORAGE_TYPE") or "local").strip().lower() != "aws_s3":
        return
    for setting, var in (
        ("snapshot.plugin_storage_bucket", "PLUGIN_STORAGE_OSS_BUCKET"),
        ("snapshot.plugin_storage_endpoint", "PLUGIN_S3_ENDPOINT"),
        ("snapshot.plugin_storage_region", "PLUGIN_AWS_REGION"),
        ("snapshot.plugin_storage_access_key", "PLUGIN_AWS_ACCESS_KEY"),
        ("snapshot.plugin_storage_secret_key", "PLUGIN_AWS_SECRET_KEY"),
    ):
        out.put(setting, env, var)


def _map_archive_storage(env: Mapping[str, str], out: DifyMapping) -> None:
    """Dify's archive storage (ARCHIVE_STORAGE_ENABLED=true): the bucket Dify moves old workflow runs to, out of
    Postgres (api/libs/archive_storage.py, ArchiveStorageConfig in api/configs/extra/archive_config.py). Snapshots
    pin it whole as the extra store `archive`. The export bucket (download copies Dify makes on request) is not."""
    if (env.get("ARCHIVE_STORAGE_ENABLED") or "").strip().lower() != "true":
        return
    for setting, var in (
        ("snapshot.archive_storage_bucket", "ARCHIVE_STORAGE_ARCHIVE_BUCKET"),
        ("snapshot.archive_storage_endpoint", "ARCHIVE_STORAGE_ENDPOINT"),
        ("snapshot.archive_storage_region", "ARCHIVE_STORAGE_REGION"),
        ("snapshot.archive_storage_access_key", "ARCHIVE_STORAGE_ACCESS_KEY"),
        ("snapshot.archive_storage_secret_key", "ARCHIVE_STORAGE_SECRET_KEY"),
    ):
        out.put(setting, env, var)


def _map_vector(env: Mapping[str, str], out: DifyMapping) -> None:
    store = (env.get("VECTOR_STORE") or "").strip().lower()
    if store:
        if store in VECTOR_STORES:
            out.put("vector.store", env, "VECTOR_STORE", store)
        else:
            out.notes.append(f"VECTOR_STORE={store}: drtool rebuilds {', '.join(VECTOR_STORES)} indexes only")
    out.put("vector.index_prefix", env, "VECTOR_INDEX_NAME_PREFIX")
    for setting, var in (
        ("weaviate.endpoint", "WEAVIATE_ENDPOINT"), ("weaviate.api_key", "WEAVIATE_API_KEY"),
        ("weaviate.grpc_endpoint", "WEAVIATE_GRPC_ENDPOINT"), ("milvus.uri", "MILVUS_URI"),
        ("milvus.token", "MILVUS_TOKEN"), ("milvus.user", "MILVUS_USER"),
        ("milvus.password", "MILVUS_PASSWORD"), ("milvus.database", "MILVUS_DATABASE"),
        ("milvus.enable_hybrid_search", "MILVUS_ENABLE_HYBRID_SEARCH"),
        ("milvus.analyzer_params", "MILVUS_ANALYZER_PARAMS"),
        # How Dify's weaviate_vector.py creates a collection: drtool creates the same one.
        ("weaviate.tokenization", "WEAVIATE_TOKENIZATION"), ("weaviate.index_type", "WEAVIATE_INDEX_TYPE"),
        ("weaviate.dynamic_threshold", "WEAVIATE_DYNAMIC_INDEX_THRESHOLD"),
        ("weaviate.distance", "WEAVIATE_DISTANCE_METRIC"), ("weaviate.compression", "WEAVIATE_COMPRESSION"),
        ("weaviate.rq_bits", "WEAVIATE_RQ_BITS"), ("weaviate.pq_segments", "WEAVIATE_PQ_SEGMENTS"),
        ("weaviate.pq_training_limit", "WEAVIATE_PQ_TRAINING_LIMIT"),
        ("weaviate.sq_training_limit", "WEAVIATE_SQ_TRAINING_LIMIT"),
        ("weaviate.compression_cache", "WEAVIATE_COMPRESSION_CACHE"),
        ("weaviate.replication_factor", "WEAVIATE_REPLICATION_FACTOR"),
        ("weaviate.multi_tenancy", "WEAVIATE_MULTI_TENANCY_ENABLED"),
        # Dify's pgvector.py (PGVECTOR_MIN/MAX_CONNECTION size Dify's own pool and do not matter here).
        ("pgvector.host", "PGVECTOR_HOST"), ("pgvector.port", "PGVECTOR_PORT"), ("pgvector.user", "PGVECTOR_USER"),
        ("pgvector.password", "PGVECTOR_PASSWORD"), ("pgvector.database", "PGVECTOR_DATABASE"),
        ("pgvector.pg_bigm", "PGVECTOR_PG_BIGM"),
    ):
        out.put(setting, env, var)
    index_type = (env.get("PGVECTOR_INDEX_TYPE") or "hnsw").strip().lower()
    if store == "pgvector" and index_type != "hnsw":
        out.notes.append(f"PGVECTOR_INDEX_TYPE={index_type}: drtool builds Dify's HNSW index; Dify's queries "
                         "work the same on it")


def _map_redis(env: Mapping[str, str], out: DifyMapping) -> None:
    host = env.get("REDIS_HOST")
    if not host:
        return
    scheme = "rediss" if (env.get("REDIS_USE_SSL") or "").lower() == "true" else "redis"
    user = env.get("REDIS_USERNAME") or ""
    password = env.get("REDIS_PASSWORD") or ""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if (user or password) else ""
    url = f"{scheme}://{auth}{host}:{env.get('REDIS_PORT') or '6379'}/{env.get('REDIS_DB') or '0'}"
    out.values["redis.url"] = (url, "REDIS_HOST")

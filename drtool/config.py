"""One settings object for every command.

Precedence, highest first: command-line flags > `DRTOOL_*` environment > `drtool.toml` > Dify `.env`
(`--dify-env`) > defaults. Every value remembers its source so that `drtool config show` can explain it and an
invalid value names the place to fix. The section dataclasses below are the single definition of every
setting: docs/configuration.md is generated from them (`python -m drtool.config`).
"""

from __future__ import annotations

import math
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from drtool.core.dify_env import map_dify_env
from drtool.core.dify_keys import KeyAccount
from drtool.core.dotenv import decode_dotenv, parse_dotenv
from drtool.core.ports import VECTOR_STORES
from drtool.errors import ConfigError
from drtool.redact import register_secret

ENV_PREFIX = "DRTOOL_"
DEFAULT_CONFIG_FILE = "drtool.toml"
# Read when ./drtool.toml is absent: where a package or a config-management tool puts the host's settings.
SYSTEM_CONFIG_FILE = Path("/etc/drtool/drtool.toml")
SECRET_FILE_MAX_BYTES = 64 * 1024


def _opt(default: Any, help: str, *, secret: bool = False, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret, "choices": choices})


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None = _opt(None, "S3 endpoint URL (MinIO, SeaweedFS, ...); empty means AWS S3")
    region: str = _opt("us-east-1", "S3 region used for signing")
    bucket: str | None = _opt(None, "bucket that holds Dify's files and the processed chunks")
    access_key: str | None = _opt(None, "S3 access key id", secret=True)
    secret_key: str | None = _opt(None, "S3 secret access key", secret=True)
    address_style: str = _opt("auto", "S3 addressing style", choices=("auto", "virtual", "path"))
    key_prefix: str = _opt("", "prefix in front of every Dify object key (Dify's OPENDAL_S3_ROOT)")
    use_instance_credentials: bool = _opt(False, "ignore keys and use the AWS default credential chain")
    verify_tls: bool = _opt(True, "verify the endpoint's TLS certificate (turning it off prints a warning)")
    ca_bundle: str | None = _opt(None, "path of a CA bundle for an endpoint with a private CA")
    connect_timeout: int = _opt(10, "seconds to wait for a TCP/TLS connection to the S3 endpoint")
    read_timeout: int = _opt(60, "seconds without a byte from the S3 endpoint before a try is abandoned")
    max_attempts: int = _opt(5, "tries per S3 request (first try included) on timeouts, resets, throttling and 5xx")


@dataclass(frozen=True)
class PostgresSettings:
    host: str = _opt("localhost", "PostgreSQL host")
    port: int = _opt(5432, "PostgreSQL port")
    user: str = _opt("postgres", "PostgreSQL user")
    password: str | None = _opt(None, "PostgreSQL password", secret=True)
    database: str = _opt("dify", "database that holds Dify's metadata")
    sslmode: str = _opt(
        "prefer", "libpq sslmode",
        choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    )
    connect_timeout: int = _opt(10, "seconds to wait for a connection")
    plugin_database: str | None = _opt(None, "the Dify plugin daemon's database (Dify's DB_PLUGIN_DATABASE, e.g. "
                                             "dify_plugin), on this server with this user and password as Dify's "
                                             "docker-compose runs it unless postgres.plugin_host/plugin_user say "
                                             "otherwise; set, every snapshot dumps it too (unset: installed "
                                             "plugins, model providers included, are NOT in snapshots)")
    plugin_host: str | None = _opt(None, "host of the plugin database when the plugin daemon points elsewhere; "
                                         "default: postgres.host")
    plugin_port: int | None = _opt(None, "port of the plugin database's server; default: postgres.port")
    plugin_user: str | None = _opt(None, "user for the plugin database; default: postgres.user (and then "
                                         "postgres.password)")
    plugin_password: str | None = _opt(None, "password of postgres.plugin_user", secret=True)


@dataclass(frozen=True)
class VectorSettings:
    store: str | None = _opt(None, "vector database Dify uses", choices=VECTOR_STORES)
    index_prefix: str = _opt("Vector_index", "Dify's VECTOR_INDEX_NAME_PREFIX, used to name collections")


@dataclass(frozen=True)
class MilvusSettings:
    uri: str | None = _opt(None, "Milvus server URI (http://host:19530) or a Milvus Lite file path")
    token: str | None = _opt(None, "Milvus token (user:password or an API key)", secret=True)
    user: str | None = _opt(None, "Milvus user")
    password: str | None = _opt(None, "Milvus password", secret=True)
    database: str = _opt("default", "Milvus database")
    enable_hybrid_search: bool = _opt(False, "build Dify's full-text (BM25) fields too, as Dify does with "
                                             "MILVUS_ENABLE_HYBRID_SEARCH on Milvus >= 2.5")
    analyzer_params: str | None = _opt(None, "JSON analyzer of the text field for full-text search "
                                             "(Dify's MILVUS_ANALYZER_PARAMS)")


@dataclass(frozen=True)
class WeaviateSettings:
    endpoint: str | None = _opt(None, "Weaviate HTTP endpoint (http://host:8080)")
    grpc_endpoint: str | None = _opt(None, "Weaviate gRPC endpoint (host:50051); default: HTTP host, port 50051")
    api_key: str | None = _opt(None, "Weaviate API key", secret=True)
    timeout: int = _opt(60, "seconds before a Weaviate request (connect check, query; inserts get twice) times out")
    max_attempts: int = _opt(4, "tries per Weaviate connect, read, insert or delete on resets, timeouts and "
                                "unavailability (auth errors are never retried)")
    uuid_scheme: str = _opt("content", "object UUIDs of the Dify that queries the index: content = uuid5(URL, text) "
                                       "(every release to 1.17.x, and lts/1.13.x before the Sept 2026 backport "
                                       "#41961); doc-id = the chunk id, which Dify's delete_by_ids uses (main "
                                       "after PR #41915, and that backport)", choices=("content", "doc-id"))
    switch: str = _opt("copy", "how a rebuild takes Dify's collection name: copy = a real collection filled from the "
                               "verified build (Dify's delete, create and add-property act on it; the name is "
                               "partial while Weaviate indexes the copy: 2-4.5 s per 1,000 objects measured on a "
                               "busy 2-core host); alias = a Weaviate alias, instant, "
                               "but Dify's delete and add-property do nothing or fail on it",
                       choices=("copy", "alias"))
    copy_batch_size: int = _opt(500, "objects per read and per insert when the copy switch fills Dify's name")
    tokenization: str = _opt("word", "tokenization of the text property (Dify's WEAVIATE_TOKENIZATION)",
                             choices=("word", "whitespace", "lowercase", "field", "gse", "trigram", "kagome_ja",
                                      "kagome_kr", "gse_ch"))
    id_tokenization: str = _opt("word", "tokenization of document_id and doc_id: word (Weaviate's default, what Dify "
                                        "declares up to 1.17) or field (Dify builds that declare them FIELD)",
                                choices=("word", "field"))
    index_type: str = _opt("hnsw", "vector index of new collections (Dify's WEAVIATE_INDEX_TYPE)",
                           choices=("hnsw", "flat", "dynamic"))
    dynamic_threshold: int = _opt(10000, "objects at which a dynamic index turns HNSW "
                                         "(Dify's WEAVIATE_DYNAMIC_INDEX_THRESHOLD)")
    distance: str = _opt("cosine", "vector distance (Dify's WEAVIATE_DISTANCE_METRIC)",
                         choices=("cosine", "dot", "l2-squared", "manhattan", "hamming"))
    compression: str = _opt("none", "vector quantization (Dify's WEAVIATE_COMPRESSION); flat takes only bq",
                            choices=("none", "rq", "pq", "bq", "sq"))
    rq_bits: int | None = _opt(None, "bits per dimension of RQ (Dify's WEAVIATE_RQ_BITS); unset: server default")
    pq_segments: int | None = _opt(None, "PQ segments (Dify's WEAVIATE_PQ_SEGMENTS); unset: server default")
    pq_training_limit: int | None = _opt(None, "PQ training set size (Dify's WEAVIATE_PQ_TRAINING_LIMIT)")
    sq_training_limit: int | None = _opt(None, "SQ training set size (Dify's WEAVIATE_SQ_TRAINING_LIMIT)")
    compression_cache: bool | None = _opt(None, "keep compressed vectors cached (Dify's WEAVIATE_COMPRESSION_CACHE)")
    replication_factor: int = _opt(1, "replication factor of new collections (Dify's WEAVIATE_REPLICATION_FACTOR)")
    multi_tenancy: bool = _opt(False, "Dify creates new datasets as tenants of a shared collection "
                                      "(WEAVIATE_MULTI_TENANCY_ENABLED); drtool refuses to rebuild those")


@dataclass(frozen=True)
class PgvectorSettings:
    """Dify's VECTOR_STORE=pgvector: a Postgres with the vector extension (Dify's PGVECTOR_* variables)."""

    host: str | None = _opt(None, "host of the Postgres that holds Dify's vectors (Dify's PGVECTOR_HOST)")
    port: int = _opt(5432, "its port (PGVECTOR_PORT)")
    user: str = _opt("postgres", "its user (PGVECTOR_USER); needs CREATE on the schema, and the vector extension "
                                 "installed or the right to create it")
    password: str | None = _opt(None, "its password (PGVECTOR_PASSWORD)", secret=True)
    database: str = _opt("dify", "database of the embedding_* tables (PGVECTOR_DATABASE)")
    sslmode: str = _opt("prefer", "libpq sslmode",
                        choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"))
    connect_timeout: int = _opt(10, "seconds to wait for a connection")
    max_attempts: int = _opt(4, "tries per statement on lost connections, deadlocks and lock timeouts "
                                "(authentication and SQL errors are never retried)")
    pg_bigm: bool = _opt(False, "Dify's PGVECTOR_PG_BIGM: also create the pg_bigm full-text index Dify creates")


@dataclass(frozen=True)
class EmbeddingSettings:
    provider: str = _opt("local", "where vectors come from", choices=("local", "openai"))
    model: str | None = _opt(None, "model name (openai) or sentence-transformers name or path (local)")
    base_url: str | None = _opt(None, "OpenAI-compatible base URL, e.g. http://host:8000/v1")
    api_key: str | None = _opt(None, "API key for the embedding endpoint", secret=True)
    dimensions: int | None = _opt(None, "vector dimension to request or expect")
    batch_size: int = _opt(64, "texts per embedding request or model batch")
    concurrency: int = _opt(16, "most concurrent embedding requests (openai): a hard ceiling; with "
                                "embedding.adaptive the number in flight adapts below it, without it stays fixed")
    adaptive: bool = _opt(True, "adapt the requests in flight to the endpoint (openai): start at 4, grow while "
                                "latency stays flat, shrink on 429/503 or rising latency, within embedding.concurrency")
    timeout: int = _opt(60, "seconds before an embedding request times out")
    max_attempts: int = _opt(6, "tries per embedding request (openai) on timeouts, resets and 5xx other than 503")
    overload_wait: float = _opt(300.0, "seconds one embedding request (openai) keeps retrying while the endpoint "
                                       "answers 429 or 503 (too many requests; Retry-After honoured) before the "
                                       "rebuild stops, resumable: workers sharing a provider meet many in a row")
    requests_per_minute: int = _opt(0, "embedding requests per minute budget (openai; 0 = unlimited)")
    tokens_per_minute: int = _opt(0, "estimated tokens per minute budget (openai; 0 = unlimited)")
    max_input_tokens: int = _opt(8191, "longest input the openai endpoint accepts, in tokens (4 chars ~ 1 token)")
    device: str = _opt("auto", "where the local model runs: auto = cuda when torch sees a GPU, else Apple's mps, "
                               "else cpu; an explicit cuda/mps that is not there exits 2",
                       choices=("auto", "cpu", "cuda", "mps"))


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = _opt(None, "Dify's Redis (redis://[:password@]host:port/db), to clear vector_indexing_* keys")


@dataclass(frozen=True)
class DifySettings:
    hosts: tuple[str, ...] = _opt((), "docker-compose host names to replace, NAME=HOST each (`--dify-host` "
                                      "repeated, a TOML array, or comma-separated in the environment), e.g. "
                                      "db_postgres=10.0.0.5")


@dataclass(frozen=True)
class ReplicationSettings:
    sites: tuple[str, ...] = _opt((), "MinIO sites to ask for replication status, ALIAS=URL each (`--site` "
                                      "repeated, a TOML array, or comma-separated in the environment; same "
                                      "credentials)")
    access_key: str | None = _opt(None, "admin access key for the sites; default: s3.access_key", secret=True)
    secret_key: str | None = _opt(None, "admin secret key for the sites; default: s3.secret_key", secret=True)
    expected_sites: int | None = _opt(None, "number of sites replication must span; fewer is CRITICAL")
    max_queued: int = _opt(1000, "objects waiting in a site's replication queue above which the verdict is WARNING")
    max_failed_last_hour: int = _opt(0, "failed replications in the last hour above which the verdict is WARNING")
    settle_seconds: int = _opt(120, "verify ignores differences younger than this many seconds (still replicating)")
    timeout: int = _opt(15, "seconds before one admin or S3 request to a site times out")
    probe_timeout: int = _opt(120, "seconds probe waits for the canary to appear (and vanish) on the other site")
    max_failed_age: int = _opt(900, "seconds after which an object that failed to replicate makes status CRITICAL")
    backlog_check: bool = _opt(True, "status lists each bucket's unreplicated objects (MinIO replication diff)")


@dataclass(frozen=True)
class SnapshotSettings:
    bucket: str | None = _opt(None, "bucket for snapshots; default: s3.bucket (a separate DR bucket is safer)")
    prefix: str = _opt("drtool", "key prefix of snapshots and locks inside the snapshot bucket")
    endpoint: str | None = _opt(None, "S3 endpoint of the snapshot bucket; default: s3.endpoint")
    region: str | None = _opt(None, "region of the snapshot bucket; default: s3.region")
    access_key: str | None = _opt(None, "access key for the snapshot bucket; default: s3.access_key", secret=True)
    secret_key: str | None = _opt(None, "secret key for the snapshot bucket; default: s3.secret_key", secret=True)
    reference_columns: str = _opt("upload_files.key,tool_files.file_key",
                                  "comma-separated [schema.]table.column whose values are object keys to pin")
    include_prefixes: str = _opt("privkeys/,keyword_files/,datasets/*/processed/,datasets/*/raw/,"
                                 "annotations/*/processed/",
                                 "comma-separated key prefixes pinned even when no row names them ('*' = one segment)")
    keep_last: int = _opt(7, "prune keeps the newest N snapshots")
    keep_daily: int = _opt(7, "prune keeps the newest snapshot of each of the last N days")
    keep_weekly: int = _opt(4, "prune keeps the newest snapshot of each of the last N ISO weeks")
    keep_monthly: int = _opt(6, "prune keeps the newest snapshot of each of the last N months")
    lock_stale_after: int = _opt(21600, "seconds after which a lock whose holder cannot be checked counts as stale")
    gc_grace: int = _opt(86400, "seconds an uncommitted snapshot folder is left alone before gc removes it")
    pg_bin_dir: str | None = _opt(None, "folder of pg_dump/pg_restore; default: /usr/lib/postgresql/<server major>"
                                        "/bin, else the newest /usr/lib/postgresql/*/bin, else PATH")
    encrypt_to: tuple[str, ...] = _opt((), "age recipients (age1...) or recipient files; a list (`--encrypt-to` "
                                           "repeated, a TOML array, or comma-separated in the environment): encrypt")
    part_size_mb: int = _opt(16, "multipart upload part size for the dump and manifest, in MiB (>= 5)")
    workers: int = _opt(8, "parallel S3 requests for restore and verify --deep")
    listing_workers: int = _opt(4, "snapshot create lists this many prefixes of the source bucket at once "
                                   "(upload_files/<tenant>/, datasets/<id>/, ...); 1 = one listing at a time")
    max_requests_per_second: float = _opt(0.0, "cap on the listing requests snapshot create sends to the source "
                                               "bucket per second, so live writers keep their throughput "
                                               "(0 = no cap; a capped listing is serial, one stream)")
    signing_key_file: str | None = _opt(None, "Ed25519 private key file (`drtool keys generate`, mode 0600) that "
                                              "signs every new snapshot; keep it on the snapshot host, never in the "
                                              "bucket")
    signing_key: str | None = _opt(None, "the Ed25519 private key itself (PKCS#8 PEM or its base64 body), for a "
                                         "secret injected as an environment variable; signing_key_file is preferred",
                                   secret=True)
    trusted_keys: str | None = _opt(None, "public keys (`drtool-ed25519:...`, from `drtool keys public`) or files of "
                                          "them, comma-separated: when set, verify, restore and drill refuse (exit 4) "
                                          "a snapshot not signed by one of them")
    object_lock_days: int = _opt(0, "S3 Object Lock: every artifact of a new snapshot is locked for N days "
                                    "(0 = off; --retain-until overrides; the bucket needs Object Lock enabled)")
    object_lock_mode: str = _opt("compliance", "Object Lock mode of snapshot artifacts: compliance (nobody, root "
                                               "included, can shorten or delete) or governance (a user with "
                                               "s3:BypassGovernanceRetention can)",
                                 choices=("compliance", "governance"))
    plugin_storage_bucket: str | None = _opt(None, "bucket of the Dify plugin daemon's storage (Dify's "
                                                   "PLUGIN_STORAGE_OSS_BUCKET with PLUGIN_STORAGE_TYPE=aws_s3): its "
                                                   "plugin_storage_prefixes are pinned in every snapshot (in the main "
                                                   "manifest when it is s3.bucket on s3.endpoint at the root, else "
                                                   "as the extra store `plugin`)")
    plugin_storage_endpoint: str | None = _opt(None, "S3 endpoint of the plugin storage bucket (Dify's "
                                                     "PLUGIN_S3_ENDPOINT); default: s3.endpoint")
    plugin_storage_region: str | None = _opt(None, "region of the plugin storage bucket (Dify's PLUGIN_AWS_REGION); "
                                                   "default: s3.region")
    plugin_storage_access_key: str | None = _opt(None, "access key for the plugin storage bucket (Dify's "
                                                       "PLUGIN_AWS_ACCESS_KEY); default, on s3.endpoint only: "
                                                       "s3.access_key", secret=True)
    plugin_storage_secret_key: str | None = _opt(None, "secret key for the plugin storage bucket (Dify's "
                                                       "PLUGIN_AWS_SECRET_KEY); default, on s3.endpoint only: "
                                                       "s3.secret_key", secret=True)
    archive_storage_bucket: str | None = _opt(None, "bucket of Dify's archive storage (ARCHIVE_STORAGE_ARCHIVE_BUCKET "
                                                    "with ARCHIVE_STORAGE_ENABLED=true: workflow runs archived out of "
                                                    "Postgres): set, every snapshot pins the whole bucket as the "
                                                    "extra store `archive`")
    archive_storage_endpoint: str | None = _opt(None, "S3 endpoint of the archive bucket (ARCHIVE_STORAGE_ENDPOINT); "
                                                      "default: s3.endpoint")
    archive_storage_region: str | None = _opt(None, "region of the archive bucket (ARCHIVE_STORAGE_REGION); "
                                                    "default: s3.region")
    archive_storage_access_key: str | None = _opt(None, "access key for the archive bucket "
                                                        "(ARCHIVE_STORAGE_ACCESS_KEY); default, on s3.endpoint only: "
                                                        "s3.access_key", secret=True)
    archive_storage_secret_key: str | None = _opt(None, "secret key for the archive bucket "
                                                        "(ARCHIVE_STORAGE_SECRET_KEY); default, on s3.endpoint only: "
                                                        "s3.secret_key", secret=True)
    plugin_storage_prefixes: str = _opt("plugin/,plugin_packages/,persistence/,assets/",
                                        "comma-separated prefixes of the plugin daemon's state in its bucket "
                                        "(installed packages, uploaded packages, plugin key-value storage, icons)")


@dataclass(frozen=True)
class RebuildSettings:
    max_rejects: int = _opt(0, "rejected chunk lines a dataset may have before its rebuild fails")
    over_limit: str = _opt("truncate", "text longer than the model accepts: embed its start, or reject the line",
                           choices=("truncate", "reject"))
    batch_size: int = _opt(512, "chunks per pipeline unit: one cache lookup, one model call window, one insert "
                                "and checkpoint (large enough for the local model to sort texts by length)")
    max_chunks_in_flight: int = _opt(4096, "most chunks (with their vectors) the pipeline holds at once, all units "
                                           "together; with many embedding workers (openai) the units shrink to fit")
    sample: int = _opt(50, "chunks sampled for the self-retrieval and Dify query checks")
    top_k: int = _opt(5, "k of the self-retrieval check (recall@k)")
    min_recall_pct: int = _opt(90, "lowest self-retrieval recall@k, in percent, that passes the verification gate")
    ledger_prefix: str = _opt("drtool/rebuild", "object-storage prefix of the rebuild checkpoint ledgers")
    shard_plan_key: str | None = _opt(None, "secret shared by every worker of a sharded rebuild (at least 32 "
                                            "characters, e.g. `openssl rand -base64 32`): the plan's author "
                                            "authenticates it with an HMAC, the others refuse (exit 2) a plan it "
                                            "does not verify", secret=True)


@dataclass(frozen=True)
class AuditSettings:
    """The targets `drtool audit` measures against: site policy, so they live with the other settings (a
    drtool.toml shared by the weekly audit job and a person running it by hand) rather than only in flags."""

    rpo_hours: float = _opt(26.0, "the newest committed snapshot must be younger than this many hours "
                                  "(nightly snapshots plus slack; flag --rpo-hours)")
    drill_max_age_days: float = _opt(14.0, "a restore drill must have passed within this many days (weekly drills, "
                                           "one may be missed; flag --drill-max-age-days)")
    min_free_percent: float = _opt(10.0, "a MinIO drive with less free space than this percentage is a warning "
                                         "(flag --min-free-percent)")


SECTIONS: dict[str, type] = {
    "s3": S3Settings,
    "postgres": PostgresSettings,
    "vector": VectorSettings,
    "milvus": MilvusSettings,
    "weaviate": WeaviateSettings,
    "pgvector": PgvectorSettings,
    "embedding": EmbeddingSettings,
    "redis": RedisSettings,
    "dify": DifySettings,
    "rebuild": RebuildSettings,
    "snapshot": SnapshotSettings,
    "replication": ReplicationSettings,
    "audit": AuditSettings,
}


@dataclass(frozen=True)
class SettingSpec:
    key: str
    kind: type
    optional: bool
    default: Any
    help: str
    secret: bool
    choices: tuple[str, ...]

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()


def setting_specs() -> Iterator[SettingSpec]:
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            kind, optional = _base_type(hints[f.name])
            yield SettingSpec(
                key=f"{section}.{f.name}", kind=kind, optional=optional, default=f.default,
                help=f.metadata["help"], secret=f.metadata["secret"], choices=f.metadata["choices"],
            )


def _base_type(hint: Any) -> tuple[type, bool]:
    if typing.get_origin(hint) is tuple:  # tuple[str, ...]: a list setting
        return tuple, False
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        return args[0], True
    return hint, False


SPECS: dict[str, SettingSpec] = {s.key: s for s in setting_specs()}


@dataclass(frozen=True)
class Settings:
    s3: S3Settings
    postgres: PostgresSettings
    vector: VectorSettings
    milvus: MilvusSettings
    weaviate: WeaviateSettings
    pgvector: PgvectorSettings
    embedding: EmbeddingSettings
    redis: RedisSettings
    dify: DifySettings
    rebuild: RebuildSettings
    snapshot: SnapshotSettings
    replication: ReplicationSettings
    audit: AuditSettings
    sources: Mapping[str, str]
    storage_problem: str | None = None
    notes: tuple[str, ...] = ()
    # What drtool does with each database/storage/vector/embedding key of the Dify .env (--dify-env).
    dify_keys: tuple[KeyAccount, ...] = ()

    def get(self, key: str) -> Any:
        section, name = key.split(".", 1)
        return getattr(getattr(self, section), name)

    def is_set(self, key: str) -> bool:
        return self.sources.get(key, "default") != "default"

    def require(self, *keys: str) -> None:
        """Fail with the missing setting's names and how to set them, before any work starts."""
        missing = [k for k in keys if self.get(k) in (None, "")]
        if missing:
            how = ", ".join(f"{k} (--{k.split('.')[1].replace('_', '-')}, {SPECS[k].env_var})" for k in missing)
            raise ConfigError(f"missing setting: {how}", hint="set it by flag, environment, drtool.toml or --dify-env")

    def require_s3(self) -> None:
        if self.storage_problem and not self.is_set("s3.bucket"):
            raise ConfigError(self.storage_problem)
        self.require("s3.bucket")


def load_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | Path | None = None,
    dify_env_path: str | Path | None = None,
) -> Settings:
    """Resolve every setting from its sources, validate it, and register secrets for redaction."""
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {}  # key -> (value, source), lowest precedence first

    config_path = config_path or environ.get(ENV_PREFIX + "CONFIG")
    dify_env_path = dify_env_path or environ.get(ENV_PREFIX + "DIFY_ENV")
    file_values = _read_toml(Path(config_path), explicit=True) if config_path else _read_default_toml()
    host_map_raw = (  # needed before the rest: it rewrites the hosts of the .env's values
        (flags or {}).get("dify.hosts")
        or environ.get(SPECS["dify.hosts"].env_var)
        or file_values.get("dify.hosts", ("", ""))[0]
    )
    host_map = _parse_host_map(_coerce(SPECS["dify.hosts"], host_map_raw or (), "dify.hosts"))

    storage_problem = None
    notes: list[str] = []
    dify_keys: list[KeyAccount] = []
    if dify_env_path:
        path = Path(dify_env_path)
        try:
            text = decode_dotenv(path.read_bytes(), str(path))
        except OSError as exc:
            raise ConfigError(f"cannot read Dify env file {path}: {exc.strerror}") from None
        mapping = map_dify_env(parse_dotenv(text, str(path)), host_map)
        for key, (value, var) in mapping.values.items():
            raw[key] = (value, f"dify-env:{var}")
        storage_problem = mapping.storage_problem
        notes = mapping.notes
        dify_keys = mapping.keys
    raw.update(file_values)
    for spec in SPECS.values():
        file_var = spec.env_var + "_FILE"
        if spec.secret and file_var in environ and spec.key + "_file" not in SPECS:
            if spec.env_var in environ:
                raise ConfigError(f"both {spec.env_var} and {file_var} are set",
                                  hint="keep one: the _FILE form reads the secret from that file")
            raw[spec.key] = (read_secret_file(environ[file_var], spec.key, f"env:{file_var}"), f"env:{file_var}")
        if spec.env_var in environ:
            raw[spec.key] = (environ[spec.env_var], f"env:{spec.env_var}")
    for key, value in (flags or {}).items():
        if value is None or value == ():
            continue
        if key not in SPECS:
            raise ConfigError(f"unknown setting '{key}'")
        raw[key] = (value, "flag")

    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    sources: dict[str, str] = {}
    for key, spec in SPECS.items():
        section, name = key.split(".", 1)
        if key in raw:
            value, source = raw[key]
            values[section][name] = _coerce(spec, value, source)
            sources[key] = source
        else:
            sources[key] = "default"
        if spec.secret:
            register_secret(values[section].get(name))
        value = values[section].get(name)
        if isinstance(value, str) and "://" in value:
            try:
                register_secret(urlsplit(value).password)  # a URL setting may carry a password
            except ValueError as exc:  # e.g. an unbalanced IPv6 bracket; the value itself may hold a secret
                raise ConfigError(f"invalid URL for setting {key} (from {sources[key]}): {exc}") from None
            for credential in _url_credentials(value, user_too=False):  # may hold unencoded '/' or '@'
                register_secret(credential)
        if key == "replication.sites":  # ALIAS=URL items; a site's user is an access key
            for item in value or ():
                for credential in _url_credentials(item.partition("=")[2], user_too=True):
                    register_secret(credential)
    return Settings(
        **{name: SECTIONS[name](**vals) for name, vals in values.items()},
        sources=sources, storage_problem=storage_problem, notes=tuple(notes), dify_keys=tuple(dify_keys),
    )


def _url_credentials(url: str, *, user_too: bool) -> list[str]:
    """The password (and, for a site whose user is an access key, the user) of a URL, raw and %-decoded.

    The userinfo runs to the last '@' before any later whitespace: urlsplit stops at the first '/', which cuts a
    pasted password like 'pw/with@signs' short and would leave its tail unregistered.
    """
    _, sep, rest = url.strip().partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return []
    user, colon, password = rest[:at].partition(":")
    found = [password, unquote(password)] if colon else []
    if user_too:
        found += [user, unquote(user)]
    return [c for c in found if c]


def _parse_host_map(items: tuple[str, ...]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items:
        name, sep, host = item.partition("=")
        if not sep or not name.strip() or not host.strip():
            raise ConfigError(f"invalid dify.hosts entry '{item}': expected NAME=HOST, e.g. db_postgres=10.0.0.5")
        result[name.strip()] = host.strip()
    return result


def read_secret_file(path: str, key: str, source: str) -> str:
    """A secret kept in a file (Kubernetes/Docker secrets, systemd credentials), as restic's --password-file.

    One trailing newline is dropped (editors and `echo` add it); the content never appears in a message.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(SECRET_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the file of secret setting {key} ({source}): {path}: {exc.strerror}",
                          hint="check the path and that this user may read it") from None
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise ConfigError(f"the file of secret setting {key} ({source}) is over {SECRET_FILE_MAX_BYTES} bytes: "
                          f"{path}", hint="point it at the file that holds only the secret")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"the file of secret setting {key} ({source}) is not UTF-8 text: {path}") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise ConfigError(f"the file of secret setting {key} ({source}) is empty: {path}")
    register_secret(text)
    return text


def _read_default_toml() -> dict[str, tuple[Any, str]]:
    """./drtool.toml, else /etc/drtool/drtool.toml: the first that exists, never both (no silent merging)."""
    for path in (Path(DEFAULT_CONFIG_FILE), SYSTEM_CONFIG_FILE):
        if path.is_file():
            return _read_toml(path, explicit=False)
    return {}


def _read_toml(path: Path, *, explicit: bool) -> dict[str, tuple[Any, str]]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="check --config or DRTOOL_CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, tuple[Any, str]] = {}
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError(
                f"{path}: unknown section [{section}]", hint=f"known sections: {', '.join(SECTIONS)}"
            )
        for name, value in table.items():
            key = f"{section}.{name}"
            secret_key = key.removesuffix("_file")
            if key not in SPECS and secret_key != key and secret_key in SPECS and SPECS[secret_key].secret:
                if name.removesuffix("_file") in table:
                    raise ConfigError(f"{path}: both {secret_key} and {key} are set", hint="keep one")
                source = f"file:{path}:{name}"
                out[secret_key] = (read_secret_file(str(value), secret_key, source), source)
                continue
            if key not in SPECS:
                known = ", ".join(s.key.split(".")[1] for s in SPECS.values() if s.key.startswith(section + "."))
                raise ConfigError(f"{path}: unknown setting {key}", hint=f"[{section}] takes: {known}")
            out[key] = (value, f"file:{path}")
    return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(spec: SettingSpec, value: Any, source: str) -> Any:
    def invalid(expected: str) -> ConfigError:
        shown = "***" if spec.secret else repr(value)
        return ConfigError(f"invalid value {shown} for setting {spec.key} (from {source}): expected {expected}")

    if spec.optional and (value is None or value == ""):
        return None
    if spec.kind is tuple:
        # A list setting: flags and TOML arrays keep their items whole (a recipients-file path may hold a comma);
        # a single string (environment, a TOML string, a .env value) is split on commas.
        items = list(value) if isinstance(value, list | tuple) else str(value).split(",")
        if not all(isinstance(item, str) for item in items):
            raise invalid("a list of strings")
        return tuple(item.strip() for item in items if item.strip())
    if isinstance(value, dict | list | tuple):
        raise invalid("a single value, not a table or list")
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise invalid("true or false")
    if spec.kind is int:
        if isinstance(value, bool):
            raise invalid("a whole number")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise invalid("a whole number") from None
        if number < 0:
            raise invalid("a number >= 0")
        return number
    if spec.kind is float:
        if isinstance(value, bool):
            raise invalid("a number")
        try:
            real = float(str(value).strip())
        except ValueError:
            raise invalid("a number") from None
        if not math.isfinite(real) or real < 0:
            raise invalid("a finite number >= 0")
        return real
    text = str(value).strip() if not isinstance(value, str) else value.strip()
    if spec.choices and text.lower() not in spec.choices:
        raise invalid("one of " + ", ".join(spec.choices))
    return text.lower() if spec.choices else text


def render_reference() -> str:
    """The configuration reference in Markdown, generated so that docs cannot drift from the code."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `drtool/config.py` by `python -m drtool.config`; do not edit by hand.",
        "",
        "Precedence: flags > `DRTOOL_*` environment > `drtool.toml` (or `--config`) > Dify `.env` (`--dify-env`)"
        " > defaults.",
        "",
        "The configuration file is `--config` or `DRTOOL_CONFIG` when given; otherwise `./drtool.toml`, else"
        f" `{SYSTEM_CONFIG_FILE}` (the first that exists; they are never merged).",
        "",
        "Every secret setting also takes its value from a file (Kubernetes and Docker secrets, systemd credentials):"
        " `DRTOOL_S3_SECRET_KEY_FILE=/run/secrets/s3` in the environment, or `secret_key_file = \"/run/secrets/s3\"`"
        " in its `drtool.toml` section. One trailing newline is dropped; setting both forms is an error.",
        "",
        "| setting | environment | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for spec in SPECS.values():
        kind = ("list" if spec.kind is tuple else spec.kind.__name__) + (
            f" ({'/'.join(spec.choices)})" if spec.choices else "")
        default = "" if spec.default in (None, "", ()) else f"`{spec.default}`"
        secret = " Secret: shown as `***`." if spec.secret else ""
        lines.append(f"| `{spec.key}` | `{spec.env_var}` | {kind} | {default} | {spec.help}.{secret} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")

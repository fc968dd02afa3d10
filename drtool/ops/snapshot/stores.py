"""Extra stores: the storages Dify keeps outside its main bucket, pinned by prefix in each snapshot (issue 13).

Why a concept of its own: a snapshot's main manifest pins versions of one source bucket, and a restore writes only
keys under that source's key prefix (confinement). Dify 1.x has two more S3 storages with their own endpoint,
bucket and credentials: the plugin daemon's (PLUGIN_STORAGE_TYPE=aws_s3, PLUGIN_S3_*/PLUGIN_AWS_*) when it is not
Dify's own bucket at the root, and archive storage (ARCHIVE_STORAGE_*, api/libs/archive_storage.py: workflow runs
moved out of Postgres, keys `<tenant>/app_id=…/year=…/month=…/workflow_run_id=…` at the bucket root). Each extra
store gets its own manifest artifact (`store-<name>.manifest.jsonl.zst`; SHA256SUMS names are flat, so no
subfolder), pinned at the snapshot's fence by the same rule as the main manifest (ops.snapshot.pinning.write_manifest),
listed in meta.json under `stores`, covered by SHA256SUMS and so by COMMITTED and the signature. A store's
manifest confines its records to the store's own prefixes, and restore writes them back only into the store's
configured bucket: whatever a manifest says, no key leaves that place.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from drtool import wiring
from drtool.adapters import age as agea
from drtool.adapters import s3 as s3a
from drtool.config import S3Settings, Settings
from drtool.core import manifest as mf
from drtool.core.keys import KeyPatterns, ReferenceIndex, UnsafeKey, check_key
from drtool.errors import ConfigError, NotFoundError, UsageError, VerificationFailed
from drtool.ops.snapshot.catalog import DecryptingReader, bounded_map, check_object, open_artifact, plaintext
from drtool.ops.snapshot.pinning import write_manifest  # the main manifest's own pick and refusal rules

log = logging.getLogger("drtool.snapshot")

META_KEY = "stores"  # meta.json section: a list, absent in snapshots taken before extra stores existed
STORE_NAMES = ("plugin", "archive")
WHOLE_BUCKET = "*"  # a pattern that matches every key with a first segment: the whole bucket


def artifact_base(name: str) -> str:
    return f"store-{name}.manifest.jsonl.zst"


@dataclass(frozen=True)
class ExtraStore:
    """One storage outside Dify's main bucket: where it is, how to reach it, and which keys a snapshot pins."""

    name: str
    s3: S3Settings  # endpoint, bucket, region, credentials; key_prefix always ""
    prefixes: tuple[str, ...]

    @property
    def bucket(self) -> str:
        return str(self.s3.bucket)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket} ({self.s3.endpoint or 'AWS S3'})"

    @property
    def patterns(self) -> KeyPatterns:
        return KeyPatterns(self.prefixes)


def _endpoint_key(endpoint: str | None) -> str:
    return (endpoint or "aws").rstrip("/")


def _store(settings: Settings, name: str, *, bucket: str, endpoint: str | None, region: str | None,
           access_key: str | None, secret_key: str | None, prefixes: tuple[str, ...]) -> ExtraStore:
    """The store's S3 settings. Credentials default to s3.* only on s3.endpoint: elsewhere Dify's keys would be
    sent to another server, so they must be given (or s3.use_instance_credentials)."""
    s3 = settings.s3
    endpoint = endpoint or s3.endpoint
    same = _endpoint_key(endpoint) == _endpoint_key(s3.endpoint)
    if not (access_key or secret_key):
        if same:
            access_key, secret_key = s3.access_key, s3.secret_key
        elif not s3.use_instance_credentials:
            raise ConfigError(f"{name} storage s3://{bucket} is on {endpoint}, not s3.endpoint, and has no "
                              "credentials of its own",
                              hint=f"set snapshot.{name}_storage_access_key and snapshot.{name}_storage_secret_key "
                                   "(from Dify's .env with --dify-env)")
    return ExtraStore(name=name, prefixes=prefixes, s3=dataclasses.replace(
        s3, endpoint=endpoint, bucket=bucket, region=region or s3.region, access_key=access_key,
        secret_key=secret_key, key_prefix="", address_style=s3.address_style if same else "path"))


def plugin_in_main_manifest(settings: Settings) -> bool:
    """Plugin storage in Dify's own bucket, on its endpoint, at the root: pinned in the main manifest, as before."""
    snap, s3 = settings.snapshot, settings.s3
    return bool(snap.plugin_storage_bucket) and snap.plugin_storage_bucket == s3.bucket and not s3.key_prefix \
        and _endpoint_key(snap.plugin_storage_endpoint or s3.endpoint) == _endpoint_key(s3.endpoint)


def plugin_prefixes(settings: Settings) -> tuple[str, ...]:
    return tuple(p.strip() for p in settings.snapshot.plugin_storage_prefixes.split(",") if p.strip())


def configured_stores(settings: Settings) -> list[ExtraStore]:
    """The extra stores this configuration names (plugin storage outside the main manifest; archive storage)."""
    snap = settings.snapshot
    out: list[ExtraStore] = []
    if snap.plugin_storage_bucket and not plugin_in_main_manifest(settings):
        out.append(_store(settings, "plugin", bucket=snap.plugin_storage_bucket,
                          endpoint=snap.plugin_storage_endpoint, region=snap.plugin_storage_region,
                          access_key=snap.plugin_storage_access_key, secret_key=snap.plugin_storage_secret_key,
                          prefixes=plugin_prefixes(settings)))
    if snap.archive_storage_bucket:
        out.append(_store(settings, "archive", bucket=snap.archive_storage_bucket,
                          endpoint=snap.archive_storage_endpoint, region=snap.archive_storage_region,
                          access_key=snap.archive_storage_access_key, secret_key=snap.archive_storage_secret_key,
                          prefixes=(WHOLE_BUCKET,)))
    return out


# --- snapshot create -------------------------------------------------------------------------------------------------

@dataclass
class PreparedStore:
    store: ExtraStore
    client: Any
    versioning: str


def prepare(stores: list[ExtraStore], *, copy_unversioned: bool, horizon_days: int
            ) -> tuple[list[PreparedStore], list[str]]:
    """Check every store before the snapshot writes anything: reachable, versioned, no lifecycle rule that would
    expire pinned versions. An unversioned store is refused (exit 2) as the main bucket is; with
    --copy-unversioned (which copies only the main bucket's objects) it is left out with a warning (exit 3)."""
    ready: list[PreparedStore] = []
    warnings: list[str] = []
    for store in stores:
        client = wiring.s3_client(store.s3)
        try:
            versioning = s3a.bucket_versioning(client, store.bucket)
            expiry = s3a.noncurrent_expiry_days(client, store.bucket)
        except Exception as exc:
            err = s3a.translate_error(exc, what=f"{store.name} storage bucket {store.bucket}",
                                      endpoint=store.s3.endpoint)
            if isinstance(err, NotFoundError) or s3a.http_status(exc) == 404:
                raise NotFoundError(f"{store.name} storage bucket {store.bucket} does not exist on "
                                    f"{store.s3.endpoint or 'AWS S3'}",
                                    hint=f"check snapshot.{store.name}_storage_bucket", system=err.system) from None
            raise err from None
        if versioning != "Enabled":
            if not copy_unversioned:
                raise ConfigError(f"{store.name} storage bucket {store.bucket} is not versioned ({versioning}): a "
                                  "snapshot cannot pin its object versions",
                                  hint="enable versioning on that bucket (--copy-unversioned leaves it out of the "
                                       "snapshot with a warning)")
            warnings.append(f"{store.name} storage {store.url} is NOT in this snapshot: the bucket is not "
                            "versioned; enable versioning on it")
            continue
        for rule, days in expiry:
            if days < horizon_days:
                warnings.append(f"lifecycle rule {rule!r} on {store.name} storage bucket {store.bucket} expires "
                                f"noncurrent versions after {days} days but retention keeps snapshots up to "
                                f"{horizon_days} days: older snapshots would lose their pinned objects")
        ready.append(PreparedStore(store, client, versioning))
    return ready, warnings


def pin(prepared: PreparedStore, dest: Any, folder: str, fence: datetime, *, recipients: list[Any] | None,
        part_size: int, writers: list[Any], emit: Any, workers: int = 1, pace: Any = None
        ) -> tuple[dict[str, Any], str]:
    """List the store's versions under its prefixes and pin the one current at the fence, into its own manifest
    artifact. Returns its meta.json section and the sha256 of the stored bytes (for SHA256SUMS). `workers` and
    `pace` are the snapshot's listing parallelism and request-rate cap (ops/snapshot/listing.py)."""
    store = prepared.store
    name = mf.artifact_name(artifact_base(store.name), bool(recipients))
    sink = dest.artifact_writer(folder + name, part_size=part_size)
    writers.append(sink)
    inner: Any = agea.EncryptingWriter(sink, recipients) if recipients else sink
    writer = mf.ManifestWriter(inner)
    with ReferenceIndex() as index:  # empty: a store is pinned by prefix only, no row references it
        listed = write_manifest(writer, index, store.patterns, prepared.client, store.bucket, "", fence,
                                 prepared.versioning, None, folder, emit=emit, workers=workers, pace=pace)
    writer.close()
    if recipients:
        inner.close()
    sink.close()
    counts = writer.counts
    section = {"name": store.name, "bucket": store.bucket, "endpoint": store.s3.endpoint,
               "prefixes": list(store.prefixes), "artifact": name, "versioning": prepared.versioning,
               "count": counts.get(mf.STATE_PINNED, 0), "refused": counts.get(mf.STATE_REFUSED, 0),
               "listed_versions": listed, "bytes": sink.size, "pinned_bytes": writer.pinned_bytes}
    return section, sink.sha256.hexdigest()


# --- reading a snapshot's stores -------------------------------------------------------------------------------------

def sections(info: Any) -> list[dict[str, Any]]:
    """The `stores` sections of meta.json, each checked: a known name, its own artifact name, string prefixes.
    meta.json is covered by SHA256SUMS, but an unsigned snapshot can be resealed: nothing here is taken on faith."""
    raw = info.meta.get(META_KEY)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise VerificationFailed(f"snapshot {info.id}: meta.json `stores` is not a list")
    out: list[dict[str, Any]] = []
    for section in raw:
        name = section.get("name") if isinstance(section, dict) else None
        if name not in STORE_NAMES or any(s.get("name") == name for s in out):
            raise VerificationFailed(f"snapshot {info.id}: meta.json names an unknown or repeated store {name!r}")
        prefixes = section.get("prefixes")
        if section.get("artifact") != mf.artifact_name(artifact_base(name), info.encrypted) \
                or not isinstance(prefixes, list) or not all(isinstance(p, str) and p for p in prefixes) \
                or not isinstance(section.get("bucket"), str):
            raise VerificationFailed(f"snapshot {info.id}: meta.json store {name!r} is malformed")
        out.append(section)
    return out


def record_problem(rec: mf.ManifestRecord, patterns: KeyPatterns) -> str | None:
    """Why a store record would make a restore write outside the store's prefixes (None: confined). A store is never
    copied into the snapshot, so a copy_key is forged; records restore skips (refused, dangling) are not used."""
    shown = repr(rec.key[:200])
    if rec.copy_key is not None:
        return f"object {shown}: an extra store's record with a copy_key"
    if rec.state != mf.STATE_PINNED:
        return None
    try:
        check_key(rec.key)
    except UnsafeKey as exc:
        return f"object {shown}: {exc}"
    if patterns.match(rec.key) is None:
        return f"object {shown}: outside the store's prefixes {', '.join(patterns.prefixes)}"
    return None


def records(stream: IO[bytes] | Any, info: Any, identities: list[Any] | None, name: str
            ) -> Iterator[mf.ManifestRecord]:
    """A store manifest's records, from a stream of its stored (maybe age-encrypted) bytes."""
    plain = plaintext(stream, info, identities, f"{info.id}/{name}")
    yield from mf.read_manifest(plain)
    if isinstance(plain, DecryptingReader):
        plain.finish()


def confinement_problems(section: dict[str, Any], recs: Iterator[mf.ManifestRecord], limit: int = 20) -> list[str]:
    patterns = KeyPatterns(section["prefixes"])
    return mf.tampered_lines(section["artifact"], recs, lambda rec: record_problem(rec, patterns), limit)


def store_for(settings: Settings, section: dict[str, Any]) -> ExtraStore:
    """The store a snapshot section names, as this host configures it. The configured bucket and endpoint must be
    the snapshot's: restore writes only into the configured bucket, never into one a manifest names."""
    configured = {s.name: s for s in configured_stores(settings)}
    store = configured.get(section["name"])
    if store is None:
        raise UsageError(f"the snapshot pinned {section['name']} storage s3://{section['bucket']}, which this "
                         "configuration does not name",
                         hint=f"set snapshot.{section['name']}_storage_bucket (and its endpoint and credentials)")
    if store.bucket != section["bucket"] or _endpoint_key(store.s3.endpoint) != _endpoint_key(section.get("endpoint")):
        raise UsageError(f"the snapshot pinned {section['name']} storage s3://{section['bucket']} "
                         f"({section.get('endpoint') or 'AWS S3'}) but this configuration names {store.url}",
                         hint="restore with the configuration the snapshot was taken with")
    return store


def verify_deep(settings: Settings, dest: Any, info: Any, identities: list[Any] | None,
                sums: dict[str, str] | None) -> list[str]:
    """Every pinned version of every store still exists (HEAD with its VersionId), as for the main manifest."""
    broken: list[str] = []
    for section in sections(info):
        broken += _verify_store(settings, dest, info, identities, sums, section)
    return broken


def _verify_store(settings: Settings, dest: Any, info: Any, identities: list[Any] | None,
                  sums: dict[str, str] | None, section: dict[str, Any]) -> list[str]:
    name = section["artifact"]
    try:
        store = store_for(settings, section)
    except UsageError as exc:
        # Only HEADs follow, so a host that does not configure the store (a separate verify host) may still
        # check it when it is on s3.endpoint, with s3.* credentials; anywhere else it has no credentials to use.
        if _endpoint_key(section.get("endpoint")) != _endpoint_key(settings.s3.endpoint):
            return [f"{name}: not checked: {exc.message}"]
        store = _store(settings, section["name"], bucket=section["bucket"], endpoint=settings.s3.endpoint,
                       region=None, access_key=None, secret_key=None, prefixes=tuple(section["prefixes"]))
    client = wiring.s3_client(store.s3)
    raw = open_artifact(dest, info.id, name)
    patterns = KeyPatterns(section["prefixes"])
    broken: list[str] = []
    tampered: list[str] = []

    def pinned(recs: Iterator[mf.ManifestRecord]) -> Iterator[mf.ManifestRecord]:
        # A record that is not confined is reported, never looked up: its key is not this store's to probe.
        for r in recs:
            problem = record_problem(r, patterns)
            if problem:
                tampered.append(f"{name}: tampered record: {problem}")
            elif r.state == mf.STATE_PINNED:
                yield r

    try:
        for problem in bounded_map(lambda r: check_object(client, store.bucket, r),
                                   pinned(records(raw, info, identities, name)), settings.snapshot.workers):
            if problem:
                broken.append(f"{store.name} storage {problem}")
        raw.drain()
        if sums is not None and raw.sha256.hexdigest() != sums.get(name):
            broken.append(f"{name}: checksum mismatch (it changed while verify read it)")
    except ValueError as exc:
        broken.append(f"{name}: {exc}")
    return tampered[:20] + broken

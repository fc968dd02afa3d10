"""`config check` of the snapshot destination: the bucket `snapshot create` will write to must exist and take writes;
and of the extra stores it pins (plugin storage outside Dify's bucket, archive storage): each must exist, be
readable with its own credentials and be versioned.

Why: a snapshot bucket that is missing, read-only for this key, or without the Object Lock that
`snapshot.object_lock_days` asks for makes the first nightly snapshot fail at 2 a.m.; `config check` is where the
operator finds out while setting drtool up. The write probe uses a drtool-owned key under `<snapshot.prefix>/`
(the prefix snapshots and locks already use, so a policy limited to it is enough) and removes the exact version it
wrote, so a versioned bucket keeps no trace beyond what a bucket with Object Lock default retention forces.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.errors import ConfigError, NotFoundError
from drtool.ops.snapshot import stores as snapshot_stores
from drtool.ops.snapshot.destination import destination_endpoint, destination_settings

PROBE_DIR = ".drtool-config-check"


def probe_key(prefix: str) -> str:
    """A key no snapshot, lock or Dify object ever has: `<prefix>/.drtool-config-check/<random>`."""
    return f"{prefix.strip('/')}/{PROBE_DIR}/{uuid.uuid4().hex}" if prefix.strip("/") else \
        f"{PROBE_DIR}/{uuid.uuid4().hex}"


def destination_target(settings: Settings) -> str:
    """`endpoint/bucket` of the snapshot destination for the check's table, '-' when none is configured."""
    bucket = settings.snapshot.bucket or settings.s3.bucket
    endpoint = destination_endpoint(settings) or "AWS S3"
    return f"{endpoint}/{bucket}" if bucket else "-"


def check_snapshot_destination(settings: Settings) -> dict[str, Any]:
    """Bucket exists (10 if not), a put+delete probe succeeds (12 if refused), versioning and Object Lock state.

    Object Lock asked for (`snapshot.object_lock_days` > 0) on a bucket without it is a configuration error (2),
    as `snapshot create` itself would refuse.
    """
    dest = destination_settings(settings)  # ConfigError (2) when no bucket is configured at all
    bucket = str(dest.bucket)
    client = wiring.s3_client(dest, max_attempts=min(2, max(1, dest.max_attempts)),
                              read_timeout=min(20, dest.read_timeout))
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:
        err = s3a.translate_error(exc, what=f"snapshot bucket {bucket}", endpoint=dest.endpoint)
        if isinstance(err, NotFoundError) or s3a.http_status(exc) == 404:
            raise NotFoundError(f"snapshot bucket {bucket} does not exist",
                                hint="create it (a separate DR bucket with versioning and Object Lock is safest), "
                                     "or set snapshot.bucket to an existing bucket", system=err.system) from None
        raise err from None
    try:
        versioning = client.get_bucket_versioning(Bucket=bucket).get("Status") or "Unversioned"
        lock = s3a.object_lock_configuration(client, bucket)
    except Exception as exc:
        raise s3a.translate_error(exc, what=f"snapshot bucket {bucket}", endpoint=dest.endpoint) from None
    details: dict[str, Any] = {
        "bucket": bucket, "versioning": versioning, "object_lock": _lock_text(lock),
        "separate_from_dify": bucket != settings.s3.bucket or (dest.endpoint or "") != (settings.s3.endpoint or ""),
    }
    if settings.snapshot.object_lock_days and lock is None:
        raise ConfigError(f"snapshot.object_lock_days is {settings.snapshot.object_lock_days} but snapshot bucket "
                          f"{bucket} does not have Object Lock enabled: snapshot create would refuse",
                          hint="Object Lock can only be enabled when a bucket is created: create one with it "
                               "(`mc mb --with-lock`) and point snapshot.bucket at it, or set "
                               "snapshot.object_lock_days = 0")
    key = probe_key(settings.snapshot.prefix)
    try:
        put = client.put_object(Bucket=bucket, Key=key, Body=b"drtool config check write probe\n")
    except Exception as exc:
        raise s3a.translate_error(exc, what=f"write probe s3://{bucket}/{key}", endpoint=dest.endpoint) from None
    details["writable"] = True
    details["probe_removed"] = _remove_probe(client, bucket, key, put.get("VersionId"))
    return details


def _lock_text(lock: dict[str, Any] | None) -> str:
    if lock is None:
        return "off"
    default = (lock.get("Rule") or {}).get("DefaultRetention") or {}
    if not default:
        return "on (no default retention)"
    span = f"{default.get('Days')}d" if default.get("Days") else f"{default.get('Years')}y"
    return f"on ({str(default.get('Mode', '')).lower()} {span} default)"


def _remove_probe(client: Any, bucket: str, key: str, version_id: str | None) -> bool:
    """Delete the exact version written; False when the bucket keeps it (a default retention locks it)."""
    try:
        if version_id and version_id != "null":
            client.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        else:
            client.delete_object(Bucket=bucket, Key=key)
        return True
    except Exception:
        try:  # a locked version cannot go; hide it behind a delete marker so listings stay clean
            client.delete_object(Bucket=bucket, Key=key)
        except Exception:
            return False
        return False


def extra_store_targets(settings: Settings) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
    """(system, target, probe) of each extra store snapshots pin (plugin storage outside Dify's bucket, archive
    storage): read-only probes, because `snapshot create` only reads a store. A store whose settings cannot work
    (another endpoint without credentials) is a row whose probe raises that ConfigError."""
    try:
        stores = snapshot_stores.configured_stores(settings)
    except ConfigError as exc:
        error = exc

        def refused() -> dict[str, Any]:
            raise error

        return [("extra store", "-", refused)]
    return [(f"{store.name} storage", f"{store.s3.endpoint or 'AWS S3'}/{store.bucket}",
             lambda store=store: check_extra_store(store)) for store in stores]


def check_extra_store(store: Any) -> dict[str, Any]:
    """The bucket exists (10), this key may read it (12), and it is versioned (2 otherwise, as `snapshot create`
    refuses an unversioned store)."""
    client = wiring.s3_client(store.s3, max_attempts=2, read_timeout=20)
    try:
        client.head_bucket(Bucket=store.bucket)
        versioning = s3a.bucket_versioning(client, store.bucket)
    except Exception as exc:
        err = s3a.translate_error(exc, what=f"{store.name} storage bucket {store.bucket}",
                                  endpoint=store.s3.endpoint)
        if isinstance(err, NotFoundError) or s3a.http_status(exc) == 404:
            raise NotFoundError(f"{store.name} storage bucket {store.bucket} does not exist",
                                hint=f"check snapshot.{store.name}_storage_bucket and its endpoint",
                                system=err.system) from None
        raise err from None
    if versioning != "Enabled":
        raise ConfigError(f"{store.name} storage bucket {store.bucket} is not versioned ({versioning}): snapshots "
                          "cannot pin its objects and `snapshot create` refuses it",
                          hint=f"mc version enable ALIAS/{store.bucket}")
    return {"bucket": store.bucket, "versioning": versioning, "prefixes": list(store.prefixes)}

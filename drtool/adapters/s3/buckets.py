"""A bucket's own settings and the server's: versioning, lifecycle, replication, Object Lock, policy, encryption,
the bucket list and the server's clock. Plain values back; absent configurations are empty or None.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import botocore.exceptions

from drtool.adapters.s3.errors import error_code, translate_error


def bucket_replication_setup(client: Any, bucket: str) -> dict[str, Any]:
    """Versioning state, replication rules and lifecycle rules of a bucket; absent configurations are empty."""

    def code(exc: botocore.exceptions.ClientError) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    versioning = client.get_bucket_versioning(Bucket=bucket).get("Status")
    try:
        rules = client.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"].get("Rules", [])
    except botocore.exceptions.ClientError as exc:
        if code(exc) not in ("ReplicationConfigurationNotFoundError", "NoSuchReplicationConfiguration"):
            raise
        rules = []
    try:
        lifecycle = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except botocore.exceptions.ClientError as exc:
        if code(exc) not in ("NoSuchLifecycleConfiguration", "NoSuchLifecycleConfigurationError"):
            raise
        lifecycle = []
    return {"versioning": versioning, "rules": rules, "lifecycle_rules": lifecycle}


def bucket_versioning(client: Any, bucket: str) -> str:
    """'Enabled', 'Suspended' or 'Unversioned'."""
    return client.get_bucket_versioning(Bucket=bucket).get("Status") or "Unversioned"


def noncurrent_expiry_days(client: Any, bucket: str) -> list[tuple[str, int]]:
    """(rule id, days) of every enabled lifecycle rule that expires noncurrent versions."""
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchLifecycleConfiguration", "NotImplemented"):
            return []
        raise
    out: list[tuple[str, int]] = []
    for rule in rules:
        days = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
        if rule.get("Status") == "Enabled" and days is not None:
            out.append((str(rule.get("ID") or "(unnamed)"), int(days)))
    return out


def server_date(client: Any, bucket: str) -> Any:
    """The server's clock (HTTP Date header of a HEAD bucket), to detect skew against the database clock."""
    response = client.head_bucket(Bucket=bucket)
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date) if date else None


_NO_LOCK_CODES = {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration", "NotImplemented",
                  "InvalidBucketState", "MethodNotAllowed"}


def object_lock_configuration(client: Any, bucket: str) -> dict[str, Any] | None:
    """The bucket's Object Lock configuration; None when the bucket was created without Object Lock.

    Object Lock can only be turned on when a bucket is created (`mc mb --with-lock`, or CreateBucket with
    ObjectLockEnabledForBucket=true), and it turns versioning on for good.
    """
    try:
        config = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration") or {}
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in _NO_LOCK_CODES:
            return None
        raise
    return dict(config) if config.get("ObjectLockEnabled") == "Enabled" else None


def bucket_policy(client: Any, bucket: str) -> str | None:
    """The bucket policy document (JSON text); None when there is none or the server has no bucket policies.
    Other failures are raised untranslated (the caller reports them as its check failing)."""
    try:
        return str(client.get_bucket_policy(Bucket=bucket).get("Policy") or "{}")
    except botocore.exceptions.ClientError as exc:
        if error_code(exc)[0] in ("NoSuchBucketPolicy", "NotImplemented"):
            return None
        raise


def bucket_encryption_rules(client: Any, bucket: str, *, endpoint: str | None) -> list[Any]:
    """The default-encryption rules of a bucket ([] when none is configured); Unsupported when the server has no
    GetBucketEncryption, other refusals translated."""
    try:
        answer = client.get_bucket_encryption(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc)[0] == "ServerSideEncryptionConfigurationNotFoundError":
            return []
        raise translate_error(exc, what=f"GetBucketEncryption of {bucket}", endpoint=endpoint) from None
    return list((answer.get("ServerSideEncryptionConfiguration") or {}).get("Rules") or [])


def list_bucket_names(client: Any) -> list[str]:
    """Every bucket these credentials may list, sorted."""
    return sorted(b["Name"] for b in client.list_buckets().get("Buckets", []))

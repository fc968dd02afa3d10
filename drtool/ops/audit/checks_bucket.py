"""`drtool audit`: the settings of one audited bucket that decide whether its data survives and stays private.

Plain http, the root or default credential, a write/read/delete probe (with an unauthenticated GET of the probe
key while it exists), versioning, Object Lock on the snapshot bucket, lifecycle rules that expire restore points
sooner than retention keeps them, and anonymous access by bucket policy or listing. runner.audit_bucket calls each
through `AuditRun.guarded`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlsplit

from drtool.adapters import s3 as s3a
from drtool.core.audit import Severity
from drtool.core.retention import Policy
from drtool.errors import DrtoolError
from drtool.ops.audit.context import DEFAULT_KEYS, AuditedBucket, AuditRun
from drtool.ops.replication.sites import tls_verify
from drtool.wiring import minio_admin


def plain_http(audit: AuditRun, b: AuditedBucket, target: str) -> None:
    endpoint = b.s3.endpoint or ""
    if endpoint.lower().startswith("http://"):
        host = (urlsplit(endpoint).hostname or "").lower()
        loopback = host == "localhost" or host.startswith("127.") or host == "::1"
        audit.add("s3.plain_http", f"endpoint {endpoint}" + (" (loopback: info only)" if loopback else ""),
                  "serve MinIO over TLS (certs in ~/.minio/certs or a TLS proxy), then set s3.endpoint / "
                  "snapshot.endpoint to https://... (Dify: S3_ENDPOINT=https://...)", target,
                  Severity.INFO if loopback else None)


def credential_checks(audit: AuditRun, b: AuditedBucket, target: str) -> None:
    endpoint = b.s3.endpoint or ""
    key = b.s3.access_key or ""
    if key in DEFAULT_KEYS:
        audit.add("s3.root_credentials", f"access key is the default {key!r}", _user_fix(b), target)
    elif key and endpoint and is_root(audit, b):
        audit.add("s3.root_credentials", "the MinIO admin API knows this access key as the root user, no IAM user",
                  _user_fix(b), target)


def is_root(audit: AuditRun, b: AuditedBucket) -> bool:
    """MinIO answers `user-info` for an IAM user (a user may read its own) and `XMinioAdminNoSuchUser` for the
    root user, which is not an IAM user; anything else (not MinIO, no admin API) is not evidence of root."""
    admin = minio_admin("s3", str(b.s3.endpoint), b.s3.access_key, b.s3.secret_key, region=b.s3.region,
                        verify=tls_verify(audit.settings), timeout=10)
    try:
        resp = admin.request("GET", "/minio/admin/v3/user-info", {"accessKey": str(b.s3.access_key)},
                             what="user info")
    except DrtoolError:
        return False
    finally:
        admin.close()
    return resp.status == 404 and b"XMinioAdminNoSuchUser" in resp.body


def probe(audit: AuditRun, b: AuditedBucket, client: Any, target: str) -> None:
    """Write, read back and delete (by version) one drtool-owned key; while it exists, ask for it without
    credentials: a bucket that serves it to anyone serves every upload and every dump too."""
    key = f"{audit.settings.snapshot.prefix.strip('/')}/audit/probe"
    body = f"drtool audit probe {uuid.uuid4()}".encode()
    try:
        put = client.put_object(Bucket=b.name, Key=key, Body=body)
        got = s3a.get_bytes(client, b.name, key)
        if got != body:
            raise ValueError("the probe read back different bytes")
    except Exception as exc:
        err = exc if isinstance(exc, ValueError) else s3a.translate_error(exc, what=f"s3://{b.name}/{key}",
                                                                          endpoint=b.s3.endpoint)
        audit.add("s3.probe_failed", f"put/get s3://{b.name}/{key}: {err}",
                  f"grant s3:PutObject, s3:GetObject, s3:DeleteObject on arn:aws:s3:::{b.name}/* "
                  "(docs/iam.md)", target)
        return
    try:
        if anonymous_get(audit, b, key):
            audit.add("s3.anonymous_access", f"unauthenticated GET s3://{b.name}/{key} returned the object",
                      _anon_fix(b), target)
    finally:
        try:
            version = put.get("VersionId")
            if version and version != "null":
                client.delete_object(Bucket=b.name, Key=key, VersionId=version)
            else:
                client.delete_object(Bucket=b.name, Key=key)
        except Exception as exc:
            if locked_by_default(client, b):
                # a default retention locks the probe's version too: a delete marker is all that can be
                # done, and the locked version expires with the bucket's retention (what Object Lock is for)
                client.delete_object(Bucket=b.name, Key=key)
                audit.result.checked.append(f"s3: {target} probe version kept by the default retention")
                return
            err = s3a.translate_error(exc, what=f"delete s3://{b.name}/{key}", endpoint=b.s3.endpoint)
            audit.add("s3.probe_failed", f"delete s3://{b.name}/{key}: {err}",
                      f"grant s3:DeleteObject and s3:DeleteObjectVersion on arn:aws:s3:::{b.name}/*", target)


def locked_by_default(client: Any, b: AuditedBucket) -> bool:
    try:
        config = s3a.object_lock_configuration(client, b.name)
    except Exception:
        return False
    return bool(config and (config.get("Rule") or {}).get("DefaultRetention"))


def anonymous_get(audit: AuditRun, b: AuditedBucket, key: str) -> bool:
    try:
        audit.client(b.s3, anonymous=True).get_object(Bucket=b.name, Key=key)["Body"].read()
        return True
    except Exception:
        return False


def anonymous_list(audit: AuditRun, b: AuditedBucket, target: str) -> None:
    try:
        audit.client(b.s3, anonymous=True).list_objects_v2(Bucket=b.name, MaxKeys=1)
    except Exception:
        return
    audit.add("s3.anonymous_access", f"unauthenticated LIST s3://{b.name} succeeded", _anon_fix(b), target)


def versioning(audit: AuditRun, b: AuditedBucket, client: Any, target: str) -> None:
    status = s3a.bucket_versioning(client, b.name)
    if status != "Enabled":
        audit.add("s3.versioning_off", f"versioning of {b.name} is {status}",
                  f"mc version enable ALIAS/{b.name}", target)


def object_lock(audit: AuditRun, b: AuditedBucket, client: Any, target: str) -> None:
    if s3a.object_lock_configuration(client, b.name) is None:
        audit.add("s3.object_lock_off", f"GetObjectLockConfiguration of {b.name}: not enabled",
                  "Object Lock can only be enabled when a bucket is created: mc mb --with-lock ALIAS/NEW-BUCKET, "
                  "then set snapshot.bucket=NEW-BUCKET and snapshot.object_lock_days (e.g. 14)", target)


def lifecycle(audit: AuditRun, b: AuditedBucket, client: Any, target: str) -> None:
    snap = audit.settings.snapshot
    policy = Policy(keep_last=snap.keep_last, keep_daily=snap.keep_daily, keep_weekly=snap.keep_weekly,
                    keep_monthly=snap.keep_monthly)
    horizon = policy.horizon_days
    for rule_id, days in s3a.noncurrent_expiry_days(client, b.name):
        if days < horizon:
            audit.add("s3.lifecycle_expires_restore_points",
                      f"rule {rule_id!r} expires noncurrent versions after {days} day(s); snapshot retention "
                      f"keeps restore points up to {horizon} day(s) (keep_daily={snap.keep_daily}, "
                      f"keep_weekly={snap.keep_weekly}, keep_monthly={snap.keep_monthly})",
                      f"mc ilm rule edit ALIAS/{b.name} --id {rule_id} --noncurrent-expire-days {horizon} "
                      f"(or remove it: mc ilm rule rm ALIAS/{b.name} --id {rule_id})", target)


def policy(audit: AuditRun, b: AuditedBucket, client: Any, target: str) -> None:
    text = s3a.bucket_policy(client, b.name)
    if text is None:
        return
    doc = json.loads(text)
    statements = doc.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    for st in statements:
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, dict) else principal
        values = aws if isinstance(aws, list) else [aws]
        if "*" in values:
            actions = st.get("Action")
            audit.add("s3.anonymous_access", f"bucket policy of {b.name} allows principal '*' {actions}",
                      _anon_fix(b), target)
            return


def _user_fix(b: AuditedBucket) -> str:
    return ("mc admin user add ALIAS drtool-backup <secret>; mc admin policy attach ALIAS <policy> --user "
            "drtool-backup (docs/iam.md); then set " +
            ("snapshot.access_key/secret_key" if b.role == "snapshot" else "s3.access_key/secret_key"))


def _anon_fix(b: AuditedBucket) -> str:
    return f"mc anonymous set none ALIAS/{b.name}"

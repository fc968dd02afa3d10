"""`drtool audit`: three object-storage checks per audited bucket (issue #15): default encryption and the KMS
behind it, a multipart-upload probe, and whether the credential's policy is wider than docs/iam.md.

- Encryption: GetBucketEncryption; without a default configuration the finding says whether the MinIO server has a
  KMS at all (`admin info` services.kmsStatus), since on MinIO `mc encrypt set` is refused until it has one.
- Multipart: snapshot dumps go up as multipart uploads (adapters.s3.MultipartWriter); Dify itself saves every file
  with one PutObject (api/extensions/storage/aws_s3_storage.py). A single PUT working says nothing about the
  dumps when a proxy or policy treats multipart differently. The probe
  starts, fills (one tiny part) and aborts an upload on a drtool-owned key next to the write probe's; when the
  abort is refused it completes the upload and deletes that version instead, so it leaves nothing behind either way.
- Policy: MinIO's `accountinfo` returns the caller's effective policy (any user may ask for its own); it is
  compared with the union of docs/iam.md's policies for the audited buckets (drtool.core.iam).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

from drtool.adapters import s3 as s3a
from drtool.adapters.minio_admin import NotMinioError
from drtool.core import iam
from drtool.core.audit import Severity
from drtool.core.terminal import one_line
from drtool.errors import DrtoolError, Unsupported
from drtool.ops.audit.checks_bucket import locked_by_default
from drtool.ops.audit.context import DEFAULT_KEYS, AuditedBucket, AuditRun
from drtool.ops.replication.sites import Site, admin_for, tls_verify
from drtool.ops.snapshot.destination import destination_settings
from drtool.wiring import minio_admin

MAX_LISTED = 8  # actions or grants named in one finding's evidence
MAX_ITEM = 120  # characters of one named action, resource or account (policy text is data)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._@+=-]{1,128}")


def _clip(value: object, limit: int = MAX_ITEM) -> str:
    text = one_line(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _listed(items: list[str]) -> str:
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(_clip(i) for i in items[:MAX_LISTED]) + more


def _probe_prefix(audit: AuditRun) -> str:
    return f"{audit.settings.snapshot.prefix.strip('/')}/audit"


# --- server-side encryption -------------------------------------------------------------------------------------
def _kms_state(audit: AuditRun, b: AuditedBucket) -> tuple[str, bool | None]:
    """What MinIO's `admin info` says about its KMS: (evidence, configured?); None when it cannot be read."""
    endpoint = (b.s3.endpoint or "").rstrip("/")
    if not endpoint:
        return "KMS not checked (AWS S3)", None
    admin = admin_for(audit.settings, Site("s3", endpoint))
    try:
        info = admin.server_info()
    except NotMinioError:
        return "KMS not checked (no MinIO admin API)", None
    except DrtoolError as exc:
        return f"KMS not checked (admin info: {_clip(exc, 200)})", None
    finally:
        admin.close()
    kms = [k for k in (info.get("services") or {}).get("kmsStatus") or [] if isinstance(k, dict)]
    if not kms:
        return "the MinIO server has no KMS configured", False
    states = ", ".join(_clip(f"{k.get('endpoint', '?')} {k.get('status', 'unknown')}", 60) for k in kms[:4])
    return f"the MinIO server has a KMS ({states})", True


def encryption(audit: AuditRun, b: AuditedBucket, client: Any, target: str) -> None:
    """No default encryption is `s3.encryption_off` (info): it does not stop a recovery, but the bucket holds the
    database dumps and users' files in the clear on the drives and on every replica."""
    try:
        rules = s3a.bucket_encryption_rules(client, b.name, endpoint=b.s3.endpoint)
    except Unsupported:
        audit.result.skipped.append(f"s3: {target} encryption (the server has no GetBucketEncryption)")
        return
    if rules:
        algorithms = sorted({str((r.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm"))
                             for r in rules if isinstance(r, dict)})
        audit.result.checked.append(f"s3: {target} default encryption {_clip(', '.join(algorithms))}")
        return
    kms, configured = _kms_state(audit, b)
    keep = ("; keep the KMS key with the DR runbook and give every replication site the same key: objects encrypted "
            "under a lost key cannot be restored")
    if configured:
        fix = f"mc encrypt set sse-s3 ALIAS/{b.name}{keep}"
    else:
        fix = ("configure a KMS first (MinIO: KES with MINIO_KMS_KES_ENDPOINT/MINIO_KMS_KES_KEY_NAME, or for a "
               "single server a static key MINIO_KMS_SECRET_KEY=<key-name>:<base64 of 32 random bytes> in the "
               f"server's environment), restart, then mc encrypt set sse-s3 ALIAS/{b.name}{keep}")
    audit.add("s3.encryption_off", f"GetBucketEncryption of {b.name}: no default encryption; {kms}", fix, target)


# --- multipart uploads --------------------------------------------------------------------------------------------
def _delete_version(audit: AuditRun, b: AuditedBucket, client: Any, key: str, version: str | None) -> None:
    """Delete the probe's version; under a default retention only a delete marker is possible (as for the write
    probe: the locked version expires with the bucket's retention)."""
    try:
        if version and version != "null":
            client.delete_object(Bucket=b.name, Key=key, VersionId=version)
        else:
            client.delete_object(Bucket=b.name, Key=key)
    except Exception:
        if not locked_by_default(client, b):
            raise
        client.delete_object(Bucket=b.name, Key=key)


def _await_replication(client: Any, b: AuditedBucket, key: str, version: str | None, timeout: float = 10.0) -> None:
    """Wait (bounded) until a replicated bucket has copied the version: deleting a completed multipart version
    while its replication is PENDING makes MinIO count a failed replication, which `replication status` and this
    audit then report for an hour. Unreplicated buckets answer no status and return at once."""
    deadline = time.monotonic() + timeout
    while True:
        head = client.head_object(Bucket=b.name, Key=key, **({"VersionId": version} if version else {}))
        if head.get("ReplicationStatus") not in ("PENDING",) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def multipart_probe(audit: AuditRun, b: AuditedBucket, client: Any, target: str) -> None:
    """Create, fill and abort one multipart upload. A refused create or part is critical (snapshot dumps and large
    uploads fail); a refused abort only a warning (uploads work; a failed one leaves its parts behind)."""
    if any(f.id == "s3.probe_failed" and f.target == target for f in audit.result.findings):
        audit.result.skipped.append(f"s3: {target} multipart probe (the write probe failed already)")
        return
    key = f"{_probe_prefix(audit)}/multipart-probe"
    url = f"s3://{b.name}/{key}"
    resource = f"arn:aws:s3:::{b.name}/{_probe_prefix(audit)}/*"
    upload_id: str | None = None
    step = "CreateMultipartUpload"
    try:
        upload_id = str(client.create_multipart_upload(Bucket=b.name, Key=key)["UploadId"])
        step = "UploadPart"
        part = client.upload_part(Bucket=b.name, Key=key, UploadId=upload_id, PartNumber=1,
                                  Body=b"drtool audit multipart probe")
    except Exception as exc:
        if not s3a.is_server_answer(exc):  # unreachable, cut: the check failed, nothing was refused
            raise
        if upload_id:  # the refusal is the finding; `snapshots gc` removes what this abort could not
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=b.name, Key=key, UploadId=upload_id)
        err = s3a.translate_error(exc, what=url, endpoint=b.s3.endpoint)
        audit.add("s3.multipart_refused", f"{step} of {url}: {err}",
                  f"grant s3:PutObject on {resource} (MinIO authorises CreateMultipartUpload, UploadPart and "
                  "CompleteMultipartUpload as s3:PutObject; docs/iam.md); check that no bucket or user policy "
                  "Deny and no proxy in front of the endpoint refuses multipart requests (POST ?uploads, "
                  "PUT ?partNumber=&uploadId=, POST ?uploadId=)", target)
        return
    try:
        client.abort_multipart_upload(Bucket=b.name, Key=key, UploadId=upload_id)
        return
    except Exception as exc:
        if not s3a.is_server_answer(exc):
            raise
        refused = s3a.translate_error(exc, what=url, endpoint=b.s3.endpoint)
    left = ""
    try:  # abort refused: complete the upload instead and delete the version it made, so nothing stays behind
        done = client.complete_multipart_upload(Bucket=b.name, Key=key, UploadId=upload_id, MultipartUpload={
            "Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
        _await_replication(client, b, key, done.get("VersionId"))
        _delete_version(audit, b, client, key, done.get("VersionId"))
    except Exception as exc:
        why = s3a.translate_error(exc, what=url, endpoint=b.s3.endpoint) if s3a.is_server_answer(exc) else exc
        left = (f"; the probe's upload could not be completed and deleted either ({_clip(why, 200)}): remove it "
                f"with mc rm --incomplete --recursive --force ALIAS/{b.name}/{_probe_prefix(audit)}/")
    audit.add("s3.multipart_refused", f"AbortMultipartUpload of {url}: {refused}{left}",
              f"grant s3:AbortMultipartUpload on {resource} and on the snapshot objects (docs/iam.md): without it "
              "an interrupted snapshot upload leaves its parts in the bucket until someone with that permission "
              "runs drtool snapshots gc", target, Severity.WARNING)


# --- the credential's policy ----------------------------------------------------------------------------------------
def _buckets(audit: AuditRun) -> tuple[str, str]:
    """(source, snapshot) buckets to render the documented policies with; one stands in for the other if unset."""
    source = str(audit.settings.s3.bucket or "")
    try:
        snapshot = str(destination_settings(audit.settings).bucket or "")
    except DrtoolError:
        snapshot = ""
    return source or snapshot, snapshot or source


def _attached(admin: Any, key: str) -> list[str]:
    """The policy names attached to the user (a user may read its own user-info); [] when not readable."""
    try:
        resp = admin.request("GET", "/minio/admin/v3/user-info", {"accessKey": key}, what="user info")
        names = str(resp.json().get("policyName") or "") if resp.status == 200 else ""
    except (DrtoolError, ValueError, AttributeError):
        return []
    # names come from the server and land in a command to paste: only plain ones are named
    return [n for n in names.split(",") if _PLAIN_NAME.fullmatch(n)][:MAX_LISTED]


def policy_scope(audit: AuditRun, b: AuditedBucket, target: str) -> None:
    """The credential's effective policy (MinIO accountinfo) is no wider than docs/iam.md's policies for the audited
    buckets; one check per credential and endpoint. The root credential is skipped: s3.root_credentials says more."""
    s3 = b.s3
    key, endpoint = str(s3.access_key or ""), (s3.endpoint or "").rstrip("/")
    marker = f"s3: IAM policy of the key of the {target} on {endpoint or 'AWS S3'}"
    # one check per credential, however many buckets use it (access keys are secrets to drtool: never shown)
    seen: set[tuple[str, str]] = vars(audit).setdefault("_policy_keys_seen", set())
    if (endpoint, key) in seen:
        audit.result.checked.append(f"{marker}: the same key as an audited bucket before")
        return
    seen.add((endpoint, key))
    if not key or not endpoint:
        audit.result.skipped.append(f"{marker} (no static key or no endpoint: not MinIO)")
        return
    if key in DEFAULT_KEYS or any(f.id == "s3.root_credentials" and f.target == target
                                  for f in audit.result.findings):
        audit.result.skipped.append(f"{marker} (the root credential: see s3.root_credentials)")
        return
    admin = minio_admin("s3", endpoint, key, s3.secret_key, region=s3.region, verify=tls_verify(audit.settings),
                        timeout=10)
    try:
        try:
            info = admin.account_info()
        except NotMinioError:
            audit.result.skipped.append(f"{marker} (no MinIO accountinfo API)")
            return
        policy = info.get("Policy")
        if isinstance(policy, str):
            policy = json.loads(policy)
        if not isinstance(policy, dict):
            raise ValueError(f"accountinfo of {endpoint}: Policy is not a policy document")
        source, snapshot = _buckets(audit)
        documented = iam.documented_policy(source, snapshot, prefix=audit.settings.snapshot.prefix)
        excess = iam.excess(policy, documented)
        audit.result.checked.append(marker)
        if not excess:
            return
        name = str(info.get("AccountName") or "")
        # a service account's parent user is named; the key itself is a secret to drtool, and odd names are data
        account = name if name != key and _PLAIN_NAME.fullmatch(name) else "<the access key>"
        parts = []
        if excess.actions:
            parts.append(f"actions {_listed(list(excess.actions))}")
        if excess.grants:
            parts.append(f"resources {_listed([f'{a} on {r}' for a, r in excess.grants])}")
        if excess.truncated:
            parts.append(f"more than {iam.MAX_STATEMENTS} statements (the rest not examined)")
        attached = _attached(admin, key)
    finally:
        admin.close()
    detach = (f"mc admin policy detach ALIAS {','.join(attached)} --user {account}; "
              if attached else "detach the wider policies; ")
    audit.add("s3.policy_too_wide",
              f"accountinfo on {endpoint}: the key's policy allows beyond docs/iam.md for buckets "
              f"{source} and {snapshot}: " + "; ".join(parts),
              detach + "create and attach only the policies of the jobs this key runs, from docs/iam.md: "
              f"mc admin policy create ALIAS drtool-<job> <job>.json; mc admin policy attach ALIAS drtool-<job> "
              f"--user {account}", target)

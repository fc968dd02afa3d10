"""`drtool audit`'s run: which checks run, in which order, each through `AuditRun.guarded`.

The one module that imports every checks_* module (they import only context.py and the lower checks they share),
so the checks never import their caller.
"""

from __future__ import annotations

from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core.audit import AuditResult
from drtool.errors import AuthError, DrtoolError, NotFoundError
from drtool.ops.audit import (
    checks_bucket,
    checks_cache,
    checks_drtool,
    checks_minio,
    checks_pg,
    checks_s3,
    checks_storage,
    checks_tls,
    checks_vector,
)
from drtool.ops.audit.context import AuditedBucket, AuditOptions, AuditRun
from drtool.ops.snapshot.destination import destination_settings


def buckets(audit: AuditRun) -> list[AuditedBucket]:
    out: list[AuditedBucket] = []
    s3 = audit.settings.s3
    if s3.bucket:
        out.append(AuditedBucket("dify", s3))
    else:
        audit.result.skipped.append("s3: s3.bucket is not set")
    try:
        dest = destination_settings(audit.settings)
    except DrtoolError:
        return out
    if out and dest.bucket == s3.bucket and (dest.endpoint or "") == (s3.endpoint or ""):
        out[0] = AuditedBucket("dify+snapshot", s3)
    else:
        out.append(AuditedBucket("snapshot", dest))
    return out


def audit_bucket(audit: AuditRun, b: AuditedBucket) -> None:
    target = f"{b.role} bucket {b.name}"
    checks_bucket.plain_http(audit, b, target)
    client = audit.client(b.s3)
    try:
        client.head_bucket(Bucket=b.name)
    except Exception as exc:
        err = s3a.translate_error(exc, what=f"bucket {b.name}", endpoint=b.s3.endpoint)
        if isinstance(err, NotFoundError) or s3a.http_status(exc) == 404:
            audit.add("s3.bucket_missing", f"HEAD bucket {b.name}: 404 on {b.s3.endpoint or 'AWS S3'}",
                      f"mc mb --with-versioning ALIAS/{b.name}" +
                      (" --with-lock" if "snapshot" in b.role else ""), target)
        elif isinstance(err, AuthError):
            audit.add("audit.check_failed", f"HEAD bucket {b.name}: {err}", err.hint or "check the key's policy",
                      target)
        else:
            audit.add("s3.unreachable", f"HEAD bucket {b.name}: {err}",
                      err.hint or "check s3.endpoint and that the server runs", target)
        return
    audit.result.checked.append(f"s3: {target} exists")
    checks_bucket.credential_checks(audit, b, target)
    audit.guarded(f"s3: {target} credential policy", lambda: checks_s3.policy_scope(audit, b, target))
    if audit.options.probe:
        audit.guarded(f"s3: {target} write/delete probe", lambda: checks_bucket.probe(audit, b, client, target))
        audit.guarded(f"s3: {target} multipart probe",
                      lambda: checks_s3.multipart_probe(audit, b, client, target))
    audit.guarded(f"s3: {target} versioning", lambda: checks_bucket.versioning(audit, b, client, target))
    if "snapshot" in b.role:
        audit.guarded(f"s3: {target} object lock", lambda: checks_bucket.object_lock(audit, b, client, target))
    audit.guarded(f"s3: {target} lifecycle", lambda: checks_bucket.lifecycle(audit, b, client, target))
    audit.guarded(f"s3: {target} bucket policy", lambda: checks_bucket.policy(audit, b, client, target))
    audit.guarded(f"s3: {target} anonymous list", lambda: checks_bucket.anonymous_list(audit, b, target))
    audit.guarded(f"s3: {target} encryption", lambda: checks_s3.encryption(audit, b, client, target))


def run(audit: AuditRun) -> AuditResult:
    audit.guarded("s3: TLS certificates", lambda: checks_tls.certificates(audit))
    for b in buckets(audit):
        audit.guarded(f"s3: {b.role} bucket {b.name}", lambda b=b: audit_bucket(audit, b))  # type: ignore[misc]
    audit.guarded("minio: site replication", lambda: checks_minio.site_replication(audit))
    audit.guarded("minio: audit log", lambda: checks_minio.audit_log(audit))
    audit.guarded("minio: free space", lambda: checks_storage.free_space(audit))
    if audit.settings.s3.bucket or audit.settings.snapshot.bucket:
        audit.guarded("drtool: snapshots", lambda: checks_drtool.snapshots(audit))
        audit.guarded("drtool: drills", lambda: checks_drtool.drills(audit))
    pg_up = checks_pg.postgres(audit)
    if pg_up:
        audit.guarded("postgres: tables readable by the role", lambda: checks_pg.dump_readable(audit))
        audit.guarded("drtool: datasets", lambda: checks_drtool.datasets(audit))
        audit.guarded("postgres: plugin database", lambda: checks_pg.plugin_database(audit))
        audit.guarded("drtool: embedding cache coverage", lambda: checks_cache.embedding_cache(audit))
    else:
        audit.result.skipped.append("drtool: chunk files and models not checked (postgres unreachable)")
    audit.guarded("vector: reachable", lambda: checks_vector.reachable(audit))
    if pg_up:
        audit.guarded("vector: collection counts", lambda: checks_vector.index_counts(audit))
    return audit.result


def run_audit(settings: Settings, options: AuditOptions) -> AuditResult:
    return run(AuditRun(settings, options))

"""Each test breaks ONE thing of the well-configured world on the real servers and checks that `drtool audit`
reports exactly that finding id, with its severity, and the exit code that severity implies (3 warning, 4
critical). "Exactly" is the point: an audit that also flagged something else would drown the real problem."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.audit.conftest import AuditWorld, passed_drill, put_drill
from tests.stack.minio_sites import MinioSites
from tests.stack.ports import free_port

EXIT = {"warning": 3, "critical": 4}


def only(world: AuditWorld, fid: str, severity: str, *args: str) -> dict[str, object]:
    """Run the audit and insist on exactly this one problem; returns its finding (the first of that id)."""
    done = world.audit("audit", "--json", *args)
    assert set(done.problems()) == {fid}, [(f["id"], f["evidence"]) for f in done.findings]
    assert done.problems()[fid] == severity
    assert done.code == EXIT[severity], done.err
    assert done.result["exit_code"] == done.code
    return next(f for f in done.findings if f["id"] == fid)


def fresh_snapshot_bucket(world: AuditWorld, monkeypatch: pytest.MonkeyPatch, *, lock: bool) -> str:
    """Point drtool at a new snapshot bucket holding one signed snapshot and one passed drill."""
    from datetime import UTC, datetime, timedelta

    name = f"audit-snap2-{uuid.uuid4().hex[:8]}"
    world.client.create_bucket(Bucket=name, **({"ObjectLockEnabledForBucket": True} if lock else {}))
    world.client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setenv("DRTOOL_SNAPSHOT_BUCKET", name)
    world.grant(world.dify_bucket, name)
    made = world.audit("snapshot", "create", "--json")
    assert made.code == 0, made.out + made.err
    put_drill(world.client, name, passed_drill(datetime.now(UTC) - timedelta(days=1)))
    return name


# --- object storage ------------------------------------------------------------------------------------------

def test_lifecycle_shorter_than_retention_is_critical_and_every_output_says_so(
        world: AuditWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    world.client.put_bucket_lifecycle_configuration(Bucket=world.dify_bucket, LifecycleConfiguration={"Rules": [
        {"ID": "short", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
    for name, value in (("KEEP_DAILY", "7"), ("KEEP_WEEKLY", "0"), ("KEEP_MONTHLY", "0")):
        monkeypatch.setenv(f"DRTOOL_SNAPSHOT_{name}", value)
    report, metrics = tmp_path / "audit.md", tmp_path / "audit.prom"
    finding = only(world, "s3.lifecycle_expires_restore_points", "critical", "--report", str(report),
                   "--metrics-file", str(metrics))
    assert "after 1 day(s)" in str(finding["evidence"]) and "up to 7 day(s)" in str(finding["evidence"])
    assert "--noncurrent-expire-days 7" in str(finding["fix"])
    assert world.dify_bucket in str(finding["target"])
    text = report.read_text()
    assert text.startswith("# drtool audit ") and ": CRITICAL" in text.splitlines()[0]
    assert "`s3.lifecycle_expires_restore_points`" in text and "mc ilm rule edit" in text
    prom = metrics.read_text()
    assert 'drtool_audit_findings{severity="critical"} 1' in prom
    assert 'drtool_audit_finding{id="s3.lifecycle_expires_restore_points",severity="critical"} 1' in prom
    assert 'drtool_audit_finding{id="s3.versioning_off",severity="critical"} 0' in prom
    assert "drtool_audit_last_exit_code 4" in prom
    # the human table with --fix-hints: grouped by system, the fix printed, the score last
    human = world.audit("audit", "--fix-hints")
    assert human.code == 4
    lines = human.out.splitlines()
    assert lines[0] == "s3"
    assert any("CRITICAL" in ln and "s3.lifecycle_expires_restore_points" in ln for ln in lines)
    assert any(ln.strip().startswith("fix:") and "mc ilm rule edit" in ln for ln in lines)
    assert lines[-1 - sum(1 for ln in lines if ln.startswith("  skipped"))].startswith("score 75/100")
    assert world.env["DRTOOL_S3_SECRET_KEY"] not in human.out + human.err + text + prom
    # cron's view: -q prints nothing but the one line saying why (docs/exit-codes.md)
    quiet = world.audit("--log-format", "text", "-q", "audit")
    assert quiet.code == 4 and quiet.out == ""
    assert "audit: score 75/100: s3.lifecycle_expires_restore_points" in quiet.err


def test_report_in_a_missing_folder_is_a_usage_error(world: AuditWorld, tmp_path: Path) -> None:
    done = world.audit("audit", "--report", str(tmp_path / "nope" / "audit.md"))
    assert done.code == 2 and "does not exist" in done.err


def test_anonymous_bucket_policy_is_critical(world: AuditWorld) -> None:
    world.client.put_bucket_policy(Bucket=world.dify_bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{world.dify_bucket}", f"arn:aws:s3:::{world.dify_bucket}/*"]}]}))
    done = world.audit("audit", "--json")
    assert set(done.problems()) == {"s3.anonymous_access"} and done.code == 4, done.findings
    seen = " ".join(str(f["evidence"]) for f in done.findings if f["id"] == "s3.anonymous_access")
    # the policy, the unauthenticated LIST and the unauthenticated GET of the probe each saw it
    assert "principal '*'" in seen and "unauthenticated LIST" in seen and "unauthenticated GET" in seen
    assert all(f["fix"] == f"mc anonymous set none ALIAS/{world.dify_bucket}"
               for f in done.findings if f["id"] == "s3.anonymous_access")


def test_root_credentials_are_a_warning(world: AuditWorld, isolated_minio_pair: MinioSites,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_S3_ACCESS_KEY", isolated_minio_pair.a.access_key)
    monkeypatch.setenv("DRTOOL_S3_SECRET_KEY", isolated_minio_pair.a.secret_key)
    finding = only(world, "s3.root_credentials", "warning")
    assert "root user" in str(finding["evidence"]) and "mc admin user add" in str(finding["fix"])


def test_snapshot_bucket_without_object_lock_is_a_warning(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    name = fresh_snapshot_bucket(world, monkeypatch, lock=False)
    finding = only(world, "s3.object_lock_off", "warning")
    assert name in str(finding["target"]) and "--with-lock" in str(finding["fix"])


def test_plain_http_to_another_host_is_a_warning(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """TEST-NET-1 (RFC 5737) never answers: the TLS finding needs no answer, the unreachable one follows."""
    monkeypatch.setenv("DRTOOL_S3_ENDPOINT", "http://192.0.2.1:9000")
    monkeypatch.setenv("DRTOOL_S3_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("DRTOOL_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("DRTOOL_REPLICATION_SITES", "")  # only the S3 checks matter here
    done = world.audit("audit", "--json", "--no-probe")
    severities = {(f["id"], f["severity"]) for f in done.findings}
    assert ("s3.plain_http", "warning") in severities and ("s3.unreachable", "critical") in severities
    assert done.code == 4


def test_suspended_versioning_is_critical(solo_minio: tuple[str, str, str], world: AuditWorld,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """On a MinIO without site replication (which refuses to suspend versioning)."""
    from tests.stack.s3_client import path_style_client

    endpoint, access, secret = solo_minio
    client = path_style_client(endpoint, access, secret)
    bucket = f"audit-susp-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    monkeypatch.setenv("DRTOOL_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("DRTOOL_S3_BUCKET", bucket)
    monkeypatch.setenv("DRTOOL_S3_ACCESS_KEY", access)
    monkeypatch.setenv("DRTOOL_S3_SECRET_KEY", secret)
    done = world.audit("audit", "--json", "--no-probe")
    mine = [f for f in done.findings if f["id"] == "s3.versioning_off" and bucket in str(f["target"])]
    assert len(mine) == 1 and mine[0]["severity"] == "critical", done.findings
    assert "Suspended" in str(mine[0]["evidence"]) and f"mc version enable ALIAS/{bucket}" == mine[0]["fix"]
    assert done.code == 4
    # the control: the same bucket with versioning on has no versioning finding
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    again = world.audit("audit", "--json", "--no-probe")
    assert not [f for f in again.findings if f["id"] == "s3.versioning_off" and bucket in str(f["target"])]


def test_missing_bucket_is_critical(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = f"audit-missing-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DRTOOL_SNAPSHOT_BUCKET", missing)
    world.grant(world.dify_bucket, missing)  # the key may use it: the server answers 404, not 403
    done = world.audit("audit", "--json")
    mine = [f for f in done.findings if f["id"] == "s3.bucket_missing"]
    assert len(mine) == 1 and mine[0]["severity"] == "critical" and missing in str(mine[0]["target"]), done.findings
    assert "--with-lock" in str(mine[0]["fix"]) and done.code == 4


def test_read_only_key_fails_the_probe(world: AuditWorld, isolated_minio_pair: MinioSites,
                                       monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    """A key that may read all the audit reads but write nothing: the next snapshot would fail, and only a write
    says so. Its reads stay within docs/iam.md's resources (else s3.policy_too_wide would be a second finding)."""
    user, password = f"audit-ro-{uuid.uuid4().hex[:6]}", "ro-" + uuid.uuid4().hex
    policy = tmp_path / "no-write.json"
    buckets = [f"arn:aws:s3:::{world.dify_bucket}", f"arn:aws:s3:::{world.snap_bucket}"]
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketVersioning", "s3:GetLifecycleConfiguration",
                                       "s3:GetBucketPolicy", "s3:GetEncryptionConfiguration"], "Resource": buckets},
        {"Effect": "Allow", "Action": ["s3:GetBucketObjectLockConfiguration"], "Resource": buckets[1:]},
        {"Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"{buckets[0]}/*", f"{buckets[1]}/drtool/*"]}]}))
    isolated_minio_pair.mc("admin", "policy", "create", "A", "audit-no-write", str(policy))
    isolated_minio_pair.mc("admin", "user", "add", "A", user, password)
    isolated_minio_pair.mc("admin", "policy", "attach", "A", "audit-no-write", "--user", user)
    monkeypatch.setenv("DRTOOL_S3_ACCESS_KEY", user)
    monkeypatch.setenv("DRTOOL_S3_SECRET_KEY", password)
    done = world.audit("audit", "--json")
    assert set(done.problems()) == {"s3.probe_failed"}, "\n".join(f"{f['id']} {f['evidence']}" for f in done.findings)
    targets = sorted(str(f["target"]).split()[0] for f in done.findings if f["id"] == "s3.probe_failed")
    assert targets == ["dify", "snapshot"] and done.code == 4
    assert password not in done.out + done.err


def test_minio_without_site_replication_is_a_warning(solo_minio: tuple[str, str, str], world: AuditWorld,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, access, secret = solo_minio
    monkeypatch.setenv("DRTOOL_REPLICATION_SITES", "")
    monkeypatch.setenv("DRTOOL_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("DRTOOL_REPLICATION_ACCESS_KEY", access)
    monkeypatch.setenv("DRTOOL_REPLICATION_SECRET_KEY", secret)
    done = world.audit("audit", "--json", "--no-probe")
    mine = [f for f in done.findings if f["id"] == "minio.site_replication_off"]
    assert len(mine) == 1 and mine[0]["severity"] == "warning", "\n".join(f"{f['id']} {f['evidence']}"
                                                                           for f in done.findings)
    assert "enabled=false" in str(mine[0]["evidence"]) and "mc admin replicate add" in str(mine[0]["fix"])


# --- drtool's own state ------------------------------------------------------------------------------------------

def test_snapshot_older_than_rpo_is_critical(world: AuditWorld) -> None:
    time.sleep(1.0)
    finding = only(world, "drtool.snapshot_too_old", "critical", "--rpo-hours", "0.0001")
    assert "RPO target 0.0001 h" in str(finding["evidence"])


def test_no_snapshot_is_critical(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    name = f"audit-empty-{uuid.uuid4().hex[:8]}"
    world.client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    put_drill(world.client, name, passed_drill(datetime.now(UTC) - timedelta(days=1)))
    monkeypatch.setenv("DRTOOL_SNAPSHOT_BUCKET", name)
    world.grant(world.dify_bucket, name)
    finding = only(world, "drtool.no_snapshot", "critical")
    assert f"s3://{name}/drtool/snapshots/" in str(finding["evidence"])


def test_unsigned_newest_snapshot_is_a_warning(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRTOOL_SNAPSHOT_SIGNING_KEY_FILE")
    time.sleep(1.0)  # a fence after the signed one's
    made = world.audit("snapshot", "create", "--json")
    assert made.code == 0, made.out + made.err
    finding = only(world, "drtool.snapshot_unsigned", "warning")
    assert "no signature" in str(finding["evidence"])


def test_drill_older_than_the_limit_is_a_warning(world: AuditWorld) -> None:
    finding = only(world, "drtool.drill_overdue", "warning", "--drill-max-age-days", "0.5")
    assert "limit 0.5 days" in str(finding["evidence"])


def test_missing_chunk_file_is_critical(world: AuditWorld) -> None:
    from tests.stack.dify_seed import DEFAULT_EMBEDDING_MODEL  # noqa: F401 - the seed's high-quality dataset

    first = world.db.dataset_ids[0]
    world.client.delete_object(Bucket=world.dify_bucket, Key=f"datasets/{first}/processed/chunks.jsonl")
    finding = only(world, "drtool.chunks_missing", "critical")
    assert finding["target"] == first and finding["fix"] == f"drtool export-chunks --dataset {first}"


# --- Postgres and the vector store ---------------------------------------------------------------------------

def test_postgres_unreachable_is_critical(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_POSTGRES_PORT", str(free_port()))
    monkeypatch.setenv("DRTOOL_POSTGRES_CONNECT_TIMEOUT", "2")
    only(world, "postgres.unreachable", "critical")


def test_embedding_model_mismatch_is_critical(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_EMBEDDING_MODEL", "text-embedding-3-large")
    finding = only(world, "vector.embedding_mismatch", "critical")
    assert "text-embedding-3-large" in str(finding["evidence"])


def test_vector_store_unreachable_is_critical(world: AuditWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_VECTOR_STORE", "weaviate")
    monkeypatch.setenv("DRTOOL_WEAVIATE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("DRTOOL_WEAVIATE_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("DRTOOL_WEAVIATE_TIMEOUT", "3")
    only(world, "vector.unreachable", "critical")


# --- Postgres client version (kept apart: it starts a PostgreSQL 16 server) -------------------------------------

def test_pg_dump_older_than_the_server_is_critical(world: AuditWorld, isolated_pg: object,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A real PostgreSQL 16 holding the Dify database, and snapshot.pg_bin_dir at the 15 client tools."""
    from tests.stack.dify_db import create_dify_database
    from tests.stack.pg_server import PostgresMajors, PostgresServer

    assert isinstance(isolated_pg, PostgresServer)
    with PostgresMajors(system=isolated_pg) as majors:
        server = majors(16)
        db = create_dify_database(server)
        for ds in db.dataset_ids:  # the new database's datasets need their chunk files too
            world.client.put_object(Bucket=world.dify_bucket, Key=f"datasets/{ds}/processed/chunks.jsonl",
                                    Body=b'{"id": "x", "text": "chunk"}\n')
        for k, v in (("HOST", server.host), ("PORT", str(server.port)), ("USER", server.user),
                     ("PASSWORD", server.password), ("DATABASE", db.dbname)):
            monkeypatch.setenv(f"DRTOOL_POSTGRES_{k}", v)
        monkeypatch.setenv("DRTOOL_SNAPSHOT_PG_BIN_DIR", str(isolated_pg.bin_dir))
        finding = only(world, "postgres.pg_dump_older", "critical")
        assert "postgresql-client-16" in str(finding["fix"]) and "15." in str(finding["evidence"])


# --- MinIO -------------------------------------------------------------------------------------------------------

def _wait_replicated(world: AuditWorld, seconds: float, what: str) -> None:
    """Until `replication status` says 0 (nothing pending or failed) on the audit's pair."""
    deadline = time.monotonic() + seconds
    while world.audit("replication", "status", "--no-bucket-check", "--json").code != 0:
        assert time.monotonic() < deadline, what
        time.sleep(1.0)


def test_one_site_down_is_critical(world: AuditWorld, isolated_minio_pair: MinioSites) -> None:
    """Leaves the audit's pair as healthy as it found it, whatever runs next: the world's own writes are
    replicated before B stops (a version still queued would fail, and stay a failed replication that every later
    audit and replication verdict reports), nothing is written while it is down (--no-probe), and the test waits
    for the pair to be healthy again after B's restart."""
    _wait_replicated(world, 120, "the world's writes were not replicated before site B was stopped")
    isolated_minio_pair.b.stop()
    try:
        finding = only(world, "minio.site_offline", "critical", "--no-probe")
        assert "site B" in str(finding["evidence"]) or isolated_minio_pair.b.endpoint in str(finding["evidence"])
    finally:
        isolated_minio_pair.b.start()
        _wait_replicated(world, 180, "replication did not recover after site B restarted")


def test_no_audit_log_target_then_an_offline_one_are_warnings(world: AuditWorld, isolated_minio_pair: MinioSites,
                                                              audit_collector: str) -> None:
    from tests.audit.conftest import set_audit_webhook

    try:
        set_audit_webhook(isolated_minio_pair, None)
        done = world.audit("audit", "--json")
        assert done.problems().get("minio.audit_log_off") == "warning", done.findings
        assert done.code == 3
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens there: the target is offline
        set_audit_webhook(isolated_minio_pair, f"http://127.0.0.1:{port}/audit")
        done = world.audit("audit", "--json")
        assert "minio.audit_log_off" not in done.problems()
        assert done.problems().get("minio.audit_log_offline") == "warning", done.findings
    finally:
        set_audit_webhook(isolated_minio_pair, audit_collector)

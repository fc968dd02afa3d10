"""The audit checks added after the first set (issue #15, second part), each against the real servers of the
well-configured `world`: break exactly one thing and the audit reports exactly that finding, with its severity.

The file name sorts before test_audit_findings.py on purpose: its site-down test, last there, leaves failed
replications in MinIO's last-hour counters, a `minio.replication_warning` that would be a second finding here."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.audit.conftest import AuditWorld
from tests.audit.test_audit_findings import only
from tests.stack.minio_sites import MinioSites, start_tls_minio
from tests.stack.pg_server import PostgresServer
from tests.stack.ports import free_port


@contextmanager
def reader_role(world: AuditWorld, pg: PostgresServer) -> Iterator[tuple[str, str]]:
    """A login role that may read every table and sequence of the Dify database as it is now (the GRANTs a
    careful operator gives drtool), dropped again afterwards with what was granted to it."""
    role, password = f"drtool_audit_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    r = sql.Identifier(role)
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(r, sql.Literal(password)))
    try:
        with world.db.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(r))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(r))
            conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(r))
        yield role, password
    finally:
        with world.db.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(r))
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(r))


# --- Postgres: pg_dump can read every table --------------------------------------------------------------------

def test_table_the_role_cannot_read_is_critical(world: AuditWorld, isolated_pg: PostgresServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A table created after the GRANTs by another role (a migration run as the owner): the drtool role cannot
    read it or its sequence, so pg_dump would fail with "permission denied"."""
    with reader_role(world, isolated_pg) as (role, password):
        monkeypatch.setenv("DRTOOL_POSTGRES_USER", role)
        monkeypatch.setenv("DRTOOL_POSTGRES_PASSWORD", password)
        clean = world.audit("audit", "--json", "--no-probe")
        assert "postgres.dump_unreadable" not in {f["id"] for f in clean.findings}, clean.findings
        assert any(f"role {role} can read" in c for c in clean.result["checked"]), clean.result["checked"]
        with world.db.connect(autocommit=True) as conn:
            conn.execute("CREATE TABLE public.audit_secret_notes (id serial PRIMARY KEY, note text)")
        finding = only(world, "postgres.dump_unreadable", "critical", "--no-probe")
        evidence, fix = str(finding["evidence"]), str(finding["fix"])
        assert f"role {role} cannot read 2 of " in evidence
        assert "public.audit_secret_notes, public.audit_secret_notes_id_seq (sequence)" in evidence
        assert f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};" in fix
        assert f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};" in fix
        assert password not in evidence + fix


# --- vector store: each high-quality dataset's collection is there and not short ----------------------------------

def test_collection_short_then_missing(world: AuditWorld, milvus_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real collections in Milvus (Lite) in Dify's layout: the first dataset's holds one vector per indexed text,
    the second's two fewer (a warning: verify is the deep check); then that collection is dropped (critical)."""
    import random

    from drtool.adapters.dify_metadata import DifyReader
    from drtool.adapters.milvus import MilvusTarget
    from drtool.config import MilvusSettings, PostgresSettings
    from drtool.core import naming
    from tests.stack.dify_seed import DEFAULT_DIMENSIONS

    env = world.env
    pgs = PostgresSettings(host=env["DRTOOL_POSTGRES_HOST"], port=int(env["DRTOOL_POSTGRES_PORT"]),
                           user=env["DRTOOL_POSTGRES_USER"], password=env["DRTOOL_POSTGRES_PASSWORD"],
                           database=env["DRTOOL_POSTGRES_DATABASE"], sslmode="disable")
    with DifyReader(pgs) as reader:
        datasets = [d for d in reader.datasets() if d.indexing_technique == "high_quality"]
        nodes = {d.id: list(reader.iter_index_nodes(d.id)) for d in datasets}
    assert len(datasets) == 2 and all(len(n) > 3 for n in nodes.values())
    first, second = datasets
    rng = random.Random(15)
    store = MilvusTarget(MilvusSettings(uri=milvus_uri))
    names: dict[str, str] = {}
    try:
        for d, keep in ((first, len(nodes[first.id])), (second, len(nodes[second.id]) - 2)):
            names[d.id] = str(naming.from_index_struct(d.index_struct)[1])
            store.create(names[d.id], DEFAULT_DIMENSIONS)
            rows = [(n.text, {"doc_id": n.id, "document_id": n.document_id, "dataset_id": d.id},
                     [rng.uniform(-1, 1) for _ in range(DEFAULT_DIMENSIONS)]) for n in nodes[d.id][:keep]]
            store.insert(names[d.id], rows)
            store.finish(names[d.id])
    finally:
        store.close()
    monkeypatch.setenv("DRTOOL_MILVUS_URI", milvus_uri)
    finding = only(world, "vector.count_short", "warning", "--no-probe")
    assert finding["target"] == second.id
    expected = len(nodes[second.id])
    assert f"holds {expected - 2} vector(s); Postgres has {expected} " in str(finding["evidence"])
    assert f"drtool verify --dataset {second.id}" in str(finding["fix"])

    store = MilvusTarget(MilvusSettings(uri=milvus_uri))
    try:
        store.drop(names[second.id])
    finally:
        store.close()
    finding = only(world, "vector.collection_missing", "critical", "--no-probe")
    assert finding["target"] == second.id and f"Postgres has {expected} indexed" in str(finding["evidence"])
    assert f"drtool rebuild-index --dataset {second.id}" in str(finding["fix"])


# --- TLS: the certificate of an https S3 endpoint ------------------------------------------------------------

TLS_ROOT, TLS_ROOT_SECRET = "tlsroot", "tls-root-" + secrets.token_urlsafe(12)


def _write_certs(folder: Path) -> Path:
    """A private CA (ca.pem) and two leaves it signs, in MinIO's certs-dir layout: the default one, for
    IP 127.0.0.1, ends in 5 days; the one MinIO picks by SNI for the name `localhost` ended a day ago.
    Returns the CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drtool audit test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=30))
          .not_valid_after(now + timedelta(days=60))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    for sub, name, san, days_left in (("", "127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1")), 5),
                                      ("localhost", "localhost", x509.DNSName("localhost"), -1)):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=20)).not_valid_after(now + timedelta(days=days_left))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        certs = folder / "certs" / sub
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "public.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (certs / "private.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return folder / "ca.pem"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the s3.verify_tls=false run
def test_tls_certificate_expiring_then_expired(world: AuditWorld, isolated_minio_pair: MinioSites, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Dify's bucket on a real MinIO serving TLS (the snapshot bucket stays on site A): reached as 127.0.0.1 its
    certificate ends in 5 days (a warning); reached as localhost MinIO serves one that expired a day ago
    (critical). With verification on, drtool cannot reach the bucket either; with s3.verify_tls off drtool still
    connects and the expired certificate is the only finding (Dify's verifying clients would refuse it)."""
    import json

    import boto3
    from botocore.config import Config

    from drtool.core.iam import documented_policy

    folder = tmp_path / "tls-minio"
    folder.mkdir()
    ca = _write_certs(folder)
    port = free_port()
    endpoint = f"https://127.0.0.1:{port}"
    proc = start_tls_minio(folder, port, TLS_ROOT, TLS_ROOT_SECRET)
    try:
        user, password = "drtool-tls-user", "tls-user-" + secrets.token_urlsafe(12)
        bucket = "audit-tls-dify"
        mc = [str(isolated_minio_pair.mc_path), "--config-dir", str(folder / "mc"), "--insecure"]
        mc_env = {**os.environ, "MC_HOST_T": f"https://{TLS_ROOT}:{TLS_ROOT_SECRET}@127.0.0.1:{port}"}
        policy = folder / "drtool-policy.json"  # docs/iam.md's, so s3.policy_too_wide is no second finding
        policy.write_text(json.dumps(documented_policy(bucket, world.snap_bucket)))
        for args in (("admin", "user", "add", "T", user, password),
                     ("admin", "policy", "create", "T", "drtool-tls", str(policy)),
                     ("admin", "policy", "attach", "T", "drtool-tls", "--user", user)):
            subprocess.run([*mc, *args], check=True, capture_output=True, timeout=60, env=mc_env)
        root = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=TLS_ROOT,
                            aws_secret_access_key=TLS_ROOT_SECRET, region_name="us-east-1", verify=str(ca),
                            config=Config(s3={"addressing_style": "path"}))
        root.create_bucket(Bucket=bucket)
        root.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        for ds in world.db.dataset_ids:
            root.put_object(Bucket=bucket, Key=f"datasets/{ds}/processed/chunks.jsonl", Body=b'{"id": "x"}\n')
        world.grant(bucket, world.snap_bucket)  # the world's key, on the snapshot bucket: documented for these
        env = world.env
        for name, value in (("SNAPSHOT_ENDPOINT", env["DRTOOL_S3_ENDPOINT"]),
                            ("SNAPSHOT_ACCESS_KEY", env["DRTOOL_S3_ACCESS_KEY"]),
                            ("SNAPSHOT_SECRET_KEY", env["DRTOOL_S3_SECRET_KEY"]),
                            ("S3_ENDPOINT", endpoint), ("S3_BUCKET", bucket), ("S3_ACCESS_KEY", user),
                            ("S3_SECRET_KEY", password), ("S3_CA_BUNDLE", str(ca))):
            monkeypatch.setenv(f"DRTOOL_{name}", value)

        finding = only(world, "s3.tls_expiring", "warning", "--no-probe")
        days = re.search(r"expires in ([0-9.]+) day\(s\) \(warning below 14\)", str(finding["evidence"]))
        assert finding["target"] == endpoint and days and 4.5 < float(days[1]) <= 5.0, finding["evidence"]
        assert "CN=127.0.0.1" in str(finding["evidence"]) and "renew the certificate" in str(finding["fix"])

        by_name = f"https://localhost:{port}"
        monkeypatch.setenv("DRTOOL_S3_ENDPOINT", by_name)
        refused = world.audit("audit", "--json", "--no-probe")  # drtool verifies: the bucket cannot be reached
        assert refused.problems().get("s3.tls_invalid") == "critical" and refused.code == 4, refused.findings
        assert "certificate has expired" in " ".join(str(f["evidence"]) for f in refused.findings)
        monkeypatch.setenv("DRTOOL_S3_VERIFY_TLS", "false")
        finding = only(world, "s3.tls_invalid", "critical", "--no-probe")
        evidence = str(finding["evidence"])
        assert finding["target"] == by_name and "CN=localhost" in evidence
        assert re.search(r"expired (1\.0|0\.9) day\(s\) ago", evidence) and "s3.verify_tls is off" in evidence
    finally:
        proc.stop()


# --- MinIO: free space on the drives ----------------------------------------------------------------------------

ADMIN_INFO = Path(__file__).with_name("minio_admin_info.json")  # `admin info` of a real single-drive MinIO


def test_low_free_rule_on_captured_admin_info() -> None:
    """The rule on the answer a real MinIO gave (97.8 GB drive, 21.7 % free): below the threshold or not, an
    offline drive left out, and a drive without a size never divides by zero."""
    import copy
    import json

    from drtool.core.audit import MIN_FREE_PERCENT, low_free_drives

    info = json.loads(ADMIN_INFO.read_text())
    drive = info["servers"][0]["drives"][0]
    real = 100.0 * drive["availspace"] / drive["totalspace"]
    assert MIN_FREE_PERCENT < real < 25
    assert low_free_drives(info) == []
    low = low_free_drives(info, 25)
    assert [(d.path, round(d.free_percent, 1), d.total) for d in low] == [(drive["path"], round(real, 1),
                                                                             drive["totalspace"])]
    broken = copy.deepcopy(info)
    broken["servers"][0]["drives"][0]["state"] = "offline"
    broken["servers"][0]["drives"].append({**drive, "path": "/empty", "totalspace": 0, "availspace": 0})
    assert low_free_drives(broken, 25) == []


def test_free_space_below_the_threshold_is_a_warning(world: AuditWorld, isolated_minio_pair: MinioSites) -> None:
    """The real `admin info` of both sites, with a threshold above any drive's real free share (100 %): every
    site has a drive below it, so each is one warning, and nothing else is reported."""
    from drtool.config import load_settings
    from drtool.core.audit import Severity
    from drtool.ops.audit.context import AuditOptions
    from drtool.ops.audit.runner import run_audit

    result = run_audit(load_settings(), AuditOptions(min_free_percent=100.0, probe=False))
    problems = [f for f in result.findings if f.level >= Severity.WARNING]
    assert {f.id for f in problems} == {"minio.low_free_space"}, [(f.id, f.evidence) for f in problems]
    assert sorted(f.target for f in problems) == sorted([isolated_minio_pair.a.endpoint,
                                                         isolated_minio_pair.b.endpoint])
    assert all(f.level.label == "warning" and "below 100 % free" in f.evidence and " GB)" in f.evidence
               for f in problems)
    assert result.exit_code == 3  # at the default 10 %, test_audit_clean sees no such finding on this host


# --- the pure rules -----------------------------------------------------------------------------------------------

def test_tls_verdict_orders_expired_then_invalid_then_expiring() -> None:
    from drtool.core.audit import CertFacts, tls_verdict

    now = datetime(2026, 12, 7, tzinfo=UTC)
    fine = CertFacts("CN=s3", "CN=ca", now - timedelta(days=10), now + timedelta(days=60))
    assert tls_verdict(fine, now, None) is None
    assert tls_verdict(fine, now, "self-signed certificate in certificate chain") == (
        "s3.tls_invalid", f"certificate CN=s3 (issuer CN=ca) valid until {fine.not_after.isoformat()}: "
                          "verification failed: self-signed certificate in certificate chain")
    early = CertFacts("CN=s3", "CN=ca", now + timedelta(days=1), now + timedelta(days=60))
    assert tls_verdict(early, now, None)[0] == "s3.tls_invalid"  # type: ignore[index]
    soon = CertFacts("CN=s3", "CN=ca", now - timedelta(days=80), now + timedelta(days=13.5))
    assert tls_verdict(soon, now, None)[0] == "s3.tls_expiring"  # type: ignore[index]
    assert tls_verdict(soon, now, None, warn_days=13) is None


def test_grant_fix_quotes_names_from_the_catalog() -> None:
    from drtool.core.audit import pg_grant_fix

    fix = pg_grant_fix('Bad"Role', ["public", "My Schema"], ["My Schema"])
    assert 'GRANT USAGE ON SCHEMA "My Schema" TO "Bad""Role";' in fix
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "Bad""Role";' in fix
    assert 'GRANT pg_read_all_data TO "Bad""Role";' in fix

"""TLS against a real MinIO serving a certificate from a private CA: verification is on by default (refused, with a
message naming TLS verification and the --ca-bundle / DRTOOL_S3_CA_BUNDLE fix), the CA bundle makes it work, and
turning verification off takes an explicit flag and prints a warning. Both the S3 data path and MinIO's admin API."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.security.conftest import run_module
from tests.stack.minio_sites import start_tls_minio
from tests.stack.ports import free_ports

ACCESS, SECRET = "tlsadmin", "tls-secret-Wq83Lk2Pz"


@dataclass(frozen=True)
class TlsMinio:
    endpoint: str
    ca: Path
    other_ca: Path
    bucket: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN=drtool test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _make_certs(folder: Path) -> None:
    """A private CA, a server certificate it signs for 127.0.0.1 (in MinIO's certs-dir names), and a second,
    unrelated CA whose bundle must not be accepted."""
    _make_ca("ca", folder)
    _make_ca("other-ca", folder)
    certs = folder / "certs"
    certs.mkdir()
    (folder / "leaf.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
                                     "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                                     "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "certs/private.key", "-out", "leaf.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "certs/public.crt", "-days", "2", "-extfile", "leaf.ext", cwd=folder)


@pytest.fixture(scope="module")
def tls_minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMinio]:
    folder = tmp_path_factory.mktemp("tls-minio")
    _make_certs(folder)
    [port] = free_ports(1)
    endpoint = f"https://127.0.0.1:{port}"
    proc = start_tls_minio(folder, port, ACCESS, SECRET)
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                              region_name="us-east-1", verify=str(folder / "ca.pem"),
                              config=Config(s3={"addressing_style": "path"}))
        client.create_bucket(Bucket="tls-bucket")
        client.put_bucket_versioning(Bucket="tls-bucket", VersioningConfiguration={"Status": "Enabled"})
        yield TlsMinio(endpoint, folder / "ca.pem", folder / "other-ca.pem", "tls-bucket")
    finally:
        proc.stop()


def _s3_env(m: TlsMinio, **extra: str) -> dict[str, str]:
    return {"DRTOOL_S3_ENDPOINT": m.endpoint, "DRTOOL_S3_ACCESS_KEY": ACCESS, "DRTOOL_S3_SECRET_KEY": SECRET,
            "DRTOOL_S3_BUCKET": m.bucket, "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_S3_MAX_ATTEMPTS": "1", **extra}


def _assert_tls_refused(err: str) -> None:
    assert "TLS certificate verification failed" in err and "CERTIFICATE_VERIFY_FAILED" in err, err
    assert "--ca-bundle" in err and "DRTOOL_S3_CA_BUNDLE" in err, err
    assert "Traceback" not in err


def test_s3_data_path_verifies_by_default(tls_minio: TlsMinio, tmp_path: Path) -> None:
    m = tls_minio
    refused = run_module("snapshots", "list", env=_s3_env(m), cwd=tmp_path)
    assert refused.code == 1, refused.stderr
    _assert_tls_refused(refused.stderr)
    assert m.endpoint in refused.stderr  # names the system
    assert "verification is OFF" not in refused.stderr

    wrong_ca = run_module("snapshots", "list", "--ca-bundle", str(m.other_ca), env=_s3_env(m), cwd=tmp_path)
    assert wrong_ca.code == 1
    _assert_tls_refused(wrong_ca.stderr)


def test_s3_data_path_accepts_the_ca_bundle(tls_minio: TlsMinio, tmp_path: Path) -> None:
    m = tls_minio
    by_env = run_module("snapshots", "list", "--json", env=_s3_env(m, DRTOOL_S3_CA_BUNDLE=str(m.ca)), cwd=tmp_path)
    assert by_env.code == 0, by_env.stderr
    assert by_env.events()[-1]["snapshots"] == []
    by_flag = run_module("--ca-bundle", str(m.ca), "snapshots", "list", env=_s3_env(m), cwd=tmp_path)
    assert by_flag.code == 0, by_flag.stderr
    after = run_module("snapshots", "list", "--ca-bundle", str(m.ca), env=_s3_env(m), cwd=tmp_path)
    assert after.code == 0, after.stderr
    assert "verification is OFF" not in by_env.stderr + by_flag.stderr + after.stderr
    # The data path for real: export-chunks needs Postgres, so a snapshot-free write+read through `snapshots gc`.
    gc = run_module("snapshots", "gc", "--json", env=_s3_env(m, DRTOOL_S3_CA_BUNDLE=str(m.ca)), cwd=tmp_path)
    assert gc.code == 0, gc.stderr


def test_s3_verification_off_needs_the_flag_and_warns(tls_minio: TlsMinio, tmp_path: Path) -> None:
    m = tls_minio
    off = run_module("snapshots", "list", "--no-verify-tls", env=_s3_env(m), cwd=tmp_path)
    assert off.code == 0, off.stderr
    assert "TLS certificate verification is OFF" in off.stderr and m.endpoint in off.stderr
    by_setting = run_module("snapshots", "list", env=_s3_env(m, DRTOOL_S3_VERIFY_TLS="false"), cwd=tmp_path)
    assert by_setting.code == 0 and "TLS certificate verification is OFF" in by_setting.stderr


def test_admin_api_verifies_by_default(tls_minio: TlsMinio, tmp_path: Path) -> None:
    m = tls_minio
    site = f"T={m.endpoint}"
    env = _s3_env(m, DRTOOL_REPLICATION_SITES=site)
    refused = run_module("replication", "status", "--no-bucket-check", env=env, cwd=tmp_path)
    assert refused.code == 1, refused.stderr
    _assert_tls_refused(refused.stderr)
    assert f"site T ({m.endpoint})" in refused.stderr

    # Trusted: the server is reached and answers; a lone MinIO without site replication is CRITICAL (exit 4).
    trusted = run_module("replication", "status", "--no-bucket-check", "--json", "--ca-bundle", str(m.ca), env=env,
                     cwd=tmp_path)
    assert trusted.code == 4, trusted.stderr
    assert "TLS" not in trusted.stderr
    codes = {r["code"] for r in trusted.events()[-1]["reasons"]}
    assert codes and "site_unreachable" not in codes, codes

    off = run_module("replication", "status", "--no-bucket-check", "--json", "--no-verify-tls", env=env, cwd=tmp_path)
    assert off.code == 4, off.stderr
    assert "TLS certificate verification is OFF" in off.stderr and "site T" in off.stderr


def test_no_insecure_default_anywhere() -> None:
    """The shipped default trusts only verified certificates, and the only way off is explicit."""
    from drtool.config import SPECS

    assert SPECS["s3.verify_tls"].default is True
    assert SPECS["s3.ca_bundle"].default is None
    assert os.environ.get("DRTOOL_S3_VERIFY_TLS") is None

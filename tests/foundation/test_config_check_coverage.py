"""`config check` says what it cannot protect (exit 3) and proves the snapshot destination takes writes.

Real servers: a Dify .env whose storage drtool cannot read is checked next to a real Postgres (so the only finding
is the unprotected storage), and the snapshot bucket checks run against real MinIO buckets (site-replicated, so
versioned): missing, plain, with Object Lock, and read-only for the key drtool uses.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.foundation.cli_runner import ProcessRun, run_script
from tests.helpers.buckets import new_bucket


def s3_client(site: Any) -> Any:
    return boto3.client("s3", endpoint_url=site.endpoint, aws_access_key_id=site.access_key,
                        aws_secret_access_key=site.secret_key, region_name="us-east-1")


def site_bucket(site: Any, *, lock: bool = False) -> str:
    """An unversioned bucket on `site` (or one with Object Lock, which versions it)."""
    return new_bucket(s3_client(site), "cov", versioned=False, lock=lock)


def systems(run: ProcessRun) -> dict[str, dict[str, Any]]:
    (result,) = [e for e in run.json_lines() if "systems" in e]
    return {s["system"]: s for s in result["systems"]}  # type: ignore[union-attr]


def pg_env_lines(pg: Any) -> str:
    return (f"DB_HOST={pg.host}\nDB_PORT={pg.port}\nDB_USERNAME={pg.user}\nDB_PASSWORD={pg.password}\n"
            "DB_DATABASE=postgres\n")


def s3_env(site: Any, bucket: str, **extra: str) -> dict[str, str]:
    return {"DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ADDRESS_STYLE": "path",
            "DRTOOL_S3_ACCESS_KEY": site.access_key, "DRTOOL_S3_SECRET_KEY": site.secret_key, **extra}


@pytest.mark.parametrize("storage", [
    "STORAGE_TYPE=opendal\nOPENDAL_SCHEME=fs\nOPENDAL_FS_ROOT=storage\n",
    "OPENDAL_FS_ROOT=storage\n",  # Dify's defaults: opendal + fs, nothing written
    "STORAGE_TYPE=azure-blob\nAZURE_BLOB_ACCOUNT_NAME=acct\nAZURE_BLOB_CONTAINER_NAME=c\n",
    "STORAGE_TYPE=google-storage\nGOOGLE_STORAGE_BUCKET_NAME=b\n",
    "STORAGE_TYPE=aliyun-oss\nALIYUN_OSS_BUCKET_NAME=b\n",
    "STORAGE_TYPE=local\n",
], ids=["opendal-fs", "defaults", "azure-blob", "google-storage", "aliyun-oss", "local"])
def test_storage_drtool_cannot_read_is_not_protected_exit_3(storage: str, pg: Any, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(storage + pg_env_lines(pg))
    run = run_script("--dify-env", str(env_file), "config", "check", "--json", cwd=tmp_path)
    assert run.code == 3, run.stdout + run.stderr
    found = systems(run)
    assert found["postgres"]["ok"]
    files = found["dify files"]
    assert not files["ok"] and files["exit_code"] == 3 and "not protected" in files["problem"]
    assert "object store" not in found  # never probed as if it were S3
    text = run_script("--dify-env", str(env_file), "config", "check", cwd=tmp_path)
    assert text.code == 3
    line = next(line for line in text.stdout.splitlines() if line.startswith("dify files"))
    assert "WARNING" in line and "not protected" in line


def test_unreadable_storage_still_warns_when_s3_is_set_explicitly(pg: Any, minio_pair: Any, tmp_path: Path) -> None:
    """s3.* set by hand (e.g. for chunk files) does not make Dify's files on local disk protected."""
    env_file = tmp_path / ".env"
    env_file.write_text("STORAGE_TYPE=opendal\nOPENDAL_SCHEME=fs\n" + pg_env_lines(pg))
    bucket = site_bucket(minio_pair.a)
    run = run_script("--dify-env", str(env_file), "config", "check", "--json", env=s3_env(minio_pair.a, bucket),
                 cwd=tmp_path)
    assert run.code == 3, run.stdout + run.stderr
    found = systems(run)
    assert found["object store"]["ok"] and found["snapshot bucket"]["ok"]
    assert found["dify files"]["exit_code"] == 3


def test_s3_storage_with_a_ready_snapshot_bucket_passes(pg: Any, minio_pair: Any, tmp_path: Path) -> None:
    site = minio_pair.a
    bucket = site_bucket(site)
    env_file = tmp_path / ".env"
    env_file.write_text(f"STORAGE_TYPE=s3\nS3_ENDPOINT={site.endpoint}\nS3_BUCKET_NAME={bucket}\n"
                        f"S3_ACCESS_KEY={site.access_key}\nS3_SECRET_KEY={site.secret_key}\nS3_REGION=us-east-1\n"
                        "S3_ADDRESS_STYLE=path\nDB_PLUGIN_DATABASE=dify_plugin\n" + pg_env_lines(pg))
    run = run_script("--dify-env", str(env_file), "config", "check", "--json", cwd=tmp_path)
    assert run.code == 0, run.stdout + run.stderr
    snap = systems(run)["snapshot bucket"]
    assert snap["ok"] and snap["details"]["bucket"] == bucket and snap["details"]["writable"] is True
    assert snap["details"]["separate_from_dify"] is False  # the default: Dify's own bucket
    (result,) = [e for e in run.json_lines() if "dify_keys" in e]
    plugin = next(r for r in result["dify_keys"] if r["key"] == "DB_PLUGIN_DATABASE")  # type: ignore[union-attr]
    assert plugin["status"] == "mapped" and plugin["settings"] == ["postgres.plugin_database"]  # issue #13


def test_missing_snapshot_bucket_fails_with_10(minio_pair: Any, tmp_path: Path) -> None:
    site = minio_pair.a
    env = s3_env(site, site_bucket(site), DRTOOL_SNAPSHOT_BUCKET=f"no-such-{uuid.uuid4().hex[:8]}")
    run = run_script("config", "check", "--json", env=env, cwd=tmp_path)
    assert run.code == 10, run.stdout + run.stderr
    found = systems(run)
    assert found["object store"]["ok"]
    assert not found["snapshot bucket"]["ok"] and "does not exist" in found["snapshot bucket"]["problem"]


def test_write_probe_leaves_no_version_and_no_delete_marker(minio_pair: Any, tmp_path: Path) -> None:
    """MinIO site replication turns versioning on for every bucket: a plain DELETE would leave the probe's
    version behind a delete marker; the probe deletes the exact version it wrote."""
    site = minio_pair.a
    source, dest = site_bucket(site), site_bucket(site)
    run = run_script("config", "check", "--json", env=s3_env(site, source, DRTOOL_SNAPSHOT_BUCKET=dest), cwd=tmp_path)
    assert run.code == 0, run.stdout + run.stderr
    details = systems(run)["snapshot bucket"]["details"]
    assert details == {"bucket": dest, "versioning": "Enabled", "object_lock": "off",
                       "separate_from_dify": True, "writable": True, "probe_removed": True}
    listed = s3_client(site).list_object_versions(Bucket=dest)
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")


def test_write_probe_on_a_locked_versioned_bucket_removes_its_exact_version(minio_pair: Any, tmp_path: Path) -> None:
    site = minio_pair.a
    source, dest = site_bucket(site), site_bucket(site, lock=True)
    env = s3_env(site, source, DRTOOL_SNAPSHOT_BUCKET=dest, DRTOOL_SNAPSHOT_OBJECT_LOCK_DAYS="7")
    run = run_script("config", "check", "--json", env=env, cwd=tmp_path)
    assert run.code == 0, run.stdout + run.stderr
    details = systems(run)["snapshot bucket"]["details"]
    assert details["versioning"] == "Enabled" and details["object_lock"].startswith("on")
    assert details["probe_removed"] is True
    listed = s3_client(site).list_object_versions(Bucket=dest)
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")  # no delete marker either


def test_object_lock_asked_on_a_bucket_without_it_is_exit_2(minio_pair: Any, tmp_path: Path) -> None:
    site = minio_pair.a
    source, dest = site_bucket(site), site_bucket(site)
    env = s3_env(site, source, DRTOOL_SNAPSHOT_BUCKET=dest, DRTOOL_SNAPSHOT_OBJECT_LOCK_DAYS="7")
    run = run_script("config", "check", "--json", env=env, cwd=tmp_path)
    assert run.code == 2, run.stdout + run.stderr
    assert "Object Lock" in systems(run)["snapshot bucket"]["problem"]


def test_read_only_key_fails_the_write_probe_with_12(minio_pair: Any, tmp_path: Path) -> None:
    site = minio_pair.a
    source, dest = site_bucket(site), site_bucket(site)
    # Everything the check reads, nothing it writes: only the put probe can find this out.
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration",
                                       "s3:GetBucketLocation"], "Resource": [f"arn:aws:s3:::{dest}"]},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{dest}/*"]}]}
    user, secret, name = f"ro{uuid.uuid4().hex[:8]}", f"ro-secret-{uuid.uuid4().hex[:12]}", f"p{uuid.uuid4().hex[:8]}"
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(policy))
    minio_pair.mc("admin", "user", "add", site.alias, user, secret)
    minio_pair.mc("admin", "policy", "create", site.alias, name, str(policy_file))
    minio_pair.mc("admin", "policy", "attach", site.alias, name, "--user", user)
    env = s3_env(site, source, DRTOOL_SNAPSHOT_BUCKET=dest, DRTOOL_SNAPSHOT_ACCESS_KEY=user,
                 DRTOOL_SNAPSHOT_SECRET_KEY=secret)
    run = run_script("config", "check", "--json", env=env, cwd=tmp_path)
    assert run.code == 12, run.stdout + run.stderr
    found = systems(run)
    assert found["object store"]["ok"]  # the source key may write; the snapshot key may not
    assert "write probe" in found["snapshot bucket"]["problem"]
    assert secret not in run.stdout + run.stderr

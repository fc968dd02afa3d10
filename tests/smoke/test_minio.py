"""`minio_pair` is two real MinIO sites with site replication, as drtool reads it through the admin API."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.stack.minio_sites import MinioSites, admin_request, replication_info

# Generous: after other tests took site B down and up, MinIO can take ~25 s to resync a new bucket to B, and over
# 120 s on a machine at load 15 (two xdist workers, a shuffled run put this file after such tests).
WAIT_S = 300.0


def _eventually(check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Return check()'s first truthy result within `timeout` seconds (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the object is simply not there yet
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout} s (last error: {last!r})")


def test_admin_api_reports_both_sites_enabled(minio_pair: MinioSites) -> None:
    endpoints = {minio_pair.a.endpoint, minio_pair.b.endpoint}
    deployment_ids = []
    for site in (minio_pair.a, minio_pair.b):
        info = replication_info(site)
        assert info["enabled"] is True
        assert {s["endpoint"].rstrip("/") for s in info["sites"]} == endpoints
        deployment_ids.append(sorted(s["deploymentID"] for s in info["sites"]))
    assert deployment_ids[0] == deployment_ids[1] and len(set(deployment_ids[0])) == 2


def test_admin_api_rejects_a_wrong_secret(minio_pair: MinioSites) -> None:
    from dataclasses import replace

    wrong = replace(minio_pair.a, secret_key="not-the-secret")
    status, body = admin_request(wrong, "/minio/admin/v3/site-replication/info", {"api-version": "1"})
    assert status == 403 and body["Code"] == "SignatureDoesNotMatch"


def test_mc_agrees_with_the_admin_api(minio_pair: MinioSites) -> None:
    result = minio_pair.mc("admin", "replicate", "info", minio_pair.a.alias, "--json")
    info = json.loads(result.stdout)
    assert info["enabled"] is True
    signed = replication_info(minio_pair.a)
    assert sorted((s["endpoint"], s["deploymentID"]) for s in info["sites"]) == sorted(
        (s["endpoint"], s["deploymentID"]) for s in signed["sites"]
    )


def test_an_object_put_on_a_appears_on_b(minio_pair: MinioSites) -> None:
    bucket = f"smoke-{uuid.uuid4().hex[:10]}"
    a, b = minio_pair.a.s3_client(), minio_pair.b.s3_client()
    a.create_bucket(Bucket=bucket)
    a.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = a.put_object(Bucket=bucket, Key="datasets/d1/raw/a.txt", Body=b"first")
    second = a.put_object(Bucket=bucket, Key="datasets/d1/raw/a.txt", Body=b"second")

    def versions_on_b() -> list[str]:
        listed = b.list_object_versions(Bucket=bucket).get("Versions", [])
        return sorted(v["VersionId"] for v in listed)

    expected = sorted([first["VersionId"], second["VersionId"]])
    _eventually(lambda: versions_on_b() == expected)
    assert b.get_object(Bucket=bucket, Key="datasets/d1/raw/a.txt")["Body"].read() == b"second"
    head_a = a.head_object(Bucket=bucket, Key="datasets/d1/raw/a.txt")
    assert _eventually(
        lambda: a.head_object(Bucket=bucket, Key="datasets/d1/raw/a.txt")["ReplicationStatus"]
    ) in (
        "COMPLETED",
        "COMPLETE",
    )
    assert b.head_object(Bucket=bucket, Key="datasets/d1/raw/a.txt")["ReplicationStatus"] == "REPLICA"
    assert head_a["ETag"] == b.head_object(Bucket=bucket, Key="datasets/d1/raw/a.txt")["ETag"]


def test_site_b_can_be_stopped_and_catches_up_after_start(minio_pair: MinioSites) -> None:
    site_b = minio_pair.b
    if not site_b.local:
        with pytest.raises(RuntimeError, match="external"):
            site_b.stop()
        return
    bucket = f"outage-{uuid.uuid4().hex[:10]}"
    a = minio_pair.a.s3_client()
    a.create_bucket(Bucket=bucket)
    _eventually(lambda: minio_pair.b.s3_client().head_bucket(Bucket=bucket))
    site_b.stop()
    assert not site_b.running()
    a.put_object(Bucket=bucket, Key="written-during-outage", Body=b"x")
    site_b.start()
    assert site_b.running()
    b = site_b.s3_client()
    assert (
        _eventually(lambda: b.get_object(Bucket=bucket, Key="written-during-outage")["Body"].read()) == b"x"
    )

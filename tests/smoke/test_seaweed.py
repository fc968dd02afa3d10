"""`seaweed_pair` is two real SeaweedFS clusters: S3 versioning works and filer.sync copies A to B."""

from __future__ import annotations

import time
import uuid

from tests.stack.seaweed_clusters import SeaweedClusters

WAIT_S = 60.0


def test_a_versioned_bucket_keeps_two_versions(seaweed_pair: SeaweedClusters) -> None:
    s3 = seaweed_pair.a.s3_client()
    bucket = f"smoke-versions-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="datasets/d1/processed/chunks.jsonl", Body=b'{"id": "1"}\n')[
        "VersionId"
    ]
    v2 = s3.put_object(Bucket=bucket, Key="datasets/d1/processed/chunks.jsonl", Body=b'{"id": "2"}\n')[
        "VersionId"
    ]
    assert v1 and v2 and v1 != v2
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert sorted(v["VersionId"] for v in versions) == sorted([v1, v2])
    old = s3.get_object(Bucket=bucket, Key="datasets/d1/processed/chunks.jsonl", VersionId=v1)["Body"].read()
    assert old == b'{"id": "1"}\n'
    assert (
        s3.get_object(Bucket=bucket, Key="datasets/d1/processed/chunks.jsonl")["Body"].read()
        == b'{"id": "2"}\n'
    )


def test_an_object_put_on_a_appears_on_b(seaweed_pair: SeaweedClusters) -> None:
    a, b = seaweed_pair.a.s3_client(), seaweed_pair.b.s3_client()
    bucket = f"smoke-sync-{uuid.uuid4().hex[:8]}"
    a.create_bucket(Bucket=bucket)
    a.put_object(Bucket=bucket, Key="upload_files/t1/f.txt", Body=b"replicate me")
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            body = b.get_object(Bucket=bucket, Key="upload_files/t1/f.txt")["Body"].read()
            break
        except Exception as exc:  # not synced yet
            if time.monotonic() > deadline:
                raise AssertionError(f"object did not reach cluster B within {WAIT_S} s: {exc!r}") from exc
            time.sleep(0.3)
    assert body == b"replicate me"


def test_many_buckets_each_accept_writes(seaweed_pair: SeaweedClusters) -> None:
    """The whole suite creates dozens of buckets on one cluster; with SeaweedFS's default volume growth the
    cluster ran out of volume slots after about 28 and answered InternalError."""
    s3 = seaweed_pair.a.s3_client()
    for i in range(40):
        bucket = f"smoke-many-{i}-{uuid.uuid4().hex[:6]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"

"""New buckets with names no other test (or earlier run against an external server) uses, so tests sharing the
session's MinIO or SeaweedFS never see each other's objects whatever order they run in."""

from __future__ import annotations

import uuid
from typing import Any


def unique_name(prefix: str) -> str:
    """`prefix-` and 10 random hex digits: a valid bucket, database or collection-name stem."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_bucket(client: Any, prefix: str = "snap", *, versioned: bool = True, lock: bool = False) -> str:
    """Create a bucket through the boto3 `client`; versioned unless told not to (Object Lock implies versioning)."""
    name = unique_name(prefix)
    if lock:
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        client.create_bucket(Bucket=name)
    if versioned and not lock:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name

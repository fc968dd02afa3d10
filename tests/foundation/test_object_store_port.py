"""The ObjectStore port (drtool/core/ports.py) on a real MinIO: what operations rely on instead of botocore.

Each S3 failure arrives as one drtool error, translated once in drtool/adapters/s3/errors.py: NotFound (exit 10)
for a missing key or version, PreconditionFailed for a lost conditional write (If-None-Match / If-Match, the run locks'
compare-and-swap), AccessDenied (exit 12, naming the IAM action) for a user whose policy lacks it. The JSON
`error` field keeps the family name (NotFoundError / AuthError) that docs/exit-codes.md and scripts match.
"""

from __future__ import annotations

import io
import os
import uuid
from typing import Any

import pytest

from drtool.adapters.s3 import BucketStore
from drtool.config import S3Settings
from drtool.core.ports import ObjectStore
from drtool.errors import AccessDenied, DrtoolError, ExitCode, NotFound, PreconditionFailed
from tests.security.conftest import add_minio_user, new_bucket


def _bucket_store(site: Any, bucket: str, access: str | None = None, secret: str | None = None) -> BucketStore:
    return BucketStore(S3Settings(endpoint=site.endpoint, bucket=bucket, access_key=access or site.access_key,
                                  secret_key=secret or site.secret_key, address_style="path", max_attempts=1))


@pytest.fixture(scope="module")
def port_bucket(minio_pair: Any) -> str:
    return new_bucket(minio_pair.a.s3_client(), "port")


@pytest.fixture
def root_store(minio_pair: Any, port_bucket: str) -> BucketStore:
    return _bucket_store(minio_pair.a, port_bucket)


def test_the_s3_adapter_is_an_object_store(root_store: BucketStore) -> None:
    assert isinstance(root_store, ObjectStore)


def test_missing_key_and_version_are_not_found(root_store: BucketStore) -> None:
    key = f"k-{uuid.uuid4().hex}"
    # absence is an answer for head/get ...
    assert root_store.head(key) is None and root_store.get(key) is None
    # ... and an error where the caller needs the object
    with pytest.raises(NotFound) as missing:
        root_store.open(key)
    assert missing.value.exit_code == ExitCode.NOT_FOUND and missing.value.code == "NoSuchKey"
    assert missing.value.to_event()["error"] == "NotFoundError"
    with pytest.raises(NotFound):
        root_store.copy(key, key + "-copy")

    first = root_store.put(key, b"v1")
    root_store.put(key, b"v2")
    versions = [v for v in root_store.list_versions(key) if v.key == key]
    assert len(versions) == 2 and {v.etag for v in versions} >= {first.strip('"')}
    old = next(v.version_id for v in versions if not v.is_latest)
    assert root_store.open(key, version_id=old).read() == b"v1"
    assert root_store.get(key, version_id=old) == b"v1"
    gone = str(uuid.uuid4())
    assert root_store.head(key, version_id=gone) is None
    with pytest.raises(NotFound) as no_version:
        root_store.open(key, version_id=gone)
    assert no_version.value.code == "NoSuchVersion"
    root_store.delete(key, version_id=old)
    assert root_store.head(key, version_id=old) is None
    root_store.delete(key)  # a delete marker: the key is gone, its versions stay listed
    assert root_store.head(key) is None
    assert root_store.delete_prefix(key) == 2 and list(root_store.list_versions(key)) == []
    assert root_store.versioning() == "Enabled"


def test_conditional_writes_lose_with_precondition_failed(root_store: BucketStore) -> None:
    key = f"lock-{uuid.uuid4().hex}"
    etag = root_store.put(key, b"mine", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        root_store.put(key, b"theirs", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        root_store.put(key, b"theirs", if_match='"0123456789abcdef0123456789abcdef"')
    with pytest.raises(PreconditionFailed):  # If-Match on a key that is not there (MinIO: NoSuchKey)
        root_store.put(key + "-none", b"theirs", if_match=etag)
    assert root_store.get(key) == b"mine"
    # the boolean forms the run locks use
    assert root_store.put_if_absent(key, b"again") is False
    assert root_store.replace_if_match(key, '"0123456789abcdef0123456789abcdef"', b"stale") is False
    assert root_store.replace_if_match(key, etag, b"taken over") is True
    assert root_store.peek(key, 64) == (b"taken over", root_store.head(key)["ETag"])  # type: ignore[index]
    assert root_store.peek(key, 4)[0] == b"taken"  # type: ignore[index]  # at most max_bytes + 1 read


def test_a_user_without_the_permission_gets_access_denied(minio_pair: Any, port_bucket: str) -> None:
    read_only = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{port_bucket}/*"]}]}
    access, secret = add_minio_user(minio_pair, read_only)
    admin = _bucket_store(minio_pair.a, port_bucket)
    admin.put("readable", b"x")
    user = _bucket_store(minio_pair.a, port_bucket, access, secret)
    assert user.get("readable") == b"x"
    with pytest.raises(AccessDenied) as refused:
        user.put("not-writable", b"x")
    assert refused.value.exit_code == ExitCode.AUTH and "s3:PutObject" in refused.value.message
    assert refused.value.to_event()["error"] == "AuthError"
    with pytest.raises(AccessDenied):
        user.delete("readable")
    with pytest.raises(AccessDenied):  # ListBucket is not granted either
        list(user.list_versions(""))
    with pytest.raises(AccessDenied):  # a conditional write is refused as a write, not reported as lost
        user.put_if_absent("lock", b"x")
    with pytest.raises(AccessDenied) as refused_file:  # a file upload too, named for the action it lacks
        user.put_file("not-writable", io.BytesIO(b"x"), 1, metadata={})
    assert "s3:PutObject" in refused_file.value.message
    assert admin.head("not-writable") is None and admin.get("readable") == b"x"


class _BreaksOnSecondPart(io.BytesIO):
    """A spool whose disk fails after the first part: the upload must vanish, not leave half an object."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise OSError(5, "Input/output error")
        return super().read(size)


def test_a_file_is_written_whole_or_not_at_all(root_store: BucketStore) -> None:
    """put_file: a multipart upload becomes the object only when complete; a failure aborts it (nothing billed)."""
    data = os.urandom((5 << 20) + 1024)
    key = f"file-{uuid.uuid4().hex}"
    parts: list[tuple[int, int]] = []
    etag = root_store.put_file(key, io.BytesIO(data), len(data), metadata={"sha": "abc"}, part_size=5 << 20,
                               on_part=lambda n, total: parts.append((n, total)))
    head = root_store.head(key)
    assert parts == [(1, 2), (2, 2)] and etag.endswith("-2")
    assert head is not None and head["ContentLength"] == len(data) and head["Metadata"] == {"sha": "abc"}
    broken = f"file-{uuid.uuid4().hex}"
    with pytest.raises(DrtoolError):
        root_store.put_file(broken, _BreaksOnSecondPart(data), len(data), metadata={}, part_size=5 << 20)
    assert root_store.head(broken) is None
    assert root_store.abort_uploads(broken) == 0  # put_file aborted its own upload: none was left behind

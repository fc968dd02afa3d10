"""BucketStore: the ObjectStore port (drtool/core/ports.py) on S3, one bucket seen below a key prefix.

Every method raises what `translate_error` returns, so operations never see botocore.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import botocore.exceptions

from drtool.adapters.s3.buckets import bucket_versioning
from drtool.adapters.s3.client import make_client
from drtool.adapters.s3.errors import AUTH_CODES, NOT_FOUND_CODES, http_status, translate_error
from drtool.adapters.s3.listing import iter_object_versions
from drtool.adapters.s3.reads import SMALL_OBJECT_MAX_BYTES, read_whole
from drtool.adapters.s3.resume import ResumingBody
from drtool.adapters.s3.writes import abort_uploads, delete_prefix, put_file_atomic
from drtool.config import S3Settings
from drtool.errors import (
    DrtoolError,
    KeyRefusedError,
    NotFound,
    NotFoundError,
    PreconditionFailed,
    Unsupported,
)


class BucketStore:
    """The ObjectStore port (drtool/core/ports.py) on S3: one bucket seen through s3.key_prefix, every error
    translated by `translate_error`. Rebuild's ledger, sidecar cache and chunk reader use it with Dify's settings;
    locks, retention, drill and the replication probe through `BucketStore.over(client, bucket)`."""

    def __init__(self, s3: S3Settings, client: Any | None = None) -> None:
        if not s3.bucket:
            raise NotFoundError("s3.bucket is not set", system="object store")
        self.settings = s3
        self.bucket = s3.bucket
        self.prefix = s3.key_prefix or ""
        self.client = client or make_client(s3)

    @classmethod
    def over(cls, client: Any, bucket: str, *, prefix: str = "") -> BucketStore:
        """The port on a client made elsewhere (a snapshot destination's, a replication site's), keys whole."""
        return cls(S3Settings(endpoint=client.meta.endpoint_url, bucket=bucket, key_prefix=prefix), client=client)

    def at(self, bucket: str, prefix: str = "") -> BucketStore:
        return BucketStore(replace(self.settings, bucket=bucket, key_prefix=prefix), client=self.client)

    def _error(self, exc: Exception, what: str) -> DrtoolError:
        return translate_error(exc, what=what, endpoint=self.settings.endpoint)

    def describe(self) -> str:
        return f"object store {self.settings.endpoint or 'AWS S3'}"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def probe(self) -> None:
        """One cheap request that proves the bucket exists and the credentials work (HeadBucket)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._error(exc, f"bucket {self.bucket}") from None

    def require_bucket(self, what: str, *, hint: str) -> None:
        """probe() for a bucket a command is about to use: a missing one is '<what> does not exist' (exit 10) with
        the command's own hint, whatever the server calls it (HEAD answers a bare 404)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            err = self._error(exc, what)
            if isinstance(err, NotFoundError) or http_status(exc) == 404:
                raise NotFoundError(f"{what} does not exist", hint=hint, system=err.system) from None
            raise err from None

    def head(self, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
        """Metadata of an object (or version), None when it does not exist or is a delete marker; KeyRefusedError
        when the key itself is refused."""
        extra = {"VersionId": version_id} if version_id else {}
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key, **extra))
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in NOT_FOUND_CODES or http_status(exc) in (404, 405):  # 405: that version is a delete marker
                return None
            if version_id and code in ("400", "InvalidArgument"):  # some servers' answer to an unknown version id
                return None
            if http_status(exc) == 400 and code not in AUTH_CODES:
                reason = f"{code}: {exc.response.get('Error', {}).get('Message') or 'Bad Request'}"
                raise KeyRefusedError(self.url(key), reason,
                                      system=f"object store {self.settings.endpoint or 'AWS S3'}") from None
            raise self._error(exc, self.url(key)) from None
        except botocore.exceptions.ParamValidationError as exc:  # e.g. an empty key: never sent
            raise KeyRefusedError(self.url(key), f"refused by the S3 client: {exc}",
                                  system=f"object store {self.settings.endpoint or 'AWS S3'}") from None
        except Exception as exc:
            raise self._error(exc, self.url(key)) from None

    def get(self, key: str, *, byte_range: tuple[int, int] | None = None, version_id: str | None = None
            ) -> bytes | None:
        """Bytes of an object or version (inclusive range when given), None when it does not exist.

        Capped: a whole object at SMALL_OBJECT_MAX_BYTES (ledgers and markers are a few KiB), a range at its own
        length, since whoever can write the bucket can plant a huge object or a server can ignore the range.
        """
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if version_id:
            kwargs["VersionId"] = version_id
        max_bytes = SMALL_OBJECT_MAX_BYTES
        if byte_range is not None:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
            max_bytes = max(0, byte_range[1] - byte_range[0] + 1)
        try:
            return read_whole(self.client, max_bytes=max_bytes, **kwargs)
        except Exception as exc:
            error = self._error(exc, self.url(key))
            if isinstance(error, NotFound):
                return None
            raise error from None

    def peek(self, key: str, max_bytes: int) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            data = response["Body"].read(max_bytes + 1)
            response["Body"].close()
        except Exception as exc:
            error = self._error(exc, self.url(key))
            if isinstance(error, NotFound):
                return None
            raise error from None
        return bytes(data), str(response.get("ETag", ""))

    def open(self, key: str, *, version_id: str | None = None) -> Any:
        """A streaming body (read/readline-able file object) for a large object such as a chunk file. A body cut
        mid-way is read on from where it stopped (ResumingBody); past s3.max_attempts the cut is raised from read()
        as a translated error, like every other failure of the port."""
        extra = {"VersionId": version_id} if version_id else {}

        def get(**more: str) -> dict[str, Any]:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **extra, **more)
            except Exception as exc:
                error = self._error(exc, self.url(key))
                if "IfMatch" in more and http_status(exc) == 412:
                    error = PreconditionFailed(f"{self.url(key)} changed while it was being read; nothing read "
                                               "from the new object was used", hint="re-run", system=error.system)
                raise error from None

        def rest(offset: int, etag: str) -> dict[str, Any]:
            return get(Range=f"bytes={offset}-", IfMatch=etag)

        return ResumingBody(get(), rest, lambda exc: self._error(exc, self.url(key)), self.settings.max_attempts)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
            metadata: dict[str, str] | None = None, if_none_match: bool = False, if_match: str | None = None
            ) -> str:
        """One PUT; returns the ETag (quotes kept, as HEAD and GET report it). PreconditionFailed when a condition
        loses (MinIO answers If-Match on a missing key with NoSuchKey: reported as PreconditionFailed too)."""
        extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data,
                                            ContentType=content_type, **extra)
        except Exception as exc:
            error = self._error(exc, self.url(key))
            conditional = if_none_match or if_match is not None
            lost = http_status(exc) == 409 or (if_match is not None and isinstance(error, NotFound))
            if conditional and lost and not isinstance(error, Unsupported):
                error = PreconditionFailed(f"{self.url(key)}: the conditional write lost: the object changed or "
                                           "vanished first", system=error.system)
            raise error from None
        return str(answer.get("ETag", ""))

    def put_file(self, key: str, fileobj: Any, size: int, *, metadata: dict[str, str],
                 content_type: str = "application/octet-stream", part_size: int = 16 << 20,
                 on_part: Any = None) -> str:
        """A finished local file as one object, atomically (one PUT, or a multipart upload aborted on error);
        returns its ETag. `on_part(number, parts)` follows a multipart upload."""
        try:
            return put_file_atomic(self.client, self.bucket, self.prefix + key, fileobj, size, metadata=metadata,
                                   content_type=content_type, part_size=part_size, on_part=on_part)
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(exc, self.url(key)) from None

    def _conditional(self, key: str, data: bytes, **condition: Any) -> bool | None:
        """put() under a condition: True written, False lost, None when the server has no conditional writes."""
        try:
            self.put(key, data, **condition)
            return True
        except PreconditionFailed:
            return False
        except Unsupported:  # no conditional writes on this server
            return None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        written = self._conditional(key, data, if_none_match=True)
        if written is not None:
            return written
        if self.head(key) is not None:  # no conditional writes: check, then write (narrow race, docs/snapshots.md)
            return False
        self.put(key, data)
        return True

    def replace_if_match(self, key: str, etag: str, data: bytes) -> bool:
        written = self._conditional(key, data, if_match=etag)
        if written is not None:
            return written
        head = self.head(key)  # no conditional writes: check, then write (narrow race)
        if head is None or str(head.get("ETag", "")) != etag:
            return False
        self.put(key, data)
        return True

    def list_versions(self, prefix: str) -> Iterator[Any]:
        """Every version and delete marker (core.manifest.ObjectVersion) under `prefix`, keys relative."""
        cut = len(self.prefix)
        try:
            for v in iter_object_versions(self.client, self.bucket, self.prefix + prefix):
                yield replace(v, key=v.key[cut:]) if cut else v
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(exc, self.url(prefix)) from None

    def copy(self, source_key: str, key: str, *, version_id: str | None = None) -> str:
        source: dict[str, str] = {"Bucket": self.bucket, "Key": self.prefix + source_key}
        if version_id:
            source["VersionId"] = version_id
        try:
            answer = self.client.copy_object(Bucket=self.bucket, Key=self.prefix + key, CopySource=source)
        except Exception as exc:
            raise self._error(exc, f"copying {self.url(source_key)} to {self.url(key)}") from None
        return str((answer.get("CopyObjectResult") or {}).get("ETag", ""))

    def delete(self, key: str, *, version_id: str | None = None) -> None:
        extra = {"VersionId": version_id} if version_id else {}
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key, **extra)
        except Exception as exc:
            raise self._error(exc, self.url(key)) from None

    def delete_prefix(self, prefix: str) -> int:
        try:
            return delete_prefix(self.client, self.bucket, self.prefix + prefix)
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(exc, self.url(prefix)) from None

    def abort_uploads(self, prefix: str, *, older_than: Any = None) -> int:
        try:
            return abort_uploads(self.client, self.bucket, self.prefix + prefix, older_than=older_than)
        except Exception as exc:
            raise self._error(exc, f"aborting uploads under {self.url(prefix)}") from None

    def versioning(self) -> str:
        try:
            return bucket_versioning(self.client, self.bucket)
        except Exception as exc:
            raise self._error(exc, f"bucket {self.bucket}") from None

    def list(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Objects under `prefix` (keys without s3.key_prefix), page by page."""
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield {**item, "Key": item["Key"][len(self.prefix):]}
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(exc, self.url(prefix)) from None

    def list_folders(self, prefix: str) -> list[str]:
        """Immediate sub-folder names under `prefix` (which ends with '/')."""
        names: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"):
                for item in page.get("CommonPrefixes", []):
                    names.append(item["Prefix"][len(self.prefix) + len(prefix):].rstrip("/"))
        except Exception as exc:
            raise self._error(exc, self.url(prefix)) from None
        return names

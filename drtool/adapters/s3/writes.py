"""Writing and deleting objects: conditional and Object-Lock writes, streaming multipart uploads, atomic file
replacement, prefix deletes and the clean-up of unfinished uploads.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import botocore.exceptions

from drtool.adapters.s3.errors import AUTH_CODES, DeleteRefused, translate_error
from drtool.adapters.s3.iam import LOCKED_WRITE_ACTIONS
from drtool.adapters.s3.listing import iter_object_versions
from drtool.adapters.s3.reads import head_or_none
from drtool.core.object_lock import Retention

log = logging.getLogger("drtool.s3")

# --- conditional writes -----------------------------------------------------------------------------------------------

def put_if_absent(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """Create `key` only if it does not exist (If-None-Match: *); False when it already exists.

    Servers without conditional writes get a check-then-write, which leaves a narrow race: documented in
    docs/snapshots.md.
    """
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        return True
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return False
        if code not in ("NotImplemented", "501") and status != 501:
            raise
    if head_or_none(client, bucket, key) is not None:
        return False
    client.put_object(Bucket=bucket, Key=key, Body=body)
    return True


# --- Object Lock: immutable snapshot artifacts ------------------------------------------------------------------------

def lock_args(retention: Retention | None) -> dict[str, Any]:
    """The request arguments that put Object Lock retention on a new object version (none when off).

    PutObject, CreateMultipartUpload and CopyObject take the same two. A locked PUT also needs an integrity
    checksum (Content-MD5 or x-amz-checksum-*): botocore sends x-amz-checksum-crc32 by default.
    """
    if retention is None:
        return {}
    return {"ObjectLockMode": retention.mode, "ObjectLockRetainUntilDate": retention.until}


def locked_call(client: Any, key: str, retention: Retention | None, call: Any, **kwargs: Any) -> Any:
    """Run a write with `retention` added; a refusal names s3:PutObjectRetention too, as the server checks both."""
    try:
        return call(**kwargs, **lock_args(retention))
    except botocore.exceptions.ClientError as exc:
        if retention is not None and str(exc.response.get("Error", {}).get("Code", "")) in AUTH_CODES:
            raise translate_error(exc, what=f"writing {key} with Object Lock retention",
                                  endpoint=client.meta.endpoint_url, needed=LOCKED_WRITE_ACTIONS) from None
        raise


def put_bytes(client: Any, bucket: str, key: str, body: bytes, *, content_type: str = "application/octet-stream",
              retention: Retention | None = None) -> dict[str, Any]:
    """One PUT of a small object, with Object Lock retention when given."""
    return dict(locked_call(client, key, retention, client.put_object, Bucket=bucket, Key=key, Body=body,
                            ContentType=content_type))


# --- streaming uploads ------------------------------------------------------------------------------------------------

class MultipartWriter:
    """A write-only file object that uploads while it is written: parts of `part_size` bytes, sha256 on the fly.

    Small outputs go up with one PUT. On failure call abort(): an unfinished multipart upload costs storage until
    it is aborted (`drtool snapshots gc` also aborts ones a killed run left behind). With `retention` the object
    is created under Object Lock (S3 takes the retention when the upload starts, not when it completes).
    """

    def __init__(self, client: Any, bucket: str, key: str, *, part_size: int = 16 << 20,
                 content_type: str = "application/octet-stream", retention: Retention | None = None) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._retention = retention
        self._part_size = max(part_size, 5 << 20)
        self._buf = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._content_type = content_type
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = bytes(data)
        self.sha256.update(view)
        self.size += len(view)
        self._buf += view
        while len(self._buf) >= self._part_size:
            chunk = bytes(self._buf[: self._part_size])
            del self._buf[: self._part_size]
            self._upload_part(chunk)
        return len(view)

    def flush(self) -> None:
        """Parts go up when full; flushing early would make parts smaller than S3's 5 MiB minimum."""

    def _upload_part(self, chunk: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = locked_call(self._client, self._key, self._retention,
                                          self._client.create_multipart_upload, Bucket=self._bucket, Key=self._key,
                                          ContentType=self._content_type)["UploadId"]
        number = len(self._parts) + 1
        response = self._client.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                            PartNumber=number, Body=chunk)
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def close(self) -> None:
        if self.closed:
            return
        if self._upload_id is None:
            put_bytes(self._client, self._bucket, self._key, bytes(self._buf), content_type=self._content_type,
                      retention=self._retention)
        else:
            if self._buf:
                self._upload_part(bytes(self._buf))
            self._client.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                                   MultipartUpload={"Parts": self._parts})
        self._buf = bytearray()
        self.closed = True

    def abort(self) -> None:
        if self._upload_id is not None and not self.closed:
            try:
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            except Exception:  # best effort: gc aborts leftovers later
                log.warning("could not abort multipart upload of %s; `drtool snapshots gc` will", self._key)
        self.closed = True


# --- whole-file replacement that is never visible half-written --------------------------------------------------------

def put_file_atomic(client: Any, bucket: str, key: str, fileobj: Any, size: int, *, metadata: dict[str, str],
                    content_type: str = "application/octet-stream", part_size: int = 16 << 20,
                    on_part: Any = None) -> str:
    """Upload a finished local file so that readers see the old object or the complete new one, nothing between.

    A single PUT is atomic; a multipart upload only becomes the object when it is completed, and is aborted on any
    error (a killed process leaves an invisible incomplete upload that lifecycle rules or `mc` clean up).
    `on_part(number, parts)` is called after each uploaded part. Returns the new object's ETag.
    """
    part_size = max(part_size, 5 << 20)
    fileobj.seek(0)
    if size <= part_size:
        response = client.put_object(Bucket=bucket, Key=key, Body=fileobj.read(), Metadata=metadata,
                                     ContentType=content_type)
        if on_part is not None:
            on_part(1, 1)
        return str(response.get("ETag", "")).strip('"')
    parts_total = -(-size // part_size)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata,
                                               ContentType=content_type)["UploadId"]
    try:
        parts: list[dict[str, Any]] = []
        for number in range(1, parts_total + 1):
            body = fileobj.read(part_size)
            response = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
            parts.append({"PartNumber": number, "ETag": response["ETag"]})
            if on_part is not None:
                on_part(number, parts_total)
        response = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                    MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # best effort; the upload stays invisible either way
            log.warning("could not abort the multipart upload of %s", key)
        raise
    return str(response.get("ETag", "")).strip('"')


# --- deletes and the clean-up of unfinished uploads -------------------------------------------------------------------

def delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    """Delete every object (and every version and delete marker) under `prefix`, 1000 per request.

    DeleteObjects answers 200 even when it refused some keys (a version under Object Lock retention, a missing
    permission): those are raised as DeleteRefused once the rest is deleted, never passed over in silence.
    """
    batch: list[dict[str, str]] = []
    deleted = 0
    refused: list[str] = []

    def flush() -> None:
        nonlocal deleted, batch
        if batch:
            answer = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors") or []
            refused.extend(f"{e.get('Key')} (version {e.get('VersionId') or '-'}): {e.get('Code')} "
                           f"{e.get('Message') or ''}".rstrip() for e in errors)
            deleted += len(batch) - len(errors)
            batch = []

    for v in iter_object_versions(client, bucket, prefix):
        entry = {"Key": v.key}
        if v.version_id and v.version_id != "null":
            entry["VersionId"] = v.version_id
        batch.append(entry)
        if len(batch) >= 1000:
            flush()
    flush()
    if refused:
        raise DeleteRefused(f"s3://{bucket}/{prefix}: {len(refused)} version(s) could not be deleted: "
                            + "; ".join(refused[:5]),
                            hint="a version under Object Lock retention or legal hold cannot be deleted before its "
                                 "date; otherwise grant s3:DeleteObject",
                            system=f"object store {client.meta.endpoint_url}")
    return deleted


def abort_uploads(client: Any, bucket: str, prefix: str, *, older_than: Any = None) -> int:
    """Abort unfinished multipart uploads under `prefix` (started before `older_than`, when given).

    The listing is not filtered by prefix on the server: MinIO only honours a prefix that is a whole object key.
    """
    aborted = 0
    paginator = client.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket):
        for upload in page.get("Uploads", ()):
            if not upload["Key"].startswith(prefix):
                continue
            if older_than is not None and upload.get("Initiated") and upload["Initiated"] > older_than:
                continue
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted += 1
    return aborted

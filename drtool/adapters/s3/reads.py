"""Reading small objects whole (manifests, ledgers, markers, locks), capped and asked for again when cut.

Whoever can write a bucket can plant a huge object where drtool expects a few KiB: every whole read is capped
(SMALL_OBJECT_MAX_BYTES, ObjectTooLarge past it), so a planted object never fills memory.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import botocore.exceptions

from drtool.adapters.s3.client import RETRY_BASE_DELAY_S, RETRY_MAX_DELAY_S
from drtool.adapters.s3.errors import CUT_ERRORS, ObjectTooLarge

log = logging.getLogger("drtool.s3")

SMALL_OBJECT_MAX_BYTES = 8 * 1024 * 1024  # meta.json, COMMITTED, SHA256SUMS, locks, drill records: a few KiB


def get_bytes(client: Any, bucket: str, key: str, *, version_id: str | None = None,
              max_bytes: int | None = SMALL_OBJECT_MAX_BYTES) -> bytes:
    """A small artifact's bytes; ObjectTooLarge past `max_bytes`, so a planted 5 GB object never fills memory."""
    extra = {"VersionId": version_id} if version_id else {}
    return read_whole(client, Bucket=bucket, Key=key, max_bytes=max_bytes, **extra)


def read_capped(body: Any, max_bytes: int, what: str) -> bytes:
    """Read a streaming body of at most `max_bytes`; ObjectTooLarge (and the connection closed) past it.

    Reads until a read comes back empty: only then does botocore compare what arrived with the Content-Length, so a
    body cut mid-way raises (and is asked for again) instead of passing as a short artifact whose checksum then
    "proves" a tampering that was only a network fault.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := body.read(min(1 << 20, max_bytes + 1 - size)):
        chunks.append(bytes(chunk))
        size += len(chunk)
        if size > max_bytes:
            body.close()
            raise ObjectTooLarge(f"{what} is larger than {max_bytes} bytes, far more than drtool ever writes there; "
                                 "it was not written by drtool")
    return b"".join(chunks)


def read_whole(client: Any, *, max_bytes: int | None = None, **get_args: Any) -> bytes:
    """GET an object and read all of its body, asking again when the body is cut mid-way.

    botocore retries a request only until the response headers arrive; a connection reset or stall while the body
    streams raises from read(). For a whole small object (manifest, ledger, sidecar page) asking again is safe.
    With `max_bytes`, a bigger object is refused (ObjectTooLarge) from its Content-Length or after max_bytes + 1.
    """
    what = f"s3://{get_args.get('Bucket')}/{get_args.get('Key')}"
    attempts = max(1, int((getattr(client.meta.config, "retries", None) or {}).get("total_max_attempts", 3)))
    for attempt in range(1, attempts + 1):
        try:
            response = client.get_object(**get_args)
            if max_bytes is None:
                return bytes(response["Body"].read())
            if int(response.get("ContentLength") or 0) > max_bytes:
                response["Body"].close()
                raise ObjectTooLarge(f"{what} is {response['ContentLength']} bytes, more than the {max_bytes} "
                                     "drtool reads for a small artifact; it was not written by drtool")
            return read_capped(response["Body"], max_bytes, what)
        except CUT_ERRORS:
            if attempt == attempts:
                raise
            wait = min(RETRY_BASE_DELAY_S * 2 ** (attempt - 1), RETRY_MAX_DELAY_S) * random.uniform(0.5, 1.0)
            log.info("body of %s cut mid-transfer; try %d of %d in %.1f s", get_args.get("Key"), attempt + 1,
                     attempts, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def head_or_none(client: Any, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
    """HEAD an object; None when it (or that version) does not exist."""
    extra = {"VersionId": version_id} if version_id else {}
    try:
        return client.head_object(Bucket=bucket, Key=key, **extra)
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NoSuchVersion", "NotFound") or status == 404:
            return None
        if code in ("400", "InvalidArgument") and version_id:  # some servers answer 400 to an unknown version id
            return None
        if status == 405:  # a delete marker
            return None
        raise

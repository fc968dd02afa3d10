"""S3-compatible object storage through boto3 (MinIO, SeaweedFS, AWS S3).

Retries are botocore's "standard" mode (throttling, 5xx, timeouts, with jittered backoff); errors that retrying
cannot fix (credentials, missing bucket) are translated into drtool's error family with a hint.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import urllib3.exceptions
from botocore.config import Config

from drtool.config import S3Settings
from drtool.core.object_lock import Retention
from drtool.errors import (
    AccessDenied,
    DrtoolError,
    KeyRefusedError,
    NotFound,
    NotFoundError,
    PreconditionFailed,
    UnavailableError,
    Unreachable,
    Unsupported,
    VerificationFailed,
)

log = logging.getLogger("drtool.s3")

_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AllAccessDisabled", "AccountProblem", "403", "Forbidden", "XMinioAdminNoSuchUser",
}
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412"}
# The IAM permission each S3 call needs, so a refusal names what to grant (docs/iam.md).
IAM_ACTIONS = {
    "HeadBucket": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions (MinIO: s3:ListBucket)", "ListBuckets": "s3:ListAllMyBuckets",
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject on the target and s3:GetObject on the source",
    "CopyObject": "s3:PutObject on the target and s3:GetObject on the source",
    "AbortMultipartUpload": "s3:AbortMultipartUpload", "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "DeleteObject": "s3:DeleteObject", "DeleteObjects": "s3:DeleteObject",
    "GetBucketVersioning": "s3:GetBucketVersioning", "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "GetBucketReplication": "s3:GetReplicationConfiguration",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "GetObjectRetention": "s3:GetObjectRetention", "PutObjectRetention": "s3:PutObjectRetention",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration", "GetBucketPolicy": "s3:GetBucketPolicy",
}
# A write that carries Object Lock retention is also authorised as s3:PutObjectRetention (MinIO and AWS).
LOCKED_WRITE_ACTIONS = "s3:PutObject and s3:PutObjectRetention"

# A body cut after the response headers arrived: botocore does not retry these (the call had returned).
_CUT_ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.ResponseStreamingError, botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, ConnectionError,
)


def make_client(s3: S3Settings, *, max_attempts: int | None = None, connect_timeout: float | None = None,
                read_timeout: float | None = None) -> Any:
    """A boto3 S3 client configured for self-hosted endpoints (path-style when asked, TLS verification on).

    Timeouts and tries default to s3.connect_timeout / s3.read_timeout / s3.max_attempts: without a read timeout
    a server that accepts the connection and then goes silent would hang the command forever.
    """
    max_attempts = s3.max_attempts if max_attempts is None else max_attempts
    connect_timeout = s3.connect_timeout if connect_timeout is None else connect_timeout
    read_timeout = s3.read_timeout if read_timeout is None else read_timeout
    if not s3.verify_tls:
        log.warning("TLS certificate verification is OFF for %s (s3.verify_tls=false)", s3.endpoint)
    config = Config(
        region_name=s3.region,
        signature_version="s3v4",
        s3={"addressing_style": s3.address_style},
        retries={"mode": "standard", "total_max_attempts": max(1, max_attempts)},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
    )
    credentials: dict[str, str] = {}
    if not s3.use_instance_credentials and s3.access_key:
        credentials = {"aws_access_key_id": s3.access_key, "aws_secret_access_key": s3.secret_key or ""}
    verify: bool | str = s3.ca_bundle if (s3.ca_bundle and s3.verify_tls) else s3.verify_tls
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=s3.endpoint or None, config=config, verify=verify, **credentials)
    _use_backoff(client, max(1, max_attempts))
    return client


RETRY_BASE_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 10.0


def _use_backoff(client: Any, max_attempts: int) -> None:
    """Back off 0.5, 1, 2, 4, 8 s (jittered down to half) between tries instead of botocore's 50 ms base.

    botocore's standard mode waits rand(0, 0.05 * 2**i) s after a connection error, so its five tries are spent
    in well under a second and a network blip of two seconds fails a nightly snapshot. Its own rules still decide
    WHAT is retried (timeouts, resets, throttling, 5xx, never 4xx/auth); this handler, registered first on the
    client's needs-retry event, only sets HOW LONG to wait (the first non-None answer wins).
    """
    import random

    from botocore.retries import standard

    adapter = standard.RetryEventAdapter()
    conditions = standard.StandardRetryConditions(max_attempts=max_attempts)

    def delay(**kwargs: Any) -> float | None:
        context = adapter.create_retry_context(**kwargs)
        if not conditions.is_retryable(context):
            return None
        wait = min(RETRY_BASE_DELAY_S * 2 ** (context.attempt_number - 1), RETRY_MAX_DELAY_S)
        wait *= random.uniform(0.5, 1.0)
        log.info("S3 request failed (%s); try %d of %d in %.1f s", type(kwargs.get("caught_exception")).__name__
                 if kwargs.get("caught_exception") else "HTTP error", context.attempt_number + 1, max_attempts, wait)
        return wait

    client.meta.events.register_first("needs-retry.s3", delay, unique_id="drtool-backoff")


TLS_HINT = ("if the endpoint uses a private or self-signed CA, pass that CA's certificate with --ca-bundle FILE "
            "(s3.ca_bundle, DRTOOL_S3_CA_BUNDLE); --no-verify-tls (s3.verify_tls=false) turns verification off, "
            "for tests only; an https URL on a plain-HTTP port fails like this too")


def tls_reason(exc: Exception) -> str:
    """Say plainly when the certificate was not trusted, keeping OpenSSL's own reason for the operator."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0].strip(" :)")
        return f"TLS certificate verification failed: {detail or 'untrusted certificate'} (CERTIFICATE_VERIFY_FAILED)"
    return text if len(text) < 240 else text[:237] + "..."


def is_sdk_error(exc: BaseException) -> bool:
    """Whether an exception came from the S3 client stack (translate_error's to judge), not from drtool itself."""
    return hasattr(exc, "response") or type(exc).__module__.startswith(("botocore", "boto3", "s3transfer",
                                                                         "urllib3"))


def http_status(exc: Exception) -> int | None:
    """The HTTP status of an S3 error answer; None for errors without one (refused, timed out, cut).

    Test this, never ``"404" in str(exc)``: a connection error's text holds the endpoint URL, whose port may
    contain 404 (http://host:40412), and an unreachable bucket would be reported as a missing one.
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def error_code(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    """The S3 error code and message of an answer, also for HEAD requests.

    A HEAD answer has no body, so botocore reports every refusal as a bare "403" and a wrong secret looked like a
    missing permission. MinIO puts the real code in `x-minio-error-code` (and its text in `x-minio-error-desc`).
    """
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message") or code)
    if code in ("403", "Forbidden", "400", "404", "BadRequest", "NotFound", ""):
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        header_code = headers.get("x-minio-error-code")
        if header_code:
            return str(header_code), str(headers.get("x-minio-error-desc", header_code)).strip('"')
    return code, message


def translate_error(exc: Exception, *, what: str, endpoint: str | None, needed: str | None = None) -> DrtoolError:
    """`_translate`, with the S3 error code (or the transport error's class name) kept as the error's `code`."""
    error = _translate(exc, what=what, endpoint=endpoint, needed=needed)
    error.code = (error_code(exc)[0] or None) if isinstance(exc, botocore.exceptions.ClientError) \
        else type(exc).__name__
    return error


def _translate(exc: Exception, *, what: str, endpoint: str | None, needed: str | None = None) -> DrtoolError:
    """Turn a botocore exception into an error that names the system and what the operator should do.

    The one place S3 answers become drtool errors: the ObjectStore port (BucketStore) and every helper here raise what
    it returns (NotFound, AccessDenied, PreconditionFailed, UnavailableError, ...), so operations never see
    botocore.

    `needed` overrides the permission named for a refusal, for calls whose IAM action depends on their arguments
    (a PUT with Object Lock retention also needs s3:PutObjectRetention).
    """
    system = f"object store {endpoint or 'AWS S3'}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message = error_code(exc)
        if code == "RequestTimeTooSkewed":
            return AccessDenied(f"{what}: the server refused the request because this machine's clock is off",
                                hint="synchronise the clock (NTP) and retry", system=system)
        if code == "SignatureDoesNotMatch":
            return AccessDenied(f"{what}: the secret key does not match the access key (SignatureDoesNotMatch)",
                                hint="check the secret key setting (s3.secret_key, or the command's own credentials); "
                                     "a policy change cannot cause this", system=system)
        if code == "InvalidAccessKeyId":
            return AccessDenied(f"{what}: this server does not know the access key (InvalidAccessKeyId)",
                                hint="check the access key setting and that the user exists on this server",
                                system=system)
        if code in _AUTH_CODES:
            needed = needed or IAM_ACTIONS.get(exc.operation_name or "")
            if needed and code in ("403", "Forbidden"):  # a HEAD answer: no body, so no reason
                return AccessDenied(f"{what}: access refused (HTTP 403 without a reason: a HEAD answer has no body)",
                                    hint=f"check the access and secret key first; if they are right, grant {needed} "
                                         "to this user (docs/iam.md lists each command's policy)", system=system)
            if needed and code in ("AccessDenied", "AllAccessDisabled"):
                return AccessDenied(f"{what}: access refused ({code}: {message}): {exc.operation_name} needs {needed}",
                                    hint=f"grant {needed} to this user (docs/iam.md lists each command's policy)",
                                    system=system)
            return AccessDenied(f"{what}: access refused ({code}: {message})",
                                hint="check the access key, secret key and the policy of that user", system=system)
        if code in _PRECONDITION_CODES or http_status(exc) == 412:
            return PreconditionFailed(f"{what}: the conditional write lost ({code}): the object was created or "
                                      "changed by someone else first", system=system)
        if code in _NOT_FOUND_CODES:
            return NotFound(f"{what}: not found ({code})",
                            hint="check the bucket name and key prefix", system=system)
        if code in ("NotImplemented", "MethodNotAllowed", "501") or http_status(exc) == 501:
            return Unsupported(f"{what}: {code}: {message}", system=system)
        return UnavailableError(f"{what}: {code}: {message}", system=system)
    if isinstance(exc, botocore.exceptions.SSLError):
        return UnavailableError(f"{what}: TLS handshake failed: {tls_reason(exc)}", hint=TLS_HINT, system=system)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AccessDenied(f"{what}: no credentials configured", hint="set s3.access_key and s3.secret_key",
                            system=system)
    if isinstance(exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError):
        return Unreachable(f"{what}: the endpoint did not answer in time, every try ({type(exc).__name__})",
                           hint="check that the server is running and the network; on a slow link raise "
                                "s3.read_timeout / s3.connect_timeout, on a flaky one s3.max_attempts; "
                                "then re-run", system=system)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError):
        return Unreachable(f"{what}: cannot reach the endpoint ({type(exc).__name__})",
                           hint="check s3.endpoint, the network and that the server is running; then re-run",
                           system=system)
    if isinstance(exc, ObjectTooLarge):
        return VerificationFailed(f"{what}: {exc}", hint="delete or restore that object; do not trust its folder",
                                  system=system)
    if isinstance(exc, _CUT_ERRORS):
        return UnavailableError(f"{what}: the connection was cut mid-transfer ({type(exc).__name__})",
                                hint="check the network and the server's health, then re-run: nothing half-read "
                                     "or half-written was kept", system=system)
    return UnavailableError(f"{what}: {type(exc).__name__}: {exc}", system=system)


def check(s3: S3Settings) -> dict[str, Any]:
    """Prove the bucket is reachable and readable; report its versioning state (snapshots depend on it)."""
    if not s3.bucket:
        raise NotFoundError("s3.bucket is not set", system="object store")
    client = make_client(s3, max_attempts=min(2, max(1, s3.max_attempts)), read_timeout=min(20, s3.read_timeout))
    try:
        client.head_bucket(Bucket=s3.bucket)
        client.list_objects_v2(Bucket=s3.bucket, MaxKeys=1, Prefix=s3.key_prefix)
        versioning = client.get_bucket_versioning(Bucket=s3.bucket).get("Status") or "Unversioned"
    except Exception as exc:
        raise translate_error(exc, what=f"bucket {s3.bucket}", endpoint=s3.endpoint) from None
    return {"bucket": s3.bucket, "versioning": versioning}


class TranslatedBody:
    """A streaming body whose read errors (a connection cut mid-body) arrive as drtool errors, not botocore's."""

    def __init__(self, body: Any, translate: Any) -> None:
        self._body = body
        self._translate = translate

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    def readline(self, size: int | None = -1) -> bytes:
        try:
            return bytes(self._body.readline() if size is None or size < 0 else self._body.readline(size))
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    def close(self) -> None:
        self._body.close()


class ResumingBody(TranslatedBody):
    """A streaming body that picks a cut transfer up where it stopped: a rebuild reads its chunk file as fast as
    it embeds (hours, on a large dataset), so the connection outlives servers' idle timeouts and proxies' resets.

    The next request asks for the rest (Range) of the very object first read (If-Match its ETag, and its version
    when one was named), so a file replaced meanwhile is never stitched onto the old one: that answer is an error.
    `s3.max_attempts` reopens per body, with the SDK's backoff; then the cut is reported as before.
    """

    def __init__(self, response: dict[str, Any], reopen: Any, translate: Any, attempts: int) -> None:
        super().__init__(response["Body"], translate)
        self._reopen = reopen  # (offset, etag) -> a new response for bytes offset-
        self._etag = str(response.get("ETag") or "")
        self._offset = 0
        self._left = max(0, attempts - 1)
        self.resumed = 0  # how many times the transfer was picked up again

    def _resume(self, exc: Exception) -> None:
        import contextlib
        import random
        import time

        if self._left <= 0 or not self._etag:
            raise self._translate(exc) from None
        self._left -= 1
        self.resumed += 1
        wait = min(RETRY_BASE_DELAY_S * 2 ** (self.resumed - 1), RETRY_MAX_DELAY_S) * random.uniform(0.5, 1.0)
        log.warning("object body cut mid-transfer (%s) at byte %d; reading on from there in %.1f s",
                    type(exc).__name__, self._offset, wait)
        time.sleep(wait)
        with contextlib.suppress(Exception):  # the old connection is already broken
            self._body.close()
        self._body = self._reopen(self._offset, self._etag)["Body"]

    def _reading(self, call: Any) -> bytes:
        while True:
            try:
                data = bytes(call())
            except DrtoolError:
                raise
            except _CUT_ERRORS as exc:
                self._resume(exc)
                continue
            except Exception as exc:
                raise self._translate(exc) from None
            self._offset += len(data)
            return data

    def read(self, size: int | None = -1) -> bytes:
        return self._reading(lambda: self._body.read(None if size is None or size < 0 else size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._reading(lambda: self._body.readline() if size is None or size < 0 else self._body.readline(size))


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
        from dataclasses import replace

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
            if code in _NOT_FOUND_CODES or http_status(exc) in (404, 405):  # 405: that version is a delete marker
                return None
            if version_id and code in ("400", "InvalidArgument"):  # some servers' answer to an unknown version id
                return None
            if http_status(exc) == 400 and code not in _AUTH_CODES:
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
        from dataclasses import replace

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


# --- replication (drtool replication verify/probe/status) ---------------------------------------------------------

def iter_listing_pages(client: Any, bucket: str, prefix: str = "", *, versions: bool, page_size: int = 1000
                       ) -> Iterator[list[dict[str, Any]]]:
    """A bucket's listing page by page, in key order, with one dict shape for both listing kinds.

    With `versions`, ListObjectVersions returns versions and delete markers in two separate arrays per page; they
    are merged by key (each array is key-ordered) so the stream stays key-ordered for a merge-join. Items carry
    Key, VersionId, ETag, Size, LastModified, IsDeleteMarker, IsLatest. Errors are raw botocore exceptions: the
    caller knows which site it is listing and translates them.
    """
    import heapq

    if versions:
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            live = ({"Key": v["Key"], "VersionId": v.get("VersionId"), "ETag": v.get("ETag"),
                     "Size": v.get("Size", 0), "LastModified": v["LastModified"], "IsDeleteMarker": False,
                     "IsLatest": v.get("IsLatest", True)} for v in page.get("Versions", []))
            markers = ({"Key": m["Key"], "VersionId": m.get("VersionId"), "ETag": None, "Size": 0,
                        "LastModified": m["LastModified"], "IsDeleteMarker": True,
                        "IsLatest": m.get("IsLatest", True)} for m in page.get("DeleteMarkers", []))
            yield list(heapq.merge(live, markers, key=lambda item: item["Key"]))
    else:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            yield [{"Key": o["Key"], "VersionId": None, "ETag": o.get("ETag"), "Size": o.get("Size", 0),
                    "LastModified": o["LastModified"], "IsDeleteMarker": False, "IsLatest": True}
                   for o in page.get("Contents", [])]


def bucket_replication_setup(client: Any, bucket: str) -> dict[str, Any]:
    """Versioning state, replication rules and lifecycle rules of a bucket; absent configurations are empty."""

    def code(exc: botocore.exceptions.ClientError) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    versioning = client.get_bucket_versioning(Bucket=bucket).get("Status")
    try:
        rules = client.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"].get("Rules", [])
    except botocore.exceptions.ClientError as exc:
        if code(exc) not in ("ReplicationConfigurationNotFoundError", "NoSuchReplicationConfiguration"):
            raise
        rules = []
    try:
        lifecycle = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except botocore.exceptions.ClientError as exc:
        if code(exc) not in ("NoSuchLifecycleConfiguration", "NoSuchLifecycleConfigurationError"):
            raise
        lifecycle = []
    return {"versioning": versioning, "rules": rules, "lifecycle_rules": lifecycle}


# --- snapshots (issue 3): streaming uploads, version listings, conditional writes -----------------------------

def iter_object_versions(client: Any, bucket: str, prefix: str = "", *, page_size: int = 1000) -> Any:
    """Every object version and delete marker under `prefix`, page by page, grouped by key as S3 lists them.

    Pages are fetched as presigned GETs and parsed with ElementTree straight into ObjectVersion records, in a
    prefetch thread: botocore's shape-driven parser (dicts, dateutil timestamps) cost more CPU than everything a
    snapshot does with the listing, and held the GIL against the manifest compressor and the dump upload. The
    XML lists versions and delete markers interleaved in key order, so document order is listing order.
    """
    yield from _chain_pages(prefetch(_version_pages(client, bucket, prefix, page_size)))


def _chain_pages(pages: Any) -> Any:
    for page in pages:
        yield from page


def _version_pages(client: Any, bucket: str, prefix: str, page_size: int, *, delimiter: str | None = None,
                   before_request: Any = None) -> Iterator[list[Any]]:
    """ListObjectVersions pages as lists of ObjectVersion; errors raised as the botocore exceptions
    `translate_error` knows. TLS verification, timeouts and retries follow the client's own configuration.
    With `delimiter` a page also holds the common prefixes (as str); `before_request` is called before each
    page is requested (a rate cap: drtool.ops.snapshot_listing)."""
    from datetime import datetime

    import urllib3

    from drtool.core.manifest import ObjectVersion

    verify = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_verify", True)
    config = client.meta.config
    attempts = int((config.retries or {}).get("max_attempts") or (config.retries or {}).get("total_max_attempts")
                   or 5)
    timeout = urllib3.Timeout(connect=config.connect_timeout or 10, read=config.read_timeout or 60)
    fromiso = datetime.fromisoformat
    for items, decode in _xml_listing_pages(client, bucket, prefix, versions=True, verify=verify, attempts=attempts,
                                            timeout=timeout, page_size=page_size, delimiter=delimiter,
                                            before_request=before_request):
        page: list[Any] = []
        for f, is_marker in items:
            if is_marker is None:  # a common prefix (only with a delimiter)
                page.append(decode(f["Prefix"]))
                continue
            etag = f.get("ETag")
            size = f.get("Size")
            page.append(ObjectVersion(
                key=decode(f["Key"]), version_id=f.get("VersionId") or "null",
                last_modified=fromiso(f["LastModified"]), is_latest=f.get("IsLatest") == "true",
                is_delete_marker=is_marker, etag=None if is_marker else ((etag.strip('"') or None) if etag else None),
                size=None if is_marker else (int(size) if size else (0 if size is not None else None))))
        yield page


def _xml_listing_pages(client: Any, bucket: str, prefix: str, *, versions: bool, verify: bool | str, attempts: int,
                       timeout: Any, page_size: int, delimiter: str | None = None, before_request: Any = None
                       ) -> Iterator[tuple[list[tuple[dict[str, str], bool | None]], Any]]:
    """Raw listing pages, fetched as presigned GETs and parsed with ElementTree: ([(fields, is_delete_marker)],
    key decoder) per page, pagination followed. With `delimiter`, common prefixes come as ({"Prefix": p}, None).

    Why: botocore's response parser (shape-driven dicts, dateutil timestamps) costs several times the CPU of the
    listing itself. The client still does what it is good at: endpoint, addressing style, credentials and signing.
    Errors are raised as the botocore exceptions `translate_error` knows.
    """
    import xml.etree.ElementTree as ET
    from urllib.parse import unquote_plus

    import urllib3

    if verify is False:
        http = urllib3.PoolManager(cert_reqs="CERT_NONE", maxsize=2)
    elif isinstance(verify, str):
        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=verify, maxsize=2)
    else:
        from botocore.httpsession import get_cert_path

        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=get_cert_path(True), maxsize=2)
    retries = urllib3.Retry(total=max(0, attempts - 1), backoff_factor=0.5, status_forcelist=(500, 502, 503, 504),
                            allowed_methods=frozenset({"GET"}), raise_on_status=False)
    operation = "list_object_versions" if versions else "list_objects_v2"
    error_operation = "ListObjectVersions" if versions else "ListObjectsV2"
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size, "EncodingType": "url",
                              **({"Delimiter": delimiter} if delimiter else {})}
    while True:
        if before_request is not None:
            before_request()
        url = client.generate_presigned_url(operation, Params=params, ExpiresIn=900)
        try:
            resp = http.request("GET", url, retries=retries, timeout=timeout, preload_content=True)
        except urllib3.exceptions.SSLError as exc:
            raise botocore.exceptions.SSLError(endpoint_url=url.split("?", 1)[0], error=exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=url.split("?", 1)[0], error=exc) from None
        try:
            root = ET.fromstring(resp.data)
        except ET.ParseError:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": str(resp.status), "Message": "the listing answer is not XML"},
                 "ResponseMetadata": {"HTTPStatusCode": resp.status}}, error_operation) from None
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        if resp.status != 200:
            code = root.findtext("Code") or root.findtext(ns + "Code") or str(resp.status)
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": code, "Message": root.findtext("Message") or root.findtext(ns + "Message") or ""},
                 "ResponseMetadata": {"HTTPStatusCode": resp.status}}, error_operation)
        item_tags = {ns + "Version": False, ns + "DeleteMarker": True} if versions else {ns + "Contents": False}
        cut = len(ns)
        items: list[tuple[dict[str, str], bool | None]] = []
        top: dict[str, str] = {}
        for child in root:  # versions and delete markers come interleaved in key order, as listed
            marker = item_tags.get(child.tag)
            if child.tag == ns + "CommonPrefixes":
                items.append(({"Prefix": child.findtext(ns + "Prefix") or ""}, None))
            elif marker is None:
                top[child.tag[cut:]] = child.text or ""
            else:
                items.append(({sub.tag[cut:]: sub.text or "" for sub in child}, marker))
        # Like botocore: keys are URL-encoded only when the server says so (SeaweedFS ignores EncodingType).
        decode = unquote_plus if top.get("EncodingType") == "url" else str
        yield items, decode
        if top.get("IsTruncated") != "true":
            return
        if versions:
            params["KeyMarker"] = decode(top.get("NextKeyMarker", ""))
            params["VersionIdMarker"] = top.get("NextVersionIdMarker", "")
            if not params["VersionIdMarker"]:
                params.pop("VersionIdMarker")
        else:
            params["ContinuationToken"] = top.get("NextContinuationToken", "")


def prefetch(iterable: Any, depth: int = 2) -> Any:
    """Fetch the next pages in a thread while the caller works on the current one.

    The server's time to answer a listing page overlaps with the caller's processing; memory is bounded by
    `depth` pages. An error in the fetching thread is raised in the caller.
    """
    import queue
    import threading

    done = object()
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", done))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))

    thread = threading.Thread(target=produce, name="s3-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def bucket_versioning(client: Any, bucket: str) -> str:
    """'Enabled', 'Suspended' or 'Unversioned'."""
    return client.get_bucket_versioning(Bucket=bucket).get("Status") or "Unversioned"


def noncurrent_expiry_days(client: Any, bucket: str) -> list[tuple[str, int]]:
    """(rule id, days) of every enabled lifecycle rule that expires noncurrent versions."""
    import botocore.exceptions as bex

    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except bex.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchLifecycleConfiguration", "NotImplemented"):
            return []
        raise
    out: list[tuple[str, int]] = []
    for rule in rules:
        days = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
        if rule.get("Status") == "Enabled" and days is not None:
            out.append((str(rule.get("ID") or "(unnamed)"), int(days)))
    return out


def server_date(client: Any, bucket: str) -> Any:
    """The server's clock (HTTP Date header of a HEAD bucket), to detect skew against the database clock."""
    from email.utils import parsedate_to_datetime

    response = client.head_bucket(Bucket=bucket)
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date) if date else None


SMALL_OBJECT_MAX_BYTES = 8 * 1024 * 1024  # meta.json, COMMITTED, SHA256SUMS, locks, drill records: a few KiB


class ObjectTooLarge(ValueError):
    """An object read whole is bigger than anything drtool writes there: it was planted or is not drtool's."""


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
    import random
    import time

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
        except _CUT_ERRORS:
            if attempt == attempts:
                raise
            wait = min(RETRY_BASE_DELAY_S * 2 ** (attempt - 1), RETRY_MAX_DELAY_S) * random.uniform(0.5, 1.0)
            log.info("body of %s cut mid-transfer; try %d of %d in %.1f s", get_args.get("Key"), attempt + 1,
                     attempts, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def head_or_none(client: Any, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
    """HEAD an object; None when it (or that version) does not exist."""
    import botocore.exceptions as bex

    extra = {"VersionId": version_id} if version_id else {}
    try:
        return client.head_object(Bucket=bucket, Key=key, **extra)
    except bex.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NoSuchVersion", "NotFound") or status == 404:
            return None
        if code in ("400", "InvalidArgument") and version_id:  # some servers answer 400 to an unknown version id
            return None
        if status == 405:  # a delete marker
            return None
        raise


def put_if_absent(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """Create `key` only if it does not exist (If-None-Match: *); False when it already exists.

    Servers without conditional writes get a check-then-write, which leaves a narrow race: documented in
    docs/snapshots.md.
    """
    import botocore.exceptions as bex

    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        return True
    except bex.ClientError as exc:
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


# --- Object Lock: immutable snapshot artifacts ---------------------------------------------------------------------

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
        if retention is not None and str(exc.response.get("Error", {}).get("Code", "")) in _AUTH_CODES:
            raise translate_error(exc, what=f"writing {key} with Object Lock retention",
                                  endpoint=client.meta.endpoint_url, needed=LOCKED_WRITE_ACTIONS) from None
        raise


def put_bytes(client: Any, bucket: str, key: str, body: bytes, *, content_type: str = "application/octet-stream",
              retention: Retention | None = None) -> dict[str, Any]:
    """One PUT of a small object, with Object Lock retention when given."""
    return dict(locked_call(client, key, retention, client.put_object, Bucket=bucket, Key=key, Body=body,
                            ContentType=content_type))


_NO_LOCK_CODES = {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration", "NotImplemented",
                  "InvalidBucketState", "MethodNotAllowed"}


def object_lock_configuration(client: Any, bucket: str) -> dict[str, Any] | None:
    """The bucket's Object Lock configuration; None when the bucket was created without Object Lock.

    Object Lock can only be turned on when a bucket is created (`mc mb --with-lock`, or CreateBucket with
    ObjectLockEnabledForBucket=true), and it turns versioning on for good.
    """
    try:
        config = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration") or {}
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in _NO_LOCK_CODES:
            return None
        raise
    return dict(config) if config.get("ObjectLockEnabled") == "Enabled" else None


class DeleteRefused(AccessDenied):
    """The server refused to delete some versions (Object Lock retention, a legal hold, or a missing permission)."""

    family = None  # its own name in JSON events, as before it was an AccessDenied


class MultipartWriter:
    """A write-only file object that uploads while it is written: parts of `part_size` bytes, sha256 on the fly.

    Small outputs go up with one PUT. On failure call abort(): an unfinished multipart upload costs storage until
    it is aborted (`drtool snapshots gc` also aborts ones a killed run left behind). With `retention` the object
    is created under Object Lock (S3 takes the retention when the upload starts, not when it completes).
    """

    def __init__(self, client: Any, bucket: str, key: str, *, part_size: int = 16 << 20,
                 content_type: str = "application/octet-stream", retention: Retention | None = None) -> None:
        import hashlib

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


def iter_keys(client: Any, bucket: str, prefix: str, *, delimiter: str | None = None) -> Any:
    """Keys (or, with a delimiter, common prefixes) under `prefix`, streamed page by page."""
    paginator = client.get_paginator("list_objects_v2")
    args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        args["Delimiter"] = delimiter
    for page in paginator.paginate(**args):
        if delimiter:
            for cp in page.get("CommonPrefixes", ()):
                yield cp["Prefix"]
        else:
            yield from page.get("Contents", ())


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


# --- export-chunks (issue 6): whole-file replacement that is never visible half-written ---------------------------

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


PROXY_HEADER = "X-Minio-Source-Proxy-Request"


def no_proxy(client: Any) -> Any:
    """Make HEAD and GET on this client answer from the site itself.

    MinIO forwards a read of an object it lacks to its replication peer unless the request carries
    X-Minio-Source-Proxy-Request (any value; MinIO's own peers send it so two sites never forward in a loop).
    Other S3 servers ignore the header.
    """
    def add(request: Any, **_: Any) -> None:
        request.headers[PROXY_HEADER] = "false"

    for op in ("HeadObject", "GetObject"):
        client.meta.events.register(f"before-sign.s3.{op}", add)
    return client


def is_server_answer(exc: BaseException) -> bool:
    """The server answered with an S3 error (as opposed to a transport failure: refused, timed out, cut)."""
    return isinstance(exc, botocore.exceptions.ClientError)


def make_anonymous_client(s3: S3Settings) -> Any:
    """A client that sends unsigned requests, as anyone on the network could (one try): what `audit` asks to
    prove a bucket is not public."""
    from botocore import UNSIGNED

    anon = dataclasses.replace(s3, access_key=None, secret_key=None, use_instance_credentials=False)
    made = make_client(anon, max_attempts=1)
    made.meta.events.register("choose-signer.s3.*", lambda **_: UNSIGNED)
    return made


def bucket_policy(client: Any, bucket: str) -> str | None:
    """The bucket policy document (JSON text); None when there is none or the server has no bucket policies.
    Other failures are raised untranslated (the caller reports them as its check failing)."""
    try:
        return str(client.get_bucket_policy(Bucket=bucket).get("Policy") or "{}")
    except botocore.exceptions.ClientError as exc:
        if error_code(exc)[0] in ("NoSuchBucketPolicy", "NotImplemented"):
            return None
        raise


def bucket_encryption_rules(client: Any, bucket: str, *, endpoint: str | None) -> list[Any]:
    """The default-encryption rules of a bucket ([] when none is configured); Unsupported when the server has no
    GetBucketEncryption, other refusals translated."""
    try:
        answer = client.get_bucket_encryption(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc)[0] == "ServerSideEncryptionConfigurationNotFoundError":
            return []
        raise translate_error(exc, what=f"GetBucketEncryption of {bucket}", endpoint=endpoint) from None
    return list((answer.get("ServerSideEncryptionConfiguration") or {}).get("Rules") or [])


def list_bucket_names(client: Any) -> list[str]:
    """Every bucket these credentials may list, sorted."""
    return sorted(b["Name"] for b in client.list_buckets().get("Buckets", []))


def iter_listing_pages_fast(client: Any, bucket: str, prefix: str = "", *, versions: bool, verify: bool | str = True,
                            timeout: float = 60, page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    """The pages of `iter_listing_pages`, fetched and parsed like the snapshot's version listing.

    `replication verify` lists two sites at once under one GIL, so the parser's CPU is what limits it.
    """
    from datetime import datetime

    import urllib3

    for items, decode in _xml_listing_pages(client, bucket, prefix, versions=versions, verify=verify, attempts=5,
                                            timeout=urllib3.Timeout(connect=10, read=timeout), page_size=page_size):
        yield [{
            "Key": decode(fields["Key"]),
            "VersionId": fields.get("VersionId") if versions else None,
            "ETag": None if marker else fields.get("ETag"),
            "Size": 0 if marker else int(fields.get("Size") or 0),
            "LastModified": datetime.fromisoformat(fields["LastModified"]),
            "IsDeleteMarker": marker,
            "IsLatest": fields.get("IsLatest", "true") == "true",
        } for fields, marker in items]

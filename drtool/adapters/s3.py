"""S3-compatible object storage through boto3 (MinIO, SeaweedFS, AWS S3).

Retries are botocore's "standard" mode (throttling, 5xx, timeouts, with jittered backoff); errors that retrying
cannot fix (credentials, missing bucket) are translated into drtool's error family with a hint.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from drtool.config import S3Settings
from drtool.errors import AuthError, DrtoolError, NotFoundError, UnavailableError

log = logging.getLogger("drtool.s3")

_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AllAccessDisabled", "AccountProblem", "403", "Forbidden", "XMinioAdminNoSuchUser",
}
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "404", "NotFound"}


def make_client(s3: S3Settings, *, max_attempts: int = 5, connect_timeout: float = 10, read_timeout: float = 60
                ) -> Any:
    """A boto3 S3 client configured for self-hosted endpoints (path-style when asked, TLS verification on)."""
    if not s3.verify_tls:
        log.warning("TLS certificate verification is OFF for %s (s3.verify_tls=false)", s3.endpoint)
    config = Config(
        region_name=s3.region,
        signature_version="s3v4",
        s3={"addressing_style": s3.address_style},
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
    )
    credentials: dict[str, str] = {}
    if not s3.use_instance_credentials and s3.access_key:
        credentials = {"aws_access_key_id": s3.access_key, "aws_secret_access_key": s3.secret_key or ""}
    verify: bool | str = s3.ca_bundle if (s3.ca_bundle and s3.verify_tls) else s3.verify_tls
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=s3.endpoint or None, config=config, verify=verify, **credentials)


def translate_error(exc: Exception, *, what: str, endpoint: str | None) -> DrtoolError:
    """Turn a botocore exception into an error that names the system and what the operator should do."""
    system = f"object store {endpoint or 'AWS S3'}"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or code
        if code == "RequestTimeTooSkewed":
            return AuthError(f"{what}: the server refused the request because this machine's clock is off",
                             hint="synchronise the clock (NTP) and retry", system=system)
        if code in _AUTH_CODES:
            return AuthError(f"{what}: access refused ({code}: {message})",
                             hint="check the access key, secret key and the policy of that user", system=system)
        if code in _NOT_FOUND_CODES:
            return NotFoundError(f"{what}: not found ({code})",
                                 hint="check the bucket name and key prefix", system=system)
        return UnavailableError(f"{what}: {code}: {message}", system=system)
    if isinstance(exc, botocore.exceptions.SSLError):
        return UnavailableError(f"{what}: TLS handshake failed: {exc}",
                                hint="set s3.ca_bundle to the CA that signed the endpoint's certificate",
                                system=system)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AuthError(f"{what}: no credentials configured", hint="set s3.access_key and s3.secret_key",
                         system=system)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError
                  | botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError):
        return UnavailableError(f"{what}: cannot reach the endpoint ({type(exc).__name__})",
                                hint="check s3.endpoint, the network and that the server is running",
                                system=system)
    return UnavailableError(f"{what}: {type(exc).__name__}: {exc}", system=system)


def check(s3: S3Settings) -> dict[str, Any]:
    """Prove the bucket is reachable and readable; report its versioning state (snapshots depend on it)."""
    if not s3.bucket:
        raise NotFoundError("s3.bucket is not set", system="object store")
    client = make_client(s3, max_attempts=2, read_timeout=20)
    try:
        client.head_bucket(Bucket=s3.bucket)
        client.list_objects_v2(Bucket=s3.bucket, MaxKeys=1, Prefix=s3.key_prefix)
        versioning = client.get_bucket_versioning(Bucket=s3.bucket).get("Status") or "Unversioned"
    except Exception as exc:
        raise translate_error(exc, what=f"bucket {s3.bucket}", endpoint=s3.endpoint) from None
    return {"bucket": s3.bucket, "versioning": versioning}

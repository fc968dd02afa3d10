"""Making S3 clients: timeouts, TLS, credentials, the retry backoff, and the request hooks drtool adds.

`make_client` is the one way drtool opens S3 (botocore's "standard" retries, with a longer jittered backoff);
`check` is `config check`'s probe of Dify's bucket.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.retries import standard

from drtool.adapters.s3.errors import translate_error
from drtool.config import S3Settings
from drtool.errors import NotFoundError

log = logging.getLogger("drtool.s3")

# --- clients ----------------------------------------------------------------------------------------------------------

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


def make_anonymous_client(s3: S3Settings) -> Any:
    """A client that sends unsigned requests, as anyone on the network could (one try): what `audit` asks to
    prove a bucket is not public."""
    anon = dataclasses.replace(s3, access_key=None, secret_key=None, use_instance_credentials=False)
    made = make_client(anon, max_attempts=1)
    made.meta.events.register("choose-signer.s3.*", lambda **_: UNSIGNED)
    return made


RETRY_BASE_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 10.0


def _use_backoff(client: Any, max_attempts: int) -> None:
    """Back off 0.5, 1, 2, 4, 8 s (jittered down to half) between tries instead of botocore's 50 ms base.

    botocore's standard mode waits rand(0, 0.05 * 2**i) s after a connection error, so its five tries are spent
    in well under a second and a network blip of two seconds fails a nightly snapshot. Its own rules still decide
    WHAT is retried (timeouts, resets, throttling, 5xx, never 4xx/auth); this handler, registered first on the
    client's needs-retry event, only sets HOW LONG to wait (the first non-None answer wins).
    """
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


# --- request hooks: reads that answer from the site itself ------------------------------------------------------------

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

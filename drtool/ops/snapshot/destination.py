"""Where snapshots live: the destination bucket and prefix, opened from the settings.

Every module of the family (create, catalog, retention, restore) and the audit, drill and verify commands take a
`Destination`; it lives here, below all of them, so none of them has to import another to get it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3a
from drtool.config import S3Settings, Settings
from drtool.core.object_lock import Retention
from drtool.core.ports import ObjectStore
from drtool.errors import ConfigError, DrtoolError


@dataclass
class Destination:
    """The bucket and prefix that hold `snapshots/<id>/` folders and the lock."""

    s3: S3Settings
    client: Any
    bucket: str
    prefix: str
    # Object Lock retention of snapshot artifacts, set by `snapshot create` once the bucket is checked.
    # Every artifact goes through put_artifact / artifact_writer, so a new artifact is locked like the others;
    # the lock objects, verified.json and drills/ are written with `client` directly and stay mutable.
    retention: Retention | None = None

    def put_artifact(self, key: str, body: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write one small snapshot artifact (meta.json, SHA256SUMS, COMMITTED, signatures) under the retention."""
        s3a.put_bytes(self.client, self.bucket, key, body, content_type=content_type, retention=self.retention)

    def artifact_writer(self, key: str, *, part_size: int) -> s3a.MultipartWriter:
        """A streaming upload of a large snapshot artifact (dump, manifest) under the retention."""
        return s3a.MultipartWriter(self.client, self.bucket, key, part_size=part_size, retention=self.retention)

    def key(self, *parts: str) -> str:
        return "/".join([p for p in (self.prefix.strip("/"), *parts) if p])

    @property
    def snapshots_prefix(self) -> str:
        return self.key("snapshots") + "/"

    def folder(self, snapshot_id: str) -> str:
        return self.key("snapshots", snapshot_id) + "/"

    @property
    def lock_key(self) -> str:
        return self.key("locks", "snapshots.lock")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}"

    def s3_error(self, exc: Exception, what: str) -> DrtoolError:
        return s3a.translate_error(exc, what=what, endpoint=self.s3.endpoint)


def destination_endpoint(settings: Settings) -> str | None:
    """The snapshot bucket's endpoint (None: AWS S3), resolved as destination_settings does, with no bucket needed."""
    return settings.snapshot.endpoint or settings.s3.endpoint


def destination_settings(settings: Settings) -> S3Settings:
    """The snapshot bucket's S3 settings: snapshot.* where set, otherwise the source's s3.* values."""
    snap, src = settings.snapshot, settings.s3
    bucket = snap.bucket or src.bucket
    if not bucket:
        raise ConfigError("no snapshot bucket configured",
                          hint="set snapshot.bucket (--dest-bucket, DRTOOL_SNAPSHOT_BUCKET) or s3.bucket")
    return dataclasses.replace(
        src, bucket=bucket, endpoint=destination_endpoint(settings), region=snap.region or src.region,
        access_key=snap.access_key or src.access_key, secret_key=snap.secret_key or src.secret_key, key_prefix="")


def open_destination(settings: Settings, *, check: bool = True) -> Destination:
    s3 = destination_settings(settings)
    dest = Destination(s3=s3, client=wiring.s3_client(s3), bucket=str(s3.bucket), prefix=settings.snapshot.prefix)
    if check:
        wiring.bucket_over(dest.client, dest.bucket).require_bucket(
            f"snapshot bucket {dest.bucket}", hint="create it, or set snapshot.bucket to an existing bucket")
    return dest


def destination_store(dest: Destination) -> ObjectStore:
    """The destination's bucket as the ObjectStore port (keys whole), on the client it already holds."""
    return wiring.bucket_store(replace(dest.s3, bucket=dest.bucket, key_prefix=""), client=dest.client)
